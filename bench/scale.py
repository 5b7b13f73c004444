"""How big a benchmark run is: claims, pods, namespaces, paces, and the grace period that
follows from them."""

from __future__ import annotations

import dataclasses
import math

from bench import capacity

# The Job controller's pace at marking Jobs Complete, measured (docs/benchmarks.md: 10,000
# Jobs in 457 s with its client at 1000 QPS), rounded down: with Jobs, users end this fast.
JOBS_COMPLETED_PER_SECOND = 20.0


@dataclasses.dataclass(frozen=True)
class Scale:
    evcs: int = 1000
    pods: int = 10000  # all pods, including one user pod per claim
    namespaces: int = 10
    rate: float = 50.0  # pods finishing per second in step 5
    idle_seconds: float = 60.0
    in_flight: int = 32  # the harness's concurrent requests
    # Seconds between the last pod finishing and the first deadline: the restart is timed
    # in there, so that no countdown ends while no operator runs.
    headroom: float = 90.0
    operator_env: tuple[tuple[str, str], ...] = ()  # more settings for the operator
    jobs: bool = False  # each claim's user is a Job (its controller makes the pod)
    # Paces the user pods finish at, in stages (capacity.py); empty: all at `rate`.
    steps: tuple[float, ...] = ()
    # Seconds the grace period allows each stage for its claims to be seen Idle before the
    # next stage starts (a backlog at a pace past the operator's capacity).
    step_slack: float = 60.0
    # Both operators under tracemalloc (bench/traced.py): where the first one's memory is
    # held at the end of the idle window, and the restarted one's once it has resumed.
    # Their timings and RSS are then not the operator's own.
    trace_memory: bool = False
    # The first operator accounts for its resident memory (bench/accounted.py) at the end
    # of the idle window: the kernel's, pymalloc's and glibc's view. Costs nothing else.
    account_memory: bool = False
    # Seconds of kube-apiserver's CPU profile to record from the burst's start (0: none).
    profile_seconds: int = 0

    @property
    def grace_period(self) -> int:
        """Long enough that no deadline passes before the restart has been timed: users end
        at `rate` (or through the `steps`, each waiting for the one before to be seen),
        or with Jobs at the Job controller's pace if that is slower."""
        pace = min(self.rate, JOBS_COMPLETED_PER_SECOND) if self.jobs else self.rate
        steps = () if self.jobs else self.steps
        return math.ceil(capacity.finishing_seconds(self.evcs, pace, steps)
                         + self.step_slack * len(steps) + self.headroom)
