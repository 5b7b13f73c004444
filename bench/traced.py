"""`python -m bench.traced [evc-operator options]`: the operator with tracemalloc on.

For the soak's memory diagnosis only (tracing slows the operator and doubles what it
allocates, so its RSS is not the operator's): on SIGUSR2 it writes a tracemalloc
snapshot to the next numbered file in $BENCH_SNAPSHOTS. `growth()` compares two.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

FRAMES = 12  # deep enough to see through the event loop to our code or Kopf's


def _dump(_signal: int, _frame: FrameType | None) -> None:
    folder = Path(os.environ["BENCH_SNAPSHOTS"])
    number = len(list(folder.glob("*.snapshot")))
    tracemalloc.take_snapshot().dump(str(folder / f"{number:02d}.snapshot"))


def growth(before: Path, after: Path, top: int = 15) -> list[dict[str, Any]]:
    """The allocation sites that grew most from one snapshot to the other."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)
    total = sum(stat.size for stat in new.statistics("filename")) - sum(
        stat.size for stat in old.statistics("filename"))
    sites = [{"kib": round(stat.size_diff / 1024, 1), "blocks": stat.count_diff,
              "where": [f"{_short(frame.filename)}:{frame.lineno}"
                        for frame in reversed(stat.traceback)][:6]}  # allocation first
             for stat in new.compare_to(old, "traceback")[:top]]
    return [{"traced_growth_kib": round(total / 1024, 1)}, *sites]


def _short(filename: str) -> str:
    """A source file by its package path, without where this machine installed it."""
    for marker in ("site-packages/", "/lib/python3."):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("/lib") else tail
    for package in ("src/evc_operator/", "bench/"):
        if package in filename:
            return package.split("/")[-2] + "/" + filename.split(package, 1)[1]
    return Path(filename).name


def main() -> None:
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR2, _dump)
    from evc_operator.__main__ import main as operator_main
    operator_main()


if __name__ == "__main__":
    main()
