"""Admin guardrails (MIN_PERIOD, MAX_PERIOD) and where the signing key lives (issue 18)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import stat
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from evc_operator import kube, signingkey
from evc_operator.credentials import ConfigError
from evc_operator.errors import Conflict
from evc_operator.evc import evc_view
from evc_operator.lifecycle import Claim, decide
from evc_operator.settings import MAX_DURATION, Settings, SettingsError
from evc_operator.status import LIMITED, lifecycle_conditions, limit_warnings
from tests.unit.fakes import FakeApi, evc_body, make, reconcile_now
from tests.unit.support import T0
from tests.unit.test_evc import make_evc

REPO = Path(__file__).resolve().parents[2]
LIMITS = Settings.from_environ({"MIN_PERIOD": "1m", "MAX_PERIOD": "7d",
                                "EXPIRY_PERIOD": "1m", "GRACE_PERIOD": "1m"})


def test_limits_default_to_none_and_are_read_like_other_periods() -> None:
    assert (Settings().min_period, Settings().max_period) == (0, MAX_DURATION)
    assert (LIMITS.min_period, LIMITS.max_period) == (60, 7 * 86400)


@pytest.mark.parametrize(("environ", "words"), [
    ({"MIN_PERIOD": "1h", "MAX_PERIOD": "1m"}, "MIN_PERIOD (3600 s) is longer than MAX_PERIOD"),
    ({"MIN_PERIOD": "1m"}, "EXPIRY_PERIOD (30 s) is outside MIN_PERIOD"),
    ({"MAX_PERIOD": "10s"}, "EXPIRY_PERIOD (30 s) is outside"),
    ({"MIN_PERIOD": "1m", "EXPIRY_PERIOD": "1m"}, "GRACE_PERIOD (30 s) is outside"),
    ({"MIN_PERIOD": "soon"}, "MIN_PERIOD='soon' is invalid"),
])
def test_limits_that_cannot_hold_stop_the_operator(environ: dict[str, str],
                                                   words: str) -> None:
    with pytest.raises(SettingsError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_environ(environ)


@pytest.mark.parametrize(("field", "value", "counts", "said"), [
    ("expiryPeriod", "0", 60, "spec.expiryPeriod 0s is shorter than the cluster's minimum, "
                               "1m: it counts as 1m"),
    ("gracePeriod", "5s", 60, "spec.gracePeriod 5s is shorter than the cluster's minimum"),
    ("expiryPeriod", "30d", 7 * 86400, "spec.expiryPeriod 720h is longer than the cluster's "
                                       "maximum, 168h: it counts as 168h"),
])
def test_a_spec_outside_the_limits_counts_as_the_limit_and_says_so(
        field: str, value: str, counts: float, said: str) -> None:
    view = evc_view(make_evc({field: value}), LIMITS)
    assert getattr(view.claim, {"expiryPeriod": "expiry_period",
                                "gracePeriod": "grace_period"}[field]) == counts
    assert view.limited[0].startswith(said)
    assert not view.problems  # not invalid: deletion is not paused, only its time limited
    assert not view.claim.keep


def test_a_spec_within_the_limits_or_without_periods_is_untouched() -> None:
    view = evc_view(make_evc({"expiryPeriod": "1h"}), LIMITS)
    assert (view.claim.expiry_period, view.limited) == (3600, ())
    assert evc_view(make_evc(), Settings()).limited == ()


def test_a_limited_period_is_a_condition_and_one_warning() -> None:
    body = evc_body()
    body["spec"]["expiryPeriod"] = "0"
    fake = FakeApi(fresh_pods=[])
    reconciler, _ = make(fake, [], body=body, settings=LIMITS,
                         clock=lambda: T0 + datetime.timedelta(seconds=10))
    reconcile_now(reconciler, ("jobs", "scratch"))
    claim = reconciler.claims.get(("jobs", "scratch"))
    assert claim is not None
    assert f"event:{LIMITED}" in fake.calls
    conditions = {c["type"]: c for c in claim.view.status["conditions"]}
    assert conditions[LIMITED]["status"] == "True"
    assert "counts as 1m" in conditions[LIMITED]["message"]
    assert claim.countdown is not None  # not deleted at once: 61 s from creation
    assert claim.countdown.deletes_at == T0 + datetime.timedelta(seconds=61)
    # Said once: not again while it stays so.
    assert limit_warnings(claim.view.limited, claim.view.status) == []


def test_no_limit_condition_when_nothing_is_limited() -> None:
    decision = decide(Claim(created=T0, expiry_period=30, grace_period=30), [], T0)
    conditions = lifecycle_conditions(decision, keep=False, dry_run=False, problems=())
    assert LIMITED not in {c.type for c in conditions}


def test_a_key_file_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "evc-operator" / "signing-key"
    key = signingkey.file_key(path)
    assert len(key) == signingkey.KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert signingkey.file_key(path) == key
    assert [entry.name for entry in path.parent.iterdir()] == ["signing-key"]  # no drafts


def test_a_key_file_without_a_key_stops_the_operator(tmp_path: Path) -> None:
    path = tmp_path / "signing-key"
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="does not hold a signing key"):
        signingkey.file_key(path)


def test_in_a_cluster_the_key_is_the_operators_namespace_secret() -> None:
    settings = Settings.from_environ({"POD_NAMESPACE": "evc-operator"})
    assert (settings.signing_key_namespace, settings.signing_key_secret) == (
        "evc-operator", "evc-operator-signing-key")
    assert Settings.from_environ({}).signing_key_namespace == ""  # a file, outside one


def test_the_only_secret_the_operator_may_touch_is_its_signing_key() -> None:
    """Least privilege: get and patch (to fill it once), by name; never list, never other
    Secrets, in no other manifest."""
    rules = []
    for path in sorted((REPO / "config").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for rule in (document or {}).get("rules") or ():
                if "secrets" in rule.get("resources", ()):
                    rules.append((path.relative_to(REPO).as_posix(), rule))
    assert rules == [("config/signing-key/role.yaml", {
        "apiGroups": [""], "resources": ["secrets"],
        "resourceNames": ["evc-operator-signing-key"], "verbs": ["get", "patch"]})]


class FakeSecrets:
    """kube.read_secret / kube.patch_secret over one Secret; `race` fills it first once."""

    def __init__(self, data: dict[str, str] | None, race: str | None = None) -> None:
        self.body = None if data is None else {"metadata": {"resourceVersion": "1"},
                                               "data": data}
        self.race = race
        self.patches = 0

    async def read(self, api: object, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body

    async def patch(self, api: object, namespace: str, name: str, version: str,
                    data: dict[str, str]) -> None:
        assert self.body is not None
        self.patches += 1
        if self.race is not None:  # another replica filled it meanwhile
            self.body = {"metadata": {"resourceVersion": "2"}, "data": {"key": self.race}}
            self.race = None
            raise Conflict("the object has been modified")
        assert version == self.body["metadata"]["resourceVersion"]
        self.body = {"metadata": {"resourceVersion": "2"}, "data": dict(data)}


def load_from(fake: FakeSecrets, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(kube, "read_secret", fake.read)
    monkeypatch.setattr(kube, "patch_secret", fake.patch)
    return asyncio.run(signingkey.secret_key(cast(Any, None), "ops", "evc-key"))


def test_an_empty_secret_is_filled_once_and_then_read(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSecrets({})
    key = load_from(fake, monkeypatch)
    assert len(key) == signingkey.KEY_BYTES
    assert base64.b64decode(fake.body["data"]["key"]) == key  # type: ignore[index]
    assert load_from(fake, monkeypatch) == key
    assert fake.patches == 1


def test_replicas_starting_at_once_agree_on_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = base64.b64encode(b"t" * 32).decode()
    assert load_from(FakeSecrets({}, race=theirs), monkeypatch) == b"t" * 32


def test_a_missing_secret_stops_the_operator_with_its_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"the Secret ops/evc-key .* does not exist"):
        load_from(FakeSecrets(None), monkeypatch)


@pytest.mark.parametrize("stored", [base64.b64encode(b"short").decode(), "not base64 !"])
def test_a_secret_with_a_weak_or_garbled_key_stops_the_operator(
        monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    """A key anyone could guess, or none at all, would seal nothing worth believing: the
    operator says so at start, as for a key file, instead of sealing with it."""
    with pytest.raises(ConfigError, match=r"does not hold a signing key in `key`"):
        load_from(FakeSecrets({"key": stored}), monkeypatch)
