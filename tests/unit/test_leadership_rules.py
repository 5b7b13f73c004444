"""Leadership's rules in time: the holder leads for half a duration after its last renewal
was sent (monotonic clock), steps down when that ends even while a renewal hangs, and a
standby takes over only once the Lease record stayed unchanged for a whole duration on its
own clock. Fake Lease calls; where the event loop must run, it runs on virtual time (no
wall-clock speed in any assertion: each change is checked at its exact virtual moment)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import pytest

from evc_operator import kube
from evc_operator.leadership import Leadership, LeaseSettings
from evc_operator.timestamps import format_time
from tests.unit.support import VirtualTime, on_virtual_time

WALL = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
READS_AT_MOST = 1000  # per identity: more is a replica asking without a pause


class Runaway(BaseException):
    """Raised by the fake read past READS_AT_MOST: not an Exception, so the replica does
    not take it for a failed request; it ends its task instead of spinning forever."""


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
        if store.reads[api] > READS_AT_MOST:
            raise Runaway(f"{api} read the Lease {store.reads[api]} times")
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


class Mono(VirtualTime):
    """A monotonic clock the test sets; under `on_virtual_time`, also the event loop's."""

    def __init__(self) -> None:
        super().__init__(100.0)


def replica(identity: str, duration: float = 10.0, retry: float = 2.0, *,
            monotonic: Callable[[], float],
            wall: Callable[[], datetime.datetime] = lambda: WALL,
            changes: list[tuple[bool, float]] | None = None) -> Leadership:
    settings = LeaseSettings(name="evc-operator", namespace="ops", identity=identity,
                             duration=duration, retry=retry)

    def on_change(held: bool) -> None:
        if changes is not None:
            changes.append((held, monotonic()))

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


async def until(clock: Mono, moment: float) -> None:
    """Sleep until the virtual `moment` (the tests pick moments no replica acts at)."""
    await asyncio.sleep(moment - clock.t)
    assert clock.t == pytest.approx(moment)


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results), results


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

def test_a_renewal_that_hangs_steps_the_holder_down_when_its_validity_ends(
        store: Store) -> None:
    """Before, a renewal without an answer kept the replica active for up to twice the
    HTTP client's timeout (60 s), long after a standby had taken over. Renewals every
    second; the one sent at 103 s hangs: the validity of the one sent at 102 s ends at
    106 s, and the replica steps down then, not when the request gives up."""
    mono = Mono()
    changes: list[tuple[bool, float]] = []

    async def scenario() -> None:
        me = replica("me", duration=8, retry=1, monotonic=mono, changes=changes)
        task = asyncio.create_task(me.run())
        await until(mono, 102.5)  # renewed at 100, 101 and 102 s
        assert me.leading()
        assert store.reads["me"] == 3
        assert me._valid_until == 106.0
        store.hang_for.add("me")
        await until(mono, 108.0)
        assert changes == [(True, 100.0), (False, 106.0)]
        assert not me.leading()
        assert store.reads["me"] == 5  # the next attempt began at 107 s: the hung one ended
        await stop(task)

    on_virtual_time(mono, scenario())


def test_a_holder_steps_down_during_a_pause_not_at_its_next_attempt(store: Store) -> None:
    """Renewals fail at once; attempts are 1.5 s apart (at 101.5, 103, 104.5 s) and the
    validity ends at 104 s, between two attempts: the replica says so then, not 0.5 s
    later at its next attempt."""
    mono = Mono()
    changes: list[tuple[bool, float]] = []

    async def scenario() -> None:
        me = replica("me", duration=8, retry=1.5, monotonic=mono, changes=changes)
        task = asyncio.create_task(me.run())
        await until(mono, 100.25)
        assert me.leading()
        assert me._valid_until == 104.0
        store.fail_for.add("me")
        await until(mono, 105.0)
        assert changes == [(True, 100.0), (False, 104.0)]
        assert store.reads["me"] == 4  # at 100, 101.5, 103 and 104.5 s
        await stop(task)

    on_virtual_time(mono, scenario())


def test_a_standby_attempt_that_hangs_is_given_up_after_half_a_duration(
        store: Store) -> None:
    """The first attempt, at 100 s, hangs: it is given up at 104 s (half of 8 s), and the
    next one begins a retry period later, at 105 s; once the API server answers, the
    replica takes the missing Lease."""
    mono = Mono()
    changes: list[tuple[bool, float]] = []

    async def scenario() -> None:
        me = replica("me", duration=8, retry=1, monotonic=mono, changes=changes)
        store.hang_for.add("me")
        task = asyncio.create_task(me.run())
        await until(mono, 104.75)
        assert store.reads["me"] == 1
        await until(mono, 105.25)
        assert store.reads["me"] == 2
        store.hang_for.clear()
        store.released.set()
        await until(mono, 105.5)
        assert me.leading()
        assert changes == [(True, 105.25)]
        assert holder(store) == "me"
        await stop(task)

    on_virtual_time(mono, scenario())


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



