"""The API server's clock, as this process can know it: never ahead of the truth.

Deadlines come from timestamps the API server and kubelets stamp (creationTimestamp,
finishedAt, the operator's own status writes), so they must be compared with the server's
clock, not this process's: an operator whose clock runs ahead would delete early by the
difference, one that runs behind late.

Every API response carries a `Date` header, the server's time cut to the second, stamped
while the request was in flight. A response sent at local monotonic time `sent` and read
at `received` says that, at some moment in [sent, received], the server's clock read
within [date, date + 1). So the server's clock minus the local monotonic clock is

    at least  date - received        (the low bound)
    below     date + 1 - sent        (the high bound)

`now()` adds the highest low bound of recent samples to the monotonic clock: a time the
server's clock has surely reached, so a deadline compared with it is never passed early,
whatever the sign of the skew. The bounds close in as samples land at different points
of the server's second; within a few dozen requests the low bound is within a round trip
of the truth. The monotonic clock is used because the wall clock may be stepped (NTP);
old samples age out so that drift and a stepped server clock are followed.
"""

from __future__ import annotations

import collections
import datetime
import email.utils
import logging
import time
from collections.abc import Callable

from evc_operator.timestamps import boottime

log = logging.getLogger(__name__)
# Samples older than this are forgotten: monotonic and server clocks drift apart by at
# most some 100 ppm, 30 ms in 5 minutes.
WINDOW = 300.0
# The skew beyond which a warning is logged and the metric says so.
SKEW_WARNING = 1.0

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def parse_date_header(value: str) -> float | None:
    """Seconds since the epoch from an HTTP `Date` header (RFC 9110), else None."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None  # "-0000": no zone information, unusable
    return (moment - _EPOCH).total_seconds()


class ServerClock:
    """Server time from the `Date` headers of API responses, taken the late way.

    Until the first sample, the local wall clock stands in (as before there was one).
    """

    def __init__(self, *, monotonic: Callable[[], float] = boottime,
                 wall: Callable[[], float] = time.time, window: float = WINDOW) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._window = window
        # The samples that can still bound the server's clock minus the monotonic one, as
        # (received, bound), oldest first: lows falling (the front is the highest low),
        # highs rising (the front is the lowest high). A sample whose low a newer one
        # matches can never be the highest again (it expires first): it is dropped, so
        # reading a bound costs nothing however many requests a window holds.
        self._lows: collections.deque[tuple[float, float]] = collections.deque()
        self._highs: collections.deque[tuple[float, float]] = collections.deque()

    def observe(self, date: float, sent: float, received: float) -> None:
        """A response stamped `date` (server seconds) was in flight from `sent` to
        `received` (local monotonic seconds)."""
        if received < sent:
            return
        low, high = date - received, date + 1.0 - sent
        # A sample that says the server is behind what older ones proved: its clock was
        # stepped back (or drifted). Older samples no longer hold; drop them.
        while self._lows and self._lows[0][1] >= high:
            self._lows.popleft()
        while self._lows and self._lows[-1][1] <= low:
            self._lows.pop()
        self._lows.append((received, low))
        while self._highs and self._highs[-1][1] >= high:
            self._highs.pop()
        # And one that says it is ahead of what older ones allowed: stepped forward. Their
        # highs no longer hold: kept, the bounds crossed, and `latest` fell back to the
        # low bound, a time the server's clock had passed (an end of use taken early).
        while self._highs and self._highs[0][1] <= low:
            self._highs.popleft()
        self._highs.append((received, high))
        self._expire(received)

    def observe_header(self, value: str | None, sent: float, received: float) -> None:
        date = parse_date_header(value) if value else None
        if date is not None:
            self.observe(date, sent, received)

    def _expire(self, now: float) -> None:
        for samples in (self._lows, self._highs):
            while len(samples) > 1 and samples[0][0] < now - self._window:
                samples.popleft()

    @property
    def known(self) -> bool:
        return bool(self._lows)

    def _low(self) -> float:
        self._expire(self._monotonic())
        return self._lows[0][1]

    def _high(self) -> float:
        return self._highs[0][1]

    def now(self) -> datetime.datetime:
        """A time the server's clock has surely reached (its low bound)."""
        if not self._lows:
            return datetime.datetime.fromtimestamp(self._wall(), datetime.UTC)
        return _EPOCH + datetime.timedelta(seconds=self._monotonic() + self._low())

    def latest(self) -> datetime.datetime:
        """A time the server's clock has surely not passed yet (its high bound): no change
        observed until now happened after it. The local wall clock until the first sample;
        at least `now()` (bounds crossed by drift: the later)."""
        if not self._lows:
            return datetime.datetime.fromtimestamp(self._wall(), datetime.UTC)
        moment = self._monotonic()
        return _EPOCH + datetime.timedelta(seconds=moment + max(self._low(), self._high()))

    def seconds_until(self, moment: datetime.datetime) -> float:
        """Local seconds to wait until the server's clock has surely reached `moment`."""
        return (moment - self.now()).total_seconds()

    def skew(self) -> float | None:
        """The server's clock minus this process's wall clock, best estimate (seconds);
        None without samples. Positive: the server is ahead."""
        if not self._lows:
            return None
        low, high = self._low(), self._high()
        middle = (low + high) / 2 if low <= high else low  # crossed bounds: drift; be late
        return middle + self._monotonic() - self._wall()


class SkewWatch:
    """Tells of a skew above `SKEW_WARNING`: a gauge always, a warning once per change (a
    skew that moves by more than `SKEW_WARNING` since the last warning), not per response.
    Deadlines are unaffected: they follow `ServerClock.now` whatever the skew."""

    def __init__(self, clock: ServerClock, gauge: Callable[[float], None]) -> None:
        self.clock = clock
        self.gauge = gauge
        self._warned: float | None = None  # the skew last warned of; None: within bounds

    def check(self) -> None:
        skew = self.clock.skew()
        if skew is None:
            return
        self.gauge(skew)
        if abs(skew) > SKEW_WARNING:
            if self._warned is None or abs(skew - self._warned) > SKEW_WARNING:
                self._warned = skew
                log.warning("The API server's clock is %+.1f s off this process's; deadlines "
                            "are kept on the server's clock.", skew)
        elif self._warned is not None:
            self._warned = None
            log.info("The API server's clock is within %.0f s of this process's again.",
                     SKEW_WARNING)
