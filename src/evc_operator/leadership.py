"""One active replica at a time, by a coordination.k8s.io Lease.

Every replica watches and indexes (a warm standby: taking over needs no re-listing); only
the replica that leads writes, and each write asks `Leadership.leading()` right before it
is sent. The rules are those of client-go's leader election; no replica ever compares its
clock with another's (renewTime is written for people, never read back as a time):

- The holder leads for half a lease duration after its last successful renewal, timed
  from when that renewal's request was sent, on this process's monotonic clock (a step of
  the wall clock moves nothing). `leading()` says so exactly, at any moment; `active` and
  `on_change(False)` follow as soon as that half ends, even while a renewal hangs: each
  attempt (read, then create or replace) has a deadline, the end of that half while
  leading (half a duration otherwise), and no pause between attempts outlasts it. The
  holder renews every retry period, and at least every quarter duration.
- A standby remembers the Lease record it last read (its resourceVersion, holder,
  renewTime and transitions) and when it first read it, on its own monotonic clock. It
  takes the Lease only once that record has stayed unchanged for the record's whole
  leaseDurationSeconds (its own duration if the record names none), or at once when the
  Lease is missing, free or its own. A replica that starts and finds another holder
  therefore waits one duration from its first read, even if that holder died long ago.
  A Lease that goes missing or free after it named another holder (deleted or emptied by
  hand) is taken only once it stayed so for that holder's duration: the holder may lead
  on its last renewal until then (the holder itself, still running, takes it back at once).
- leaseDurationSeconds is the duration rounded up to whole seconds, at least 1.

A renewal is written after it was sent and a standby reads it after it was written, so a
standby takes over at least one duration after the holder's last renewal was sent, and
the holder stopped leading half a duration after it was sent. For a standby already
running, failover takes one lease duration plus one retry period at most (plus the
requests' own time): it reads the holder's last record within a retry period of its
writing. Two replicas lead at once only if the holder's monotonic clock runs at less than
half the standby's rate (the clock is Linux's CLOCK_BOOTTIME, which goes on while a
machine is suspended, unlike the plain monotonic clock). A write sent just before the
holder stopped leading can still reach the API server after a standby took over, if it
spends more than half a duration on the way; every deletion
carries uid and resourceVersion preconditions, so the API server refuses it if the claim
changed since it was read.
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
from evc_operator.timestamps import boottime, format_time, utcnow

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    duration: float = 10.0  # seconds a Lease is valid without renewal
    retry: float = 2.0  # how often to try to take over, or to renew (at most duration/4)


def lease_seconds(duration: float) -> int:
    """leaseDurationSeconds for `duration`: whole seconds, rounded up, at least 1 (0 would
    let anyone take the Lease at any time)."""
    return max(1, math.ceil(duration))


def record_duration(spec: Mapping[str, Any], fallback: float) -> float:
    """How long a standby waits on this record: its leaseDurationSeconds, or `fallback`
    (our own duration) if it names none."""
    try:
        seconds = float(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        seconds = 0.0
    return seconds if seconds > 0 else fallback


def may_take(spec: Mapping[str, Any], identity: str, unchanged_for: float,
             fallback: float) -> bool:
    """Whether this identity may hold the Lease now: it is free, or ours, or its record
    has not changed for its whole duration (`unchanged_for`: seconds since we first read
    this record, on our monotonic clock; `fallback`: the duration if it names none)."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    return unchanged_for >= record_duration(spec, fallback)


def claimed_spec(spec: Mapping[str, Any], settings: LeaseSettings,
                 now: datetime.datetime) -> dict[str, Any]:
    """The Lease spec after this identity took or renewed it (`now`: our wall clock, for
    people to read; no replica judges expiry by it)."""
    ours = spec.get("holderIdentity") == settings.identity
    transitions = int(spec.get("leaseTransitions") or 0)
    return {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": lease_seconds(settings.duration),
        "acquireTime": spec.get("acquireTime") if ours else format_time(now, micro=True),
        "renewTime": format_time(now, micro=True),
        "leaseTransitions": transitions if ours else transitions + 1,
    }


_MISSING = ("missing",)  # the record of a Lease that does not exist


