"""Short watches that prove an informer current (barrier.py), shared and opened ahead, against
a scripted API whose watches the test feeds (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from evc_operator import barrier, errors, informer, proof
from evc_operator import watched as watching
from evc_operator.users import PodView, pod_view
from tests.unit.support import settle
from tests.unit.test_informer import pod


class FedApi:
    """An informer.Source whose watches yield what the test puts in their queues."""

    def __init__(self, now: int = 40) -> None:
        self.now = now  # the collection's resourceVersion for a consistent read
        self.watches: list[asyncio.Queue[Any]] = []
        self.opened: list[str] = []

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        raise AssertionError("not listed in these tests")

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.watches.append(queue)
        self.opened.append(f"from {resource_version} for {seconds} s")
        while (step := await queue.get()) is not None:
            if isinstance(step, BaseException):
                raise step
            yield step

    async def collection_version(self, kind: str, namespace: str) -> int:
        return self.now

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        return [pod_view(pod("listed", "x"))], self.now


def bookmark(version: int) -> tuple[str, dict[str, Any]]:
    return "BOOKMARK", {"metadata": {"resourceVersion": str(version)}}


def held(api: FedApi, version: int = 30) -> informer.Informer[PodView]:
    subject = informer.Informer(api, "pods", "jobs", pod_view, lambda *_: None, lambda: None)
    subject.items = {"old": pod_view(pod("old", "x"))}
    subject.version, subject.synced = version, True
    return subject


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_barrier_proves_a_version_asked_after_it_opened_with_the_changes_it_saw() -> None:
    async def scenario() -> None:
        api = FedApi()
        subject = held(api)
        opened = barrier.Barrier(api, subject)
        await settle()
        subject.items["later"] = pod_view(pod("later", "x"))  # the informer's own, not its
        api.watches[0].put_nowait(("ADDED", pod("newcomer", "x", version="35")))
        await settle()
        waiting = opened.reached(40)
        await settle()
        assert not waiting.done()  # 35 is short of 40
        api.watches[0].put_nowait(("ADDED", pod("after", "x", version="45")))
        await settle()
        proven = waiting.result()
        assert proven is not None
        assert sorted(view.name for view in proven.items) == ["after", "newcomer", "old"]
        assert proven.last == 35  # the last change at or before 40: the live index needs it
        assert api.opened == ["from 30 for 3 s"]
        api.watches[0].put_nowait(None)
        await opened.task

    asyncio.run(scenario())


def test_a_barrier_watches_from_the_version_of_its_copy_whatever_the_informer_applies_next(
        ) -> None:
    # The watch starts when its task first runs; the informer may apply a change before:
    # that change is not in the copy, so the watch must bring it (from the copy's version).
    async def scenario() -> None:
        api = FedApi()
        subject = held(api)
        opened = barrier.Barrier(api, subject)
        subject.items["newcomer"] = pod_view(pod("newcomer", "x", version="35"))
        subject.version = 35
        await settle()
        assert api.opened == ["from 30 for 3 s"]
        api.watches[0].put_nowait(("ADDED", pod("newcomer", "x", version="35")))
        api.watches[0].put_nowait(bookmark(41))
        proven = await opened.reached(40)
        assert proven is not None
        assert sorted(view.name for view in proven.items) == ["newcomer", "old"]

    asyncio.run(scenario())


def test_a_bookmark_short_of_the_version_proves_nothing_and_ends_the_barrier() -> None:
    async def scenario() -> None:
        api = FedApi()
        opened = barrier.Barrier(api, held(api))
        waiting = opened.reached(40)
        await settle()
        api.watches[0].put_nowait(bookmark(38))  # the timer ticked before the read
        await settle()
        assert waiting.result() is None
        assert opened.ended  # a watch gets one bookmark: nothing more to wait for
        assert opened.reached(38).result() is not None  # what it reached, it proves
        assert opened.reached(39).result() is None

    asyncio.run(scenario())


def test_a_bookmark_that_came_before_the_version_was_asked_proves_it_if_past_it() -> None:
    async def scenario() -> None:
        api = FedApi()
        opened = barrier.Barrier(api, held(api))
        await settle()
        api.watches[0].put_nowait(bookmark(41))
        await settle()
        proven = opened.reached(40).result()
        assert proven is not None
        assert proven.last is None
        assert [view.name for view in proven.items] == ["old"]

    asyncio.run(scenario())


@pytest.mark.parametrize("ending", [None, errors.Gone("too old"), OSError("reset")])
def test_a_watch_that_ends_short_gives_none_to_whoever_waits(
        ending: BaseException | None) -> None:
    async def scenario() -> None:
        api = FedApi()
        opened = barrier.Barrier(api, held(api))
        waiting = opened.reached(40)
        await settle()
        api.watches[0].put_nowait(ending)
        await settle()
        assert waiting.result() is None
        assert opened.ended

    asyncio.run(scenario())


def test_a_proof_shares_a_barrier_opened_in_the_last_half_second_and_opens_its_own_after(
        ) -> None:
    async def scenario() -> None:
        api, ticks = FedApi(), Ticks()
        pool = barrier.Barriers(api, clock=ticks)
        subject = held(api)
        pool.anticipate([subject])
        assert len(pool.for_proof(subject)) == 1  # the one just opened serves
        ticks.now += barrier.REUSE_SECONDS
        assert len(pool.for_proof(subject)) == 2  # a second later: both, as the pair needs
        assert len(pool) == 2
        await settle()
        api.watches[0].put_nowait(bookmark(31))
        await settle()
        assert len(pool) == 1  # ended: forgotten
        waiting = pool.for_proof(subject)[0].reached(40)
        await pool.close()
        assert waiting.result() is None
        assert len(pool) == 0

    asyncio.run(scenario())


def test_a_proof_ends_at_the_bookmark_of_a_watch_opened_a_second_ahead() -> None:
    # The watch opened at the read waits for the next bucket; the one opened ahead is
    # due first, and its bookmark, past the read, proves the namespace current.

    async def scenario() -> None:
        api, ticks = FedApi(now=40), Ticks()
        watched = watching.Watched(api, pods_changed=lambda ns, c, _: None,
                                   pvc_changed=lambda key: None,
                                   namespace_synced=lambda ns: None)
        watched.pods["jobs"] = subject = held(api)
        prover = proof.Prover(watched, clock=ticks)
        prover.anticipate("jobs")
        await settle()
        api.watches[0].put_nowait(("ADDED", pod("newcomer", "x", version="35")))
        ticks.now += 1
        subject.version = 33  # the informer moved on meanwhile, short of the newcomer
        proving = asyncio.ensure_future(prover("jobs"))
        await settle()
        assert api.opened == ["from 30 for 3 s", "from 33 for 3 s"]
        assert not proving.done()
        api.watches[0].put_nowait(bookmark(41))
        snapshot = await asyncio.wait_for(proving, 1)
        assert sorted(view.name for view in snapshot.pods) == ["newcomer", "old"]
        assert not snapshot.live()  # until the informer itself has the newcomer
        subject.version = 35
        assert snapshot.live()
        await prover.close()

    asyncio.run(scenario())


def test_small_kinds_are_anticipated_too_and_namespaces_not_watched_are_not() -> None:
    """A kind of one pod is proven by a bookmark as any other (no list is proof), so its
    watch is opened ahead as well."""
    async def scenario() -> None:
        api = FedApi()
        watched = watching.Watched(api, pods_changed=lambda ns, c, _: None,
                                   pvc_changed=lambda key: None,
                                   namespace_synced=lambda ns: None)
        watched.pods["jobs"] = held(api)  # one pod
        prover = proof.Prover(watched)
        prover.anticipate("jobs")
        assert len(prover.barriers) == 1
        prover.anticipate("elsewhere")  # not watched at all
        assert len(prover.barriers) == 1
        await prover.close()

    asyncio.run(scenario())
