"""`python -m bench`: start a control plane, run the benchmark, print and save the results.

    python -m bench                          # default scale, under 15 minutes on 2 cores
    python -m bench --evcs 10000 --pods 50000
    python -m bench --jobs                   # each claim's user is a Job
    python -m bench --soak 30                # 30 minutes of churn, memory sampled
    python -m bench --soak 30 --trace-memory # the same, and which allocations grew
    python -m bench --trace-memory           # where the operator's memory is held when idle
    python -m bench --profile-apiserver 30   # where the API server's CPU goes in the burst
    python -m bench --real-node --evcs 200   # users are real pods on a real node (root)

Except with --real-node, pods are simulated: the harness writes their status.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import apiprofile, realpods, report
from bench.audit import CONTROLLER_MANAGER
from bench.operator import USER
from bench.scale import Scale
from bench.scenario import Run
from controlplane.binaries import COMPONENTS
from controlplane.cluster import ControlPlane
from controlplane.node import NODE_NAME, Node

REPO = Path(__file__).resolve().parent.parent
# kube-controller-manager's client allows 20 requests per second (burst 30) by default.
# A Job costs its controller about 8 requests (its pod, Events, status updates, the pod's
# tracking finalizer removed): at 100 Jobs a second, the default would be the bottleneck.
JOBS_CONTROLLER_QPS = 1000.0
JOBS_CONCURRENT_SYNCS = 20  # Job syncs at once (default 5)


def controller_args(arguments: argparse.Namespace) -> list[str]:
    """kube-controller-manager's flags for this run: with --jobs, room for the Job
    controller (the bench's control plane only; docs/benchmarks.md)."""
    qps = arguments.controller_qps
    if qps is None and arguments.jobs:
        qps = JOBS_CONTROLLER_QPS
    flags = [] if qps is None else [f"--kube-api-qps={qps:g}",
                                    f"--kube-api-burst={max(int(qps * 2), 1)}"]
    if arguments.jobs:
        flags.append(f"--concurrent-job-syncs={JOBS_CONCURRENT_SYNCS}")
    return flags


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "components": {c.name: c.version() for c in COMPONENTS}}


def _portable(argv: list[str]) -> list[str]:
    """The command line without where this machine kept its files (not part of the result)."""
    kept: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
        elif argument in ("--workdir", "--out"):
            skip = True
        elif not argument.startswith(("--workdir=", "--out=")):
            kept.append(argument)
    return kept


def _paces(text: str) -> tuple[float, ...]:
    try:
        paces = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: paces per second, e.g. 50,100,200") \
            from None
    if not paces or any(pace <= 0 for pace in paces) or list(paces) != sorted(paces):
        raise argparse.ArgumentTypeError(f"{text!r}: positive paces, slowest first")
    return paces


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Scale()
    parser.add_argument("--evcs", type=int, default=defaults.evcs, help="claims (%(default)s)")
    parser.add_argument("--pods", type=int, default=defaults.pods,
                        help="pods in all, one per claim and the rest unrelated (%(default)s)")
    parser.add_argument("--namespaces", type=int, default=defaults.namespaces)
    parser.add_argument("--rate", type=float, default=defaults.rate,
                        help="user pods finishing per second (%(default)s)")
    parser.add_argument("--steps", type=_paces, default=(), metavar="RATE,RATE,...",
                        help="user pods finish in stages of these paces (e.g. "
                        "50,100,200,400), each once the claims of the one before are Idle: "
                        "reports the highest pace whose reaction p99 is within 2x the bare "
                        "watch's (capacity); instead of --rate")
    parser.add_argument("--step-slack", type=float, default=defaults.step_slack,
                        help="seconds the grace period allows each stage of --steps for its "
                        "claims to be seen Idle before the next starts (%(default)s)")
    parser.add_argument("--idle", type=float, default=defaults.idle_seconds,
                        help="seconds of measured idleness (%(default)s)")
    parser.add_argument("--headroom", type=float, default=defaults.headroom,
                        help="seconds from the last pod finishing to the first deadline, "
                        "in which the restart is timed (%(default)s)")
    parser.add_argument("--operator-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the operator, e.g. LIFECYCLE_EVENTS=false")
    parser.add_argument("--jobs", action="store_true",
                        help="each claim's user is a Job (completions 1, backoffLimit 0) "
                        "whose controller creates the pod; also times the Job floor")
    parser.add_argument("--controller-qps", type=float, metavar="QPS",
                        help="kube-controller-manager's client QPS (burst twice that); "
                        f"default: Kubernetes' 20, or {JOBS_CONTROLLER_QPS:g} with --jobs")
    parser.add_argument("--soak", type=float, metavar="MINUTES",
                        help="run continuous churn for MINUTES instead, sampling memory")
    parser.add_argument("--churn", type=float, default=5.0,
                        help="soak: claims created per second (%(default)s)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="run the operator under tracemalloc: with --soak, report "
                        "which allocation sites grew after warm-up; else where its memory "
                        "is held at the end of the idle window, and the restarted one's once "
                        "it has resumed (its RSS and timings are then not the operator's own)")
    parser.add_argument("--account-memory", action="store_true",
                        help="have the operator account for its resident memory at the "
                        "end of the idle window, and the restarted one once it has deleted "
                        "every claim: by kind of mapping, in pymalloc's arenas and in "
                        "glibc's heap (bench/accounted.py; costs nothing else)")
    parser.add_argument("--profile-apiserver", type=int, default=0, metavar="SECONDS",
                        help="record kube-apiserver's CPU profile for SECONDS from the "
                        "burst's start (the run's control plane serves /debug/pprof); "
                        "summarised with 'go tool pprof' when Go is on the PATH")
    parser.add_argument("--real-node", action="store_true",
                        help="a small run on a real node (as root, one node per machine): "
                        "each claim's user is a real pod that sleeps --pod-seconds; uses "
                        "--evcs and --rate only")
    parser.add_argument("--pod-seconds", type=float, default=5.0,
                        help="--real-node: how long each user pod runs (%(default)s)")
    parser.add_argument("--out", type=Path, help="JSON results (default: "
                        "bench/results/latest.json, latest-soak.json or "
                        "latest-real-node.json)")
    parser.add_argument("--workdir", type=Path,
                        help="keep the control plane's and operator's files here")
    arguments = parser.parse_args(argv)
    if any("=" not in setting for setting in arguments.operator_env):
        parser.error("--operator-env takes NAME=VALUE")
    if arguments.jobs and arguments.soak is not None:
        parser.error("--jobs is not a soak option")
    if arguments.steps and arguments.jobs:
        parser.error("--steps paces pods the harness finishes itself: not with --jobs")
    if arguments.account_memory and (arguments.trace_memory or arguments.soak is not None
                                     or arguments.real_node):
        parser.error("--account-memory is for the main run, without --trace-memory (tracing "
                     "adds its own memory to the account)")
    if arguments.pods < arguments.evcs:
        parser.error("--pods counts all pods, one per claim included: it must be >= --evcs")
    return arguments


