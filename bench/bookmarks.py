"""How soon the API server proves a quiet namespace current: the floor of deletion lateness.

Before a deletion the operator proves its view of the namespace's pods current as of a
moment after the deadline (`src/evc_operator/freshness.py`): a consistent read of the
collection's resourceVersion, then, where nothing changes, a short watch from where its
informer stands, until a bookmark at or past that version. How soon that bookmark comes
is the API server's, not the operator's: kube-apiserver's watch cache sends bookmarks on
a timer of 1 to 1.25 s (`dispatchEvents` in `k8s.io/apiserver/pkg/storage/cacher`), and
to a watch of `timeoutSeconds` T only from T - 2 s into it (`nextBookmarkTime`; with
T = 2 or less, never), in buckets of whole seconds counted from the watch cache's start
(`watcherBookmarkTimeBuckets`).

This measures it on the project's own control plane, against its own: a namespace of
`--pods` pods nobody changes, another where a ConfigMap is created every 50 ms (the
cluster's resourceVersion moves on, as it does on a real one), and, for each
`timeoutSeconds`, `--trials` proofs: from just before the consistent read until the
bookmark that proves it. Then `--trials` proofs as the operator makes them for deadlines
at whole seconds (`src/evc_operator/barrier.py`): a 3-second watch opened a second
before the deadline, the read and another watch at it; the proof's wait by the watch
opened at the read alone, and by whichever of the two proves it first. Nothing of the
operator runs.

    python -m bench.bookmarks                     # 300 pods, 30 trials each of T = 2, 3, 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import stats
from bench.__main__ import machine
from bench.client import Api
from controlplane.cluster import ControlPlane

REPO = Path(__file__).resolve().parent.parent
QUIET, NOISE = "quiet", "noise"


async def _bookmark_after(api: Api, since: str, seconds: int) -> float | None:
    """Seconds from just before a consistent read of the pods' resourceVersion until a
    watch of the quiet namespace from `since` brings a bookmark at or past it; None if
    the watch ends first (a short watch gets one bookmark at most)."""
    began = time.monotonic()
    target = int(await api.resource_version(f"/api/v1/namespaces/{QUIET}/pods"))
    found = await _first_bookmark(api, since, seconds)
    return found[0] - began if found is not None and found[1] >= target else None


async def _first_bookmark(api: Api, since: str, seconds: int) -> tuple[float, int] | None:
    """When (monotonic) the first bookmark of a watch of the quiet namespace from `since`
    came, and its version; None if the watch ended without one."""
    params = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "true",
              "timeoutSeconds": str(seconds)}
    async with api.session.get(api.server + f"/api/v1/namespaces/{QUIET}/pods",
                               params=params,
                               timeout=aiohttp.ClientTimeout(total=seconds + 30)) as response:
        response.raise_for_status()
        async for line in response.content:
            event = json.loads(line) if line.strip() else {}
            if event.get("type") == "BOOKMARK":
                return time.monotonic(), int(event["object"]["metadata"]["resourceVersion"])
    return None


async def _until_wall(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


async def _paired(api: Api, since: str) -> tuple[float | None, float | None]:
    """One proof as the operator makes it for a deadline at a whole second: a watch opened
    a second before it, the consistent read at it and a watch opened then. Seconds from
    the read until a bookmark at or past it: from the watch opened at the read alone,
    and from either."""
    deadline = float(int(time.time()) + 2)
    await _until_wall(deadline - 1)
    ahead = asyncio.ensure_future(_first_bookmark(api, since, 3))
    await _until_wall(deadline)
    began = time.monotonic()
    target = int(await api.resource_version(f"/api/v1/namespaces/{QUIET}/pods"))
    at_read = await _first_bookmark(api, since, 3)
    early = await ahead
    proving = [came - began for came, version in (found for found in (at_read, early)
                                                  if found is not None)
               if version >= target]
    alone = at_read[0] - began if at_read is not None and at_read[1] >= target else None
    return alone, min(proving, default=None)


async def _measure(plane: ControlPlane, pods: int, trials: int,
                   timeouts: list[int]) -> dict[str, Any]:
    api = Api(plane.server, plane.admin_token, str(plane.ca_file), in_flight=32)
    stop = asyncio.Event()

    async def noise() -> None:
        number = 0
        while not stop.is_set():
            await api.request("POST", f"/api/v1/namespaces/{NOISE}/configmaps",
                              {"metadata": {"name": f"noise-{number}"}})
            number += 1
            await asyncio.sleep(0.05)

    try:
        for namespace in (QUIET, NOISE):
            await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        await api.each(range(pods), lambda number: api.request(
            "POST", f"/api/v1/namespaces/{QUIET}/pods",
            {"metadata": {"name": f"pod-{number}"},
             "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
        # Where an informer would stand.
        since = await api.resource_version(f"/api/v1/namespaces/{QUIET}/pods")
        churn = asyncio.create_task(noise())
        result: dict[str, Any] = {}
        for seconds in timeouts:
            waits: list[float] = []
            for _ in range(trials):
                wait = await _bookmark_after(api, since, seconds)
                if wait is not None:
                    waits.append(wait)
                await asyncio.sleep(0.37)  # spread over the timer's phases
            result[f"timeoutSeconds={seconds}"] = {"trials": trials,
                                                   "no_bookmark": trials - len(waits),
                                                   **stats.summary(waits)}
            print(f"timeoutSeconds={seconds}: {result[f'timeoutSeconds={seconds}']}",
                  flush=True)
        alone, paired = [], []
        for _ in range(trials):
            at_read, either = await _paired(api, since)
            alone += [] if at_read is None else [at_read]
            paired += [] if either is None else [either]
        for name, waits in (("opened at the read", alone),
                            ("with one opened a second ahead", paired)):
            result[f"timeoutSeconds=3, {name}"] = {"trials": trials,
                                                   "no_bookmark": trials - len(waits),
                                                   **stats.summary(waits)}
            print(f"timeoutSeconds=3, {name}: {result[f'timeoutSeconds=3, {name}']}",
                  flush=True)
        stop.set()
        await churn
        return result
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bookmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=300, help="pods in the quiet namespace")
    parser.add_argument("--trials", type=int, default=30, help="proofs per timeoutSeconds")
    parser.add_argument("--timeouts", default="2,3,4",
                        help="the proof watch's timeoutSeconds to try (comma-separated)")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "latest-bookmarks.json")
    arguments = parser.parse_args(argv)
    timeouts = [int(part) for part in arguments.timeouts.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="evc-bookmarks-"))
    print(f"Starting a control plane (files in {workdir})", flush=True)
    plane = ControlPlane.start(workdir / "cluster")
    try:
        result = asyncio.run(_measure(plane, arguments.pods, arguments.trials, timeouts))
    finally:
        plane.stop()
    document = {"machine": machine(), "command": "python -m bench.bookmarks " + " ".join(
        argument for argument in (argv if argv is not None else sys.argv[1:])
        if not argument.startswith("/")), "arguments": {
            "pods": arguments.pods, "trials": arguments.trials, "timeouts": timeouts},
        "result": result}
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"Results: {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
