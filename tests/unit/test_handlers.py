"""What the operator asks of Kopf at start-up, without a cluster."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.clients import watching
from kopf._core.reactor import queueing
from kopf._core.reactor.inventory import ResourceMemories

from evc_operator import access, errors, handlers, kopffeed, served
from evc_operator.settings import Settings
from tests.unit.fakes import FakeApi, evc_body, make, offline
from tests.unit.test_kopffeed import CLAIMS


def test_start_pages_kopfs_initial_lists_and_lets_idle_workers_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    offline(monkeypatch)
    settings = kopf.OperatorSettings()
    memo = kopf.Memo()

    kept: list[int] = []
    fed_directly: list[bool] = []

    async def scenario() -> None:
        # Kopf's decorators type handlers as Kopf calls them, with every keyword.
        start: Any = handlers.start
        stop: Any = handlers.stop
        await start(settings=settings, memo=memo, logger=logging.getLogger("test"))
        fed_directly.append(queueing.watcher is not kopffeed._KOPFS)
        memories = ResourceMemories()
        await memories.recall(cast(Any, evc_body()))
        kept.append(len(list(memories.iter_all_memories())))
        await stop(memo=memo)
        fed_directly.append(queueing.watcher is not kopffeed._KOPFS)
        await memories.recall(cast(Any, evc_body()))
        kept.append(len(list(memories.iter_all_memories())))

    asyncio.run(scenario())
    assert settings.watching.chunk_size == handlers.LIST_CHUNK
    assert settings.watching.initial_streaming  # claims listed as a stream: no pages
    assert settings.queueing.idle_timeout == handlers.WORKER_IDLE_SECONDS < 5.0
    assert kept == [0, 1]  # Kopf keeps no memory per claim while running (kopfmemory.py)
    assert fed_directly == [True, False]  # claims' events skip Kopf's workers (kopffeed.py)
    # Pods and PVCs are read by the operator's own informers, never through Kopf.
    assert [handler for handler in kopf.get_default_registry()._indexing.get_all_handlers()
            ] == []


class _Watched:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def ensure(self, namespace: str) -> None:
        self.calls.append(f"ensure {namespace}")

    def release(self, namespace: str) -> None:
        self.calls.append(f"release {namespace}")


class _Access:
    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, permissions: list[access.Permission], namespace: str = "") -> None:
        assert permissions is access.NAMESPACED
        self.checked.append(namespace)


def test_a_namespace_is_released_when_its_last_claim_is_deleted() -> None:
    scheduler, _ = make(FakeApi([]), [])
    memo = kopf.Memo()
    watched = _Watched()
    memo.scheduler, memo.watched, memo.access = scheduler, watched, _Access()
    other = evc_body()
    other["metadata"]["name"] = "second"
    event: Any = handlers.evc_event

    async def scenario() -> None:
        await event(type="ADDED", body=kopf.Body(cast(Any, other)), memo=memo)
        await event(type="DELETED", body=kopf.Body(cast(Any, evc_body())), memo=memo)
        assert watched.calls == ["ensure jobs"]  # "second" still lives there
        await event(type="DELETED", body=kopf.Body(cast(Any, other)), memo=memo)

    asyncio.run(scenario())
    assert watched.calls == ["ensure jobs", "release jobs"]
    assert memo.access.checked == ["jobs"]  # its permissions, asked as its claim came


def test_claims_missing_from_a_list_again_are_forgotten_and_their_namespace_released() -> None:
    """After 410 Gone Kopf lists the claims again: one deleted while the watch was away is
    in no list and no DELETED event comes. Kept, it was looked at again, its PVC (taken by
    the garbage collector) made anew for a claim that is gone, PvcRecreated said of it, and
    its status writes refused (404) for as long as a user lived (a review). But a streamed
    list cut short is resumed and said listed too: a claim missing is read first."""
    fake = FakeApi([])
    scheduler, _ = make(fake, [])
    memo = kopf.Memo()
    watched = _Watched()
    memo.scheduler, memo.watched, memo.access = scheduler, watched, _Access()
    elsewhere = evc_body()
    elsewhere["metadata"].update(namespace="other", name="kept")
    handlers.claim_event(memo, None, elsewhere)
    stored: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def read_evc(namespace: str, name: str) -> dict[str, Any] | None:
        fake.calls.append(f"read {namespace}/{name}")
        return stored.get((namespace, name))

    fake.read_evc = read_evc  # type: ignore[method-assign]
    asyncio.run(handlers.claims_listed(memo, "jobs", {("jobs", "scratch")}))  # all there
    assert set(scheduler.claims) == {("jobs", "scratch"), ("other", "kept")}
    assert fake.calls == []
    stored[("jobs", "scratch")] = evc_body()  # a list cut short: still there, read
    asyncio.run(handlers.claims_listed(memo, "jobs", set()))
    assert set(scheduler.claims) == {("jobs", "scratch"), ("other", "kept")}
    assert fake.calls == ["read jobs/scratch"]
    stored.clear()  # deleted while the watch was away
    asyncio.run(handlers.claims_listed(memo, "jobs", set()))
    assert set(scheduler.claims) == {("other", "kept")}  # another namespace's: not this list's
    assert watched.calls == ["ensure other", "ensure jobs", "release jobs"]
    asyncio.run(handlers.claims_listed(memo, None, {("jobs", "new")}))  # every namespace's
    assert set(scheduler.claims) == set()
    assert watched.calls[-1] == "release other"


def test_a_claim_missing_from_a_list_that_cannot_be_read_is_kept_and_read_until_it_can_be(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept while its reads fail, and read again (past `READ_RETRY`, every last of them)
    until one answers: given up after three, a claim deleted meanwhile stayed tracked
    until a later list, its PVC made anew for a claim that was gone."""
    monkeypatch.setattr(kopffeed, "READ_RETRY", (0.0, 0.0))
    fake = FakeApi([])
    scheduler, _ = make(fake, [])
    failures = [errors.ApiException(500, "etcdserver: request timed out")] * 5

    async def read_evc(namespace: str, name: str) -> dict[str, Any] | None:
        fake.calls.append("read_evc")
        if failures:
            raise failures.pop()
        return None  # it was deleted while the watch was away

    fake.read_evc = read_evc  # type: ignore[method-assign]
    memo = kopf.Memo()
    memo.scheduler, memo.watched, memo.access = scheduler, _Watched(), _Access()
    asyncio.run(handlers.claims_listed(memo, "jobs", set()))
    assert fake.calls.count("read_evc") == 6
    assert set(scheduler.claims) == set()