@pytest.mark.parametrize("how", ["deleted", "freed"])
def test_a_lease_deleted_or_freed_under_a_holder_is_taken_a_duration_later(
        store: Store, how: str) -> None:
    """B stands by A. Someone deletes the Lease (or empties its holder): A may lead on its
    last renewal, so B takes it only once it stayed so for A's duration; A, still
    running, takes it back at once."""
    mono = Mono()
    a = replica("A", duration=10, monotonic=mono)
    b = replica("B", duration=10, monotonic=mono)
    asyncio.run(a._attempt())
    asyncio.run(b._attempt())
    assert a.leading()
    assert not b.leading()

    def remove() -> None:
        if how == "deleted":
            store.lease = None
        else:
            store.put({**held_by("A"), "holderIdentity": ""})

    remove()
    mono.t += 0.5
    asyncio.run(b._attempt())
    assert a.leading()
    assert not b.leading()  # never two leaders
    mono.t += 9.99  # a duration from when B first read it gone
    asyncio.run(b._attempt())
    assert not b.leading()
    mono.t += 0.01
    asyncio.run(b._attempt())
    assert b.leading()
    assert not a.leading()  # its validity (5 s) ended long before

    asyncio.run(b._attempt())  # B renews: it has read its own record since
    remove()  # and now under B, which is running: it takes it back at once
    asyncio.run(b._attempt())
    assert b.leading()
    assert holder(store) == "B"


# Both together: never two leaders, whatever the holder's trouble or the clocks.

@pytest.mark.parametrize("trouble", ["hang_for", "fail_for"])
def test_the_standby_leads_only_after_the_holder_stopped(store: Store, trouble: str) -> None:
    """A renews every second; from 103 s its requests hang or fail. Its validity (from the
    renewal sent at 102 s) ends at 106 s; B last saw the record change at 102.5 s and
    takes the Lease a whole duration later, at 110.5 s."""
    mono = Mono()
    skew = datetime.timedelta(hours=1)  # the standby's wall clock is an hour ahead
    changes_a: list[tuple[bool, float]] = []
    changes_b: list[tuple[bool, float]] = []

    async def scenario() -> None:
        a = replica("A", duration=8, retry=1, monotonic=mono, changes=changes_a)
        b = replica("B", duration=8, retry=1, monotonic=mono, wall=lambda: WALL + skew,
                    changes=changes_b)
        ta = asyncio.create_task(a.run())
        await until(mono, 100.5)
        assert a.leading()
        tb = asyncio.create_task(b.run())
        await until(mono, 102.25)
        getattr(store, trouble).add("A")
        overlap: list[float] = []
        for _ in range(240):  # three durations, looked at every 0.1 s
            await asyncio.sleep(0.1)
            if (a.leading() and b.leading()) or (a.active and b.active):
                overlap.append(mono.t)
        assert overlap == []
        assert changes_a == [(True, 100.0), (False, 106.0)]
        assert changes_b == [(True, 110.5)]
        assert b.leading()
        assert b.active
        assert not a.active
        await stop(ta, tb)

    on_virtual_time(mono, scenario())


def test_a_retry_period_as_long_as_the_validity_does_not_make_the_holder_flap(
        store: Store) -> None:
    """LEASE_DURATION 1 s: the operator retries every 0.5 s, as long as a renewal stays
    valid. The holder renews every quarter duration instead, and leads throughout."""
    mono = Mono()
    changes: list[tuple[bool, float]] = []

    async def scenario() -> None:
        me = replica("me", duration=1.0, retry=0.5, monotonic=mono, changes=changes)
        task = asyncio.create_task(me.run())
        await until(mono, 101.6)
        assert changes == [(True, 100.0)]
        assert me.leading()
        assert store.reads["me"] == 7  # at 100, 100.25, ... 101.5 s
        await stop(task)

    on_virtual_time(mono, scenario())
    assert [held for held, _ in changes] == [True, False]  # the False: stopped at the end


def test_a_standby_tries_again_the_moment_the_lease_it_saw_may_be_taken(
        store: Store) -> None:
    """Retrying every 3 s, it would ask at 9 s for a Lease of 8 s; it asks at 8 s:
    failover is at most one duration plus the retry period it took to see the record."""
    store.put(held_by("gone", duration=8))
    mono = Mono()
    changes: list[tuple[bool, float]] = []

    async def scenario() -> None:
        me = replica("me", duration=8, retry=3, monotonic=mono, changes=changes)
        task = asyncio.create_task(me.run())
        await until(mono, 108.5)
        assert changes == [(True, 108.0)]
        assert store.reads["me"] == 4  # at 100, 103, 106 and 108 s
        await stop(task)

    on_virtual_time(mono, scenario())


def test_a_standby_whose_take_over_fails_waits_a_retry_period(store: Store) -> None:
    """Its moment to take the Lease has passed and the API server fails: it asks again a
    retry period later, not again and again without a pause."""
    store.put(held_by("gone", duration=8))
    mono = Mono()

    async def scenario() -> None:
        me = replica("me", duration=8, retry=3, monotonic=mono)
        task = asyncio.create_task(me.run())
        await until(mono, 107.0)
        store.fail_for.add("me")
        before = store.reads["me"]
        await until(mono, 115.5)  # its moment came at 108 s
        assert store.reads["me"] - before == 3  # at 108, 111 and 114 s
        assert not me.leading()
        await stop(task)

    on_virtual_time(mono, scenario())
