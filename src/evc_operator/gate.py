"""A reconciliation's writes, sent only while this replica may act.

Leadership (leadership.py) says when this replica leads, and the scheduler takes no new
work while it does not. That is not enough on its own: work already under way when it
stops leading (a deletion waiting for its proof, a status write waiting for a slot), or a
process paused past its Lease's validity (a long pause of the interpreter, SIGSTOP) and
resumed before its next renewal, would still write; and another replica may lead by then.
So each write asks `may_act` at the moment it is sent (`Leadership.leading`: the Lease is
held and its last renewal is surely still valid, on this process's monotonic clock), and
is not sent otherwise: `NotLeading`, which the scheduler takes as "not ours to do", not as
a failure. Reads go through: they change nothing.

Nor is leading now enough: a reconciliation begun before this replica stopped leading and
still under way when it leads again (its Lease taken back at once, as its holder may)
decides on what it knew then, on a record the scheduler has since replaced (what was
learned meanwhile, a user that left, is on the new one): a deletion it sends then can be
early. So each leadership change begins a new `Term`, and a write of work begun in an
earlier one is not sent either.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from evc_operator.seams import ClaimApi
from evc_operator.status import Event


class NotLeading(Exception):
    """A write not sent: this replica may not act now (another may lead)."""


class Term:
    """Leadership terms, counted: `begun` marks the work in its context (its tasks too)
    with the term it began in, and `holds` says whether that is still the current one."""

    def __init__(self) -> None:
        self.number = 0

    def next(self) -> None:
        self.number += 1

    @contextlib.contextmanager
    def begun(self) -> Iterator[None]:
        token = _BEGUN.set((self, self.number))
        try:
            yield
        finally:
            _BEGUN.reset(token)

    def holds(self) -> bool:
        """Whether the work asking began in this term (work not begun in one: yes)."""
        begun = _BEGUN.get()
        return begun is None or begun[0] is not self or begun[1] == self.number


# The term the work in this context began in, and whose term it is.
_BEGUN: contextvars.ContextVar[tuple[Term, int] | None] = contextvars.ContextVar(
    "evc_term_begun", default=None)


class Gated:
    """seams.ClaimApi whose writes are sent only while `may_act()`."""

    def __init__(self, api: ClaimApi, may_act: Callable[[], bool]) -> None:
        self.api = api
        self.may_act = may_act

    def _check(self, what: str, namespace: str, name: str) -> None:
        if not self.may_act():
            raise NotLeading(f"not the leader now: {what} of {namespace}/{name} not sent")

    async def create_pvc(self, body: Mapping[str, Any]) -> dict[str, Any]:
        metadata = body["metadata"]
        self._check("the PersistentVolumeClaim", metadata.get("namespace") or "",
                    metadata["name"])
        return await self.api.create_pvc(body)

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.api.read_pvc(namespace, name)

    async def read_evc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.api.read_evc(namespace, name)

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        self._check("an update of the PersistentVolumeClaim", namespace, name)
        return await self.api.patch_pvc(namespace, name, uid, resource_version, patch)

    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]:
        self._check("the status", namespace, name)
        return await self.api.patch_evc_status(namespace, name, status)

    async def delete_evc(self, namespace: str, name: str, uid: str,
                         resource_version: str, orphan: bool = False) -> None:
        self._check("the deletion", namespace, name)
        await self.api.delete_evc(namespace, name, uid, resource_version, orphan)

    async def post_event(self, namespace: str, name: str, uid: str, event: Event,
                         now: datetime.datetime) -> None:
        self._check(f"the Event {event.reason}", namespace, name)
        await self.api.post_event(namespace, name, uid, event, now)
