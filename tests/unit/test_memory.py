"""Memory freed after a burst goes back to the system (glibc, as in CI and the image)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from evc_operator import memory


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


def test_memory_is_released_once_quiet_after_a_burst() -> None:
    released: list[bool] = []

    def release() -> bool:
        released.append(True)
        return True

    trim = memory.AfterBursts(release, clock=lambda: 1000.0)
    for _ in range(memory.RELEASE_AFTER - 1):
        trim.worked()
    trim.when_quiet(True)
    assert released == []  # not after a burst yet
    trim.worked()
    trim.when_quiet(False)
    assert released == []  # not while work is under way
    trim.when_quiet(True)
    assert released == [True]
    for _ in range(memory.RELEASE_AFTER):
        trim.worked()
    trim.when_quiet(True)
    assert released == [True]  # not again within RELEASE_EVERY


_LARGE_BLOCKS = """
import sys
from evc_operator import memory
from tests.unit.test_memory import _rss_mib as rss_mib

if sys.argv[1] == "mapped":
    assert memory.map_large_blocks()
first = bytearray(256 * 1024)  # a first connection opens and closes
del first
# A burst of connections: a 256 KiB read buffer each, and small blocks of the C library's
# heap (above pymalloc's 512 bytes) that live on between them.
buffers, kept = [], []
for _ in range(400):
    buffers.append(bytearray(256 * 1024))
    kept.append(bytes(600))
before = rss_mib()
del buffers  # the connections close
print(before - rss_mib())
"""


def _given_back_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _LARGE_BLOCKS, mode], check=True,
                         capture_output=True, text=True,
                         cwd=Path(__file__).parents[2]).stdout  # where `tests` imports
    return float(out)


def test_large_blocks_go_back_to_the_system_when_freed() -> None:
    # 400 buffers of 256 KiB are 100 MiB: with the threshold fixed, nearly all of it
    # goes back as they are freed; with glibc's moving threshold, the heap keeps it.
    assert _given_back_mib("mapped") > 90
    assert _given_back_mib("default") < 10
