"""Kubernetes timestamps: the clock, formatting and parsing, in one place (UTC, RFC 3339);
and periods as people read them (1h30m)."""

from __future__ import annotations

import datetime
import functools
import math
import time


def boottime() -> float:
    """Seconds on a clock that only ever moves on, and on while the machine is suspended
    (Linux's CLOCK_BOOTTIME; where there is none, the monotonic clock, which stops then):
    a Lease's holder whose machine slept past it knows it on waking, and the server's
    clock read through it (servertime.py) is not behind by the sleep."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def format_time(moment: datetime.datetime, *, micro: bool = False) -> str:
    """'2026-01-01T00:00:00Z'; with `micro`, the MicroTime form ('...00.000000Z')."""
    return moment.astimezone(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 timestamp; one without a time zone is refused (ValueError)."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return moment


@functools.lru_cache(maxsize=4096)
def shared_time(text: str) -> datetime.datetime:
    """`parse_time`, one object for the same text while it is among the last 4,096 read:
    tens of thousands of pods are created or finish within the same few seconds, and each
    datetime takes 48 bytes of its own."""
    return parse_time(text)


def human_period(seconds: float) -> str:
    seconds = math.ceil(seconds)  # time left: never shown shorter than it is
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs or not (hours or minutes) else ""]
    return "".join(parts)
