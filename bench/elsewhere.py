"""`python -m bench.elsewhere`: what workload changes cost the operator, where it holds
them and where it passes them over.

    python -m bench.elsewhere                       # 1,000 Jobs, 100 label edits/s
    python -m bench.elsewhere --jobs 2000 --edits 200 --seconds 60
    python -m bench.elsewhere --per-namespace       # CLUSTER_WORKLOAD_WATCHES=false

Serving every namespace, the operator watches each workload kind once for the cluster
(src/evc_operator/clusterwide.py): every change of a Job, a Deployment... anywhere comes
to it, and is passed over unless its namespace holds claims. Served per namespace, the
changes of namespaces without claims never reach it. This measures the price of that
choice. It starts a control plane and the operator (as `python -m bench` does), one claim
in the namespace `claims`, and `--jobs` suspended Jobs (no pods) in each of `claims` and
`--namespaces` namespaces without claims. Rounds of `--seconds` each:

- `still`: nothing changes (the operator's own idle cost);
- `elsewhere`: the Jobs of the namespaces without claims get a label edit, `--edits` a
  second: changes the operator parses and passes over;
- `held`: the same edits on the Jobs of `claims`: changes it applies to its projections
  (what a namespace with claims costs in either mode).

Each round reports the operator's CPU and RSS; the figure that matters is the CPU per
change over the still round's, in microseconds. `--per-namespace` runs the operator with
`CLUSTER_WORKLOAD_WATCHES=false` (a watch per kind in each namespace with claims), for the
other side of the choice.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import standalone, workload
from bench.client import MERGE_PATCH, Api
from bench.observe import until
from bench.operator import Operator, install_identity, mib, wind_down
from controlplane.cluster import ControlPlane

CLAIMS = "claims"
SHARED = "Workloads are watched once for the cluster"  # the operator's log says so
APART = "Workloads are watched per namespace"
LIMIT = 600.0  # seconds any one wait may take


@dataclasses.dataclass(frozen=True)
class Load:
    jobs: int = 1000  # suspended Jobs in the claims' namespace, and as many elsewhere
    namespaces: int = 10  # namespaces without claims, the Jobs spread over them
    edits: float = 100.0  # label edits a second in a round with changes
    seconds: float = 30.0  # each round's length
    settle: float = 10.0  # seconds before each round
    per_namespace: bool = False  # CLUSTER_WORKLOAD_WATCHES=false


def suspended_job(name: str) -> dict[str, Any]:
    """A Job that makes no pod (suspended), so its only changes are the harness's."""
    pod = workload.unrelated_pod(name)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"suspend": True, "completions": 1, "parallelism": 1,
                     "template": {"metadata": {"labels": pod["metadata"]["labels"]},
                                  "spec": pod["spec"]}}}


def per_change(still: dict[str, Any], measured: dict[str, Any]) -> float | None:
    """The operator's CPU per change in the round `measured`, over the still round's for
    as long, in µs."""
    if not measured["edits"]:
        return None
    extra: float = float(measured["operator_cpu_seconds"]) - float(
        still["operator_cpu_seconds"]) * measured["seconds"] / still["seconds"]
    return round(max(extra, 0.0) / int(measured["edits"]) * 1e6, 1)


