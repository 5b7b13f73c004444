"""python -m tests.faults [--seed N] [--count M] [--real-node]: run fault scenarios on a
fresh control plane (with --real-node: on a real node, users are real containers; as root,
one node per machine).

Exits non-zero if any invariant was violated. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from controlplane.cluster import ControlPlane
from controlplane.node import NODE_NAME, Node
from tests.faults.judge import Report
from tests.faults.realnode import RealNodeScenario
from tests.faults.scenario import Scenario

REPO = Path(__file__).resolve().parents[2]


def run_scenarios(make: Callable[[int], Scenario], seeds: range) -> list[Report]:
    reports = []
    for seed in seeds:
        report = make(seed).run()
        print(report.line(), flush=True)
        for violation in report.violations:
            print(f"  VIOLATION: {violation}", flush=True)
        reports.append(report)
    return reports


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--count", type=int, default=200, help="scenarios (default 200)")
    parser.add_argument("--real-node", action="store_true",
                        help="users are real containers on a real node; kubelet and "
                        "containerd restarts are faults too")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="evc-faults-"))
    started = time.monotonic()
    plane = ControlPlane.start(workdir / "controlplane", crds=[REPO / "crd.yaml"], audit=True,
                               for_node=NODE_NAME if args.real_node else None)
    node: Node | None = None
    try:
        if args.real_node:
            node = Node.start(plane)
            real = node

            def make(seed: int) -> Scenario:
                return RealNodeScenario(plane, real, seed, workdir)
        else:
            def make(seed: int) -> Scenario:
                return Scenario(plane, seed, workdir)
        reports = run_scenarios(make, range(args.seed, args.seed + args.count))
    finally:
        if node is not None:
            node.stop()
        plane.stop()
    violations = sum(len(r.violations) for r in reports)
    faults: dict[str, int] = {}
    for report in reports:
        for kind, count in report.faults.items():
            faults[kind] = faults.get(kind, 0) + count
    print(f"{len(reports)} {'real-node ' if args.real_node else ''}scenarios (seeds "
          f"{args.seed}..{args.seed + args.count - 1}), "
          f"{sum(r.claims for r in reports)} claims, {sum(r.pods for r in reports)} pods, "
          f"{sum(r.deletions for r in reports)} deletions, "
          f"{sum(r.latecomers for r in reports)} latecomers, faults {faults}, "
          f"{violations} violations, {time.monotonic() - started:.0f} s; logs in {workdir}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
