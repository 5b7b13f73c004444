"""The garbage collector's thresholds and pause timing (collector.py)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from evc_operator import collector, metrics


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    collector.uninstall()
    gc.set_threshold(*thresholds)


BATCH = 5_000  # claims in flight at once: a dict and a list each, 10,000 tracked objects
CPYTHON_YOUNG = 700  # CPython's default young threshold, which the test sets itself


def _young_passes_while_objects_live_briefly(rounds: int) -> int:
    """Young passes during `rounds` rounds of BATCH claims that live for one round each,
    as a burst of requests in flight does."""
    gc.collect(0)  # the count of new objects starts at 0
    before = gc.get_stats()[0]["collections"]
    for _ in range(rounds):
        batch = [{"claim": n, "users": []} for n in range(BATCH)]
        del batch
    return int(gc.get_stats()[0]["collections"] - before)


def test_objects_that_live_briefly_make_no_pass_and_none_is_promoted() -> None:
    gc.set_threshold(CPYTHON_YOUNG, 10, 10)
    # Each batch (2 * BATCH new objects, far above the threshold the test set) meets a
    # pass, so the passes grow with the rounds: bounds from the test's inputs alone.
    assert 2 * BATCH > CPYTHON_YOUNG
    some = _young_passes_while_objects_live_briefly(100)
    more = _young_passes_while_objects_live_briefly(200)
    assert some >= 100, some  # each batch met a pass
    assert more >= 200, more
    assert more > some, (some, more)
    collector.install(collector.Pauses())
    assert gc.get_threshold() == (collector.YOUNG, 10, 10)
    assert 2 * BATCH < collector.YOUNG  # a batch alone is below the threshold installed
    assert _young_passes_while_objects_live_briefly(200) == 0


def test_every_pass_is_counted_by_generation_until_uninstalled() -> None:
    pauses = collector.Pauses()
    collector.install(pauses)
    gc.collect(2)
    gc.collect(2)
    gc.collect(1)
    full, total = pauses.histogram(2)
    assert full[-1] == ("+Inf", 2)
    assert total > 0  # two full passes took some time
    assert [count for _, count in full] == sorted(count for _, count in full)  # cumulative
    assert pauses.histogram(1)[0][-1] == ("+Inf", 1)
    collector.uninstall()
    gc.collect(2)
    assert pauses.histogram(2)[0][-1] == ("+Inf", 2)


def test_a_pause_falls_in_the_bucket_of_its_upper_bound() -> None:
    pauses = collector.Pauses()
    pauses.observe(0, 0.005)  # at a bound: that bucket (Prometheus' "le")
    pauses.observe(0, 0.3)
    pauses.observe(0, 7.0)
    buckets, total = pauses.histogram(0)
    counts = dict(buckets)
    assert (counts["0.001"], counts["0.005"], counts["0.25"], counts["0.5"], counts["1.0"],
            counts["+Inf"]) == (0, 1, 1, 2, 2, 3)
    assert total == pytest.approx(7.305)


def test_installing_again_counts_each_pass_once() -> None:
    first, second = collector.Pauses(), collector.Pauses()
    collector.install(first)
    collector.install(second)
    gc.collect(0)
    assert (first.histogram(0)[0][-1], second.histogram(0)[0][-1]) == (("+Inf", 0),
                                                                      ("+Inf", 1))


def _locks(thing: object, depth: int = 3) -> Iterator[object]:
    """Every threading.Lock an object holds, in its attributes and their values."""
    kind = type(threading.Lock())
    if isinstance(thing, kind):
        yield thing
    elif depth and hasattr(thing, "__dict__"):
        for value in vars(thing).values():
            if isinstance(value, dict):
                for item in value.values():
                    yield from _locks(item, depth - 1)
            else:
                yield from _locks(value, depth - 1)


def test_a_pass_during_a_scrape_never_waits_for_the_metrics_locks() -> None:
    """A pass can begin at any allocation, also one a scrape makes holding a metric's lock:
    counting it must take no lock, or the operator would hang there for good."""
    collector.install(metrics.GC_PAUSES)
    held = [lock for collector_ in list(metrics.REGISTRY._collector_to_names)
            for lock in _locks(collector_)]
    assert held  # the metrics have locks to hold
    for lock in held:
        lock.acquire()  # type: ignore[attr-defined]
    try:
        passes = threading.Thread(target=gc.collect, daemon=True)
        passes.start()
        passes.join(10)
        assert not passes.is_alive(), "a pass waited for a lock the metrics hold"
    finally:
        for lock in held:
            lock.release()  # type: ignore[attr-defined]