class Elsewhere:
    def __init__(self, plane: ControlPlane, workdir: Path, load: Load) -> None:
        self.plane = plane
        self.workdir = workdir
        self.load = load
        self.api = Api(plane.server, plane.admin_token, str(plane.ca_file), in_flight=32)
        self.operator: Operator | None = None

    def _check(self) -> None:
        if self.operator is not None and not self.operator.alive():
            raise RuntimeError("the operator exited; see operator.log in the work directory")

    async def run(self) -> dict[str, Any]:
        kubeconfig = install_identity(self.plane, self.workdir / "operator.kubeconfig")
        try:
            return await self._rounds(kubeconfig)
        finally:
            await wind_down([], self.operator, self.api)

    def _where(self, held: bool) -> list[tuple[str, str]]:
        """The Jobs of the claims' namespace (`held`) or of the others, by (namespace, name)."""
        if held:
            return [(CLAIMS, f"job-{number:05d}") for number in range(self.load.jobs)]
        return [(f"elsewhere-{number % self.load.namespaces:02d}", f"job-{number:05d}")
                for number in range(self.load.jobs)]

    async def _rounds(self, kubeconfig: Path) -> dict[str, Any]:
        load, api = self.load, self.api
        others = sorted({namespace for namespace, _ in self._where(False)})
        await api.namespaces((CLAIMS, *others))
        print(f"- {load.jobs} suspended Jobs in {CLAIMS}, {load.jobs} more over "
              f"{load.namespaces} namespaces without claims", flush=True)
        await api.each([*self._where(True), *self._where(False)], lambda key: api.request(
            "POST", f"/apis/batch/v1/namespaces/{key[0]}/jobs", suspended_job(key[1])))
        self.operator = operator = Operator(kubeconfig, self.workdir / "operator.log", env={
            "GRACE_PERIOD": "3600", "EXPIRY_PERIOD": "3600",  # nothing is deleted meanwhile
            "CLUSTER_WORKLOAD_WATCHES": str(not load.per_namespace).lower()})
        await until(lambda: int(operator.ready()), 1, "operator ready", limit=LIMIT,
                    check=self._check)
        await api.request("POST", f"/apis/zalando.org/v1/namespaces/{CLAIMS}/"
                          "ephemeralvolumeclaims", workload.evc("claim"))
        await until(lambda: int(operator.gauge("evc_claims") or 0), 1, "the claim held",
                    limit=LIMIT, check=self._check)
        told = APART if load.per_namespace else SHARED
        if told not in (self.workdir / "operator.log").read_text():
            raise RuntimeError(f"the operator does not say '{told}': not the run asked for")
        rounds: dict[str, Any] = {}
        for name in ("still", "elsewhere", "held"):
            await asyncio.sleep(load.settle)
            rounds[name] = await self._round(name)
        return {"load": dataclasses.asdict(load), "rounds": rounds,
                "cpu_per_change_us": {name: per_change(rounds["still"], rounds[name])
                                      for name in ("elsewhere", "held")}}

    async def _round(self, name: str) -> dict[str, Any]:
        operator = self.operator
        assert operator is not None
        jobs = [] if name == "still" else self._where(name == "held")
        print(f"- round {name}: " + (f"{self.load.edits:g} label edits/s" if jobs
                                     else "nothing changes"), flush=True)
        before, began = operator.usage(), time.monotonic()
        edits = await self._edit(jobs) if jobs else 0
        if not jobs:
            await asyncio.sleep(self.load.seconds)
        await asyncio.sleep(1)  # the last changes reach the operator
        after, seconds = operator.usage(), time.monotonic() - began
        self._check()
        result = {"seconds": round(seconds, 1), "edits": edits,
                  "operator_cpu_seconds": round(after.cpu - before.cpu, 3),
                  "operator_cpu_percent": round(100 * (after.cpu - before.cpu) / seconds, 2),
                  "rss_mib": [mib(before.rss), mib(after.rss)]}
        print("  " + json.dumps(result), flush=True)
        return result

    async def _edit(self, jobs: list[tuple[str, str]]) -> int:
        """Label edits on `jobs` in turn, `edits` a second for `seconds`; how many were made."""
        start, done = time.monotonic(), [0]

        async def edit(number: int) -> None:
            namespace, job = jobs[number % len(jobs)]
            await self.api.request("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}",
                                   {"metadata": {"labels": {"revision": str(number)}}},
                                   content_type=MERGE_PATCH)
            done[0] += 1

        await standalone.paced(self.load.edits,
                               lambda: time.monotonic() - start < self.load.seconds, edit)
        return done[0]


def table(result: dict[str, Any]) -> str:
    lines = ["| round | seconds | edits | operator CPU | RSS before / after (MiB) | "
             "CPU per change |", "| --- | --- | --- | --- | --- | --- |"]
    for name, measured in result["rounds"].items():
        cost = result["cpu_per_change_us"].get(name)
        lines.append(f"| {name} | {measured['seconds']} | {measured['edits']} | "
                     f"{measured['operator_cpu_percent']} % | {measured['rss_mib'][0]} / "
                     f"{measured['rss_mib'][1]} | "
                     + ("—" if cost is None else f"{cost} µs") + " |")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.elsewhere", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Load()
    parser.add_argument("--jobs", type=int, default=defaults.jobs,
                        help="suspended Jobs with claims, and as many without (%(default)s)")
    parser.add_argument("--namespaces", type=int, default=defaults.namespaces,
                        help="namespaces without claims (%(default)s)")
    parser.add_argument("--edits", type=float, default=defaults.edits,
                        help="label edits a second (%(default)s)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help="each round's length (%(default)s)")
    parser.add_argument("--settle", type=float, default=defaults.settle,
                        help="seconds before each round (%(default)s)")
    parser.add_argument("--per-namespace", action="store_true",
                        help="run the operator with CLUSTER_WORKLOAD_WATCHES=false")
    standalone.where_options(parser, "elsewhere")
    arguments = parser.parse_args(argv)
    if arguments.jobs < 1 or arguments.namespaces < 1 or arguments.edits <= 0:
        parser.error("--jobs, --namespaces and --edits must be positive")
    return arguments


async def _measure(plane: ControlPlane, workdir: Path, load: Load) -> dict[str, Any]:
    return await Elsewhere(plane, workdir, load).run()  # its client needs the running loop


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    arguments = parse(given)
    load = Load(jobs=arguments.jobs, namespaces=arguments.namespaces, edits=arguments.edits,
                seconds=arguments.seconds, settle=arguments.settle,
                per_namespace=arguments.per_namespace)
    return standalone.run("elsewhere", given, arguments,
                          functools.partial(_measure, load=load), table)


if __name__ == "__main__":
    sys.exit(main())
