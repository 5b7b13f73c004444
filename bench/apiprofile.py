"""Where the API server's CPU goes during the burst: a Go CPU profile of kube-apiserver.

With `--profile-apiserver SECONDS`, the benchmark's control plane (and only it:
`controlplane/` keeps `--profiling=false` everywhere else) serves `/debug/pprof`, and the
harness records that many seconds of kube-apiserver's CPU from the moment the claims are
created (`record`). The raw profile stays in the run's folder (`apiserver-burst.pprof`);
the JSON keeps a summary (`summary`, by `go tool pprof -top -cum`): the samples, and the
functions of Kubernetes' own packages that took the most, each with its share of the
samples, itself and below it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from bench.client import Api

FLAG = "--profiling=true"  # the last of a repeated flag wins: after the plane's own
_TOTAL = re.compile(r"Total samples = ([\d.]+)(m?s)")
_ROW = re.compile(r"^\s*[\d.]+(?:m?s)?\s+([\d.]+)%\s+[\d.]+%\s+[\d.]+(?:m?s)?\s+([\d.]+)%\s+(.+)$")
KEPT = ("k8s.io/", "sigs.k8s.io/", "runtime.gcBgMarkWorker", "runtime.mallocgc",
        "encoding/json.")


async def record(api: Api, seconds: int, out: Path) -> Path:
    """`seconds` of kube-apiserver's CPU profile, written to `out`."""
    async with api.session.get(api.server + "/debug/pprof/profile",
                               params={"seconds": str(seconds)},
                               timeout=aiohttp.ClientTimeout(total=seconds + 120)) as response:
        response.raise_for_status()
        data = await response.read()
    await asyncio.to_thread(out.write_bytes, data)
    return out


def _seconds(value: str, unit: str) -> float:
    return float(value) / (1000 if unit == "ms" else 1)


def summary(profile: Path, top: int = 30) -> dict[str, Any]:
    """The profile's samples and its `top` functions by cumulative share; without Go on
    the PATH only where the raw profile is."""
    go = shutil.which("go")
    if go is None:
        return {"profile": profile.name, "summary": "no 'go' on the PATH to read it"}
    text = subprocess.run([go, "tool", "pprof", "-top", "-cum", "-nodecount=400",
                           str(profile)], capture_output=True, text=True, check=True,
                          timeout=300).stdout
    return {"profile": profile.name, **parse_top(text, top)}


def parse_top(text: str, top: int) -> dict[str, Any]:
    """`go tool pprof -top -cum` output: the samples in seconds, and the first `top` rows
    whose function is Kubernetes' own (or the Go runtime's allocator and collector)."""
    found = _TOTAL.search(text)
    total = _seconds(*found.groups()) if found else None
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line)
        if match is None or not match.group(3).startswith(KEPT):
            continue
        rows.append({"function": match.group(3), "self_percent": float(match.group(1)),
                     "cumulative_percent": float(match.group(2))})
        if len(rows) == top:
            break
    return {"samples_seconds": total, "functions": rows}
