"""Which pods use a claim: pod projections, label selectors, and users of a claim."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evc_operator import users
from evc_operator.lifecycle import PodUse
from evc_operator.users import (
    InvalidSelector,
    PodView,
    matches,
    pod_view,
    users_of,
    validate_selector,
)

CREATED = "2026-01-01T12:30:45Z"


@pytest.fixture(autouse=True)
def fresh_label_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts on an empty table of label sets, swept first at its usual size,
    whatever the tests before it left there (sets their views still hold, a sweep put off
    by them); the session's table is put back after."""
    monkeypatch.setattr(users, "_LABEL_SETS", {})
    monkeypatch.setattr(users, "_sweep_at", users._SWEEP_FROM)


def make_pod(name: str = "p", *, claims: tuple[str, ...] = (), phase: str | None = "Running",
             labels: Mapping[str, str] | None = None, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "jobs", "creationTimestamp": CREATED,
                     "labels": dict(labels or {}), **metadata},
        "spec": {"volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": claim}}
                             for i, claim in enumerate(claims)]},
    }
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


def view(name: str, *, claims: tuple[str, ...] = (), active: bool = True,
         labels: Mapping[str, str] | None = None) -> PodView:
    return pod_view(make_pod(name, claims=claims, phase="Running" if active else "Succeeded",
                             labels=labels))


# --- pod_view ------------------------------------------------------------------------------

def test_pod_view_reads_the_claims_it_mounts() -> None:
    body = make_pod(claims=("scratch", "cache"))
    body["spec"]["volumes"] += [
        {"name": "tmp", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "settings"}},
        {"name": "nameless", "persistentVolumeClaim": {"claimName": ""}},
        {"name": "again", "persistentVolumeClaim": {"claimName": "scratch", "readOnly": True}},
    ]
    assert pod_view(body).claims == ("cache", "scratch")  # sorted, each once


def test_pod_view_without_volumes_or_spec_mounts_nothing() -> None:
    assert pod_view(make_pod()).claims == ()
    body = make_pod()
    del body["spec"]
    assert pod_view(body).claims == ()
    body["spec"] = {"volumes": None}
    assert pod_view(body).claims == ()


@pytest.mark.parametrize(("phase", "active"), [
    ("Pending", True), ("Running", True), ("Unknown", True), (None, True),
    ("Succeeded", False), ("Failed", False),
])
def test_only_terminal_phases_are_inactive(phase: str | None, active: bool) -> None:
    assert pod_view(make_pod(phase=phase)).active is active


def test_a_pod_without_status_is_active() -> None:
    body = make_pod()
    body.pop("status", None)
    assert pod_view(body).active is True
    body["status"] = None
    assert pod_view(body).active is True


def test_a_terminating_pod_is_active_until_it_finishes() -> None:
    terminating = make_pod(deletionTimestamp="2026-01-01T13:00:00Z")
    assert pod_view(terminating).active is True
    finished = make_pod(phase="Failed", deletionTimestamp="2026-01-01T13:00:00Z")
    assert pod_view(finished).active is False


def test_a_container_that_never_started_has_no_end_time() -> None:
    """What a real kubelet writes when a pod stuck on an image pull is deleted: the
    container is `terminated` with `finishedAt: null`. The end is unknown, not an error
    (it broke the whole namespace's pod watch, so its claims stayed InUse for ever)."""
    body = make_pod(phase="Failed", deletionTimestamp="2026-01-01T13:00:00Z")
    body["status"]["containerStatuses"] = [{"name": "main", "state": {"terminated": {
        "exitCode": 137, "finishedAt": None, "startedAt": None,
        "reason": "ContainerStatusUnknown"}}}]
    pod = pod_view(body)
    assert pod.active is False
    assert pod.ended is None


def test_an_ephemeral_container_that_ended_later_is_the_pods_end() -> None:
    """`kubectl debug` adds an ephemeral container, which may mount the claim too: the
    pod's use ends with the last of all its containers."""
    body = make_pod(phase="Succeeded")

    def ended(at: str) -> dict[str, Any]:
        return {"name": "c", "state": {"terminated": {"finishedAt": at}}}

    body["status"]["containerStatuses"] = [ended("2026-01-01T13:00:00Z")]
    body["status"]["ephemeralContainerStatuses"] = [ended("2026-01-01T13:05:00Z")]
    assert pod_view(body).ended == datetime.datetime(2026, 1, 1, 13, 5, tzinfo=datetime.UTC)
    body["status"]["ephemeralContainerStatuses"] = [{"name": "d", "state": {"running": {}}}]
    assert pod_view(body).ended is None  # still running: its end is not known


