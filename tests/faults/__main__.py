"""python -m tests.faults [--seed N] [--count M] [--real-node] [--all-namespaces]: run fault
scenarios on a fresh control plane (with --real-node: on a real node, users are real
containers; as root, one node per machine; with --all-namespaces, the operator serves every
namespace, as the chart runs it).

Exits non-zero if any invariant was violated, or if stopped (SIGINT or SIGTERM: the
scenario under way is not judged, the cluster and node are stopped, and the scenarios
judged until then are summed up). See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from controlplane.cluster import ControlPlane
from controlplane.node import NODE_NAME, Node
from tests.faults.judge import BOUND, Report
from tests.faults.realnode import RealNodeScenario
from tests.faults.scenario import Scenario
from tests.faults.workloads import CONTROLLER_ARGS

REPO = Path(__file__).resolve().parents[2]


def run_scenarios(make: Callable[[int], Scenario],
                  seeds: range) -> tuple[list[Report], bool]:
    """The reports of the scenarios judged, and whether the run was stopped before the
    last (KeyboardInterrupt: see `stop_on_signals`)."""
    reports: list[Report] = []
    for seed in seeds:
        try:
            report = make(seed).run()
        except KeyboardInterrupt as stop:
            print(f"stopped ({stop or 'SIGINT'}) during seed {seed}, which is not judged",
                  flush=True)
            return reports, True
        print(report.line(), flush=True)
        for violation in report.violations:
            print(f"  VIOLATION: {violation}", flush=True)
        reports.append(report)
    return reports, False


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt once, so that a run stops cleanly (its
    operator, node and cluster stopped, its logs kept); a second one acts as usual.
    Also for a run started in the background of a script: such a process inherits SIGINT
    ignored (POSIX), and Python then never raises KeyboardInterrupt on it."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                      else signal.SIG_DFL)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--count", type=int, default=200, help="scenarios (default 200)")
    parser.add_argument("--real-node", action="store_true",
                        help="users are real containers on a real node; kubelet and "
                        "containerd restarts are faults too")
    parser.add_argument("--all-namespaces", action="store_true",
                        help="the operator serves every namespace (its workloads watched "
                        "once for the cluster), not the scenario's alone")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep etcd's data and the audit log when no violation was "
                        "found (a run with one always keeps them)")
    args = parser.parse_args()
    stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="evc-faults-"))
    started = time.monotonic()
    plane = ControlPlane.start(workdir / "controlplane", crds=[REPO / "crd.yaml"], audit=True,
                               for_node=NODE_NAME if args.real_node else None,
                               controller_args=() if args.real_node else CONTROLLER_ARGS)
    node: Node | None = None
    try:
        if args.real_node:
            node = Node.start(plane)
            real = node

            def build(seed: int) -> Scenario:
                return RealNodeScenario(plane, real, seed, workdir)
        else:
            def build(seed: int) -> Scenario:
                return Scenario(plane, seed, workdir)

        def make(seed: int) -> Scenario:
            scenario = build(seed)
            scenario.scope = "--all-namespaces" if args.all_namespaces else None
            return scenario

        reports, stopped = run_scenarios(make, range(args.seed, args.seed + args.count))
    finally:
        if node is not None:
            node.stop()
        plane.stop()
    violations = sum(len(r.violations) for r in reports)
    if not violations and not stopped and not args.keep_data:
        plane.discard_data()  # gigabytes over a long run; the scenarios' logs stay
    faults: dict[str, int] = {}
    for report in reports:
        for kind, count in report.faults.items():
            faults[kind] = faults.get(kind, 0) + count
    last = args.seed + len(reports) - 1
    seeds = f"seeds {args.seed}..{last}" if reports else "none judged"
    print(f"{'stopped: ' if stopped else ''}{len(reports)} "
          f"{'real-node ' if args.real_node else ''}scenarios ({seeds}), "
          f"{sum(r.claims for r in reports)} claims, {sum(r.pods for r in reports)} pods, "
          f"{sum(r.deletions for r in reports)} deletions, "
          f"{sum(r.latecomers for r in reports)} latecomers, faults {faults}, "
          f"{_lateness(reports)}"
          f"{violations} violations, {time.monotonic() - started:.0f} s; logs in {workdir}")
    return 1 if violations or stopped else 0


def _lateness(reports: list[Report]) -> str:
    """The deletions' lateness where no outage extended the bound: median and worst."""
    late = sorted(value for report in reports for value in report.lateness)
    if not late:
        return ""
    return (f"lateness median {late[len(late) // 2]:.2f} s, worst {late[-1]:.2f} s "
            f"(bound {BOUND:g} s), ")


if __name__ == "__main__":
    sys.exit(main())
