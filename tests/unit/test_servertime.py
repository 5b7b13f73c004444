"""The server clock: never ahead of the API server's, whatever the skew, latency or steps.

A simulated server whose clock is the local monotonic clock plus an offset answers
requests with a `Date` header cut to the second; the estimate must never run ahead of
the server's true time, and must come within a round trip of it.
"""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evc_operator import timestamps
from evc_operator.servertime import ServerClock, SkewWatch, parse_date_header

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
START = 1_800_000_000.0  # the server's epoch seconds when the monotonic clock reads 0


class Clocks:
    def __init__(self, wall_skew: float) -> None:
        self.mono = 1000.0
        self.wall_skew = wall_skew  # local wall minus server

    def monotonic(self) -> float:
        return self.mono

    def server(self, offset: float) -> float:
        return START + offset + self.mono

    def wall(self) -> float:
        return START + self.mono + self.wall_skew


def true_server(clocks: Clocks, offset: float) -> datetime.datetime:
    return EPOCH + datetime.timedelta(seconds=clocks.server(offset))


requests = st.lists(st.tuples(st.floats(0, 5), st.floats(0, 0.5), st.floats(0, 1)),
                    min_size=1, max_size=60)


@given(requests, st.floats(-100, 100), st.floats(-3600, 3600))
def test_never_ahead_of_the_server_and_latest_never_behind(
        steps: list[tuple[float, float, float]], offset: float, wall_skew: float) -> None:
    """`now()` a time the server's clock has reached (a deadline is never passed early);
    `latest()` one it has not passed (what happened by now happened by then: a user's end
    observed is never recorded before it came, lifecycle.decide)."""
    clocks = Clocks(wall_skew)
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall)
    for pause, latency, stamped_at in steps:
        clocks.mono += pause
        sent = clocks.mono
        date = math.floor(clocks.server(offset) + latency * stamped_at)
        clocks.mono += latency
        clock.observe(date, sent, clocks.mono)
        assert clock.now() <= true_server(clocks, offset) <= clock.latest()


def test_the_estimate_comes_within_a_round_trip() -> None:
    clocks = Clocks(wall_skew=40.0)  # this process's wall clock runs 40 s ahead
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall)
    for _ in range(50):
        clocks.mono += 0.137  # requests land at many points of the server's second
        sent = clocks.mono
        date = math.floor(clocks.server(0.0) + 0.005)
        clocks.mono += 0.01
        clock.observe(date, sent, clocks.mono)
    lag = (true_server(clocks, 0.0) - clock.now()).total_seconds()
    assert 0 <= lag <= 0.05  # a round trip (10 ms) plus how finely samples met the second
    skew = clock.skew()
    assert skew is not None
    assert skew == pytest.approx(-40.0, abs=0.5)


def test_a_server_clock_stepped_back_is_followed_at_once() -> None:
    clocks = Clocks(wall_skew=0.0)
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall)
    clock.observe(math.floor(clocks.server(0.0)), clocks.mono, clocks.mono + 0.01)
    clocks.mono += 1.0
    sent = clocks.mono
    clock.observe(math.floor(clocks.server(-30.0)), sent, clocks.mono + 0.01)
    clocks.mono += 0.01
    assert clock.now() <= true_server(clocks, -30.0)


def test_old_samples_age_out() -> None:
    clocks = Clocks(wall_skew=0.0)
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall, window=60.0)
    clock.observe(math.floor(clocks.server(5.0)), clocks.mono, clocks.mono)
    clocks.mono += 61.0
    clock.observe(math.floor(clocks.server(5.0)) - 3, clocks.mono, clocks.mono)
    assert clock.now() <= true_server(clocks, 2.0)


def test_without_samples_the_wall_clock_stands_in() -> None:
    clocks = Clocks(wall_skew=7.0)
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall)
    assert not clock.known
    assert clock.skew() is None
    assert clock.now() == EPOCH + datetime.timedelta(seconds=clocks.wall())


def test_waiting_until_a_moment_counts_on_the_server_clock() -> None:
    clocks = Clocks(wall_skew=-20.0)  # this process's clock is 20 s behind
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall)
    clock.observe(clocks.server(0.0), clocks.mono, clocks.mono)  # a whole-second date
    deadline = true_server(clocks, 0.0) + datetime.timedelta(seconds=30)
    assert clock.seconds_until(deadline) == pytest.approx(30.0)


@pytest.mark.parametrize(("header", "seconds"), [
    ("Thu, 03 Dec 2026 11:32:30 GMT", 1796297550.0),
    ("not a date", None),
    ("Thu, 03 Dec 2026 11:32:30 -0000", None),
])
def test_date_headers(header: str, seconds: float | None) -> None:
    assert parse_date_header(header) == seconds


class _Skewed(ServerClock):
    def __init__(self) -> None:
        super().__init__()
        self.value: float | None = None

    def skew(self) -> float | None:
        return self.value


def test_a_skew_is_a_gauge_and_one_warning_per_change(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = _Skewed()
    gauge: list[float] = []
    watch = SkewWatch(clock, gauge.append)
    watch.check()  # no sample yet: nothing to tell
    for value in (0.3, 30.2, 30.4, 29.9, 30.1, 45.0, 0.2, -30.0, -30.5):
        clock.value = value
        watch.check()
    assert gauge == [0.3, 30.2, 30.4, 29.9, 30.1, 45.0, 0.2, -30.0, -30.5]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "The API server's clock is +30.2 s off this process's; deadlines are kept on the "
        "server's clock.",
        "The API server's clock is +45.0 s off this process's; deadlines are kept on the "
        "server's clock.",
        "The API server's clock is -30.0 s off this process's; deadlines are kept on the "
        "server's clock."]


def test_latest_after_the_servers_clock_is_stepped_forward() -> None:
    """A sample ahead of what older ones allowed (the server's clock stepped forward, by
    NTP): their highs no longer hold. Kept, the bounds crossed, and `latest` fell back to
    the low bound, a time the server's clock had passed (a review)."""
    clocks = Clocks(wall_skew=0.0)
    clock = ServerClock(monotonic=clocks.monotonic, wall=clocks.wall)
    for _ in range(20):  # a well-sampled clock
        clocks.mono += 0.137
        sent = clocks.mono
        date = math.floor(clocks.server(0.0) + 0.005)
        clocks.mono += 0.01
        clock.observe(date, sent, clocks.mono)
    step = 10.0
    clocks.mono += 1.0
    sent = clocks.mono
    stamped = clocks.server(step) + 0.005
    clocks.mono += 0.01
    clock.observe(math.floor(stamped), sent, clocks.mono)
    assert clock.now() <= true_server(clocks, step) <= clock.latest()


def test_the_servers_clock_is_read_on_a_clock_that_goes_on_while_the_machine_sleeps() -> None:
    """Read on the monotonic clock, which stops while the machine is suspended, `latest`
    was behind by the sleep until the next response: an end of use taken that early."""
    clock = ServerClock()
    assert clock._monotonic is timestamps.boottime