def test_pod_view_reads_identity_labels_and_creation_time() -> None:
    pod = pod_view(make_pod("worker-1", labels={"team": "data", "app": "etl"}))
    assert pod.name == "worker-1"
    assert pod.namespace == "jobs"
    assert pod.labels == (("app", "etl"), ("team", "data"))
    assert pod.created == datetime.datetime(2026, 1, 1, 12, 30, 45, tzinfo=datetime.UTC)
    assert pod.created.utcoffset() == datetime.timedelta(0)


def test_pod_view_without_labels_or_namespace() -> None:
    body = make_pod()
    del body["metadata"]["labels"]
    del body["metadata"]["namespace"]
    pod = pod_view(body)
    assert pod.labels == ()
    assert pod.namespace == ""


def test_pod_view_parses_offsets_and_fractions() -> None:
    pod = pod_view(make_pod(creationTimestamp="2026-01-01T14:30:45.5+02:00"))
    assert pod.created == datetime.datetime(2026, 1, 1, 12, 30, 45, 500000,
                                            tzinfo=datetime.UTC)


def test_a_pod_view_becomes_a_use_not_yet_known() -> None:
    pod = pod_view(make_pod("w", phase="Succeeded"))
    assert pod.use() == PodUse(name="w", active=False, created=pod.created, known=False)


# --- matches -------------------------------------------------------------------------------

@pytest.mark.parametrize("selector", [
    {}, {"matchLabels": {}}, {"matchExpressions": []}, {"matchLabels": None},
    {"matchLabels": {}, "matchExpressions": []},
])
def test_an_empty_selector_matches_nothing(selector: dict[str, Any]) -> None:
    assert not matches(selector, {})
    assert not matches(selector, {"app": "etl"})


@pytest.mark.parametrize(("labels", "expected"), [
    ({"app": "etl", "team": "data"}, True),
    ({"app": "etl", "team": "data", "extra": "x"}, True),
    ({"app": "etl"}, False),
    ({"app": "etl", "team": "web"}, False),
    ({}, False),
])
def test_match_labels_must_all_be_present_with_their_value(labels: dict[str, str],
                                                           expected: bool) -> None:
    assert matches({"matchLabels": {"app": "etl", "team": "data"}}, labels) is expected


@pytest.mark.parametrize(("operator", "labels", "expected"), [
    ("In", {"tier": "a"}, True),
    ("In", {"tier": "b"}, True),
    ("In", {"tier": "c"}, False),
    ("In", {}, False),
    ("In", {"other": "a"}, False),
    ("NotIn", {"tier": "a"}, False),
    ("NotIn", {"tier": "c"}, True),
    ("NotIn", {}, True),  # as in Kubernetes: an absent key is not in any set
    ("NotIn", {"other": "a"}, True),
])
def test_set_operators(operator: str, labels: dict[str, str], expected: bool) -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": operator,
                                      "values": ["a", "b"]}]}
    assert matches(selector, labels) is expected


@pytest.mark.parametrize(("operator", "labels", "expected"), [
    ("Exists", {"tier": "a"}, True),
    ("Exists", {"tier": ""}, True),
    ("Exists", {"other": "a"}, False),
    ("Exists", {}, False),
    ("DoesNotExist", {"tier": "a"}, False),
    ("DoesNotExist", {"tier": ""}, False),
    ("DoesNotExist", {"other": "a"}, True),
    ("DoesNotExist", {}, True),
])
def test_existence_operators(operator: str, labels: dict[str, str], expected: bool) -> None:
    assert matches({"matchExpressions": [{"key": "tier", "operator": operator}]},
                   labels) is expected
    with_empty_values = {"matchExpressions": [{"key": "tier", "operator": operator,
                                               "values": []}]}
    assert matches(with_empty_values, labels) is expected


