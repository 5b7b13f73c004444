"""The operator under test: a separate process, as it runs in production, and its footprint.

It authenticates as its own ServiceAccount (bound to the shipped RBAC in config/),
so the API server's audit log can tell its requests from the harness's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import Api
from controlplane.cluster import ControlPlane, free_port

NAMESPACE = "evc-operator"
ACCOUNT = "evc-operator"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
REPO = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def install_identity(plane: ControlPlane, kubeconfig: Path) -> Path:
    """The operator's ServiceAccount, shipped RBAC and signing key's Secret (read when
    POD_NAMESPACE is set, as with leader election), and a kubeconfig with its token."""
    for part in ("serviceaccount", "rbac", "signing-key"):
        rendered = plane.kubectl("kustomize", str(REPO / "config" / part))
        if part == "serviceaccount":
            plane.kubectl("create", "namespace", NAMESPACE)
        plane.kubectl("apply", "-f", "-", input=rendered)
    return plane.service_account_kubeconfig(NAMESPACE, ACCOUNT, kubeconfig, duration="48h")


def cpu_seconds(stat: str) -> float:
    """User plus system CPU seconds from the text of a process's /proc/PID/stat."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS


def sockets(pid: int) -> int:
    """How many sockets the process holds open (0 if it is gone)."""
    count = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(entry.path).startswith("socket:")
    return count


@dataclasses.dataclass(frozen=True)
class Usage:
    rss: int  # bytes
    peak_rss: int  # bytes, the process's high-water mark
    cpu: float  # seconds, user + system, since it started
    sockets: int = 0  # open at the moment (connections to the API server, the metrics port)


class Operator:
    """One run of `evc-operator --all-namespaces` (= kopf run -m evc_operator.handlers)."""

    def __init__(self, kubeconfig: Path, logfile: Path, env: dict[str, str],
                 module: str = "evc_operator") -> None:
        self.port = free_port()
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith(("KUBE", "EVC_"))}
        environ.update(env, KUBECONFIG=str(kubeconfig), METRICS_PORT=str(self.port))
        self.started = time.time()
        with logfile.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, "--all-namespaces"],
                cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def usage(self) -> Usage:
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
        return Usage(rss=int(fields["VmRSS"][0]) * 1024, peak_rss=int(fields["VmHWM"][0]) * 1024,
                     cpu=cpu_seconds(Path(f"/proc/{self.pid}/stat").read_text()),
                     sockets=sockets(self.pid))

    def _scrape(self) -> str:
        """The text of its own /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text: str = r.read().decode()
        return text

    def metrics(self) -> dict[str, float]:
        """Its own /metrics, unlabelled and summed over labels: {name: value}."""
        return summed(self._scrape())

    def histogram(self, name: str) -> dict[float, float]:
        """A histogram of its own /metrics (`buckets`)."""
        return buckets(self._scrape(), name)

    async def events_posted(self, seconds: float = 30.0) -> None:
        """Until it has posted its Events (none waiting, none more for a second), for at
        most `seconds`: a window of writes per claim then holds every claim's Events."""
        posted = -1.0
        for _ in range(int(seconds)):
            text = self._scrape()  # one scrape for both: they must be of the same moment
            waiting, now = summed(text).get("evc_events_waiting"), requests_to(text, "events")
            if waiting == 0 and now == posted:
                return
            posted = now
            await asyncio.sleep(1)

    def gauge(self, name: str) -> float | None:
        try:
            return self.metrics().get(name)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None  # not serving yet

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def wind_down(tasks: list[asyncio.Task[None]], operator: Operator | None,
                    api: Api) -> None:
    """The end of a run: its background tasks cancelled, its operator stopped, its client
    closed."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if operator is not None:
        operator.stop()
    await api.close()


class Sampler:
    """The operator's RSS and CPU, every second, while it runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, Usage]] = []

    async def run(self, operator: Operator) -> None:
        while operator.alive():
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), operator.usage()))
            await asyncio.sleep(1.0)

    def peak_rss(self, start: float, end: float) -> int:
        return max((u.rss for t, u in self.samples if start <= t <= end), default=0)


def by_step(samples: list[tuple[float, Usage]], began: list[tuple[float, str]],
            read: Callable[[Usage], float]) -> dict[str, float]:
    """The highest `read` of the samples taken during each step (from its start to the next
    one's): where a peak comes from."""
    highest: dict[str, float] = {}
    for moment, usage in samples:
        step = next((name for start, name in reversed(began) if start <= moment), None)
        if step is not None:
            highest[step] = max(highest.get(step, read(usage)), read(usage))
    return highest


def rss_by_step(samples: list[tuple[float, Usage]], began: list[tuple[float, str]],
                ) -> dict[str, float]:
    """The highest RSS sampled during each step, in MiB."""
    return {step: mib(int(rss)) for step, rss in
            by_step(samples, began, lambda usage: usage.rss).items()}


def sockets_by_step(samples: list[tuple[float, Usage]], began: list[tuple[float, str]],
                    ) -> dict[str, int]:
    """The most sockets the operator held open at a sample in each step: its connections,
    whose buffers and TLS state are part of the RSS (docs/benchmarks.md)."""
    return {step: int(count) for step, count in
            by_step(samples, began, lambda usage: usage.sockets).items()}


def timeline(samples: list[tuple[float, Usage]], began: list[tuple[float, str]],
             ) -> list[tuple[float, float, int]]:
    """Every sample as (seconds since the first step began, RSS in MiB, sockets): when the
    memory grew and when it was given back, beside the steps' starts."""
    start = began[0][0] if began else 0.0
    return [(round(moment - start, 1), mib(usage.rss), usage.sockets)
            for moment, usage in samples]


def by_steps(samples: list[tuple[float, Usage]], began: list[tuple[float, str]],
             ) -> dict[str, Any]:
    """The footprint's part read from the samples: the highest RSS and sockets of each
    step, when each step began, and the whole timeline."""
    return {"rss_by_step_mib": rss_by_step(samples, began),
            "sockets_by_step": sockets_by_step(samples, began),
            "steps_began_s": {name: round(moment - began[0][0], 1) for moment, name in began},
            "timeline": timeline(samples, began)}


def footprint(before: Usage, after: Usage, start: float, end: float) -> dict[str, float]:
    """RSS at the end of a window, and the CPU spent in it."""
    seconds = max(end - start, 1e-9)
    return {"seconds": round(seconds, 1), "rss_mib": mib(after.rss),
            "cpu_seconds": round(after.cpu - before.cpu, 2),
            "cpu_percent": round(100 * (after.cpu - before.cpu) / seconds, 1)}


def mib(size: int) -> float:
    return round(size / 2**20, 1)


def summed(text: str) -> dict[str, float]:
    """A Prometheus text exposition's values by metric name, summed over labels."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            base = name.split("{", 1)[0]
            values[base] = values.get(base, 0.0) + float(value)
    return values


def buckets(text: str, name: str) -> dict[float, float]:
    """A histogram's cumulative counts by upper bound (`le`) in a Prometheus text
    exposition, summed over its other labels."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            labels, value = line.rsplit(" ", 1)
            bound = float(labels.split('le="', 1)[1].split('"', 1)[0])
            counts[bound] = counts.get(bound, 0.0) + float(value)
    return counts


def requests_to(text: str, resource: str) -> float:
    """The `evc_api_requests` counted for `resource` in a Prometheus text exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("evc_api_requests_total{")
               and f'resource="{resource}"' in line)