def _record(lease: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies a version of the Lease: any renewal changes it."""
    spec = lease.get("spec") or {}
    return ((lease.get("metadata") or {}).get("resourceVersion"), spec.get("holderIdentity"),
            spec.get("renewTime"), spec.get("leaseTransitions"))


class Leadership:
    """`leading()`: this replica holds the Lease and its last renewal is surely still
    valid. `active` and `on_change` follow it (on_change is called on each change)."""

    def __init__(self, api: kube.Api, settings: LeaseSettings,
                 on_change: Callable[[bool], None],
                 clock: Callable[[], datetime.datetime] = utcnow,
                 monotonic: Callable[[], float] = boottime) -> None:  # the Lease's clock
        self.api = api
        self.settings = settings
        self.on_change = on_change
        self.clock = clock  # wall clock: only written into the Lease, for people
        self.monotonic = monotonic  # every judgement of time
        self.active = False
        self._valid_until: float | None = None  # monotonic; None: not the holder
        self._seen: tuple[Any, ...] | None = None  # another holder's record, last read
        self._seen_at = 0.0  # monotonic time that record was first read
        self._take_at: float | None = None  # monotonic: when we may take it, unchanged
        self._told_holder: str | None = None  # the other holder last logged
        # The duration of the last record read that named another holder, until this
        # replica takes the Lease: that holder may lead on for as long after its last
        # renewal, whatever becomes of the Lease (deleted or freed by hand) meanwhile.
        self._other: float | None = None
        self._seen_holder = ""  # that holder

    def leading(self) -> bool:
        """Whether this replica may act now: it holds the Lease, and its last renewal
        was sent less than half a duration ago (monotonic clock). Cheap; exact at any
        moment, not only when the loop runs."""
        valid_until = self._valid_until
        return valid_until is not None and self.monotonic() < valid_until

    async def run(self) -> None:
        try:
            while True:
                await self._attempt()
                await self._pause(self._next_attempt())
        finally:
            self._valid_until = None
            self._set(False)

    def _next_attempt(self) -> float:
        """Seconds to the next attempt: a retry period; for a holder at most a quarter
        duration (a retry period too long for a short duration still leaves time to
        renew); for a standby no later than the moment the Lease it saw may be taken."""
        if self.leading():
            return min(self.settings.retry, self.settings.duration / 4)
        now = self.monotonic()
        if self._take_at is not None and self._take_at > now:
            return min(self.settings.retry, self._take_at - now)
        return self.settings.retry

    async def _attempt(self) -> None:
        """Take or renew the Lease once, within the validity left (while leading) or
        half a duration; a failure or no answer in time leaves the validity as it
        was, so the holder stops leading when it ends."""
        now, valid_until = self.monotonic(), self._valid_until
        deadline = self.settings.duration / 2
        if valid_until is not None and now < valid_until:
            deadline = valid_until - now
        try:
            async with asyncio.timeout(deadline):
                sent = await self._try()
        except TimeoutError:
            log.warning("Lease %s/%s: no answer within %.3g s.", self.settings.namespace,
                        self.settings.name, deadline)
        except Exception as error:
            log.warning("Lease %s/%s: %s", self.settings.namespace, self.settings.name,
                        error)
        else:
            self._valid_until = None if sent is None else sent + self.settings.duration / 2
        self._set(self.leading())

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` before the next attempt, stepping down the moment the validity
        ends meanwhile."""
        end = self.monotonic() + seconds
        while (now := self.monotonic()) < end:
            wake = end
            if self._valid_until is not None and now < self._valid_until:
                wake = min(end, self._valid_until)
            await asyncio.sleep(wake - now)
            self._set(self.leading())

    async def _try(self) -> float | None:
        """Read the Lease and take or renew it if we may: the monotonic time the
        successful write was sent, or None if another replica holds it."""
        lease = await kube.read_lease(self.api, self.settings.namespace, self.settings.name)
        spec = (lease or {}).get("spec") or {}
        record = _MISSING if lease is None else _record(lease)
        if record != self._seen:
            self._seen, self._seen_at = record, self.monotonic()
        holder = spec.get("holderIdentity")
        if holder and holder != self.settings.identity:
            self._other = record_duration(spec, self.settings.duration)
            self._seen_holder = str(holder)
        unchanged_for = self.monotonic() - self._seen_at
        if not holder and self._other is not None and unchanged_for < self._other:
            # Deleted or freed while another replica held it: that one may still lead on
            # its last renewal. Taken once it stayed so for that holder's duration.
            self._take_at = self._seen_at + self._other
            if self._told_holder != "":
                self._told_holder = ""
                log.info("Lease %s/%s deleted or freed while %s held it, which may still lead "
                         "on its last renewal: this replica (%s) takes it if it stays so for "
                         "%ss.", self.settings.namespace, self.settings.name,
                         self._seen_holder or "another replica", self.settings.identity,
                         f"{self._other:g}")
            return None
        duration = record_duration(spec, self.settings.duration)
        if not may_take(spec, self.settings.identity, unchanged_for, self.settings.duration):
            self._take_at = self._seen_at + duration
            self._stand_by(str(holder), duration)
            return None
        sent = self.monotonic()
        if lease is None:
            await kube.create_lease(self.api, self.settings.namespace, self.settings.name,
                                    claimed_spec({}, self.settings, self.clock()))
        else:
            await kube.replace_lease(self.api, lease,
                                     claimed_spec(spec, self.settings, self.clock()))
        return self._took(sent)

    def _took(self, sent: float) -> float:
        self._told_holder = self._take_at = self._other = None
        return sent

    def _stand_by(self, holder: str, duration: float) -> None:
        """Say once that this replica stands by, and who leads; again if the leader
        changes."""
        if holder != self._told_holder:
            self._told_holder = holder
            log.info("Standing by: %s leads (Lease %s/%s); this replica (%s) watches and "
                     "takes over if the Lease stays unchanged for %ss.", holder,
                     self.settings.namespace, self.settings.name, self.settings.identity,
                     f"{duration:g}")

    def _set(self, held: bool) -> None:
        if held != self.active:
            self.active = held
            log.info("%s the leader (Lease %s/%s, identity %s).",
                     "Became" if held else "No longer", self.settings.namespace,
                     self.settings.name, self.settings.identity)
            self.on_change(held)
