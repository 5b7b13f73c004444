"""The lifecycle decisions: table tests, and random histories checked against invariants.

The property test plays a world (pods created, finishing, deleted; a workload at
zero replicas since before the claim, scaled up and down; the clock moving; the
operator stopping and restarting with only what it recorded in status) against
`decide`, and checks with its own bookkeeping that a claim is
never deleted while used, never before its deadline, and always by it.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evc_operator.lifecycle import (
    Action,
    Claim,
    Countdown,
    Phase,
    PodUse,
    ceil_to_second,
    decide,
)
from evc_operator.workloads import workload_view

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def claim(**changes: object) -> Claim:
    base = Claim(created=T0, expiry_period=30, grace_period=60)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def pod(name: str, active: bool = True, created: float = 0) -> PodUse:
    return PodUse(name=name, active=active, created=at(created))


def test_never_used_claim_expires_from_creation() -> None:
    decision = decide(claim(), [], at(10))
    assert decision.phase is Phase.PENDING
    assert decision.countdown is Countdown.EXPIRY
    # creationTimestamp is cut to the second: expiry counts from the second rounded up.
    assert decision.deletes_at == at(31)
    assert decision.wake_at == at(31)
    assert decision.action is Action.NONE
    assert decide(claim(), [], at(30.99)).action is Action.NONE


def test_expired_claim_is_deleted() -> None:
    decision = decide(claim(), [], at(31))
    assert decision.action is Action.DELETE
    assert decision.phase is Phase.DELETING


def test_any_active_user_means_in_use_without_deadline() -> None:
    decision = decide(claim(), [pod("a"), pod("b", active=False)], at(500))
    assert decision.phase is Phase.IN_USE
    assert decision.active_users == ("a",)
    assert decision.deletes_at is None
    assert decision.wake_at is None
    assert decision.action is Action.NONE


def test_last_user_ending_starts_the_grace_period_when_observed() -> None:
    decision = decide(claim(recorded_phase=Phase.IN_USE), [pod("a", active=False)],
                      at(100.2))
    assert decision.phase is Phase.IDLE
    assert decision.unused_since == at(101)  # rounded up: never earlier
    assert decision.deletes_at == at(161)
    assert decision.countdown is Countdown.GRACE


def test_an_unreported_end_counts_from_the_latest_the_servers_clock_can_read() -> None:
    """A user deleted at 35.33 by the server's clock, seen gone when the clock is known
    only to be between 34.6 and 35.4: unused since 36, not ceil(34.6) = 35 (its grace
    would then end 0.33 s before the true deadline)."""
    decision = decide(claim(recorded_phase=Phase.IN_USE, grace_period=4), [], at(34.6),
                      latest=at(35.4))
    assert decision.unused_since == at(36)
    assert decision.deletes_at == at(40)
    assert decision.action is Action.NONE


def test_recorded_idle_time_survives_a_restart() -> None:
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    decision = decide(recorded, [pod("a", active=False, created=50)], at(150))
    assert decision.unused_since == at(100)
    assert decision.deletes_at == at(160)


def test_a_user_that_came_and_went_unseen_moves_the_clock_later() -> None:
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    decision = decide(recorded, [pod("late", active=False, created=120)], at(150))
    assert decision.unused_since == at(150)


def test_after_a_restart_a_pod_from_the_same_second_may_be_newer() -> None:
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    same_second = [pod("p", active=False, created=100)]
    assert decide(recorded, same_second, at(150)).unused_since == at(150)
    known = [dataclasses.replace(same_second[0], known=True)]
    assert decide(recorded, known, at(150)).unused_since == at(100)
    second_before = [pod("p", active=False, created=99)]
    assert decide(recorded, second_before, at(150)).unused_since == at(150)
    older = [pod("p", active=False, created=98)]
    assert decide(recorded, older, at(150)).unused_since == at(100)


def test_a_reported_end_settles_whether_an_unseen_pod_was_used_after() -> None:
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    before = [dataclasses.replace(pod("p", active=False, created=98), ended=at(99))]
    assert decide(recorded, before, at(150)).unused_since == at(100)
    after = [dataclasses.replace(pod("p", active=False, created=50), ended=at(120))]
    assert decide(recorded, after, at(150)).unused_since == at(150)


def test_a_reported_end_in_the_recorded_second_may_be_after_it() -> None:
    """finishedAt is cut to the second: a pod that ended at 100.4, unseen, reports 100,
    later than the recorded end (100). Kept at 100, the deadline would be 0.4 s early."""
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    user = PodUse("p", active=False, created=at(99), ended=at(100))
    assert decide(recorded, [user], at(150)).unused_since == at(150)


@pytest.mark.parametrize("created", [100, 101, 120])
def test_an_unseen_pod_created_after_the_record_was_used_after_whatever_its_node_says(
        created: int) -> None:
    """finishedAt is the node's clock, which may run behind the API server's: a pod created
    (the API server's stamp) after the recorded end of use was in use after it, even if
    its node reports an end before it. Believed, its grace would end early by the skew."""
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    skewed = PodUse("p", active=False, created=at(created), ended=at(55))
    assert decide(recorded, [skewed], at(150)).unused_since == at(150)


def test_a_short_pod_seen_just_before_the_record_keeps_the_deadline_at_a_restart() -> None:
    """Created at 99.2, ended at 99.8, seen at 99.9: recorded Idle since 100. Restarted,
    the operator does not know it, but its reported end (99) is before the record: the
    deadline stays (restarts never reset a countdown)."""
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    short = PodUse("p", active=False, created=at(99), ended=at(99))
    assert decide(recorded, [short], at(150)).unused_since == at(100)


def test_a_known_name_with_a_later_end_or_creation_is_another_use() -> None:
    """Known by name is no proof: the pod deleted and created again under its name, or a
    Deployment scaled up and down again while the watch was away, ran after the record."""
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    seen = PodUse("p", active=False, created=at(50), known=True, ended=at(99))
    assert decide(recorded, [seen], at(150)).unused_since == at(100)
    for again in (dataclasses.replace(seen, created=at(101), ended=at(120)),
                  dataclasses.replace(seen, created=at(101), ended=None),
                  dataclasses.replace(seen, ended=at(100))):
        assert decide(recorded, [again], at(150)).unused_since == at(150), again
    scaled = PodUse("Deployment/d", active=False, created=at(-100), known=True,
                    ended=at(130), from_creation=False)
    assert decide(recorded, [scaled], at(150)).unused_since == at(150)
    # A workload's creation is no use: created at zero replicas after the record.
    never = PodUse("Deployment/e", active=False, created=at(120), known=True,
                   ended=None, from_creation=False)
    assert decide(recorded, [never], at(150)).unused_since == at(100)


def test_a_pod_created_after_the_claim_did_not_end_before_it_whatever_its_node_says() -> None:
    """A node running 30 s behind reports an end before the claim existed, for a pod
    created (the API server's stamp) after it: a use, not a pod of before."""
    skewed = PodUse("p", active=False, created=at(105), ended=at(90))
    decision = decide(claim(created=at(100)), [skewed], at(130))
    assert (decision.phase, decision.unused_since) == (Phase.IDLE, at(130))
    workload = PodUse("Deployment/d", active=False, created=at(105),
                      ended=datetime.datetime.min.replace(tzinfo=datetime.UTC),
                      from_creation=False)
    assert decide(claim(created=at(100)), [workload], at(130)).phase is Phase.PENDING


def test_finished_users_of_a_never_used_claim_count_as_use() -> None:
    decision = decide(claim(), [pod("early", active=False)], at(10))
    assert decision.phase is Phase.IDLE
    assert decision.unused_since == at(10)


def test_a_user_that_ended_before_the_claim_existed_starts_no_grace() -> None:
    """A reused name, or a selector matching old pods: their end is not this claim's use."""
    created = at(100)
    old = PodUse(name="old", active=False, created=at(0), ended=at(99))
    decision = decide(claim(created=created), [old], at(101))
    assert decision.phase is Phase.PENDING
    assert decision.countdown is Countdown.EXPIRY
    assert decision.deletes_at == created + datetime.timedelta(seconds=1 + 30)


@pytest.mark.parametrize("ended", [100, 100.9, 101, None])
def test_a_user_that_may_have_ended_after_creation_counts(ended: float | None) -> None:
    """Timestamps are cut to the second: an end in the claim's own second may be after it;
    a pod with no reported end may have ended any time."""
    user = PodUse(name="late", active=False, created=at(0),
                  ended=None if ended is None else at(math.floor(ended)))
    decision = decide(claim(created=at(100)), [user], at(105))
    assert decision.phase is Phase.IDLE
    assert decision.unused_since == at(105)


def test_deleting_recorded_without_unused_since_resumes_as_pending() -> None:
    decision = decide(claim(recorded_phase=Phase.DELETING), [], at(10))
    assert decision.phase is Phase.PENDING


def test_keep_pauses_deletion_but_still_reports_the_phase() -> None:
    decision = decide(claim(keep=True), [], at(1000))
    assert decision.phase is Phase.PENDING
    assert decision.action is Action.NONE
    assert decision.deletes_at is None
    assert decision.wake_at is None


def test_dry_run_reports_instead_of_deleting() -> None:
    decision = decide(claim(), [], at(31), dry_run=True)
    assert decision.action is Action.REPORT_DRY_RUN
    assert decision.phase is Phase.PENDING
    assert decision.wake_at is None


def test_fractional_periods_round_up() -> None:
    assert decide(claim(expiry_period=0.2), [], at(0)).deletes_at == at(1 + 1)


def test_listed_users_are_capped() -> None:
    users = [pod(f"p{i:02}") for i in range(25)]
    decision = decide(claim(), users, at(1))
    assert len(decision.active_users) == 25
    assert decision.listed_users == tuple(f"p{i:02}" for i in range(10))


@given(st.floats(0, 1e6, allow_nan=False))
def test_ceil_to_second_is_never_earlier(seconds: float) -> None:
    moment = at(seconds)
    rounded = ceil_to_second(moment)
    assert rounded >= moment
    assert rounded - moment < datetime.timedelta(seconds=1)
    assert rounded.microsecond == 0


# --- random histories ----------------------------------------------------------------------

@dataclasses.dataclass
class WorldPod:
    name: str
    created: float
    ended: float | None = None  # became Succeeded/Failed
    deleted: float | None = None
    seen: bool = False  # the operator reconciled while this pod existed
    reported: bool = True  # its kubelet reported when its containers finished
    known: bool = False  # ... and has not restarted since

    def active_at(self, t: float) -> bool:
        end = min(x for x in (self.ended, self.deleted, float("inf")) if x is not None)
        return self.created <= t < end


@dataclasses.dataclass
class WorldWorkload:
    """A Deployment whose template mounts the claim, at zero replicas since before the
    claim existed (created at zero, or scaled down since), scaled up and down later."""

    generation: int  # 1: its spec never changed
    last_write: float  # when its spec last changed (the claim was created at 0)
    ups: list[list[float | None]] = dataclasses.field(default_factory=list)  # [up, down]
    known: bool = False

    def active_at(self, t: float) -> bool:
        return any(up is not None and up <= t and (down is None or t < down)
                   for up, down in self.ups)

    def scale(self, t: float) -> None:
        if self.ups and self.ups[-1][1] is None:
            self.ups[-1][1] = t
        else:
            self.ups.append([t, None])
        self.generation, self.last_write = self.generation + 1, t

    def use(self) -> PodUse:
        """What the operator makes of it: the real projection of its body, whose
        managedFields time is cut to the second as the API server's."""
        stamp = (T0 + datetime.timedelta(seconds=math.floor(self.last_write))).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        body = {"metadata": {"name": "w", "namespace": "ns",
                             "creationTimestamp": "2025-12-31T23:59:50Z",
                             "generation": self.generation,
                             "managedFields": [{"manager": "m", "time": stamp}]},
                "spec": {"replicas": int(self.active_at(self.last_write)), "template": {
                    "spec": {"volumes": [{"persistentVolumeClaim": {"claimName": "c"}}]}}}}
        return dataclasses.replace(workload_view("Deployment", body).use(), known=self.known)


@dataclasses.dataclass
class World:
    expiry: int
    grace: int
    t: float = 0.0
    pods: list[WorldPod] = dataclasses.field(default_factory=list)
    workload: WorldWorkload | None = None
    running: bool = True
    stopped_at: float = 0.0
    downtime: float = 0.0  # total time the operator was stopped, or its watch away
    blind: bool = False  # running, but its watch away (dropped, relisting): no decisions
    blind_at: float = 0.0
    seen_names: set[str] = dataclasses.field(default_factory=set)  # known, by name
    restarts: int = 0
    recorded_phase: Phase | None = None
    recorded_unused_since: datetime.datetime | None = None
    wake_at: float | None = None
    deleted_at: float | None = None

    def existing(self) -> list[WorldPod]:
        return [p for p in self.pods if p.deleted is None]

    @staticmethod
    def visible(p: WorldPod) -> bool:
        """A pod that lived and died inside one operator outage leaves no trace at all."""
        return p.seen or p.deleted is None

    def true_deadline(self) -> float:
        """The latest deadline anyone could know of, from the visible history."""
        ends = [min(x for x in (p.ended, p.deleted, self.t) if x is not None)
                for p in self.pods if self.visible(p)]
        if self.workload is not None:  # it exists: its uses leave a trace, its last write
            ends += [self.t if down is None else min(down, self.t)
                     for _, down in self.workload.ups]
        if not ends:
            return float(self.expiry)
        return max(ends) + self.grace

    def reconcile(self) -> None:
        if not self.running or self.blind or self.deleted_at is not None:
            return
        # As the API server does, creation timestamps are cut to whole seconds; a
        # kubelet reports when a pod's containers finished, unless it is gone. The
        # operator knows a user by its name (a pod made again under it is not told apart).
        users = [PodUse(p.name, p.ended is None, at(math.floor(p.created)),
                        known=p.name in self.seen_names,
                        ended=at(math.floor(p.ended)) if p.ended is not None and p.reported
                        else None)
                 for p in self.existing()]
        for p in self.existing():
            p.seen = p.known = True
            self.seen_names.add(p.name)
        if self.workload is not None:
            users.append(self.workload.use())
            self.workload.known = True
        current = Claim(created=T0, expiry_period=self.expiry, grace_period=self.grace,
                        recorded_phase=self.recorded_phase,
                        recorded_unused_since=self.recorded_unused_since)
        decision = decide(current, users, at(self.t))
        if decision.action is Action.DELETE:
            assert not any(p.active_at(self.t) for p in self.pods), "deleted while in use"
            assert not (self.workload and self.workload.active_at(self.t)), "in use"
            # Times reach the operator as datetimes, to the microsecond: the model's float
            # sums (7.000000000000002 + 3) are compared at that resolution.
            assert self.t >= self.true_deadline() - 1e-6, "deleted before the deadline"
            self.deleted_at = self.t
            return
        self.recorded_phase = decision.phase
        self.recorded_unused_since = decision.unused_since
        self.wake_at = (decision.wake_at - T0).total_seconds() if decision.wake_at else None

    def restart(self) -> None:
        """A new operator process: it knows only what the status says."""
        self.running, self.downtime = True, self.downtime + self.t - self.stopped_at
        self.restarts += 1
        self.seen_names.clear()
        self.blind = False  # a new process lists afresh (its time away is in the downtime)
        for p in self.pods:
            p.known = False
        if self.workload is not None:
            self.workload.known = False

    def advance(self, seconds: float) -> None:
        target = self.t + seconds
        while (self.running and not self.blind and self.deleted_at is None
               and self.wake_at is not None and self.wake_at <= target):
            self.t = max(self.t, self.wake_at)
            self.reconcile()
        self.t = target


STEPS = st.one_of(
    st.tuples(st.just("create"), st.just(0)),
    st.tuples(st.just("create-unreported"), st.just(0)),
    st.tuples(st.just("finish"), st.integers(0, 7)),
    st.tuples(st.just("delete"), st.integers(0, 7)),
    st.tuples(st.just("advance"), st.integers(0, 40)),
    st.tuples(st.just("advance-fraction"), st.integers(1, 999)),
    st.tuples(st.just("stop"), st.just(0)),
    st.tuples(st.just("start"), st.just(0)),
    st.tuples(st.just("scale"), st.just(0)),
    # The same name, a new pod: deleted and made again (a script, a StatefulSet's pod).
    st.tuples(st.just("recreate"), st.integers(0, 7)),
    # The watch goes away (and comes back): the operator runs, but decides nothing.
    st.tuples(st.just("blind"), st.just(0)),
)
# None, or a workload at zero since before the claim: created so, or scaled down since.
WORKLOADS = st.sampled_from([None, (1, -10.0), (2, -2.5)])


@settings(max_examples=3000, deadline=None)
@given(expiry=st.integers(0, 60), grace=st.integers(0, 60),
       steps=st.lists(STEPS, max_size=40), workload=WORKLOADS)
def test_random_histories_keep_the_invariants(expiry: int, grace: int,
                                              steps: list[tuple[str, int]],
                                              workload: tuple[int, float] | None) -> None:
    world = World(expiry=expiry, grace=grace,
                  workload=WorldWorkload(*workload) if workload else None)
    world.reconcile()
    for kind, arg in steps:
        if world.deleted_at is not None:
            break
        if kind in ("create", "create-unreported"):
            world.pods.append(WorldPod(f"pod-{len(world.pods)}", created=world.t,
                                       reported=kind == "create"))
        elif kind in ("finish", "delete"):
            existing = world.existing()
            if not existing:
                continue
            target = existing[arg % len(existing)]
            if kind == "finish" and target.ended is None:
                target.ended = world.t
            elif kind == "delete":
                target.deleted = world.t
        elif kind == "advance":
            world.advance(arg)
        elif kind == "advance-fraction":
            world.advance(arg / 1000)
        elif kind == "stop" and world.running:
            world.running, world.stopped_at = False, world.t
        elif kind == "start" and not world.running:
            world.restart()
        elif kind == "scale" and world.workload is not None:
            world.workload.scale(world.t)
        elif kind == "recreate":
            existing = world.existing()
            if existing:
                old = existing[arg % len(existing)]
                old.deleted = world.t
                world.pods.append(WorldPod(old.name, created=world.t))
        elif kind == "blind" and world.running:
            if world.blind:
                world.blind, world.downtime = False, world.downtime + world.t - world.blind_at
            else:
                world.blind, world.blind_at = True, world.t
        world.reconcile()

    # Then nothing happens any more: the operator must delete by the deadline, late by at
    # most the time it was stopped (a use that ended unseen counts from the restart) and
    # 1 s of rounding to Kubernetes' whole-second timestamps. After a restart, a pod
    # created in the very second the recorded idleness began may be newer, and the
    # operator cannot tell: it then picks the later time, at most one grace period later.
    if world.blind:
        world.blind, world.downtime = False, world.downtime + world.t - world.blind_at
    if not world.running:
        world.restart()
    for p in world.existing():
        if p.ended is None:
            p.ended = world.t
    if world.workload is not None and world.workload.active_at(world.t):
        world.workload.scale(world.t)
    world.reconcile()
    deadline = world.true_deadline()
    slack = world.downtime + 1 + (grace if world.restarts else 0)
    world.advance(max(deadline - world.t, 0) + slack + 5)
    assert world.deleted_at is not None, "never deleted"
    assert world.deleted_at <= max(deadline, world.t - slack - 5) + slack, \
        f"deleted late: at {world.deleted_at}, deadline {deadline}, downtime {world.downtime}"


@pytest.mark.parametrize("phase", [Phase.IDLE, Phase.DELETING])
def test_recorded_unused_since_before_creation_is_not_trusted(phase: Phase) -> None:
    recorded = claim(recorded_phase=phase, recorded_unused_since=at(-1000))
    assert decide(recorded, [], at(1)).unused_since == T0


def test_an_end_seen_live_is_recorded_past_its_second_so_a_restart_keeps_the_deadline() -> None:
    """The server's clock, taken the early way, can still read the second a user's
    reported end (cut to the second) falls in. Recorded there, a restart could not tell
    that user from one used after the record, and counted the grace from the restart (a
    CI run of test_restart_mid_grace_keeps_the_original_deadline: 4 s later)."""
    seen = PodUse(name="worker", active=False, created=at(1), known=True, ended=at(22))
    first = decide(claim(recorded_phase=Phase.IN_USE), [seen], at(22))
    assert first.phase is Phase.IDLE
    assert first.unused_since == at(23)  # the end's second has surely passed
    recorded = claim(recorded_phase=first.phase, recorded_unused_since=first.unused_since)
    restarted = decide(recorded, [dataclasses.replace(seen, known=False)], at(26))
    assert restarted.deletes_at == first.deletes_at
