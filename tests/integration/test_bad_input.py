"""Bad input that gets past admission, or that only the running operator can answer.

What the CRD rejects is in test_admission.py; docs/bad-input.md lists both. Here: a PVC
name that is taken, namespaces the operator does not serve, extreme but valid labels and
sizes, odd annotation values, a tampered status, and specs that an older, laxer CRD let
in. The rule throughout: bad input never deletes anything and never stalls other claims.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
from pathlib import Path
from typing import Any

import yaml

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, OperatorProcess, eventually

FAST = {"EXPIRY_PERIOD": "4", "GRACE_PERIOD": "4", "COUNTDOWN_INTERVAL": "1"}
CONFLICT_MESSAGE = ("PersistentVolumeClaim {name} already exists and is not owned by this "
                    "EphemeralVolumeClaim; it is left untouched. Rename the claim, or delete "
                    "that PVC if it is not needed.")


def evc(name: str, size: object = "1Gi", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {"size": size, **spec} if size is not None else dict(spec)
    return json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": body})


def foreign_pvc(name: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"owner": "someone-else"}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "5Gi"}}}})


def conditions(kubectl: Kubectl, name: str) -> dict[str, dict[str, Any]]:
    body = kubectl.get("evc", name) or {}
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}


def condition_of(kubectl: Kubectl, name: str, kind: str,
                 reason: str | None = None) -> dict[str, Any]:
    """Wait for the EVC's condition of this type (with this reason); return it."""
    def check() -> dict[str, Any]:
        found = conditions(kubectl, name).get(kind) or {}
        return found if reason is None or found.get("reason") == reason else {}

    return eventually(check, what=f"{kind} {reason or ''} on {name}")


def present(kubectl: Kubectl, kind: str, name: str) -> dict[str, Any]:
    found = eventually(lambda: kubectl.get(kind, name), what=f"{kind} {name}")
    assert found is not None
    return found


def phase(kubectl: Kubectl, name: str) -> str | None:
    body = kubectl.get("evc", name) or {}
    found: str | None = (body.get("status") or {}).get("phase")
    return found


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- a PVC name that is taken ------------------------------------------------------------

def test_pvc_name_taken_by_a_foreign_pvc_is_a_conflict_and_the_pvc_is_untouched(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    kubectl("apply", "-f", "-", input=foreign_pvc("taken"))
    before = kubectl.get("pvc", "taken")
    assert before is not None
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("taken", "2Gi", labels={"team": "data"}))
    condition = condition_of(kubectl, "taken", "PvcReady", "PvcConflict")
    assert condition["status"] == "False"
    assert condition["message"] == CONFLICT_MESSAGE.format(name="taken")
    warnings = [e for e in kubectl.events("taken") if e["reason"] == "PvcConflict"]
    assert [(e["type"], e["message"]) for e in warnings] == [
        ("Warning", CONFLICT_MESSAGE.format(name="taken"))]

    # The claim itself expires as usual; the PVC it never owned stays exactly as it was.
    eventually(lambda: kubectl.get("evc", "taken") is None, timeout=15, what="EVC expiry")
    after = kubectl.get("pvc", "taken")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"].get("deletionTimestamp") is None
    assert after["metadata"].get("ownerReferences") is None


