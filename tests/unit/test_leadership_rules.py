"""Leadership's rules in time: the holder leads for half a duration after its last renewal
was sent (monotonic clock), steps down when that ends even while a renewal hangs, and a
standby takes over only once the Lease record stayed unchanged for a whole duration on its
own clock. Fake Lease calls; short real durations where the event loop must run."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any

import pytest

from evc_operator import kube
from evc_operator.leadership import Leadership, LeaseSettings
from evc_operator.timestamps import format_time

WALL = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


class Store:
    """One Lease, with resourceVersion conflicts; requests of some identities hang or
    fail, and each request may move a fake monotonic clock (its latency)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.hang_for: set[str] = set()
        self.fail_for: set[str] = set()
        self.reads: dict[str, int] = {}
        self.released = asyncio.Event()  # set: hanging requests go on
        self.latency: Callable[[], None] = lambda: None

    def put(self, spec: dict[str, Any]) -> None:
        self.lease, self.rv = dict(spec), self.rv + 1

    async def gate(self, api: str) -> None:
        if api in self.hang_for:
            await self.released.wait()
        if api in self.fail_for:
            raise ConnectionError("unreachable")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Store:
    store = Store()

    async def read_lease(api: str, namespace: str, name: str) -> Any:
        store.reads[api] = store.reads.get(api, 0) + 1
        await store.gate(api)
        return None if store.lease is None else {
            "metadata": {"name": name, "namespace": namespace,
                         "resourceVersion": str(store.rv)}, "spec": dict(store.lease)}

    async def create_lease(api: str, namespace: str, name: str, spec: Any) -> None:
        await store.gate(api)
        store.latency()
        if store.lease is not None:
            raise RuntimeError("conflict: exists")
        store.put(spec)

    async def replace_lease(api: str, lease: Any, spec: Any) -> None:
        await store.gate(api)
        store.latency()
        if lease["metadata"]["resourceVersion"] != str(store.rv):
            raise RuntimeError("conflict")
        store.put(spec)

    monkeypatch.setattr(kube, "read_lease", read_lease)
    monkeypatch.setattr(kube, "create_lease", create_lease)
    monkeypatch.setattr(kube, "replace_lease", replace_lease)
    return store


