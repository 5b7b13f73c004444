"""Safety rules that a review found no test failed without: each was shown by changing a
copy of the code (the rule taken out) and running the tests, which still passed. Each test
here states its rule and fails once the rule is taken out.

- lifecycle.end_of_use: a finished user with no reported end, and a pod created after its
  claim whose reported end is before the claim's creation, end their use when they were
  seen to leave; lifecycle.end_unseen: not before then, unless the record covers them.
- lifecycle.trusted: the later of the two ends of use, the recorded and ours.
- users.matches_view: a requirement other than In on a label a controller gives each pod
  of a workload finds that workload as a user.
- tracked.TrackedClaim.taken_in: a later departure of the same name is kept.
- kopffeed.missing: a feed that fails for a claim found gone stops no other claim's
  handling; at most `READS` reads at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from evc_operator import kopffeed
from evc_operator.evc import evc_view
from evc_operator.lifecycle import (
    Claim,
    Phase,
    PodUse,
    ceil_to_second,
    decide,
    end_of_use,
    end_unseen,
    trusted,
)
from evc_operator.settings import Settings
from evc_operator.tracked import TrackedClaim
from evc_operator.users import pod_view, users_of
from evc_operator.workloads import workload_view
from tests.unit.fakes import evc_body
from tests.unit.support import T0, settle
from tests.unit.test_departed import user
from tests.unit.test_workloads import workload


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


CREATED = at(100)  # the claim's creation
LATEST = at(500.25)  # when the user was seen to leave, at the latest
SEEN = at(501)  # ... rounded up to the whole second


def _claim(phase: Phase | None = None, since: datetime.datetime | None = None) -> Claim:
    return Claim(created=CREATED, expiry_period=30, grace_period=60, recorded_phase=phase,
                 recorded_unused_since=since)


# --- lifecycle.end_of_use ------------------------------------------------------------------

@pytest.mark.parametrize("use", [
    PodUse(name="worker", active=False, created=at(150)),  # a pod its kubelet never reported
    PodUse(name="worker", active=False, created=at(50)),  # ... created before the claim
    PodUse(name="Job/etl", active=False, created=at(150)),  # a Job with no end said
    PodUse(name="Deployment/web", active=False, created=at(50), from_creation=False),
])
def test_a_finished_user_with_no_reported_end_ended_when_it_was_seen_to_leave(
        use: PodUse) -> None:
    """A user that finished without saying when (no reported end: its kubelet never
    reported, its containers' states are gone) may have been in use until it was seen to
    leave: its end of use is then (`latest`, rounded up to the second), not None (None
    would say it never used the claim). Found untested by a review."""
    assert use.ended is None
    assert end_of_use(use, CREATED, LATEST) == SEEN
    assert end_unseen(_claim(), use, LATEST) == SEEN


@pytest.mark.parametrize(("created", "ended"), [
    (150, 90),  # created after the claim, its node's clock 60 s behind
    (100, 99),  # created in the claim's own second, its end stamped the second before
    (101, 20),
])
def test_a_pod_created_after_its_claim_that_reports_an_earlier_end_ended_when_seen(
        created: float, ended: float) -> None:
    """A pod (or a Job) created after its claim that reports an end before the claim's
    creation: its node's (controller's) clock runs behind, and when it really ended is
    unknown; it ended, at the latest, when it was seen to leave (ceil(`latest`)), not at
    its reported end (which is before the claim, so would count no use at all). Found
    untested by a review."""
    for name in ("worker", "Job/etl"):
        use = PodUse(name=name, active=False, created=at(created), ended=at(ended))
        assert end_of_use(use, CREATED, LATEST) == SEEN


def test_only_a_user_that_surely_ended_before_its_claim_has_no_end_of_use() -> None:
    """The contrast: created and ended before the claim (a pod), or a workload that ended
    before it whenever it was created: no use of this claim."""
    before = PodUse(name="worker", active=False, created=at(10), ended=at(90))
    assert end_of_use(before, CREATED, LATEST) is None
    workload_use = PodUse(name="Deployment/web", active=False, created=at(150),
                          ended=at(90), from_creation=False)
    assert end_of_use(workload_use, CREATED, LATEST) is None
    after = PodUse(name="worker", active=False, created=at(150), ended=at(300))
    assert end_of_use(after, CREATED, LATEST) == at(301)  # its end, past its second


# --- lifecycle.end_unseen ------------------------------------------------------------------

@pytest.mark.parametrize("record", [
    _claim(),  # never recorded as used
    _claim(Phase.PENDING),
    _claim(Phase.IN_USE),
    _claim(Phase.IDLE),  # Idle with no end recorded: covers nothing
    _claim(Phase.IDLE, at(200)),  # the pod below was created after this end
    _claim(Phase.DELETING, at(200)),
])
def test_a_user_its_record_does_not_cover_ends_no_earlier_than_when_it_was_seen_to_leave(
        record: Claim) -> None:
    """A standby saw a user leave; the claim's record does not cover it (no recorded
    end of use, or one before the user began): the end kept is not before the moment it
    was seen to leave (ceil(`latest`)), as a leader's decision would count it, whatever
    the node's clock reported (here an end at 300, long before it was seen to leave).
    Found untested by a review."""
    use = PodUse(name="worker", active=False, created=at(250), ended=at(300))
    assert end_of_use(use, CREATED, LATEST) == at(301)
    assert end_unseen(record, use, LATEST) == SEEN


@pytest.mark.parametrize("phase", [Phase.IDLE, Phase.DELETING])
def test_a_user_its_record_covers_keeps_the_end_of_use_its_end_says(phase: Phase) -> None:
    """A user created and ended before the recorded end of use: the record covers it, and
    its end is its own (the second after its reported end), not moved to when it was seen
    to leave. Found untested by a review."""
    record = _claim(phase, at(400))
    use = PodUse(name="worker", active=False, created=at(150), ended=at(300))
    assert end_unseen(record, use, LATEST) == end_of_use(use, CREATED, LATEST) == at(301)
    early = PodUse(name="worker", active=False, created=at(10), ended=at(90))
    assert end_unseen(record, early, LATEST) is None  # ended before the claim: no use


users_st = st.builds(
    PodUse, name=st.sampled_from(["worker", "Job/etl", "Deployment/web"]),
    active=st.booleans(), created=st.integers(0, 600).map(at),
    known=st.booleans(), ended=st.one_of(st.none(), st.integers(0, 600).map(at)),
    from_creation=st.booleans())


@given(use=users_st, phase=st.one_of(st.none(), st.sampled_from(list(Phase))),
       since=st.one_of(st.none(), st.integers(0, 600).map(at)),
       latest=st.floats(0, 900, allow_nan=False).map(at))
def test_an_end_kept_unseen_is_never_earlier_than_its_end_of_use(
        use: PodUse, phase: Phase | None, since: datetime.datetime | None,
        latest: datetime.datetime) -> None:
    """For every user and record: `end_unseen` says no use exactly where `end_of_use`
    does, is never earlier than it, and, where no recorded end of use (Idle or Deleting)
    predates the user's creation or there is none, not earlier than when the user was seen
    to leave. Found untested by a review."""
    record = _claim(phase, since)
    end, kept = end_of_use(use, CREATED, latest), end_unseen(record, use, latest)
    assert (end is None) == (kept is None)
    if end is None or kept is None:
        return
    assert kept >= end
    covering = phase in (Phase.IDLE, Phase.DELETING) and since is not None
    if not covering or (use.from_creation and since is not None and use.created > since):
        assert kept >= ceil_to_second(latest)


# --- lifecycle.trusted ---------------------------------------------------------------------

ENDS = (Phase.IDLE, Phase.DELETING)  # the phases whose recorded end of use decide counts
moments = st.one_of(st.none(), st.floats(-300, 3600, allow_nan=False).map(at))
phases = st.one_of(st.none(), st.sampled_from(list(Phase)))
periods = st.one_of(st.integers(0, 3600), st.floats(0, 3600, allow_nan=False))


def _deadline(claim: Claim, now: datetime.datetime, latest: datetime.datetime) -> datetime.datetime:
    deadline = decide(claim, [], now, latest=latest).deletes_at
    assert deadline is not None  # no user active, no keep: there is one
    return deadline


@example(phase=Phase.IDLE, since=at(400), our_phase=Phase.IDLE, our_since=at(200),
         created=100, expiry=30, grace=60, now=450, late=0)
@example(phase=Phase.DELETING, since=at(400), our_phase=Phase.IDLE, our_since=at(200),
         created=100, expiry=30, grace=60, now=900, late=0.5)
@given(phase=phases, since=moments, our_phase=phases, our_since=moments,
       created=st.integers(0, 600), expiry=periods, grace=periods,
       now=st.floats(0, 8000, allow_nan=False), late=st.floats(0, 5, allow_nan=False))
def test_the_deadline_decided_on_trusted_facts_is_never_earlier_than_either(
        phase: Phase | None, since: datetime.datetime | None, our_phase: Phase | None,
        our_since: datetime.datetime | None, created: int, expiry: float, grace: float,
        now: float, late: float) -> None:
    """A stored status that differs from the facts this process decided last is set
    against them (`trusted`): the deadline decided on the result is never earlier than the
    one decided on ours alone, and, where both record an end of use (Idle or Deleting,
    with unusedSince), never earlier than the one decided on the recorded facts alone
    either: the later of the two ends. (Where only one records an end, ours stand: a
    status rewritten by someone else is not believed.) Every phase, periods and moments
    varied, the server's clock known exactly or not (`latest`). Found untested by a review
    (the later of the two taken out, ours alone, every test passed)."""
    base = Claim(created=at(created), expiry_period=expiry, grace_period=grace)
    recorded = dataclasses.replace(base, recorded_phase=phase, recorded_unused_since=since)
    ours = dataclasses.replace(base, recorded_phase=our_phase, recorded_unused_since=our_since)
    moment, latest = at(now), at(now + late)
    decided = _deadline(trusted(recorded, ours), moment, latest)
    assert decided >= _deadline(ours, moment, latest)
    if phase in ENDS and since is not None and our_phase in ENDS and our_since is not None:
        assert decided >= _deadline(recorded, moment, latest)


# --- users: labels a controller gives each pod ---------------------------------------------

POD_NAME = "statefulset.kubernetes.io/pod-name"


@pytest.mark.parametrize(("kind", "requirement", "template_labels"), [
    ("StatefulSet", {"key": POD_NAME, "operator": "Exists"}, {}),
    ("StatefulSet", {"key": "controller-revision-hash", "operator": "Exists"}, {}),
    ("CronJob", {"key": "job-name", "operator": "Exists"}, {}),
    ("CronJob", {"key": "batch.kubernetes.io/job-name", "operator": "Exists"}, {}),
    # The template carries the label, but its controller sets each pod's own (w-1 ...).
    ("StatefulSet", {"key": POD_NAME, "operator": "NotIn", "values": ["w-0"]},
     {POD_NAME: "w-0"}),
    ("CronJob", {"key": "job-name", "operator": "NotIn", "values": ["w-1"]},
     {"job-name": "w-1"}),
    ("StatefulSet", {"key": POD_NAME, "operator": "DoesNotExist"}, {POD_NAME: "w-0"}),
])
def test_a_requirement_other_than_in_on_a_per_pod_label_finds_its_workload(
        kind: str, requirement: dict[str, Any], template_labels: dict[str, str]) -> None:
    """A selector requirement with an operator other than In (Exists, NotIn,
    DoesNotExist) on a label the workload's controller gives each pod it makes (a
    StatefulSet's pod-name, a CronJob's job-name): the template does not say the value
    each pod gets, and such a requirement has no values that name another workload (as
    In's may: test_workloads.py), so it is taken as possibly holding of a pod the
    workload makes (for DoesNotExist too: the rule errs toward keeping the claim), and
    the workload is a user that holds the claim. Found untested by a review."""
    selector = {"matchLabels": {"app": "db"}, "matchExpressions": [requirement]}
    body = workload(kind, claim_name=None, app="db")
    spec = body["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else body["spec"]
    spec["template"]["metadata"]["labels"].update(template_labels)
    view = workload_view(kind, body)
    assert dict(view.labels) == {"app": "db", **template_labels}
    assert [use.name for use in users_of("scratch", selector, [], [view])] == [f"{kind}/w"]
    # The template's own labels still decide the rest.
    other = {**selector, "matchLabels": {"app": "web"}}
    assert users_of("scratch", other, [], [view]) == []


# --- tracked.TrackedClaim.taken_in ---------------------------------------------------------

def test_a_departure_after_the_decision_took_one_in_is_kept() -> None:
    """A decision takes in the departed users it captured; while its status write is
    pending, a pod of the same name is made again and leaves too (a later departure). When
    the decision is done (`taken_in`), the later departure must stay: it is the one no
    decision has seen, and forgotten, its use would leave no trace. Found untested by a
    review (the identity check replaced by a check of the name, every test passed)."""
    record = TrackedClaim(evc_view(evc_body(), Settings()))
    first = pod_view(user("worker", created=55))
    record.depart(first)
    assert record.departed is not None
    captured = dict(record.departed)  # what the decision takes in
    again = pod_view(user("worker", created=70, finished_at=80))  # made again, gone again
    record.depart(again)
    record.taken_in(captured)
    assert record.departed == {"worker": again}
    assert record.departed["worker"] is again
    # Taken in by the next decision, it goes; so does the record of departures.
    record.taken_in({"worker": again})
    assert record.departed is None


# --- kopffeed.missing ----------------------------------------------------------------------

def _key_body(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"}}


def test_a_feed_that_fails_for_a_claim_found_gone_stops_no_other(
        caplog: pytest.LogCaptureFixture) -> None:
    """After a list, claims it lacks are read; one found gone is fed as DELETED. A feed
    that raises for it (a bug of the operator's) is logged with that claim, and every
    other claim is still fed (the gone ones as DELETED, those still there as listed), and
    `missing` itself returns. Found untested by a review (the DELETED path fed without
    that guard, every test passed)."""
    fed: list[tuple[str | None, str]] = []
    there = {"still": _key_body("jobs", "still")}

    async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        return there.get(name)

    def feed(kind: str | None, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        if name.startswith("bad"):
            raise ValueError("a bug of the operator's")
        fed.append((kind, name))

    tracked = {("jobs", name): f"uid-{name}" for name in ("bad-1", "gone", "bad-2", "still")}
    with caplog.at_level(logging.ERROR, logger=kopffeed.__name__):
        asyncio.run(kopffeed.missing("jobs", set(), tracked, read, feed,
                                     lambda key, uid: True))
    assert {name: kind for kind, name in fed} == {"gone": "DELETED", "still": None}
    failed = [record.getMessage() for record in caplog.records if record.exc_info]
    assert sorted(failed) == ["Handling the DELETED event of claim jobs/bad-1 failed.",
                              "Handling the DELETED event of claim jobs/bad-2 failed."]


def test_claims_a_list_lacks_are_read_at_most_reads_at_once() -> None:
    """After a list, the claims it lacks are read `READS` at once, not all at once (after
    a 410 Gone, thousands of reads at once would stall the API server and every other
    request). Counted with reads that wait until the test lets them go: no clock. Found
    untested by a review (the bound taken out, every test passed)."""
    claims = 2 * kopffeed.READS + 3
    names = [f"claim-{number}" for number in range(claims)]
    fed: list[str] = []

    async def scenario() -> tuple[int, int, list[str]]:
        release = asyncio.Event()
        in_flight, most, reads = [0], [0], []

        async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            reads.append(name)
            try:
                await release.wait()
            finally:
                in_flight[0] -= 1
            return _key_body(namespace, name)

        task = asyncio.create_task(kopffeed.missing(
            "jobs", set(), {("jobs", name): f"uid-{name}" for name in names}, read,
            lambda kind, body: fed.append(body["metadata"]["name"]), lambda key, uid: True))
        await settle()  # every read that may start has started, and waits
        waiting = in_flight[0]
        release.set()
        await task
        return waiting, most[0], reads

    waiting, most, reads = asyncio.run(scenario())
    assert waiting == kopffeed.READS  # the rest wait for one of these to end
    assert most == kopffeed.READS
    assert sorted(reads) == sorted(fed) == sorted(names)  # each read once, and fed
