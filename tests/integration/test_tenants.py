"""Tenants with narrow Roles, on the real control plane: nobody gets more from the operator
than their own rights allow (issue 18).

Each tenant is a ServiceAccount of the test's namespace, bound to a Role (or to the shipped
evc-view / evc-edit ClusterRoles), and acts through `kubectl --as=system:serviceaccount:...`,
as the API server authorises it. The operator runs as in the other tests (a key file of
its own seals the status).
"""

from __future__ import annotations

import datetime
import functools
import json
import signal
import subprocess
import time
from typing import Any

import pytest

from controlplane.cluster import ControlPlane
from evc_operator import seal
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, eventually
from tests.integration.test_lifecycle import evc, finish, gone, now, parse, phase_is, pod, status

CLAIMS = "ephemeralvolumeclaims.zalando.org"
FORGED = {"phase": "Idle", "unusedSince": "2000-01-01T00:00:00Z"}


def tenant(kubectl: Kubectl, name: str, *, rules: list[dict[str, Any]] | None = None,
           cluster_roles: tuple[str, ...] = ()) -> str:
    """A ServiceAccount with these rules (a Role) or these ClusterRoles, in the test's
    namespace only; returns the --as argument that acts as it."""
    kubectl("create", "serviceaccount", name)
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": kubectl.namespace}]
    documents: list[dict[str, Any]] = []
    if rules is not None:
        documents += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": name}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": name}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": name}}]
    documents += [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": f"{name}-{role}"}, "subjects": subject,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                               "kind": "ClusterRole", "name": role}}
                  for role in cluster_roles]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": documents}))
    return f"--as=system:serviceaccount:{kubectl.namespace}:{name}"