def test_match_labels_and_every_expression_must_hold() -> None:
    selector = {
        "matchLabels": {"app": "etl"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["batch"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert matches(selector, {"app": "etl", "tier": "batch"})
    assert not matches(selector, {"app": "web", "tier": "batch"})
    assert not matches(selector, {"app": "etl", "tier": "web"})
    assert not matches(selector, {"app": "etl", "tier": "batch", "canary": "1"})


def test_expressions_alone_select() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert matches(selector, {"tier": "x"})
    assert not matches(selector, {"app": "x"})


INVALID_EXPRESSIONS: list[tuple[dict[str, Any], str]] = [
    ({"key": "tier", "operator": "In"}, "needs values"),
    ({"key": "tier", "operator": "In", "values": []}, "needs values"),
    ({"key": "tier", "operator": "NotIn"}, "needs values"),
    ({"key": "tier", "operator": "NotIn", "values": None}, "needs values"),
    ({"key": "tier", "operator": "Exists", "values": ["a"]}, "takes no values"),
    ({"key": "tier", "operator": "DoesNotExist", "values": ["a"]}, "takes no values"),
    ({"key": "tier", "operator": "Equals", "values": ["a"]}, "unknown operator 'Equals'"),
    ({"key": "tier", "operator": "in", "values": ["a"]}, "unknown operator 'in'"),
    ({"key": "tier"}, "unknown operator None"),
    ({"operator": "Exists"}, "no key"),
    ({"key": "", "operator": "Exists"}, "no key"),
]


@pytest.mark.parametrize(("expression", "message"), INVALID_EXPRESSIONS)
def test_invalid_expressions_raise(expression: dict[str, Any], message: str) -> None:
    selector = {"matchExpressions": [expression]}
    for labels in ({}, {"tier": "a"}, {"tier": "b", "app": "x"}):
        with pytest.raises(InvalidSelector, match=message):
            matches(selector, labels)
    with pytest.raises(InvalidSelector, match=message):
        validate_selector(selector)


def test_invalid_selector_is_a_value_error() -> None:
    assert issubclass(InvalidSelector, ValueError)


def test_the_message_names_the_key_and_operator() -> None:
    with pytest.raises(InvalidSelector, match=r"'tier'.*In"):
        validate_selector({"matchExpressions": [{"key": "tier", "operator": "In"}]})


@pytest.mark.parametrize("selector", [
    None, {}, {"matchLabels": {"app": "x"}},
    {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]},
                          {"key": "b", "operator": "NotIn", "values": ["x"]},
                          {"key": "c", "operator": "Exists"},
                          {"key": "d", "operator": "DoesNotExist", "values": []}]},
])
def test_valid_selectors_validate(selector: dict[str, Any] | None) -> None:
    validate_selector(selector)  # does not raise


# A reference implementation of Kubernetes label selectors (labels.Selector.Matches), written
# independently, with the one documented difference: an empty selector matches nothing.

def reference_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    requirements: list[tuple[str, str, list[str]]] = [
        (key, "In", [value]) for key, value in (selector.get("matchLabels") or {}).items()]
    requirements += [(e["key"], e["operator"], list(e.get("values") or []))
                     for e in selector.get("matchExpressions") or []]
    if not requirements:
        return False
    for key, operator, values in requirements:
        has = key in labels
        ok = {
            "In": has and labels.get(key) in values,
            "NotIn": not has or labels.get(key) not in values,
            "Exists": has,
            "DoesNotExist": not has,
        }[operator]
        if not ok:
            return False
    return True


KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.sampled_from(["x", "y", "z"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=3)
EXPRESSIONS = st.one_of(
    st.builds(lambda key, operator, values: {"key": key, "operator": operator,
                                             "values": values},
              KEYS, st.sampled_from(["In", "NotIn"]), st.lists(VALUES, min_size=1, max_size=3)),
    st.builds(lambda key, operator: {"key": key, "operator": operator},
              KEYS, st.sampled_from(["Exists", "DoesNotExist"])),
)
SELECTORS = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(KEYS, VALUES, max_size=3),
    "matchExpressions": st.lists(EXPRESSIONS, max_size=4),
})


@given(selector=SELECTORS, labels=LABELS)
def test_matches_agrees_with_a_reference(selector: dict[str, Any],
                                         labels: dict[str, str]) -> None:
    assert matches(selector, labels) is reference_matches(selector, labels)


@given(selector=SELECTORS, labels=LABELS, extra=st.dictionaries(
    st.sampled_from(["p", "q"]), VALUES, max_size=2))
def test_labels_the_selector_does_not_mention_do_not_matter(
        selector: dict[str, Any], labels: dict[str, str], extra: dict[str, str]) -> None:
    assert matches(selector, {**labels, **extra}) is matches(selector, labels)


# --- users_of ------------------------------------------------------------------------------

def names(users: list[PodUse]) -> list[str]:
    return sorted(user.name for user in users)