def test_a_streamed_list_cut_short_and_resumed_forgets_no_claim_that_exists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf (with initial streaming, Kubernetes 1.34 and later) resumes a stream cut before
    its bookmark as a watch from the last object's version, and says it listed at that
    watch's first bookmark: with only the claims streamed so far (a review)."""
    fake = FakeApi([])
    scheduler, _ = make(fake, [])  # tracks jobs/scratch

    def claim(name: str, version: str) -> dict[str, Any]:
        body = evc_body()
        body["metadata"].update(name=name, resourceVersion=version, uid=f"uid-{name}")
        return body

    for name in ("a", "b", "c"):  # tracked from the stream before 410 Gone
        scheduler.observe_evc(None, claim(name, "20"))
    stored = {name: claim(name, "20") for name in ("a", "b", "c")}
    stored["scratch"] = evc_body()

    async def read_evc(namespace: str, name: str) -> dict[str, Any] | None:
        return stored.get(name)

    fake.read_evc = read_evc  # type: ignore[method-assign]
    memo = kopf.Memo()
    memo.scheduler, memo.watched, memo.access = scheduler, _Watched(), _Access()
    calls: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    async def watch_objs(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:  # the stream again after 410 Gone, cut after two objects
            yield {"type": "ADDED", "object": claim("a", "30")}
            yield {"type": "ADDED", "object": claim("b", "31")}
            return
        if len(calls) == 2:  # resumed from b's version: nothing changed since
            assert kwargs["since"] == "31"
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "40"}}}
            return
        await asyncio.sleep(0.05)  # the list is told in a task of its own meanwhile
        raise Stop

    monkeypatch.setattr(watching, "watch_objs", watch_objs)
    settings = kopf.OperatorSettings()
    settings.watching.initial_streaming = True
    listed: list[set[tuple[str, str]]] = []

    async def on_listed(namespace: str | None, keys: set[tuple[str, str]]) -> None:
        listed.append(set(keys))
        await handlers.claims_listed(memo, namespace, keys)

    async def run() -> None:
        with pytest.raises(Stop):
            await kopffeed.stream(lambda kind, body: handlers.claim_event(memo, kind, body),
                                  namespace="jobs", settings=settings,
                                  resource=CLAIMS, listed=on_listed)

    asyncio.run(run())
    assert listed == [{("jobs", "a"), ("jobs", "b")}]  # Kopf's "listed": two of four
    assert set(scheduler.claims) == {("jobs", name) for name in ("a", "b", "c", "scratch")}


