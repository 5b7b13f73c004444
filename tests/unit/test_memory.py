"""Memory freed after a burst goes back to the system (glibc, as in CI and the image)."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from evc_operator import memory
from evc_operator import reconciler as reconciler_module
from evc_operator.reconciler import Indexes, Reconciler
from evc_operator.settings import Settings


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_release_gives_back_what_a_burst_left_behind() -> None:
    # Bodies of a burst: most freed, every tenth kept, so the free pages lie between
    # live ones, where the heap cannot shrink by itself.
    burst = [bytearray(4000) for _ in range(50_000)]
    kept = burst[::10]
    del burst
    before = _rss_mib()
    assert memory.release()
    after = _rss_mib()
    assert before - after > 50, (before, after)
    assert len(kept) == 5_000


def test_the_reconciler_releases_memory_once_quiet_after_a_burst(
        monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[bool] = []

    def release() -> bool:
        released.append(True)
        return True

    monkeypatch.setattr(memory, "release", release)
    reconciler = Reconciler(object(), Settings(), kopf.OperatorSettings(),
                            Indexes(pods_by_claim={}, pods_by_namespace={}, pvcs={}))
    reconciler._since_release = reconciler_module.RELEASE_AFTER - 1
    reconciler._release_memory_when_quiet()
    assert released == []  # not after a burst yet
    reconciler._since_release += 1
    reconciler._running.add(("jobs", "busy"))
    reconciler._release_memory_when_quiet()
    assert released == []  # not while work is under way
    reconciler._running.clear()
    reconciler._release_memory_when_quiet()
    assert released == [True]
    reconciler._since_release = reconciler_module.RELEASE_AFTER
    reconciler._release_memory_when_quiet()
    assert released == [True]  # not again within RELEASE_EVERY
