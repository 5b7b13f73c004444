"""The garbage collector's thresholds and pause timing (collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from evc_operator import collector


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    collector.uninstall()
    gc.set_threshold(*thresholds)


def _young_passes_while_objects_live_briefly() -> int:
    """Young passes during 200 rounds of 5,000 objects that live for one round each, as a
    burst of requests in flight does."""
    gc.collect(0)  # the count of new objects starts at 0
    before = gc.get_stats()[0]["collections"]
    for _ in range(200):
        batch = [{"claim": n, "users": []} for n in range(5_000)]
        del batch
    return int(gc.get_stats()[0]["collections"] - before)


def test_objects_that_live_briefly_make_no_pass_and_none_is_promoted() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's default
    assert _young_passes_while_objects_live_briefly() > 100  # each batch met a pass
    collector.install(lambda generation, seconds: None)
    assert gc.get_threshold() == (collector.YOUNG, 10, 10)
    assert _young_passes_while_objects_live_briefly() == 0


def test_every_pass_is_timed_by_generation_until_uninstalled() -> None:
    told: list[tuple[int, float]] = []
    collector.install(lambda generation, seconds: told.append((generation, seconds)))
    gc.collect(2)
    gc.collect(1)
    assert [generation for generation, _ in told] == [2, 1]
    assert all(seconds >= 0 for _, seconds in told)
    collector.uninstall()
    gc.collect(2)
    assert len(told) == 2


def test_installing_again_times_each_pass_once() -> None:
    first: list[int] = []
    second: list[int] = []
    collector.install(lambda generation, _: first.append(generation))
    collector.install(lambda generation, _: second.append(generation))
    gc.collect(0)
    assert (first, second) == ([], [0])
