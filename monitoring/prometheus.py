"""A Prometheus server (the pinned build, controlplane.binaries.PROMETHEUS) scraping given
targets, with the labels a PodMonitor would give them, and answering range queries."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml

from controlplane.binaries import ensure_prometheus
from controlplane.processes import alive, free_port, spawn, terminate


@dataclasses.dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (Unix time, value); NaN where Prometheus says so


class Prometheus:
    """`prometheus` on a free loopback port, its data in `workdir`; stop() ends it."""

    def __init__(self, workdir: Path, targets: Mapping[str, Mapping[str, str]],
                 scrape_interval: str = "5s") -> None:
        """`targets`: host:port of each /metrics, with its target labels (namespace, pod)."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": [{
                "job_name": "evc-operator",
                "static_configs": [{"targets": [address], "labels": dict(labels)}
                                   for address, labels in targets.items()],
            }],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.pid = spawn([str(ensure_prometheus()), f"--config.file={workdir / 'prometheus.yml'}",
                          f"--storage.tsdb.path={workdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                         self.log, cwd=workdir, detached=False)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(self.pid):
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError(f"prometheus not ready after {timeout} s")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """The expression evaluated every `step` seconds from `start` to `end`."""
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end,
                                        "step": step})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}",
                                    timeout=30) as response:
            answer = json.loads(response.read())
        if answer.get("status") != "success":
            raise RuntimeError(f"{expr}: {answer}")
        return [Series(labels=dict(item["metric"]),
                       points=[(float(t), float(v)) for t, v in item["values"]])
                for item in answer["data"]["result"]]

    def version(self) -> str:
        with urllib.request.urlopen(f"{self.url}/api/v1/status/buildinfo", timeout=5) as r:
            return str(json.loads(r.read())["data"]["version"])

    def stop(self) -> None:
        terminate(self.pid, grace=30)
