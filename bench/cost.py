"""What a step of the run cost the machine: CPU seconds by process, API requests by kind.

A burst's time is the API server's as much as the operator's: on one machine they share
the cores. So the burst and the bare client's creates are each recorded with the CPU
time the control plane's processes, the operator and the harness spent over them (from
/proc), and the requests the API server answered meanwhile (its own
`apiserver_request_total`, by verb and resource), so that a ratio between the two comes
with what made it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.operator import cpu_seconds
from controlplane.cluster import ControlPlane

# The control plane's processes by their command name (the kernel keeps 15 characters).
COMPONENTS = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
MIN_REQUESTS = 10  # kinds of request answered fewer times are left out


def cpu_by_process(operator: int | None, proc: Path = Path("/proc")) -> dict[str, float]:
    """CPU seconds (user + system) so far of the control plane's components, the operator
    (pid `operator`) and this harness."""
    found: dict[str, float] = {}
    harness = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        pid = int(entry.name)
        name = ("operator" if pid == operator else "harness" if pid == harness
                else command if command in COMPONENTS else None)
        if name is not None:
            found[name] = found.get(name, 0.0) + cpu_seconds(stat)
    return found


def requests_by_kind(metrics: str) -> dict[str, float]:
    """`apiserver_request_total` summed by "VERB resource[/subresource]"."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(_LABEL.findall(line))
        resource = "/".join(part for part in (labels.get("resource"),
                                              labels.get("subresource")) if part)
        kind = f"{labels.get('verb', '?')} {resource or labels.get('path', '?')}"
        found[kind] = found.get(kind, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def difference(before: Mapping[str, float], after: Mapping[str, float], *,
               digits: int, least: float) -> dict[str, float]:
    """What grew from `before` to `after` by at least `least`, largest first."""
    grown = {key: after[key] - before.get(key, 0.0) for key in after}
    return {key: round(value, digits) for key, value in
            sorted(grown.items(), key=lambda item: -item[1]) if value >= least}


class Cost:
    """`await begin()` before a step, `await end()` after it: what it cost."""

    def __init__(self, plane: ControlPlane, operator: int | None = None) -> None:
        self.plane = plane
        self.operator = operator
        self._cpu: dict[str, float] = {}
        self._requests: dict[str, float] = {}

    async def _requests_now(self) -> dict[str, float]:
        text = await asyncio.to_thread(self.plane.kubectl, "get", "--raw", "/metrics")
        return requests_by_kind(text)

    async def begin(self) -> None:
        self._requests = await self._requests_now()
        self._cpu = cpu_by_process(self.operator)

    async def end(self) -> dict[str, Any]:
        cpu = cpu_by_process(self.operator)
        requests = await self._requests_now()
        return {"cpu_seconds": difference(self._cpu, cpu, digits=1, least=0.1),
                "api_requests": {kind: int(count) for kind, count in difference(
                    self._requests, requests, digits=0, least=MIN_REQUESTS).items()}}
