"""Kopf's per-object memory, not kept: the operator's handlers never read it back.

Kopf keeps a `ResourceMemory` for every object it has seen an event of, until the
object is deleted: a per-object copy of the memo, an error throttler, and the state of
daemons, timers, indexes and change-detecting handlers (nested dataclasses, about 1 KiB
an object). At 10,000 claims that is about 10 MiB held for the operator's lifetime.

The operator uses none of it. Its Kopf handlers are `on.event` only (handlers.py): no
daemon, timer, index or change-detecting handler, and no per-object memo (they read the
shared objects of the operator's memo, which every per-object copy shares). Each event
then gets a fresh memory, used for that event and dropped, as Kopf itself does for
admission requests (`ephemeral=True`). What an event does not carry over: Kopf's
throttling of its own errors outside handlers, for the next event of the same object.

`only_event_handlers` is what makes this safe, and is checked where it is installed: a
registry with anything that reads the memory back keeps Kopf's behaviour, with a warning.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kopf._core.intents.registries import OperatorRegistry
from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory

log = logging.getLogger(__name__)

_Recall = Callable[..., Awaitable[ResourceMemory]]
_KOPFS: _Recall = ResourceMemories.recall


def only_event_handlers(registry: OperatorRegistry) -> bool:
    """Whether nothing in `registry` reads an object's memory in a later event."""
    return not any(part.get_all_handlers() for part in (
        registry._indexing, registry._spawning, registry._changing, registry._webhooks))


def install(registry: OperatorRegistry) -> bool:
    """Make Kopf's per-object memories ephemeral; False (with a warning) where unsafe or
    where this Kopf's `ResourceMemories.recall` is not the one this was written for."""
    if not only_event_handlers(registry):
        log.warning("Kopf's per-object memory is kept: a handler other than on.event "
                    "is registered.")
        return False
    if "ephemeral" not in inspect.signature(_KOPFS).parameters:
        log.warning("Kopf's per-object memory is kept: this Kopf's ResourceMemories.recall "
                    "has no 'ephemeral'.")
        return False

    @functools.wraps(_KOPFS)
    async def recall(self: ResourceMemories, *args: Any, **kwargs: Any) -> ResourceMemory:
        kwargs["ephemeral"] = True
        return await _KOPFS(self, *args, **kwargs)

    ResourceMemories.recall = recall  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """Kopf's own behaviour again (tests)."""
    ResourceMemories.recall = _KOPFS  # type: ignore[method-assign,assignment]