async def _measure(plane: ControlPlane, workdir: Path, arguments: argparse.Namespace,
                   ) -> dict[str, Any]:
    if arguments.real_node:
        return await realpods.RealPods(plane, workdir, evcs=arguments.evcs,
                                       rate=arguments.rate,
                                       pod_seconds=arguments.pod_seconds).run()
    if arguments.soak is not None:
        from bench.soak import Soak
        return await Soak(plane, workdir, minutes=arguments.soak, churn=arguments.churn,
                          unrelated=arguments.pods - arguments.evcs,
                          namespaces=arguments.namespaces,
                          trace_memory=arguments.trace_memory).run()
    scale = Scale(evcs=arguments.evcs, pods=arguments.pods, namespaces=arguments.namespaces,
                  rate=arguments.rate, idle_seconds=arguments.idle,
                  headroom=arguments.headroom, jobs=arguments.jobs,
                  steps=arguments.steps, step_slack=arguments.step_slack,
                  trace_memory=arguments.trace_memory,
                  account_memory=arguments.account_memory,
                  profile_seconds=arguments.profile_apiserver,
                  operator_env=tuple((name, value) for name, _, value in
                                     (setting.partition("=") for setting in
                                      arguments.operator_env)))
    return await Run(plane, workdir, scale).run()


def main(argv: list[str] | None = None) -> int:
    arguments = parse(sys.argv[1:] if argv is None else argv)
    soak, real = arguments.soak is not None, arguments.real_node
    out = arguments.out or REPO / "bench" / "results" / (
        "latest-soak.json" if soak else "latest-real-node.json" if real else "latest.json")
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="evc-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"Starting a control plane (files in {workdir})", flush=True)
    plane = ControlPlane.start(workdir / "cluster", crds=[REPO / "crd.yaml"], audit=True,
                               audit_users=[USER, *([CONTROLLER_MANAGER] if arguments.jobs
                                                    else [])],
                               controller_args=controller_args(arguments),
                               apiserver_args=[apiprofile.FLAG] if arguments.profile_apiserver
                               else [],
                               for_node=NODE_NAME if real else None)
    started = datetime.datetime.now(datetime.UTC)
    node: Node | None = None
    try:
        node = Node.start(plane) if real else None
        result = asyncio.run(_measure(plane, workdir, arguments))
    finally:
        if node is not None:
            node.stop()
        plane.stop()
    # A run in a folder of its own: its database and audit log (gigabytes at scale) go once
    # the figures are taken; a failed run, or one given --workdir, keeps every file.
    freed = plane.discard_data() if arguments.workdir is None else None
    document = {
        "command": "python -m bench " + shlex.join(_portable(sys.argv[1:] if argv is None
                                                             else argv)),
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "arguments": {key: value for key, value in vars(arguments).items()
                      if key not in ("workdir", "out")},
        "result": result,
    }
    if not soak and not real:
        document["meets_targets"] = report.verdicts(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(report.soak_table(result) if soak else realpods.table(result) if real
          else report.table(result))
    print(f"\nResults: {out}")
    if freed is not None:
        print(f"Logs in {workdir} (its etcd data and audit log removed, {freed / 2**20:.0f} "
              "MiB; --workdir keeps them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