def _uid_body(uid: str, version: str) -> dict[str, Any]:
    body = evc_body()
    body["metadata"].update(uid=uid, resourceVersion=version)
    body["spec"]["expiryPeriod"] = "1h"  # not due: reconciled, not deleted
    return body


def test_a_read_answered_before_a_delete_and_make_again_puts_no_gone_claim_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The list lacks jobs/scratch (a streamed list cut short); its read is served while
    the old claim (evc-uid) still exists, and its answer comes after the stream saw it
    deleted and made again (uid-2). Fed as listed, the old body replaced the claim that
    exists, the new one's DELETED was then ignored (another uid than held), and a claim
    that is gone stayed tracked, its PVC made again and again (a review)."""
    key = ("jobs", "scratch")
    fake = FakeApi([])
    scheduler, _ = make(fake, [])  # tracks jobs/scratch, uid evc-uid
    memo = kopf.Memo()
    memo.scheduler, memo.watched, memo.access = scheduler, _Watched(), _Access()
    served = asyncio.Event()
    answer = asyncio.Event()

    async def read_evc(namespace: str, name: str) -> dict[str, Any] | None:
        old = _uid_body("evc-uid", "10")  # served now: the old claim is there
        served.set()
        await answer.wait()  # its answer on the way while the stream goes on
        return old

    fake.read_evc = read_evc  # type: ignore[method-assign]

    async def infinite_watch(**kwargs: Any) -> Any:
        yield watching.Bookmark.LISTED  # a list that lacks jobs/scratch
        await served.wait()
        yield {"type": "DELETED", "object": _uid_body("evc-uid", "11")}
        yield {"type": "ADDED", "object": _uid_body("uid-2", "12")}
        answer.set()
        await asyncio.sleep(0.05)  # the read's answer taken in
        yield {"type": "DELETED", "object": _uid_body("uid-2", "13")}  # the new one deleted too

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    seen: list[str | None] = []

    def feed(kind: str | None, body: Any) -> None:
        handlers.claim_event(memo, kind, body)
        held = scheduler.claims.get(key)
        seen.append(held.view.uid if held else None)

    async def listed(namespace: str | None, keys: set[tuple[str, str]]) -> None:
        await handlers.claims_listed(memo, namespace, keys)
        held = scheduler.claims.get(key)
        seen.append(f"after read: {held.view.uid if held else None}")

    asyncio.run(kopffeed.stream(feed, namespace="jobs", settings=object(), resource=CLAIMS,
                                listed=listed))
    # The claim that exists after the ADDED is uid-2; the read's old answer must not put
    # evc-uid (deleted) back in its place.
    assert seen[1] == "uid-2"
    assert seen[2] == "after read: uid-2", seen
    assert scheduler.claims.get(key) is None  # no claim that is gone tracked


@pytest.mark.parametrize(("version", "streams"), [
    ({"major": "1", "minor": "37", "gitVersion": "v1.37.2"}, True),
    ({"major": "1", "minor": "34"}, True),
    ({"major": "1", "minor": "34+"}, True),  # as some providers spell it
    ({"major": "1", "minor": "33"}, False),
    ({"major": "2", "minor": "0"}, True),
    ({"major": "", "minor": ""}, False),
    ({}, False),
])
def test_claims_are_listed_as_a_stream_where_the_api_server_serves_one(
        version: dict[str, str], streams: bool) -> None:
    assert served.streams_lists(version) is streams


def test_with_leader_election_every_write_asks_the_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler's writes ask Leadership.leading (gate.py), not only its `active`."""
    offline(monkeypatch, Settings(metrics_port=0, leader_election=True, lease_namespace="ops"))
    memo = kopf.Memo()
    wired: list[bool] = []

    async def scenario() -> None:
        start: Any = handlers.start
        stop: Any = handlers.stop
        await start(settings=kopf.OperatorSettings(), memo=memo,
                     logger=logging.getLogger("test"))
        wired.append(memo.scheduler.leading == memo.leadership.leading)
        wired.append(memo.scheduler.may_act())  # standing by until the Lease is held
        await stop(memo=memo)

    asyncio.run(scenario())
    assert wired == [True, False]
