"""Claims' watch events straight to the operator, not through Kopf's per-object machinery.

Kopf still decides which namespaces are served (`--namespace`, its globs,
`--all-namespaces`), lists the claims (as a stream where the API server serves one: no
exit on 410 Gone), watches them, and starts again after a broken watch: its
`watching.infinite_watch`, unchanged, with its requests traced for readiness (served.py).
What Kopf does next with each event, the operator does not need: a worker task and a queue
per object, a batching window, the object's memory, a diff-base built from a deep copy of
the object, causes detected, and the handler called with a dozen keyword arguments; for
every event of every claim, the echoes of the operator's own status writes among them.
The operator's one handler of claims is `on.event` (handlers.py): level-based, no state,
no retries, no patch. So each raw event of the claims' resource is handed to one function
(`Feed`), in the order of the watch stream; the events of every other resource (the CRD,
namespaces) still go Kopf's own way. What it saved: docs/benchmarks.md. Before a stream
begins, `Scope` is told the namespace Kopf streams (None: every namespace), so the
operator knows, before the first claim, whether it serves them all (watched.py).

Kopf's private API (`kopf._core.reactor.queueing.watcher`, as Kopf 1.45 has it): `install`
checks the parameters relied on, and a Kopf without them keeps its own path, with a
warning (the operator works either way, only slower). An exception raised by `Feed` is
logged with the claim it was about, and the stream goes on, as Kopf does for a failed
`on.event` handler.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kopf._cogs.clients import watching
from kopf._core.reactor import queueing

from evc_operator.errors import describe

log = logging.getLogger(__name__)
READS = 8  # claims a list lacks, read at once (`missing`)
READ_RETRY = (5.0, 30.0, 120.0)  # seconds before each read again, after one that failed

Feed = Callable[[str | None, Mapping[str, Any]], None]  # (type, or None when listed; object)
Scope = Callable[[str | None], Awaitable[None]]  # the namespace streamed (None: every one)
# A list ended (the first, or one after 410 Gone): the namespace streamed (None: every one)
# and the (namespace, name) of each claim listed. A claim deleted while the watch was away
# is in no list, and no DELETED event will ever say it is gone. (Nor is one a stream cut
# short leaves out: Kopf resumes it as a watch and says it is listed at the first bookmark.)
Listed = Callable[[str | None, set[tuple[str, str]]], Awaitable[None]]
_KOPFS = queueing.watcher
_RELIED_ON = {"namespace", "settings", "resource", "operator_paused", "operator_indexed",
              "resource_indexed"}


async def _any_scope(namespace: str | None) -> None:
    pass


async def _nothing_listed(namespace: str | None, listed: set[tuple[str, str]]) -> None:
    pass


def install(group: str, plural: str, feed: Feed, scope: Scope = _any_scope,
            listed: Listed = _nothing_listed) -> bool:
    """Hand the events of `plural`.`group` to `feed`; False (with a warning) where this
    Kopf's watcher is not the one this was written for."""
    if not _RELIED_ON.issubset(inspect.signature(_KOPFS).parameters):
        log.warning("Claims' events go through Kopf's per-object handling: this Kopf's "
                    "watcher is not the one the operator was written for.")
        return False

    @functools.wraps(_KOPFS)
    async def watcher(**kwargs: Any) -> None:
        resource = kwargs["resource"]
        if resource.group == group and resource.plural == plural:
            await scope(kwargs["namespace"])
            await stream(feed, listed=listed, **kwargs)
        else:
            await _KOPFS(**kwargs)

    queueing.watcher = watcher
    return True


def uninstall() -> None:
    queueing.watcher = _KOPFS


async def stream(feed: Feed, *, namespace: Any, settings: Any, resource: Any,
                 operator_paused: Any = None, operator_indexed: Any = None,
                 resource_indexed: Any = None, listed: Listed = _nothing_listed,
                 **_: Any) -> None:
    """What Kopf's watcher does with the stream, but each event handed to `feed` at once,
    and the claims of each complete list to `listed` at its end, in a task of its own: it
    may read (`missing`), and the stream does not wait (awaited here, it held the watch
    past Kopf's inactivity timeout, which cancelled the watcher for good)."""
    keys: set[tuple[str, str]] = set()  # of the list under way (of a list cut short too)
    telling: set[asyncio.Task[None]] = set()
    try:
        async for raw_event in watching.infinite_watch(
                settings=settings, resource=resource, namespace=namespace,
                operator_paused=operator_paused):
            if raw_event is watching.Bookmark.LISTED:
                if operator_indexed is not None and resource_indexed is not None:
                    await operator_indexed.drop_toggle(resource_indexed)
                task = asyncio.create_task(_tell(listed, namespace, keys))
                telling.add(task)
                task.add_done_callback(telling.discard)
                keys = set()
                continue
            _hand(feed, raw_event, keys)
    finally:
        for task in telling:
            task.cancel()


