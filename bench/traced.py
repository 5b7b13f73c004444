"""`python -m bench.traced [evc-operator options]`: the operator with tracemalloc on.

For memory diagnosis only (`python -m bench --trace-memory`; tracing slows the operator
and doubles what it allocates, so its RSS and timings are not the operator's): on SIGUSR2
it writes a tracemalloc snapshot to the next numbered file in $BENCH_SNAPSHOTS (`take`).
`growth()` compares two (the soak), `breakdown()` says where one's memory is held (the
main run, at the end of its idle window).
"""

from __future__ import annotations

import collections
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench.observe import until

if TYPE_CHECKING:
    from bench.operator import Operator

FRAMES = 12  # deep enough to see through the event loop to our code or Kopf's


def _dump(_signal: int, _frame: FrameType | None) -> None:
    folder = Path(os.environ["BENCH_SNAPSHOTS"])
    number = len(list(folder.glob("*.snapshot")))
    tracemalloc.take_snapshot().dump(str(folder / f"{number:02d}.snapshot"))


async def take(operator: Operator, folder: Path) -> Path:
    """Have the traced operator write a snapshot into `folder`, wait until it has, and
    return its path."""
    count = len(taken(folder))
    os.kill(operator.pid, signal.SIGUSR2)
    await until(lambda: len(taken(folder)), count + 1, "snapshot begun", limit=300)
    # The operator's main thread writes it: the operator answers again once it is done.
    await until(lambda: int(operator.gauge("evc_claims_tracked") is not None), 1,
                "snapshot written", limit=300)
    return taken(folder)[-1]


def taken(folder: Path) -> list[Path]:
    """The snapshots written into `folder` so far, oldest first."""
    return sorted(folder.glob("*.snapshot"))


# Where a block is charged: the innermost frame that is not one of these generic helpers
# of the standard library (they allocate for whoever calls them). A C extension has no
# frame: what orjson parses is charged to the line that called it.
GENERIC = ("/copy.py", "/json/", "/functools.py", "/dataclasses.py", "/typing.py",
           "/collections/", "/enum.py", "/re/", "/abc.py", "/weakref.py", "/contextlib.py",
           "/_weakrefset.py", "<frozen abc>")


def _owner(traceback: tracemalloc.Traceback) -> str:
    frames = list(reversed(traceback))  # a Traceback lists the oldest frame first
    for frame in frames:
        if not any(generic in frame.filename for generic in GENERIC):
            return f"{_short(frame.filename)}:{frame.lineno}"
    return f"{_short(frames[0].filename)}:{frames[0].lineno}" if frames else "?"


def breakdown(path: Path, top: int = 30) -> dict[str, Any]:
    """Where the snapshot's memory is held: the total, by package, and the `top` sites,
    each the line that allocated it (`_owner`)."""
    snapshot = tracemalloc.Snapshot.load(str(path)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    sites: collections.Counter[str] = collections.Counter()
    blocks: collections.Counter[str] = collections.Counter()
    for trace in snapshot.traces:
        owner = _owner(trace.traceback)
        sites[owner] += trace.size
        blocks[owner] += 1
    packages: collections.Counter[str] = collections.Counter()
    for site, size in sites.items():
        packages[site.split("/", 1)[0] if "/" in site else site.split(":", 1)[0]] += size
    return {
        "traced_mib": round(sum(sites.values()) / 2**20, 1),
        "by_package_mib": {name: round(size / 2**20, 1)
                           for name, size in packages.most_common(12)},
        "sites": [{"kib": round(size / 1024), "blocks": blocks[site], "where": site}
                  for site, size in sites.most_common(top)],
    }


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