class Mono:
    """A monotonic clock the test sets."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def replica(identity: str, duration: float = 10.0, retry: float = 2.0, *,
            monotonic: Callable[[], float] = time.monotonic,
            wall: Callable[[], datetime.datetime] = lambda: WALL,
            changes: list[tuple[bool, float]] | None = None) -> Leadership:
    settings = LeaseSettings(name="evc-operator", namespace="ops", identity=identity,
                             duration=duration, retry=retry)

    def on_change(held: bool) -> None:
        if changes is not None:
            changes.append((held, time.monotonic()))

    # The fake Lease calls take the identity for the API client.
    return Leadership(identity, settings, on_change, clock=wall,  # type: ignore[arg-type]
                      monotonic=monotonic)


def held_by(holder: str, *, renewed: datetime.datetime = WALL,
            duration: int = 10) -> dict[str, Any]:
    return {"holderIdentity": holder, "leaseDurationSeconds": duration,
            "acquireTime": format_time(renewed, micro=True),
            "renewTime": format_time(renewed, micro=True), "leaseTransitions": 2}


def holder(store: Store) -> str | None:
    return None if store.lease is None else str(store.lease["holderIdentity"])


# 1. leading(): from when the renewal was sent, on the monotonic clock, at any moment.

def test_leading_counts_half_a_duration_from_when_the_renewal_was_sent(store: Store) -> None:
    mono = Mono()
    store.latency = lambda: setattr(mono, "t", mono.t + 3.0)  # answered 3 s after sent
    wall = [WALL]
    changes: list[tuple[bool, float]] = []
    me = replica("me", duration=10, monotonic=mono, wall=lambda: wall[0], changes=changes)
    assert not me.leading()
    asyncio.run(me._attempt())
    assert holder(store) == "me"
    assert me.active
    assert [held for held, _ in changes] == [True]
    assert mono.t == 103.0
    wall[0] = WALL - datetime.timedelta(hours=1)  # NTP steps the wall clock: no matter
    mono.t = 104.999
    assert me.leading()
    mono.t = 105.0  # the renewal was sent at 100: half of 10 s later, no longer
    assert not me.leading()  # exact at once, while nothing runs


def test_a_record_naming_another_holder_ends_leading_at_once(store: Store) -> None:
    mono = Mono()
    me = replica("me", monotonic=mono)
    asyncio.run(me._attempt())
    assert me.leading()
    store.put(held_by("other"))  # e.g. removed by hand and taken by another replica
    mono.t += 1
    asyncio.run(me._attempt())
    assert not me.leading()
    assert not me.active


# 2. Deadlines: a hanging renewal, and the pauses between attempts.

def lateness(me: Leadership, changes: list[tuple[bool, float]], valid_until: float) -> float:
    """How long after its validity ended the replica said it no longer leads."""
    downs = [at for held, at in changes if not held]
    assert downs, changes
    assert not me.leading()
    return downs[0] - valid_until


def test_a_renewal_that_hangs_steps_the_holder_down_when_its_validity_ends(
        store: Store) -> None:
    """Before, a renewal without an answer kept the replica active for up to twice the
    HTTP client's timeout (60 s), long after a standby had taken over."""
    changes: list[tuple[bool, float]] = []

    async def scenario() -> float:
        me = replica("me", duration=0.4, retry=0.05, changes=changes)
        task = asyncio.create_task(me.run())
        await asyncio.sleep(0.12)  # a few renewals
        assert me.leading()
        store.hang_for.add("me")
        valid_until = me._valid_until
        assert valid_until is not None
        await asyncio.sleep(0.4)
        still_hanging = store.reads["me"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert still_hanging >= 2  # the next attempt began: the hung one was given up
        return lateness(me, changes, valid_until)

    late = asyncio.run(scenario())
    assert 0 <= late < 0.08, late


def test_a_holder_steps_down_during_a_pause_not_at_its_next_attempt(store: Store) -> None:
    """Renewals fail at once; attempts are 0.24 s apart and the validity is 0.5 s: it ends
    between two attempts, and the replica says so then, not up to 0.24 s later."""
    changes: list[tuple[bool, float]] = []

    async def scenario() -> float:
        me = replica("me", duration=1.0, retry=0.24, changes=changes)
        task = asyncio.create_task(me.run())
        await asyncio.sleep(0.01)
        assert me.leading()
        valid_until = me._valid_until
        assert valid_until is not None
        store.fail_for.add("me")
        await asyncio.sleep(0.7)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return lateness(me, changes, valid_until)

    late = asyncio.run(scenario())
    assert 0 <= late < 0.08, late


def test_a_standby_attempt_that_hangs_is_given_up_after_about_half_a_duration(
        store: Store) -> None:
    async def scenario() -> tuple[int, bool]:
        me = replica("me", duration=0.4, retry=0.05)
        store.hang_for.add("me")
        task = asyncio.create_task(me.run())
        await asyncio.sleep(0.5)
        attempts = store.reads["me"]
        store.hang_for.clear()
        store.released.set()
        await asyncio.sleep(0.1)
        leads = me.leading()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return attempts, leads

    attempts, leads = asyncio.run(scenario())
    assert attempts >= 2  # 0.2 s each, then the next
    assert leads


# 3. A standby judges expiry on its own monotonic clock, from its first read.

@pytest.mark.parametrize("holder_clock", [-3600, 0, 3600])
def test_a_standby_takes_over_a_whole_duration_after_its_first_read(
        store: Store, holder_clock: int) -> None:
    """The holder's renewTime, behind or ahead of the standby's wall clock by an hour,
    plays no part; a replica that starts beside a Lease renewed long ago waits too."""
    store.put(held_by("other", renewed=WALL + datetime.timedelta(seconds=holder_clock)))
    mono = Mono()
    me = replica("me", duration=10, monotonic=mono)
    asyncio.run(me._attempt())
    assert not me.leading()
    mono.t += 9.99
    asyncio.run(me._attempt())
    assert not me.leading()
    assert holder(store) == "other"
    mono.t += 0.01
    asyncio.run(me._attempt())
    assert me.leading()
    assert holder(store) == "me"
    assert store.lease is not None
    assert store.lease["leaseTransitions"] == 3


def test_a_renewal_seen_starts_the_standbys_wait_again(store: Store) -> None:
    store.put(held_by("other"))
    mono = Mono()
    me = replica("me", duration=10, monotonic=mono)
    asyncio.run(me._attempt())
    mono.t += 9
    store.put(held_by("other", renewed=WALL + datetime.timedelta(seconds=9)))
    asyncio.run(me._attempt())  # seen at 9: unchanged since then only
    mono.t += 9.99
    asyncio.run(me._attempt())
    assert not me.leading()
    mono.t += 0.01
    asyncio.run(me._attempt())
    assert me.leading()


def test_a_standby_waits_the_duration_the_record_names(store: Store) -> None:
    store.put(held_by("other", duration=30))
    mono = Mono()
    me = replica("me", duration=10, monotonic=mono)
    asyncio.run(me._attempt())
    mono.t += 29.9
    asyncio.run(me._attempt())
    assert not me.leading()
    mono.t += 0.1
    asyncio.run(me._attempt())
    assert me.leading()


def test_a_free_or_own_lease_is_taken_at_once(store: Store) -> None:
    mono = Mono()
    store.put({**held_by("other"), "holderIdentity": ""})
    asyncio.run(replica("me", monotonic=mono)._attempt())
    assert holder(store) == "me"
    again = replica("me", monotonic=mono)  # this identity, restarted
    asyncio.run(again._attempt())
    assert again.leading()


# Both together: never two leaders, whatever the holder's trouble or the clocks.

@pytest.mark.parametrize("trouble", ["hang_for", "fail_for"])
def test_the_standby_leads_only_after_the_holder_stopped(store: Store, trouble: str) -> None:
    skew = datetime.timedelta(hours=1)  # the standby's wall clock is an hour ahead

    async def scenario() -> tuple[bool, bool]:
        a = replica("A", duration=0.4, retry=0.05)
        b = replica("B", duration=0.4, retry=0.05, wall=lambda: WALL + skew)
        ta = asyncio.create_task(a.run())
        await asyncio.sleep(0.05)
        assert a.leading()
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(0.1)
        getattr(store, trouble).add("A")
        overlap = False
        for _ in range(240):  # three durations
            await asyncio.sleep(0.005)
            overlap = overlap or (a.leading() and b.leading()) or (a.active and b.active)
        led = b.leading() and b.active and not a.active
        ta.cancel()
        tb.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
        return overlap, led

    overlap, led = asyncio.run(scenario())
    assert not overlap
    assert led


def test_a_retry_period_as_long_as_the_validity_does_not_make_the_holder_flap(
        store: Store) -> None:
    """LEASE_DURATION 1 s: the operator retries every 0.5 s, as long as a renewal stays
    valid. The holder renews every quarter duration instead, and leads throughout."""
    changes: list[tuple[bool, float]] = []

    async def scenario() -> None:
        me = replica("me", duration=1.0, retry=0.5, changes=changes)
        task = asyncio.create_task(me.run())
        await asyncio.sleep(1.6)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert [held for held, _ in changes] == [True, False]  # the False: cancelled at the end


def test_a_standby_tries_again_the_moment_the_lease_it_saw_may_be_taken(
        store: Store) -> None:
    """Retrying every 0.3 s, it would ask at 1.2 s for a Lease of 1 s; it asks at 1.0 s:
    failover is at most one duration plus the retry period it took to see the record."""
    store.put(held_by("gone", duration=1))
    changes: list[tuple[bool, float]] = []

    async def scenario() -> float:
        me = replica("me", duration=1.0, retry=0.3, changes=changes)
        started = time.monotonic()
        task = asyncio.create_task(me.run())
        await asyncio.sleep(1.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return started

    started = asyncio.run(scenario())
    took = changes[0][1] - started
    assert changes[0][0]
    assert 1.0 <= took < 1.1, took



def test_a_standby_whose_take_over_fails_waits_a_retry_period(store: Store) -> None:
    """Its moment to take the Lease has passed and the API server fails: it asks again a
    retry period later, not again and again without a pause."""
    store.put(held_by("gone", duration=1))

    async def scenario() -> int:
        me = replica("me", duration=1.0, retry=0.2)
        task = asyncio.create_task(me.run())
        await asyncio.sleep(0.9)
        store.fail_for.add("me")
        before = store.reads["me"]
        await asyncio.sleep(0.5)  # its moment came at 1.0 s
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return store.reads["me"] - before

    assert asyncio.run(scenario()) <= 4
