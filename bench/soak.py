"""Soak: continuous churn for a long while, the operator's memory sampled every 10 s.

Claims are created at a steady rate; most get a pod that runs, finishes and is
removed a little later (as a Job's TTL would), some are never used and expire.
The operator deletes every claim on time. The number of live objects stays about
constant, so the operator's memory must stay flat: the report gives its slope.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import time
from pathlib import Path
from typing import Any

from bench import stats, traced, workload
from bench.client import MERGE_PATCH, ApiError
from bench.observe import EVCS, ClaimWatch, until
from bench.operator import Operator, install_identity
from bench.scale import Scale
from bench.scenario import Run
from controlplane.cluster import ControlPlane

SAMPLE_EVERY = 10.0
GRACE, EXPIRY = 10, 20
UNUSED_SHARE = 0.1  # claims no pod ever uses: they expire


class Soak(Run):
    def __init__(self, plane: ControlPlane, workdir: Path, *, minutes: float, churn: float,
                 unrelated: int, namespaces: int, trace_memory: bool = False) -> None:
        super().__init__(plane, workdir, Scale(evcs=0, pods=unrelated, namespaces=namespaces))
        self.minutes = minutes
        self.churn = churn
        self.warmup = min(300.0, minutes * 60 / 6)
        # With tracemalloc: snapshots after warm-up and at the end of the churn, compared.
        self.snapshots = self._snapshots() if trace_memory else None
        self.random = random.Random(1)
        self.created = 0
        self.pods_created = 0
        self.rss: list[tuple[float, float]] = []  # (seconds since churn began, MiB)
        self.failures: list[str] = []

    async def _run(self) -> dict[str, Any]:
        api = self.api
        kubeconfig = install_identity(self.plane, self.workdir / "operator.kubeconfig")
        await self._step("namespaces", lambda: self.api.namespaces(self.namespaces))
        await self._step(f"{self.scale.pods} unrelated pods", lambda: self.api.create_all(
            [(self.namespaces[i % len(self.namespaces)],
              workload.unrelated_pod(f"other-{i:05d}")) for i in range(self.scale.pods)],
            "pods"))
        env = {"GRACE_PERIOD": str(GRACE), "EXPIRY_PERIOD": str(EXPIRY)}
        if self.snapshots:
            env["BENCH_SNAPSHOTS"] = str(self.snapshots)
        operator = Operator(kubeconfig, self.workdir / "operator-soak.log", env=env,
                            module="bench.traced" if self.snapshots else "evc_operator")
        self.operator = operator
        await self._step("operator start-up", lambda: until(
            lambda: int(operator.ready()), 1, "ready", limit=600, check=self._check_operator))
        claims = ClaimWatch()
        self._background(claims.run(api, await api.resource_version(EVCS)))
        begin, cpu_before = time.time(), operator.usage().cpu
        self._background(self._sample(operator, begin))
        await self._step(f"churn for {self.minutes:g} min, {self.churn:g} claims/s",
                         lambda: self._churn(begin + self.minutes * 60))
        await self._step("last claims deleted", lambda: until(
            lambda: len(claims.deleted), self.created, "claims deleted",
            limit=EXPIRY + GRACE + 300, check=self._check_operator))
        cpu = operator.usage().cpu - cpu_before
        operator.stop()
        warm = [(t, mib) for t, mib in self.rss if t >= self.warmup]
        per_hour = [(t / 3600, mib) for t, mib in self.rss]
        warm_per_hour = [(t / 3600, mib) for t, mib in warm]
        growth = None
        if self.snapshots:
            taken = traced.taken(self.snapshots)
            growth = traced.growth(taken[0], taken[-1]) if len(taken) >= 2 else None
        return {
            "minutes": self.minutes, "claims_created": self.created,
            "claims_deleted": len(claims.deleted), "pods_created": self.pods_created,
            "unrelated_pods": self.scale.pods, "harness_failures": self.failures[:20],
            "cpu_seconds": round(cpu, 1),
            "rss_mib": {"first": self.rss[0][1] if self.rss else None,
                        "last": self.rss[-1][1] if self.rss else None,
                        "min": min((m for _, m in self.rss), default=None),
                        "max": max((m for _, m in self.rss), default=None)},
            "slope_mib_per_hour": _rounded(stats.slope(per_hour)),
            "slope_after_warmup_mib_per_hour": _rounded(stats.slope(warm_per_hour)),
            "samples": [[round(t), mib] for t, mib in self.rss],
            **({"memory_growth_traced": growth} if self.snapshots else {}),
            "step_seconds": self.timings,
        }

    async def _sample(self, operator: Operator, begin: float) -> None:
        while operator.alive():
            with contextlib.suppress(OSError):
                self.rss.append((time.time() - begin, round(operator.usage().rss / 2**20, 1)))
            await asyncio.sleep(SAMPLE_EVERY)

    async def _churn(self, end: float) -> None:
        lives: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        warmed = False
        while time.time() < end:
            self._check_operator()
            if not warmed and time.monotonic() - start >= self.warmup:
                warmed = True
                await self._snapshot()
            due = int((time.monotonic() - start) * self.churn) - self.created
            for _ in range(due):
                task = asyncio.create_task(self._life(self.created))
                self.created += 1
                lives.add(task)
                task.add_done_callback(lives.discard)
            await asyncio.sleep(0.2)
        await self._snapshot()
        await asyncio.gather(*lives)

    async def _snapshot(self) -> None:
        if self.snapshots is not None and self.operator is not None:
            await traced.take(self.operator, self.snapshots)

    async def _life(self, number: int) -> None:
        """One claim's life: created, maybe used by a pod that finishes and goes away."""
        namespace = self.namespaces[number % len(self.namespaces)]
        claim, pod = f"soak-{number:06d}", f"soak-user-{number:06d}"
        pods = f"/api/v1/namespaces/{namespace}/pods"
        try:
            await self.api.request("POST", f"/apis/zalando.org/v1/namespaces/{namespace}/"
                                   "ephemeralvolumeclaims", workload.evc(claim))
            if self.random.random() < UNUSED_SHARE:
                return
            await self.api.request("POST", pods, workload.user_pod(pod, claim))
            self.pods_created += 1
            await asyncio.sleep(self.random.uniform(1, 3))
            started = datetime.datetime.now(datetime.UTC)
            await self.api.request("PATCH", f"{pods}/{pod}/status", workload.running(started),
                                   content_type=MERGE_PATCH)
            await asyncio.sleep(self.random.uniform(5, 20))
            finished = datetime.datetime.now(datetime.UTC)
            await self.api.request("PATCH", f"{pods}/{pod}/status",
                                   workload.succeeded(started, finished),
                                   content_type=MERGE_PATCH)
            await asyncio.sleep(30)  # then removed, as a Job's ttlSecondsAfterFinished would
            await self.api.request("DELETE", f"{pods}/{pod}")
        except ApiError as error:
            self.failures.append(f"{claim}: {error}")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