async def _tell(listed: Listed, namespace: str | None, keys: set[tuple[str, str]]) -> None:
    try:
        await listed(namespace, keys)
    except Exception:
        log.exception("Taking in the list of claims failed.")


def _hand(feed: Feed, raw_event: Any, keys: set[tuple[str, str]]) -> None:
    """One event of the stream to `feed` (a listed claim's key kept in `keys`)."""
    if isinstance(raw_event, watching.Bookmark) or raw_event.get("type") == "BOOKMARK":
        return
    body = raw_event["object"]
    if raw_event["type"] is None:
        metadata = body.get("metadata") or {}
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        if key in keys:
            # Listed twice: a list cut short (a broken connection, 410 Gone before the
            # stream's first bookmark) and begun again, with no LISTED between. Its keys
            # would stand for claims deleted since, which no list or event then says are
            # gone: only this list's count (one before this key, lost, is read: `missing`).
            keys.clear()
        keys.add(key)
    _fed(feed, raw_event["type"], body)


def _fed(feed: Feed, kind: str | None, body: Mapping[str, Any]) -> None:
    """`feed` one event; a failure is logged with its claim, and the rest go on."""
    try:
        feed(kind, body)
    except Exception:
        metadata = body.get("metadata") or {}
        log.exception("Handling the %s event of claim %s/%s failed.", kind or "listed",
                      metadata.get("namespace"), metadata.get("name"))


async def missing(namespace: str | None, listed: set[tuple[str, str]],
                  tracked: Mapping[tuple[str, str], str],
                  read: Callable[[str, str], Awaitable[Mapping[str, Any] | None]],
                  feed: Feed, holds: Callable[[tuple[str, str], str], bool], *,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """After a list (`Listed`), the claims tracked in its scope (by key: their uid) that it
    lacks. Again after 410 Gone, one was deleted while the watch was away, and no DELETED
    event will say so; kept, it was looked at again and its PVC, taken by the garbage
    collector, made anew for a claim that is gone. But a list Kopf streams and a broken
    connection cuts short is resumed as a watch, and said listed at its first bookmark:
    so each is read (`READS` at once), and fed as DELETED, with its uid, only if it is
    gone (another of its name there: fed as listed, as is one still there, but only while
    the claim held by that name is still the one the list lacked, `holds`: the stream goes
    on meanwhile, and may have seen it deleted, or deleted and made again, since the
    read); a read that fails is tried again after `READ_RETRY`, then every last of them
    for as long as the claim it lacked is held (once given up, a claim deleted meanwhile
    stayed tracked until a later list, its PVC made anew)."""
    slots = asyncio.Semaphore(READS)

    async def look(key: tuple[str, str], uid: str) -> None:
        key_namespace, name = key
        tries = 0
        while True:
            try:
                async with slots:
                    body = await read(key_namespace, name)
            except Exception as error:
                tries += 1
                if tries == len(READ_RETRY):
                    log.warning("EphemeralVolumeClaim %s/%s was not in the list of claims, "
                                "and could not be read (%s): kept, and read again every "
                                "%.0f s until it can be.", key_namespace, name,
                                describe(error), READ_RETRY[-1])
                await sleep(READ_RETRY[min(tries, len(READ_RETRY)) - 1])
                if holds(key, uid):
                    continue
                return  # the stream has seen it since: deleted, or made again
            if body is None:
                log.info("EphemeralVolumeClaim %s/%s is not there, nor in the list of "
                         "claims: deleted while the watch was away.", key_namespace, name)
                _fed(feed, "DELETED", {"metadata": {"namespace": key_namespace,
                                                    "name": name, "uid": uid}})
            elif holds(key, uid):  # else seen deleted (and made again) since the read
                _fed(feed, None, body)
            return

    await asyncio.gather(*(look(key, uid) for key, uid in tracked.items()
                           if key not in listed and (namespace is None or key[0] == namespace)))
