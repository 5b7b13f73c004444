"""A quiet namespace with empty workload kinds is proven by bookmarks and stays `live`:
no full list, and the live index decides (a proof that is not live has each wave of
deletions index the proof's copy of the namespace's pods again). Per namespace, and with
the workloads watched once for the cluster, whose short watches the namespaces share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from evc_operator import proof
from evc_operator import watched as watching
from evc_operator.barrier import WATCH_SECONDS
from evc_operator.users import PodView
from evc_operator.workloads import KINDS, collection


class QuietApi:
    """Nothing changes; the informers' watches bring nothing, a short watch a bookmark
    just past the cluster's version."""

    def __init__(self) -> None:
        self.now = 10
        self.calls: list[str] = []

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        self.calls.append(f"list {kind} in {namespace or 'all'}")
        return str(self.now)

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch {kind} in {namespace or 'all'} for {seconds} s")
        if seconds > WATCH_SECONDS:
            await asyncio.Event().wait()
        await asyncio.sleep(0.01)
        yield "BOOKMARK", {"metadata": {"resourceVersion": str(self.now + 1)}}

    async def collection_version(self, kind: str, namespace: str) -> int:
        return self.now

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        self.calls.append("full list")
        return [], self.now


@pytest.mark.parametrize("shared", [False, True], ids=["per namespace", "shared"])
def test_quiet_empty_kinds_are_proven_by_bookmarks_and_stay_live(shared: bool) -> None:
    async def scenario() -> list[str]:
        api = QuietApi()
        watched = watching.Watched(api, pods_changed=lambda *_: None,
                                   pvc_changed=lambda key: None,
                                   namespace_synced=lambda namespace: None)
        if shared:
            watched.share_workloads()
        for namespace in ("a", "b"):
            watched.ensure(namespace)
        for _ in range(50):
            await asyncio.sleep(0)
        assert watched.synced("a")
        api.now = 20  # the cluster moved on elsewhere
        prover = proof.Prover(watched)
        api.calls.clear()
        snapshot = await prover("a")
        assert snapshot.live()
        assert "full list" not in api.calls
        await prover.close()
        await watched.close()
        return [call for call in api.calls if call.startswith("watch")]

    short = asyncio.run(scenario())
    scope = "all" if shared else "a"
    assert sorted(short) == sorted(["watch pods in a for 3 s",
                                    *(f"watch {collection(kind)} in {scope} for 3 s"
                                      for kind in KINDS)])
