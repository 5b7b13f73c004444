"""One active replica at a time, by a coordination.k8s.io Lease.

Every replica watches and indexes (a warm standby: taking over needs no
re-listing); only the Lease holder writes, through the scheduler. A holder
that cannot renew in time steps down before its Lease can expire, and a standby
takes over once the Lease has expired: one lease duration plus one retry
period, at most, after a holder dies. Two holders at once are still harmless:
every deletion carries preconditions, so a claim is never deleted twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from evc_operator import kube
from evc_operator.timestamps import format_time, parse_time, utcnow

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    duration: float = 10.0  # seconds a Lease is valid without renewal
    retry: float = 2.0  # how often to renew, or to try to take over


def lease_seconds(duration: float) -> int:
    """leaseDurationSeconds for `duration`: whole seconds, rounded up, at least 1 (0 would
    let anyone take the Lease at any time)."""
    return max(1, math.ceil(duration))


def _time(text: str | None) -> datetime.datetime | None:
    return parse_time(text) if text else None


def may_take(spec: Mapping[str, Any], identity: str, now: datetime.datetime) -> bool:
    """Whether this identity may hold the Lease now: it is ours, free, or expired."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
    duration = float(spec.get("leaseDurationSeconds") or 0)
    return renewed is None or now >= renewed + datetime.timedelta(seconds=duration)


def claimed_spec(spec: Mapping[str, Any], settings: LeaseSettings,
                 now: datetime.datetime) -> dict[str, Any]:
    """The Lease spec after this identity took or renewed it."""
    ours = spec.get("holderIdentity") == settings.identity
    transitions = int(spec.get("leaseTransitions") or 0)
    return {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": lease_seconds(settings.duration),
        "acquireTime": spec.get("acquireTime") if ours else format_time(now, micro=True),
        "renewTime": format_time(now, micro=True),
        "leaseTransitions": transitions if ours else transitions + 1,
    }


class Leadership:
    """Keeps `active` true only while this replica holds the Lease."""

    def __init__(self, api: kube.Api, settings: LeaseSettings,
                 on_change: Callable[[bool], None],
                 clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self.api = api
        self.settings = settings
        self.on_change = on_change
        self.clock = clock
        self.active = False
        self._renewed_at: datetime.datetime | None = None
        self._told_holder: str | None = None  # the other holder last logged

    async def run(self) -> None:
        try:
            while True:
                try:
                    held = await self._try()
                except Exception as error:
                    log.warning("Lease %s/%s: %s", self.settings.namespace,
                                self.settings.name, error)
                    held = False
                    # Keep acting only while the last renewal is surely still valid.
                    if self.active and self._renewed_at is not None:
                        margin = datetime.timedelta(seconds=self.settings.duration / 2)
                        held = self.clock() < self._renewed_at + margin
                self._set(held)
                await asyncio.sleep(self.settings.retry)
        finally:
            self._set(False)

    async def _try(self) -> bool:
        now = self.clock()
        lease = await kube.read_lease(self.api, self.settings.namespace, self.settings.name)
        if lease is None:
            await kube.create_lease(self.api, self.settings.namespace, self.settings.name,
                                    claimed_spec({}, self.settings, now))
        elif may_take(lease.get("spec") or {}, self.settings.identity, now):
            await kube.replace_lease(self.api, lease,
                                     claimed_spec(lease.get("spec") or {}, self.settings, now))
        else:
            self._stand_by(str((lease.get("spec") or {}).get("holderIdentity")))
            return False
        self._renewed_at = now
        self._told_holder = None
        return True

    def _stand_by(self, holder: str) -> None:
        """Say once that this replica stands by, and who leads; again if the leader
        changes."""
        if holder != self._told_holder:
            self._told_holder = holder
            log.info("Standing by: %s leads (Lease %s/%s); this replica (%s) watches and "
                     "takes over if the leader stops renewing for %ss.", holder,
                     self.settings.namespace, self.settings.name, self.settings.identity,
                     f"{self.settings.duration:g}")

    def _set(self, held: bool) -> None:
        if held != self.active:
            self.active = held
            log.info("%s the leader (Lease %s/%s, identity %s).",
                     "Became" if held else "No longer", self.settings.namespace,
                     self.settings.name, self.settings.identity)
            self.on_change(held)
