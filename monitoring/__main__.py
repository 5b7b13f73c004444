"""`python -m monitoring`: run the operator on a fresh control plane for a few minutes under
a small workload, scrape it with Prometheus, and draw the dashboard from real series.

    python -m monitoring --out docs/dashboard.svg     # make dashboard-picture

Two replicas with leader election run as the shipped RBAC's ServiceAccount; claims come in
waves, some used by a pod for a while (no node: pods stay Pending, which counts as use),
one meets a PVC it did not create (PvcConflict), one is kept; halfway through, the leader
is killed (SIGKILL) and its standby takes over.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.operator import NAMESPACE, Operator, install_identity
from controlplane.cluster import ControlPlane
from monitoring import dashboard, svg
from monitoring.prometheus import Prometheus

REPO = Path(__file__).resolve().parent.parent
DEMO = "demo"
SCRAPE_SECONDS = 5
WAVE_SECONDS = 20
USE_SECONDS = 40
OPERATOR_ENV = {"EXPIRY_PERIOD": "30s", "GRACE_PERIOD": "20s", "COUNTDOWN_INTERVAL": "10s",
                "LEADER_ELECTION": "true", "POD_NAMESPACE": NAMESPACE}


def claim(name: str, **annotations: str) -> dict[str, object]:
    return {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
            "metadata": {"name": name, "namespace": DEMO, "annotations": annotations},
            "spec": {"size": "1Gi"}}


def pod(name: str, claim_name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": DEMO},
            "spec": {"containers": [{"name": "main", "image": "busybox",
                                     "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                     "volumes": [{"name": "v",
                                  "persistentVolumeClaim": {"claimName": claim_name}}]}}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


class Demo:
    def __init__(self, plane: ControlPlane, workdir: Path, minutes: float) -> None:
        self.plane = plane
        self.workdir = workdir
        self.minutes = minutes
        self.claims = 0
        self.events: list[str] = []
        self.start = self.end = 0.0
        self.results: dict[str, list[svg.Drawn]] = {}
        self.prometheus_version = ""

    def apply(self, *objects: dict[str, object]) -> None:
        self.plane.kubectl("apply", "-f", "-",
                           input=json.dumps({"apiVersion": "v1", "kind": "List",
                                             "items": list(objects)}))

    def run(self) -> None:
        kubeconfig = install_identity(self.plane, self.workdir / "operator.kubeconfig")
        self.plane.kubectl("create", "namespace", DEMO)
        wait_for(lambda: self.plane.kubectl_result(
            "get", "serviceaccount", "default", "-n", DEMO).returncode == 0,
            "the demo namespace's default ServiceAccount")
        replicas = {f"evc-operator-demo-{letter}": Operator(
            kubeconfig, self.workdir / f"operator-{letter}.log",
            env={**OPERATOR_ENV, "POD_NAME": f"evc-operator-demo-{letter}"})
            for letter in "ab"}
        prometheus = Prometheus(self.workdir / "prometheus", {
            f"127.0.0.1:{operator.port}": {"namespace": NAMESPACE, "pod": name}
            for name, operator in replicas.items()}, scrape_interval=f"{SCRAPE_SECONDS}s")
        try:
            wait_for(lambda: any(op.ready() for op in replicas.values()), "a ready replica")
            self.start = time.time()
            self._workload(replicas)
            self.end = time.time()
            time.sleep(2 * SCRAPE_SECONDS)  # the last scrape in
            self.results = self._query(prometheus)
            self.prometheus_version = prometheus.version()
        finally:
            prometheus.stop()
            for operator in replicas.values():
                operator.stop()

    def _workload(self, replicas: dict[str, Operator]) -> None:
        self.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "taken", "namespace": DEMO},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}}},
                   claim("taken"), claim("kept", **{"evc.zalando.org/keep": "true"}))
        self.claims += 2
        waves = int(self.minutes * 60 // WAVE_SECONDS) - 1
        failover = waves // 2
        for wave in range(waves):
            began = time.monotonic()
            self.apply(claim(f"w{wave}-a"), claim(f"w{wave}-b"), claim(f"w{wave}-c"),
                       pod(f"user-{wave}", f"w{wave}-c"))
            self.claims += 3
            done = wave - USE_SECONDS // WAVE_SECONDS
            if done >= 0:
                self.plane.kubectl("delete", "pod", f"user-{done}", "-n", DEMO,
                                   "--grace-period=0", "--force", "--wait=false")
            if wave == failover:
                leader = next((name for name, op in replicas.items()
                               if op.gauge("evc_leader") == 1), None)
                if leader is not None:
                    replicas[leader].stop(signal.SIGKILL)
                    self.events.append(f"{leader} (the leader) killed at "
                                       f"{datetime.datetime.now(datetime.UTC):%H:%M:%S} UTC")
            time.sleep(max(0.0, WAVE_SECONDS - (time.monotonic() - began)))
        if self.events:
            took_over = any(op.alive() and op.gauge("evc_leader") == 1
                            for op in replicas.values())
            self.events.append("its standby took over" if took_over
                               else "NO replica led at the end")

    def _query(self, prometheus: Prometheus) -> dict[str, list[svg.Drawn]]:
        variables = {"namespace": NAMESPACE, "__rate_interval": f"{4 * SCRAPE_SECONDS}s"}
        _, panels = dashboard.load()
        return {panel.title: [(target.legend, prometheus.query_range(
            dashboard.substitute(target.expr, variables), self.start, self.end,
            SCRAPE_SECONDS)) for target in panel.targets] for panel in panels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.svg")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: removed)")
    arguments = parser.parse_args(argv)
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="evc-dashboard-"))
    plane = ControlPlane.start(workdir / "cluster", crds=[REPO / "crd.yaml"])
    try:
        demo = Demo(plane, workdir, arguments.minutes)
        demo.run()
    finally:
        plane.stop()
    title, panels = dashboard.load()
    caption = [
        "Rendered by `make dashboard-picture` (monitoring/) from "
        "charts/evc-operator/dashboards/evc-operator.json: NOT a Grafana screenshot "
        "(Grafana's look is imitated).",
        f"Each panel: its own queries, evaluated by Prometheus {demo.prometheus_version} on "
        f"the /metrics of two operator replicas (leader election) scraped every "
        f"{SCRAPE_SECONDS} s, during a {arguments.minutes:g}-minute run",
        f"on the project's control plane (no node: pods stay Pending): {demo.claims} claims "
        f"in waves every {WAVE_SECONDS} s (EXPIRY_PERIOD 30s, GRACE_PERIOD 20s), one in "
        f"three used by a pod for {USE_SECONDS} s,",
        "one claim in conflict with a PVC it did not create, one kept "
        "(evc.zalando.org/keep: \"true\")."
        + (f" Then {'; '.join(demo.events)}." if demo.events else ""),
    ]
    arguments.out.write_text(svg.render(title, panels, demo.results, demo.start, demo.end,
                                        caption, step=SCRAPE_SECONDS))
    print(f"wrote {arguments.out}")
    if arguments.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