def test_pods_mounting_the_claim_are_users() -> None:
    mounting = [view("a", claims=("scratch",)), view("b", claims=("scratch", "other")),
                view("c", claims=("other",)), view("d")]
    users = users_of("scratch", None, mounting, [])
    assert names(users) == ["a", "b"]


def test_without_a_selector_the_namespace_is_ignored() -> None:
    in_namespace = [view("x", labels={"app": "etl"}), view("y")]
    assert users_of("scratch", None, [], in_namespace) == []
    assert users_of("scratch", {}, [], in_namespace) == []


def test_pods_matching_the_selector_are_users_too() -> None:
    selector = {"matchLabels": {"app": "etl"}}
    mounting = [view("a", claims=("scratch",))]
    in_namespace = [view("a", claims=("scratch",)), view("m", labels={"app": "etl"}),
                    view("n", labels={"app": "web"}), view("o")]
    assert names(users_of("scratch", selector, mounting, in_namespace)) == ["a", "m"]


def test_a_pod_both_mounting_and_matching_counts_once() -> None:
    both = view("both", claims=("scratch",), labels={"app": "etl"})
    users = users_of("scratch", {"matchLabels": {"app": "etl"}}, [both], [both, both])
    assert names(users) == ["both"]


def test_the_same_list_can_serve_as_mounting_and_namespace() -> None:
    pods = [view("a", claims=("scratch",)), view("b", claims=("other",), labels={"app": "etl"}),
            view("c", claims=("other",))]
    users = users_of("scratch", {"matchLabels": {"app": "etl"}}, pods, pods)
    assert names(users) == ["a", "b"]


def test_users_keep_their_activity_and_creation() -> None:
    finished = view("done", claims=("scratch",), active=False)
    running = view("run", labels={"app": "etl"})
    users = users_of("scratch", {"matchLabels": {"app": "etl"}}, [finished], [running])
    by_name = {user.name: user for user in users}
    assert by_name["done"] == PodUse(name="done", active=False, created=finished.created)
    assert by_name["run"] == PodUse(name="run", active=True, created=running.created)
    assert not any(user.known for user in users)


def test_an_invalid_selector_raises_when_evaluated() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}
    with pytest.raises(InvalidSelector):
        users_of("scratch", selector, [], [view("a")])


@given(
    pods=st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3", "p4"]),
                            st.sets(st.sampled_from(["scratch", "other"])), LABELS,
                            st.booleans()), max_size=8),
    selector=st.one_of(st.none(), SELECTORS),
)
def test_users_are_exactly_the_mounting_and_matching_pods_once_each(
        pods: list[tuple[str, set[str], dict[str, str], bool]],
        selector: dict[str, Any] | None) -> None:
    views = [view(name, claims=tuple(sorted(claims)), labels=labels, active=active)
             for name, claims, labels, active in pods]
    users = users_of("scratch", selector, views, views)
    found = [user.name for user in users]
    assert len(found) == len(set(found))
    expected = {pod.name for pod in views if "scratch" in pod.claims}
    if selector:
        expected |= {pod.name for pod in views if reference_matches(selector, dict(pod.labels))}
    assert set(found) == expected


def test_pods_with_the_same_labels_share_one_label_set() -> None:
    one = view("one", labels={"app": "etl", "tier": "batch"})
    two = view("two", labels={"tier": "batch", "app": "etl"})
    other = view("other", labels={"app": "etl"})
    assert one.labels == (("app", "etl"), ("tier", "batch"))
    assert one.labels is two.labels
    assert other.labels == (("app", "etl"),)
    assert view("bare").labels == ()


def test_label_sets_no_pod_holds_are_swept_and_held_ones_kept() -> None:
    held = [view(f"held-{i}", labels={"held": str(i)}) for i in range(3)]
    for number in range(5000):  # sets that no pod holds once made: the table sweeps them
        users.label_set({"gone": str(number)})
    assert len(users._LABEL_SETS) < users._SWEEP_FROM  # swept, to the sets still held
    assert all(users._LABEL_SETS.get(pod.labels) is pod.labels for pod in held)
    again = view("again", labels={"held": "1"})
    assert again.labels is held[1].labels


def test_pods_created_in_the_same_second_share_one_timestamp_object() -> None:
    # Tens of thousands of projections are held: a datetime each would be 48 bytes each.
    first, second = view("a"), view("b")
    assert first.created == second.created
    assert first.created is second.created