def test_a_pvc_of_its_name_that_names_the_claim_as_an_owner_is_kept_when_it_is_deleted(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """A PVC of the claim's name, not its own, naming it as an owner without being its
    controller: said to be left untouched, it went with the claim (the garbage collector
    deletes a dependent whose owners are all gone, controller or not). The claim is now
    deleted orphaning it: the PVC stays, only that owner reference removed."""
    kubectl("apply", "-f", "-", input=foreign_pvc("named"))
    kubectl("apply", "-f", "-", input=evc("named"))
    claim = present(kubectl, "evc", "named")
    reference = {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                 "name": "named", "uid": claim["metadata"]["uid"]}
    kubectl("patch", "pvc", "named", "--type=merge", "-p",
            json.dumps({"metadata": {"ownerReferences": [reference]}}))
    operator(kubectl.namespace, **FAST)
    condition = condition_of(kubectl, "named", "PvcReady", "PvcConflict")
    assert "kept should the claim be deleted" in condition["message"]
    eventually(lambda: kubectl.get("evc", "named") is None, timeout=30, what="EVC expiry")

    def kept() -> bool:
        pvc = kubectl.get("pvc", "named")
        assert pvc is not None, "deleted with the claim"
        assert pvc["metadata"].get("deletionTimestamp") is None, "deleted with the claim"
        return not pvc["metadata"].get("ownerReferences")

    eventually(kept, timeout=30, what="the owner reference removed, the PVC kept")
    pvc = kubectl.get("pvc", "named")
    assert pvc is not None
    assert pvc["metadata"]["labels"] == {"owner": "someone-else"}


def test_a_claim_applied_again_while_its_earlier_pvc_is_held_waits_for_it_and_says_so(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """The seed's evc.yaml applied again while its finished pod is still there: the earlier
    claim's PVC is being deleted, held by PVC protection while a pod refers to it (a
    scheduled pod: here on a node that does not exist, which the controller counts the
    same). The new claim says what is happening rather than "rename the claim", leaves
    that PVC alone, and creates its own once it is gone: PvcCreated, not PvcRecreated."""
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("again"))
    first = present(kubectl, "pvc", "again")
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
        "spec": {"nodeName": "elsewhere", "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "again"}}]}}))
    kubectl("delete", "evc", "again", "--wait=false")
    eventually(lambda: ((kubectl.get("pvc", "again") or {}).get("metadata") or {}).get(
        "deletionTimestamp"), what="the earlier PVC being deleted")
    kubectl("apply", "-f", "-", input=evc("again"))
    condition = condition_of(kubectl, "again", "PvcReady", "PvcConflict")
    assert "is being deleted" in condition["message"], condition
    assert "created once it is gone" in condition["message"], condition
    held = kubectl.get("pvc", "again")
    assert held is not None
    assert held["metadata"]["uid"] == first["metadata"]["uid"]

    kubectl("delete", "pod", "holder", "--grace-period=0", "--force", "--wait=false")
    def replaced() -> dict[str, Any] | None:
        pvc = kubectl.get("pvc", "again")
        return pvc if pvc and pvc["metadata"]["uid"] != first["metadata"]["uid"] else None

    second = eventually(replaced, what="the new claim's own PVC")
    assert second is not None
    claim = kubectl.get("evc", "again")
    assert claim is not None
    owner = claim["metadata"]["uid"]
    assert [ref["uid"] for ref in second["metadata"]["ownerReferences"]] == [owner]

    def reasons() -> list[str]:
        return [e["reason"] for e in kubectl.events("again")
                if e["involvedObject"].get("uid") == owner]

    eventually(lambda: "PvcCreated" in reasons(), what="the PvcCreated Event")
    assert "PvcRecreated" not in reasons(), reasons()


def test_a_conflict_never_stalls_other_claims(kubectl: Kubectl,
                                              operator: OperatorFactory) -> None:
    names = [f"taken-{i}" for i in range(5)]
    for name in names:
        kubectl("apply", "-f", "-", input=foreign_pvc(name))
    operator(kubectl.namespace, **FAST)
    for name in names:  # a long period: they are still there when the normal one is gone
        kubectl("apply", "-f", "-", input=evc(name, expiryPeriod="1h"))
    kubectl("apply", "-f", "-", input=evc("normal"))

    present(kubectl, "pvc", "normal")
    eventually(lambda: phase(kubectl, "normal") == "Pending", what="normal claim Pending")
    body = kubectl.get("evc", "normal")
    assert body is not None
    deletes_at = parse(body["status"]["deletesAt"])
    assert deletes_at == parse(body["metadata"]["creationTimestamp"]) + datetime.timedelta(
        seconds=1 + 4)
    eventually(lambda: kubectl.get("evc", "normal") is None, timeout=15,
               what="the normal claim's deletion")
    assert now() - deletes_at < datetime.timedelta(seconds=3), "deleted late"
    for name in names:
        assert conditions(kubectl, name)["PvcReady"]["reason"] == "PvcConflict"
        assert kubectl.get("pvc", name) is not None


# --- namespaces the operator does not serve ----------------------------------------------

def test_claims_in_namespaces_the_operator_does_not_watch_are_left_alone(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory) -> None:
    other = f"unwatched-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", other)
    try:
        elsewhere = Kubectl(control_plane, other)
        process = operator(kubectl.namespace, **FAST)
        elsewhere("apply", "-f", "-", input=evc("stray"))
        kubectl("apply", "-f", "-", input=evc("served"))

        present(kubectl, "pvc", "served")
        eventually(lambda: kubectl.get("evc", "served") is None, timeout=15,
                   what="expiry in the served namespace")
        stray = elsewhere.get("evc", "stray")  # older than the expiry period by now
        assert stray is not None
        assert "status" not in stray
        assert elsewhere.get("pvc", "stray") is None
        assert elsewhere.events("stray") == []
        assert other not in process.log_text()
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false")


# --- extreme but valid input -------------------------------------------------------------

def test_two_hundred_labels_and_63_character_values_all_reach_the_pvc(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    labels = {f"label-{i:03d}": f"value-{i}" for i in range(198)}
    labels["longest"] = "v" * 63
    labels[f"{'d' * 50}.example.com/{'k' * 63}"] = "x" * 63  # prefixed key, longest name
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("labelled", labels=labels))
    pvc = present(kubectl, "pvc", "labelled")
    assert pvc["metadata"]["labels"] == labels
    assert len(pvc["metadata"]["labels"]) == 200
    assert conditions(kubectl, "labelled")["PvcReady"]["reason"] == "Pending"  # not bound


def test_a_size_beyond_any_real_volume_is_requested_as_it_is(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    process = operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("exabyte", "1Ei"))
    kubectl("apply", "-f", "-", input=evc("astronomic", "7Ei"))
    for name, size in (("exabyte", "1Ei"), ("astronomic", "7Ei")):
        pvc = present(kubectl, "pvc", name)
        assert pvc["spec"]["resources"]["requests"]["storage"] == size
        assert condition_of(kubectl, name, "PvcReady")["status"] == "False"  # never bound
        assert phase(kubectl, name) == "Pending"
        assert [e["reason"] for e in kubectl.events(name)
                if e["involvedObject"]["kind"] == "EphemeralVolumeClaim"].count(
            "PvcCreated") == 1
    assert process.process.poll() is None
    assert "Traceback" not in process.log_text()


# --- nothing is deleted because of odd input ---------------------------------------------

def test_any_keep_value_but_false_keeps_the_claim(kubectl: Kubectl,
                                                  operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    values = {"kept-banana": "banana", "kept-empty": "", "released": " False "}
    for name, value in values.items():
        kubectl("apply", "-f", "-", input=evc(name, annotations={"evc.zalando.org/keep": value}))
    eventually(lambda: kubectl.get("evc", "released") is None, timeout=15,
               what="deletion of the claim whose keep annotation is false")
    time.sleep(1)  # the kept ones were due at the same moment
    for name in ("kept-banana", "kept-empty"):
        body = kubectl.get("evc", name)
        assert body is not None, f"{name} was deleted"
        assert "deletesAt" not in body["status"]
        paused = conditions(kubectl, name)["DeletionPaused"]
        assert (paused["status"], paused["reason"]) == ("True", "KeepAnnotation")


def test_invalid_specs_that_got_past_admission_pause_deletion(
        operator: OperatorFactory, tmp_path: Path) -> None:
    """An older CRD without the schema let these in: the operator reports, never deletes."""
    plane = ControlPlane.start(tmp_path / "lax")
    try:
        crd = yaml.safe_load((REPO / "crd.yaml").read_text())
        lax = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        crd["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": {
            "type": "object", "properties": {"spec": lax, "status": lax}}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(crd))
        plane.established("crd/ephemeralvolumeclaims.zalando.org")
        kubectl = Kubectl(plane, "default")
        reported = {
            "bad-period": (evc("bad-period", expiryPeriod="soon"),
                           "spec.expiryPeriod='soon' is not a valid period: use seconds "
                           "(e.g. 30) or a duration such as 90s, 15m, 1h30m"),
            "no-size": (evc("no-size", None, expiryPeriod="1"), "spec.size is missing"),
            "bad-size": (evc("bad-size", "lots", expiryPeriod="1"),
                         "spec.size='lots' is not a quantity such as 1Gi"),
            "bad-selector": (evc("bad-selector", expiryPeriod="1", selector={
                "matchExpressions": [{"key": "app", "operator": "Equals"}]}),
                "spec.selector is invalid: matchExpression 'app' has unknown operator "
                "'Equals'"),
        }
        for body, _ in reported.values():
            kubectl("apply", "-f", "-", input=body)

        logfile = tmp_path / "operator-lax.log"
        process = OperatorProcess(plane, "default", logfile, {**FAST, "EXPIRY_PERIOD": "2"})
        operator.started.append(process)  # stopped, and its log reported, by the fixture
        process.wait_ready()
        for name, (_, message) in reported.items():
            valid = condition_of(kubectl, name, "SpecValid")
            assert (valid["status"], valid["reason"], valid["message"]) == (
                "False", "InvalidSpec", message)
            paused = conditions(kubectl, name)["DeletionPaused"]
            assert (paused["status"], paused["reason"]) == ("True", "InvalidSpec")
            assert ("Warning", message) in [(e["type"], e["message"])
                                            for e in kubectl.events(name)
                                            if e["reason"] == "InvalidSpec"]
        for name in ("no-size", "bad-size"):
            assert (conditions(kubectl, name)["PvcReady"]["reason"]) == "InvalidSpec"
            assert kubectl.get("pvc", name) is None
        time.sleep(2)  # every claim is well past its expiry period
        for name in reported:
            assert kubectl.get("evc", name) is not None, f"{name} was deleted"
        assert process.process.poll() is None
        process.stop()
    finally:
        plane.stop()


# --- answered by the API server: labels and status ---------------------------------------

def test_labels_the_pvc_could_not_carry_are_rejected(kubectl: Kubectl) -> None:
    """Labels are copied to the PVC; the API server checks them on the EVC already."""
    result = kubectl.run("apply", "-f", "-", input=evc("lbl", labels={"long": "v" * 64}))
    assert result.returncode != 0
    assert (f'metadata.labels: Invalid value: "{"v" * 64}": must be no more than 63 bytes'
            in result.stderr), result.stderr
    result = kubectl.run("apply", "-f", "-", input=evc("lbl", labels={"bad key": "x"}))
    assert result.returncode != 0
    assert ('metadata.labels: Invalid value: "bad key": name part must consist of '
            "alphanumeric characters, '-', '_' or '.'") in result.stderr, result.stderr
    assert kubectl.get("evc", "lbl") is None


def test_status_tampering_by_another_client_is_rejected(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=evc("tampered"))
    before = kubectl.get("evc", "tampered")
    assert before is not None
    for patch, message in (
            ({"phase": "Bogus"}, 'status.phase: Unsupported value: "Bogus": supported '
                                 'values: "Pending", "InUse", "Idle", "Deleting"'),
            ({"unusedSince": "yesterday"}, 'status.unusedSince: Invalid value: "yesterday": '
                                           "unusedSince in body must be of type date-time"),
            ({"countdown": "soon"}, 'status.countdown: Unsupported value: "soon": supported '
                                    'values: "expiry", "grace"'),
    ):
        result = kubectl.run("patch", "evc", "tampered", "--subresource=status",
                             "--type=merge", "-p", json.dumps({"status": patch}))
        assert result.returncode != 0, result.stdout
        assert message in result.stderr, result.stderr
    after = kubectl.get("evc", "tampered")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "status" not in after
