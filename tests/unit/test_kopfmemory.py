"""Kopf's per-object memory made ephemeral (kopfmemory.py): nothing kept per claim, and
only where no handler reads it back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.structs.ephemera import AnyMemo
from kopf._core.intents.registries import OperatorRegistry
from kopf._core.reactor.inventory import ResourceMemories

from evc_operator import handlers, kopfmemory
from tests.unit.fakes import evc_body


@pytest.fixture(autouse=True)
def _kopfs_own_after() -> Iterator[None]:
    yield
    kopfmemory.uninstall()


def _kept(memories: ResourceMemories) -> int:
    return len(list(memories.iter_all_memories()))


def test_installed_no_memory_is_kept_and_each_event_gets_a_fresh_one() -> None:
    registry = OperatorRegistry()
    body: Any = evc_body()
    memo = AnyMemo(kopf.Memo(shared="the operator's"))

    async def scenario() -> None:
        memories = ResourceMemories()
        assert kopfmemory.install(registry)
        first = await memories.recall(body, memobase=memo)
        second = await memories.recall(body, memobase=memo)
        assert first is not second
        seen: Any = second.memo
        assert seen.shared == "the operator's"  # the operator's memo, as before
        assert _kept(memories) == 0
        kopfmemory.uninstall()
        assert await memories.recall(body) is await memories.recall(body)
        assert _kept(memories) == 1

    asyncio.run(scenario())


def test_a_registry_with_a_timer_keeps_kopfs_memory(caplog: pytest.LogCaptureFixture) -> None:
    registry = OperatorRegistry()

    @kopf.timer("zalando.org", "v1", "ephemeralvolumeclaims", interval=1, registry=registry)
    def tick(**_: Any) -> None:
        pass

    assert not kopfmemory.only_event_handlers(registry)
    assert not kopfmemory.install(registry)
    assert "memory is kept" in caplog.text

    async def scenario() -> None:
        memories = ResourceMemories()
        await memories.recall(evc_body())  # type: ignore[arg-type]
        assert _kept(memories) == 1

    asyncio.run(scenario())


def test_the_operators_handlers_are_event_handlers_only() -> None:
    """What makes the ephemeral memory safe: adding a daemon, timer, index or
    change-detecting handler fails here first (and kopfmemory would keep Kopf's memory)."""
    assert handlers.evc_event is not None
    assert kopfmemory.only_event_handlers(kopf.get_default_registry())
