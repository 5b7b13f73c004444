"""The frame of a benchmark that stands alone (`python -m bench.fairness`,
`python -m bench.elsewhere`): its own control plane, one measurement on it, and the
result as JSON in `bench/results/` with the machine it ran on, and as a table."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.__main__ import _portable, machine
from controlplane.cluster import ControlPlane

REPO = Path(__file__).resolve().parent.parent
Measure = Callable[[ControlPlane, Path], Coroutine[Any, Any, dict[str, Any]]]
IN_FLIGHT = 64  # paced requests unanswered at most: an API server that falls behind is
# not piled on (the pace's later requests are left out instead)


async def paced(rate: float, going: Callable[[], bool],
                work: Callable[[int], Awaitable[None]]) -> None:
    """`work(0)`, `work(1)`... `rate` a second while `going()`, without waiting for one
    to start the next; then until every one started has ended."""
    start, number = time.monotonic(), 0
    pending: set[asyncio.Task[None]] = set()
    while going():
        delay = start + number / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) < IN_FLIGHT:
            task = asyncio.ensure_future(work(number))
            pending.add(task)
            task.add_done_callback(pending.discard)
        number += 1
    await asyncio.gather(*pending)


def where_options(parser: argparse.ArgumentParser, name: str) -> None:
    """`--out` and `--workdir`, which are not part of the result."""
    parser.add_argument("--out", type=Path, help="JSON results (default: "
                        f"bench/results/{name}.json)")
    parser.add_argument("--workdir", type=Path,
                        help="keep the control plane's and operator's files here")


def run(name: str, given: list[str], arguments: argparse.Namespace, measure: Measure,
        table: Callable[[dict[str, Any]], str]) -> int:
    """`measure` on a control plane of its own, started and stopped here; the result
    written and printed. `given`: the command line, recorded without `--out`/`--workdir`."""
    out: Path = arguments.out or REPO / "bench" / "results" / f"{name}.json"
    workdir: Path = arguments.workdir or Path(tempfile.mkdtemp(prefix=f"evc-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"Starting a control plane (files in {workdir})", flush=True)
    plane = ControlPlane.start(workdir / "cluster", crds=[REPO / "crd.yaml"])
    started = datetime.datetime.now(datetime.UTC)
    try:
        result = asyncio.run(measure(plane, workdir))
    finally:
        plane.stop()
    document = {"command": shlex.join(["python", "-m", f"bench.{name}", *_portable(given)]),
                "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "machine": machine(), "result": result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nResults: {out}")
    return 0