def as_tenant(kubectl: Kubectl, who: str, *args: str,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
    return kubectl.run(who, *args, input=input)


def allowed(kubectl: Kubectl, who: str, *args: str, input: str | None = None) -> bool:
    """Whether the API server let the tenant do it (any other failure fails the test)."""
    result = as_tenant(kubectl, who, *args, input=input)
    if result.returncode != 0:
        assert "Forbidden" in result.stderr or "forbidden" in result.stderr, result.stderr
    return result.returncode == 0


def created_at(kubectl: Kubectl, name: str) -> datetime.datetime:
    body = kubectl.get("evc", name)
    assert body is not None, f"EVC {name} is gone"
    return parse(body["metadata"]["creationTimestamp"])


def limit_warnings(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return [event for event in kubectl.events(name) if event["reason"] == "PeriodLimited"]


def write_status(kubectl: Kubectl, who: str, name: str, status: dict[str, Any]) -> None:
    result = as_tenant(kubectl, who, "patch", "evc", name, "--subresource=status",
                       "--type=merge", "-p", json.dumps({"status": status}))
    assert result.returncode == 0, result.stderr


STATUS_WRITER = [{"apiGroups": ["zalando.org"], "resources": ["ephemeralvolumeclaims"],
                  "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["zalando.org"], "resources": ["ephemeralvolumeclaims/status"],
                  "verbs": ["get", "patch", "update"]}]


def test_a_status_writer_cannot_make_a_deletion_earlier_across_a_restart(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """Forged while no operator runs, then believed by the next one, the status would have
    deleted both claims at once: one never used (30 s expiry), one idle with 1 h of grace
    left whose status is wiped. Unsealed, each counts the later way."""
    who = tenant(kubectl, "status-writer", rules=STATUS_WRITER)
    periods = {"EXPIRY_PERIOD": "30", "GRACE_PERIOD": "3", "COUNTDOWN_INTERVAL": "1"}
    first = operator(kubectl.namespace, **periods)
    kubectl("apply", "-f", "-", input=evc("never-used", expiryPeriod="30s"))
    kubectl("apply", "-f", "-", input=evc("was-used", expiryPeriod="2s", gracePeriod="1h"))
    kubectl("apply", "-f", "-", input=pod("worker", "was-used"))
    eventually(lambda: phase_is(kubectl, "was-used", "InUse"), what="InUse")
    finish(kubectl, "worker")
    eventually(lambda: phase_is(kubectl, "was-used", "Idle"), what="Idle")
    kubectl("delete", "pod", "worker")  # its end is now known from the status alone
    eventually(lambda: status(kubectl, "never-used").get("seal"), what="a sealed status")
    idle = status(kubectl, "was-used")
    assert not allowed(kubectl, who, "delete", "evc", "never-used")
    first.stop(signal.SIGKILL)

    write_status(kubectl, who, "never-used", FORGED)
    write_status(kubectl, who, "was-used", {"phase": None, "unusedSince": None,
                                            "deletesAt": None, "countdown": None})
    assert status(kubectl, "never-used")["unusedSince"] == FORGED["unusedSince"]
    restarted = now()
    operator(kubectl.namespace, **periods)

    true_deadline = created_at(kubectl, "never-used") + datetime.timedelta(seconds=31)
    eventually(lambda: status(kubectl, "never-used").get("phase") == "Pending",
               what="the forged Idle replaced")
    # Never used, or used until the restart: whichever ends later (here, the expiry).
    assert parse(status(kubectl, "never-used")["deletesAt"]) == true_deadline
    eventually(lambda: status(kubectl, "was-used").get("phase") == "Idle",
               what="the wiped status counted the later way")
    # As if its last user had just ended: the hour of grace counts from the restart.
    assert parse(status(kubectl, "was-used")["deletesAt"]) >= (
        restarted + datetime.timedelta(hours=1) - datetime.timedelta(seconds=1))
    assert parse(status(kubectl, "was-used")["deletesAt"]) >= parse(idle["deletesAt"])
    while now() < true_deadline - datetime.timedelta(seconds=1):
        assert kubectl.get("evc", "never-used") is not None, "deleted before its deadline"
        time.sleep(0.5)
    eventually(lambda: gone(kubectl, "evc", "never-used"), timeout=15,
               what="deletion at the true deadline")
    assert now() >= true_deadline
    assert kubectl.get("evc", "was-used") is not None


def test_a_genuine_status_put_back_is_not_believed_as_it_was(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """The operator's own earlier record of the claim (`Pending`, sealed), saved by a status
    writer and put back while no operator runs, after the claim was used: believed, the
    claim would go at its expiry. The API server stamps the time of the write in
    managedFields, which the writer cannot set (tried here too): the record is taken as
    true only up to that write, and the hour of grace counts from then."""
    who = tenant(kubectl, "replayer", rules=STATUS_WRITER)
    periods = {"EXPIRY_PERIOD": "30", "GRACE_PERIOD": "3", "COUNTDOWN_INTERVAL": "1"}
    first = operator(kubectl.namespace, **periods)
    kubectl("apply", "-f", "-", input=evc("replayed", expiryPeriod="20s", gracePeriod="1h"))
    def sealed_status() -> dict[str, Any]:
        found = status(kubectl, "replayed")
        return found if found.get("seal") else {}

    saved = eventually(sealed_status, what="a sealed Pending status")
    assert saved["phase"] == "Pending"
    # The use comes later than seal.SPACING (6 s) after the last seal: a record put back
    # within those seconds, before the second write, is the known gap (docs/bad-input.md).
    time.sleep(8)
    kubectl("apply", "-f", "-", input=pod("user", "replayed"))
    eventually(lambda: phase_is(kubectl, "replayed", "InUse"), what="InUse")
    finish(kubectl, "user")
    eventually(lambda: phase_is(kubectl, "replayed", "Idle"), what="Idle")
    kubectl("delete", "pod", "user")  # its use is now known from the status alone
    first.stop(signal.SIGKILL)

    def with_stamps() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(kubectl("get", "evc", "replayed", "-o", "json",
                                                   "--show-managed-fields"))
        return found

    put_back = now()
    body = with_stamps()
    forged_stamps = [dict(entry, time=saved["seal"].split(":", 1)[1].rsplit(":", 1)[0][:19]
                          + "Z") for entry in body["metadata"]["managedFields"]]
    exactly = {key: None for key in body["status"]} | saved  # fields added since: removed
    result = as_tenant(kubectl, who, "patch", "evc", "replayed", "--subresource=status",
                       "--type=merge", "-p", json.dumps({
                           "metadata": {"managedFields": forged_stamps}, "status": exactly}))
    assert result.returncode == 0, result.stderr
    stored = with_stamps()
    assert stored["status"] == saved
    stamps = [parse(entry["time"]) for entry in stored["metadata"]["managedFields"]
              if entry.get("subresource") == "status"]
    assert max(stamps) >= put_back - datetime.timedelta(seconds=1)  # not the forged ones

    restarted = operator(kubectl.namespace, **periods)
    eventually(lambda: status(kubectl, "replayed").get("seal") != saved["seal"],
               what="the record put back replaced")
    assert parse(status(kubectl, "replayed")["deletesAt"]) >= (
        put_back + datetime.timedelta(hours=1) - datetime.timedelta(seconds=1))
    assert "a record put back by someone" in restarted.log_text()
    expiry = created_at(kubectl, "replayed") + datetime.timedelta(seconds=21)
    while now() < expiry + datetime.timedelta(seconds=5):
        assert kubectl.get("evc", "replayed") is not None, "deleted at the replayed expiry"
        time.sleep(0.5)


def test_a_use_soon_after_the_seal_is_confirmed_by_a_read_not_a_second_write(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """`Pending` sealed, then a user within seal.SPACING (6 s): once those seconds have
    passed, the InUse record must be seen to stand. The operator reads the claim back and,
    finding its own record, writes nothing more: the claim's resourceVersion and seal stay
    as the InUse write left them (before `confirm.py`, a second status write came here)."""
    operator(kubectl.namespace, COUNTDOWN_INTERVAL="1")
    kubectl("apply", "-f", "-", input=evc("confirmed"))
    eventually(lambda: phase_is(kubectl, "confirmed", "Pending") and bool(
        status(kubectl, "confirmed").get("seal")), what="a sealed Pending status")
    kubectl("apply", "-f", "-", input=pod("user", "confirmed"))
    eventually(lambda: phase_is(kubectl, "confirmed", "InUse"), what="InUse")
    written = kubectl.get("evc", "confirmed")
    assert written is not None
    time.sleep(float(seal.SPACING.total_seconds()) + 3)  # past the moment, and the read
    body = kubectl.get("evc", "confirmed")
    assert body is not None
    assert body["status"]["seal"] == written["status"]["seal"]
    assert body["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]


@pytest.fixture
def user_roles(control_plane: ControlPlane) -> None:
    """The shipped evc-view and evc-edit ClusterRoles (config/rbac/users)."""
    control_plane.kubectl("apply", "-k", str(REPO / "config" / "rbac" / "users"))


def test_a_claim_editor_cannot_go_below_the_floor_or_above_the_ceiling(
        kubectl: Kubectl, operator: OperatorFactory, user_roles: None) -> None:
    who = tenant(kubectl, "editor", cluster_roles=("evc-view", "evc-edit"))
    operator(kubectl.namespace, MIN_PERIOD="1m", MAX_PERIOD="1h", EXPIRY_PERIOD="1m",
             GRACE_PERIOD="1m", COUNTDOWN_INTERVAL="1")
    assert allowed(kubectl, who, "apply", "-f", "-", input=evc("short", expiryPeriod="0"))
    assert allowed(kubectl, who, "apply", "-f", "-", input=evc("long", expiryPeriod="30d"))

    def limited(name: str) -> dict[str, Any]:
        return next((c for c in status(kubectl, name).get("conditions") or ()
                     if c["type"] == "PeriodLimited"), {})

    for name, counts, seconds in (("short", "counts as 1m", 61), ("long", "counts as 1h", 3601)):
        condition = eventually(functools.partial(limited, name), what=f"{name}: PeriodLimited")
        assert condition["status"] == "True"
        assert counts in condition["message"]
        assert parse(status(kubectl, name)["deletesAt"]) == created_at(
            kubectl, name) + datetime.timedelta(seconds=seconds)
        eventually(functools.partial(limit_warnings, kubectl, name), what="the Warning")
    time.sleep(1)
    for name in ("short", "long"):  # once each
        assert [event["type"] for event in limit_warnings(kubectl, name)] == ["Warning"]
    # The editor shortens it again: still the floor.
    assert allowed(kubectl, who, "patch", "evc", "short", "--type=merge", "-p",
                   json.dumps({"spec": {"expiryPeriod": "1s"}}))
    time.sleep(3)
    assert kubectl.get("evc", "short") is not None
    assert "counts as 1m" in limited("short")["message"]
    # Within the limits, the condition goes.
    kubectl("patch", "evc", "long", "--type=merge", "-p",
            json.dumps({"spec": {"expiryPeriod": "30m"}}))
    eventually(lambda: not limited("long"), what="PeriodLimited gone")


@pytest.mark.parametrize(("roles", "rules", "expected"), [
    (("evc-view",), None,
     {"get": True, "create": False, "patch": False, "delete": False, "status": False}),
    (("evc-view", "evc-edit"), None,
     {"get": True, "create": True, "patch": True, "delete": True, "status": False}),
    ((), [{"apiGroups": ["zalando.org"], "resources": ["ephemeralvolumeclaims"],
           "verbs": ["create"]}],
     {"get": False, "create": True, "patch": False, "delete": False, "status": False}),
], ids=["view", "edit", "create-only"])
def test_each_level_of_access_does_what_it_should_and_never_writes_status(
        kubectl: Kubectl, user_roles: None, roles: tuple[str, ...],
        rules: list[dict[str, Any]] | None, expected: dict[str, bool]) -> None:
    """Tried for real, not asked of `kubectl auth can-i`: the shipped roles and a
    create-only Role, against one claim each (no operator needed)."""
    who = tenant(kubectl, "person", rules=rules, cluster_roles=roles)
    kubectl("apply", "-f", "-", input=evc("theirs"))
    kubectl("apply", "-f", "-", input=evc("mine"))
    done = {
        "get": allowed(kubectl, who, "get", "evc", "theirs"),
        "create": allowed(kubectl, who, "create", "-f", "-", input=evc("new")),
        "patch": allowed(kubectl, who, "patch", "evc", "theirs", "--type=merge", "-p",
                         json.dumps({"spec": {"expiryPeriod": "0"}})),
        "status": allowed(kubectl, who, "patch", "evc", "mine", "--subresource=status",
                          "--type=merge", "-p", json.dumps({"status": FORGED})),
        "delete": allowed(kubectl, who, "delete", "evc", "mine", "--wait=false"),
    }
    assert done == expected
    assert status_of(kubectl, "mine").get("unusedSince") is None


def status_of(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = kubectl.get("evc", name)
    return dict((body or {}).get("status") or {})
