"""What an EVC says, read from its body: values, defaults, and problems instead of errors."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
import pytest

from evc_operator.evc import evc_view, keeps
from evc_operator.lifecycle import Action, Countdown, Decision, Phase, decide
from evc_operator.resources import KEEP_ANNOTATION
from evc_operator.seal import seal
from evc_operator.settings import MAX_DURATION, Settings
from evc_operator.status import Condition, build_status, lifecycle_conditions

SETTINGS = Settings(expiry_period=11.0, grace_period=22.0)
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PERIOD_FIELDS = ("expiryPeriod", "gracePeriod")
PERIOD_ATTRIBUTES = {"expiryPeriod": "expiry_period", "gracePeriod": "grace_period"}


def make_evc(spec: dict[str, Any] | None = None, *, status: dict[str, Any] | None = None,
             **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "scratch", "namespace": "jobs", "uid": "uid-1",
                     "resourceVersion": "123", "generation": 2,
                     "creationTimestamp": "2026-01-01T00:00:00Z", **metadata},
        "spec": {"size": "1Gi", **(spec or {})},
    }
    if status is not None:
        body["status"] = status
    return body


def period(field: str, value: object) -> float:
    view = evc_view(make_evc({field: value}), SETTINGS)
    assert view.problems == ()
    return view.claim.expiry_period if field == "expiryPeriod" else view.claim.grace_period


# --- identity ------------------------------------------------------------------------------

def test_a_valid_evc() -> None:
    view = evc_view(make_evc(), SETTINGS)
    assert view.namespace == "jobs"
    assert view.name == "scratch"
    assert view.key == ("jobs", "scratch")
    assert view.uid == "uid-1"
    assert view.resource_version == "123"
    assert view.generation == 2
    assert view.deleting is False
    assert view.problems == ()
    assert view.selector is None
    assert view.status == {}
    assert view.claim.created == T0
    assert view.claim.keep is False
    assert view.claim.recorded_phase is None
    assert view.claim.recorded_unused_since is None


def test_missing_optional_metadata() -> None:
    body = make_evc()
    for key in ("namespace", "resourceVersion", "generation"):
        del body["metadata"][key]
    view = evc_view(body, SETTINGS)
    assert view.namespace == ""
    assert view.resource_version == ""
    assert view.generation == 0


def test_a_deletion_timestamp_means_deleting() -> None:
    view = evc_view(make_evc(deletionTimestamp="2026-01-01T00:01:00Z"), SETTINGS)
    assert view.deleting is True


def test_the_status_is_kept_as_read() -> None:
    status = {"phase": "InUse", "users": 1, "conditions": [{"type": "InUse"}]}
    assert evc_view(make_evc(status=status), SETTINGS).status == status


# --- periods -------------------------------------------------------------------------------

def test_absent_periods_are_the_settings_defaults() -> None:
    claim = evc_view(make_evc(), SETTINGS).claim
    assert claim.expiry_period == 11.0
    assert claim.grace_period == 22.0
    claim = evc_view(make_evc({"expiryPeriod": None, "gracePeriod": None}), Settings()).claim
    assert claim.expiry_period == 30.0
    assert claim.grace_period == 30.0


@pytest.mark.parametrize("field", PERIOD_FIELDS)
@pytest.mark.parametrize(("value", "seconds"), [
    (45, 45.0), (0, 0.0), (2.5, 2.5), ("30", 30.0), ("2.5", 2.5), ("90s", 90.0),
    ("15m", 900.0), ("1h30m", 5400.0), ("1d", 86400.0), ("500ms", 0.5),
])
def test_periods_from_the_spec(field: str, value: object, seconds: float) -> None:
    assert period(field, value) == pytest.approx(seconds)


def test_each_period_is_read_from_its_own_field() -> None:
    claim = evc_view(make_evc({"expiryPeriod": "1m", "gracePeriod": "2h"}), SETTINGS).claim
    assert claim.expiry_period == 60.0
    assert claim.grace_period == 7200.0


@pytest.mark.parametrize("field", PERIOD_FIELDS)
@pytest.mark.parametrize("value", ["soon", "", "-5", -5, -0.5, True, False, "1h 30m", "nan",
                                   float("nan"), "inf", "10x"])
def test_an_invalid_period_is_a_problem_and_the_default_is_used(field: str,
                                                                value: object) -> None:
    view = evc_view(make_evc({field: value}), SETTINGS)
    assert len(view.problems) == 1
    problem = view.problems[0]
    assert problem.startswith(f"spec.{field}={value!r} ")
    assert "is not a valid period" in problem
    expected = {"expiryPeriod": 11.0, "gracePeriod": 22.0}
    assert view.claim.expiry_period == expected["expiryPeriod"]
    assert view.claim.grace_period == expected["gracePeriod"]


@pytest.mark.parametrize("field", PERIOD_FIELDS)
@pytest.mark.parametrize("value", [4000000000, "4000000000", "36501d", "1000000h"])
def test_a_period_above_the_maximum_counts_as_the_maximum(field: str, value: object) -> None:
    """Stored before admission capped it: never the (shorter) default, and said plainly."""
    view = evc_view(make_evc({field: value}), SETTINGS)
    assert view.problems == (f"spec.{field}={value!r} is longer than the maximum of 100 "
                             "years (36500d); it counts as 100 years",)
    assert getattr(view.claim, PERIOD_ATTRIBUTES[field]) == MAX_DURATION


def test_both_invalid_periods_are_reported() -> None:
    view = evc_view(make_evc({"expiryPeriod": "soon", "gracePeriod": "later"}), SETTINGS)
    assert len(view.problems) == 2
    assert any("spec.expiryPeriod='soon'" in problem for problem in view.problems)
    assert any("spec.gracePeriod='later'" in problem for problem in view.problems)


# --- keep ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "kept"), [
    ("true", True), ("", True), ("yes", True), ("1", True), ("False-ish", True),
    ("false", False), ("FALSE", False), ("False", False), (" false ", False),
])
def test_the_keep_annotation(value: str, kept: bool) -> None:
    assert keeps({KEEP_ANNOTATION: value}) is kept
    view = evc_view(make_evc(annotations={KEEP_ANNOTATION: value, "other": "false"}), SETTINGS)
    assert view.claim.keep is kept


def test_no_keep_annotation_means_no_keep() -> None:
    assert keeps({}) is False
    assert keeps({"evc.zalando.org/other": "true", "keep": "true"}) is False
    assert evc_view(make_evc(annotations=None), SETTINGS).claim.keep is False


# --- selector ------------------------------------------------------------------------------

def test_a_valid_selector_is_kept() -> None:
    selector = {"matchLabels": {"app": "etl"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["batch"]}]}
    view = evc_view(make_evc({"selector": selector}), SETTINGS)
    assert view.selector == selector
    assert view.problems == ()


def test_an_empty_selector_is_no_selector() -> None:
    view = evc_view(make_evc({"selector": {}}), SETTINGS)
    assert view.selector is None
    assert view.problems == ()


@pytest.mark.parametrize("expression", [
    {"key": "tier", "operator": "In"},
    {"key": "tier", "operator": "Exists", "values": ["x"]},
    {"key": "tier", "operator": "Near"},
    {"operator": "Exists"},
])
def test_an_invalid_selector_is_a_problem_and_dropped(expression: dict[str, Any]) -> None:
    selector = {"matchLabels": {"app": "etl"}, "matchExpressions": [expression]}
    view = evc_view(make_evc({"selector": selector}), SETTINGS)
    assert view.selector is None
    assert len(view.problems) == 1
    assert view.problems[0].startswith("spec.selector is invalid: ")


# --- size ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [{"size": None}, {"size": ""}])
def test_a_missing_size_is_a_problem(spec: dict[str, Any]) -> None:
    assert evc_view(make_evc(spec), SETTINGS).problems == ("spec.size is missing",)


def test_a_missing_spec_is_a_problem() -> None:
    body = make_evc()
    del body["spec"]
    view = evc_view(body, SETTINGS)
    assert view.problems == ("spec.size is missing",)
    assert view.claim.expiry_period == 11.0


def test_an_integer_size_is_fine() -> None:
    assert evc_view(make_evc({"size": 1048576}), SETTINGS).problems == ()


# --- recorded status -----------------------------------------------------------------------

@pytest.mark.parametrize(("recorded", "phase"), [
    ("Pending", Phase.PENDING), ("InUse", Phase.IN_USE), ("Idle", Phase.IDLE),
    ("Deleting", Phase.DELETING), ("Bogus", None), ("idle", None), ("", None), (None, None),
])
def test_the_recorded_phase(recorded: str | None, phase: Phase | None) -> None:
    view = evc_view(make_evc(status={"phase": recorded}), SETTINGS)
    assert view.claim.recorded_phase is phase
    assert view.problems == ()


def test_no_status_means_nothing_recorded() -> None:
    status: dict[str, Any] | None
    for status in ({}, None):
        body = make_evc()
        body["status"] = status
        claim = evc_view(body, SETTINGS).claim
        assert claim.recorded_phase is None
        assert claim.recorded_unused_since is None


@pytest.mark.parametrize(("recorded", "moment"), [
    ("2026-01-01T00:05:00Z", T0 + datetime.timedelta(minutes=5)),
    ("2026-01-01T02:05:00+02:00", T0 + datetime.timedelta(minutes=5)),
    ("2026-01-01T00:05:00.250Z", T0 + datetime.timedelta(minutes=5, milliseconds=250)),
])
def test_the_recorded_unused_since(recorded: str, moment: datetime.datetime) -> None:
    view = evc_view(make_evc(status={"phase": "Idle", "unusedSince": recorded}), SETTINGS)
    assert view.claim.recorded_unused_since == moment
    assert view.problems == ()


@pytest.mark.parametrize("recorded", ["yesterday", "2026-13-01T00:00:00Z", "12:00", 5])
def test_a_bad_recorded_time_is_a_problem(recorded: object) -> None:
    view = evc_view(make_evc(status={"phase": "Idle", "unusedSince": recorded}), SETTINGS)
    assert view.claim.recorded_unused_since is None
    assert view.problems == (f"status.unusedSince={recorded!r} is not a timestamp",)


def test_an_empty_recorded_time_is_absent() -> None:
    view = evc_view(make_evc(status={"phase": "Idle", "unusedSince": ""}), SETTINGS)
    assert view.claim.recorded_unused_since is None
    assert view.problems == ()


def test_a_recorded_time_without_a_zone_is_a_problem() -> None:
    # A zone-less time parses to a naive datetime; `decide` then raises TypeError comparing it
    # with aware times. The module promises problems, not errors, for bad input.
    view = evc_view(make_evc(status={"phase": "Idle", "unusedSince": "2026-01-01T00:05:00"}),
                    SETTINGS)
    assert view.claim.recorded_unused_since is None
    assert view.problems == ("status.unusedSince='2026-01-01T00:05:00' is not a timestamp",)


# --- what the view lets `decide` do --------------------------------------------------------

def test_a_valid_view_decides_normally() -> None:
    view = evc_view(make_evc(), SETTINGS)
    assert decide(view.claim, [], T0 + datetime.timedelta(seconds=5)).action is Action.NONE
    assert decide(view.claim, [], T0 + datetime.timedelta(seconds=12)).action is Action.DELETE


@pytest.mark.parametrize("spec", [
    {"expiryPeriod": "soon"},
    {"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}},
])
def test_problems_stop_deletion(spec: dict[str, Any]) -> None:
    # The module docstring: problems "stop deletion (never delete because of input we could
    # not understand)", and the DeletionPaused condition says "InvalidSpec". The claim that
    # evc_view hands to `decide` must then never be deleted.
    view = evc_view(make_evc(spec), SETTINGS)
    assert view.problems
    decision = decide(view.claim, [], T0 + datetime.timedelta(days=1))
    assert decision.action is Action.NONE


@pytest.mark.parametrize(("field", "value"), [
    ("expiryPeriod", "3000000d"),  # about 8200 years: past datetime.max
    ("expiryPeriod", "99999999999d"),  # more than timedelta.max
    ("expiryPeriod", 9223372036854775807),  # int64 max, admitted by the CRD
    ("gracePeriod", "3000000d"),
])
def test_a_period_too_long_for_a_deadline_does_not_break_decide(field: str,
                                                               value: object) -> None:
    # The CRD admits any number of days; decide must not raise OverflowError on them
    # (the reconciler would retry the EVC forever and never write its status).
    # An idle claim counts down its grace period, a never used one its expiry period.
    status = {"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"}
    view = evc_view(make_evc({field: value}, status=status if field == "gracePeriod" else None),
                    SETTINGS)
    assert view.claim.recorded_phase is (Phase.IDLE if field == "gracePeriod" else None)
    decision = decide(view.claim, [], T0 + datetime.timedelta(hours=1))
    assert decision.action is Action.NONE


def test_the_status_is_kept_packed_and_read_back_whole() -> None:
    status = {"phase": "Idle", "unusedSince": "2026-01-01T00:01:00Z", "conditions": [
        {"type": "PvcReady", "status": "True", "reason": "PvcCreated",
         "lastTransitionTime": "2026-01-01T00:00:01Z", "observedGeneration": 2}]}
    view = evc_view(make_evc(status=status), SETTINGS)
    assert isinstance(view.status_packed, bytes)
    assert len(view.status_packed) < len(orjson.dumps(status)) / 2
    assert view.status == status
    view.status["phase"] = "changed by a reader"
    assert view.status == status  # every read is a fresh copy


@pytest.mark.parametrize("decision", [
    Decision(Phase.IN_USE, ("user-00012",), None, None, None, Action.NONE, None),
    Decision(Phase.IDLE, (), T0, T0 + datetime.timedelta(seconds=30), Countdown.GRACE,
             Action.NONE, T0 + datetime.timedelta(seconds=30)),
    Decision(Phase.PENDING, (), None, T0 + datetime.timedelta(hours=1), Countdown.EXPIRY,
             Action.NONE, T0 + datetime.timedelta(hours=1)),
], ids=["in use", "idle", "pending"])
def test_the_status_the_operator_writes_packs_small_in_every_phase(decision: Decision) -> None:
    # A restarted operator holds 10,000 claims counting down: their statuses, as the
    # operator writes them, must pack as small as those of claims in use (the pack's
    # sample holds the text of both: without the second, these were 359 bytes).
    conditions = [*lifecycle_conditions(decision, keep=False, dry_run=False, problems=()),
                  Condition("PvcReady", False, "Pending",
                            "PersistentVolumeClaim claim-00012 is in place. It is not bound "
                            "to a volume yet (its StorageClass may wait for the first pod "
                            "that uses it; if a pod waits for it, kubectl describe pvc says "
                            "why).")]
    status = build_status(decision, conditions, generation=1, previous={}, now=T0,
                          seal=seal(b"k" * 32, "0b8f3c1e-5d4a-4e7b-9c2d-1f6a8b3e5d70",
                                    str(decision.phase), decision.unused_since, T0))
    view = evc_view(make_evc(status=status), SETTINGS)
    assert view.status == status
    assert len(view.status_packed) <= 180


def test_a_size_past_any_range_is_a_problem_not_an_error() -> None:
    """Stored under an older CRD (without its 8Ei rule): the claim is taken in, and its
    spec said to be wrong (InvalidSpec), instead of every event of it failing unsaid."""
    view = evc_view(make_evc({"size": "1e1000000"}), SETTINGS)
    assert view.size_invalid
    assert view.problems == ("spec.size='1e1000000' is not a quantity such as 1Gi",)
