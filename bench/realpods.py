"""A small run whose users are real pods on the project's real node (`--real-node`).

The large run simulates pods: the harness writes their status, as a kubelet would (a
2-core node cannot run tens of thousands of pods). Here each claim's one user is a real
container: busybox from the node's own registry, mounting the claim at `/vol`, sleeping
`pod_seconds` and exiting 0; the kubelet reports it `Succeeded`. Pods are created at
`rate` per second, so a few dozen run at a time. Measured:

- **reaction**: from the harness's own pod watch seeing the pod `Succeeded` (the
  kubelet's status write) to its claim watch seeing the claim `Idle` with its deadline.
  The simulated run counts from just before its own status PATCH, one round trip and one
  watch delivery more;
- **lateness**: the claim's deletion, as the harness's watch sees it, minus `deletesAt`;
- **pod start**: from the harness creating the pod to its watch seeing it `Running`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench import stats, workload
from bench.client import Api
from bench.observe import EVCS, PODS, ClaimWatch, Key, until
from bench.operator import Operator, install_identity
from bench.scale import Scale
from bench.scenario import Run
from controlplane.cluster import ControlPlane

GRACE_SECONDS = 10


class PodPhases:
    """When each pod was first seen Running, and Succeeded or Failed."""

    def __init__(self) -> None:
        self.seen: dict[Key, dict[str, float]] = {}

    async def run(self, api: Api, resource_version: str) -> None:
        async for event in api.watch(PODS, resource_version):
            obj = event["object"]
            phase = (obj.get("status") or {}).get("phase")
            if phase:
                key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                self.seen.setdefault(key, {}).setdefault(phase, time.time())

    def count(self, *phases: str) -> int:
        return sum(1 for seen in self.seen.values() if any(p in seen for p in phases))


def _ms(values: list[float]) -> dict[str, Any]:
    return {key: round(value * 1000, 1) if key != "count" and value is not None else value
            for key, value in stats.summary(values).items()}


class RealPods(Run):
    """`Run`'s harness (its namespaces, steps and checks) with real pods."""

    def __init__(self, plane: ControlPlane, workdir: Path, *, evcs: int, rate: float,
                 pod_seconds: float) -> None:
        super().__init__(plane, workdir, Scale(evcs=evcs, pods=evcs, namespaces=1, rate=rate,
                                               in_flight=8))
        self.pod_seconds = pod_seconds

    async def _run(self) -> dict[str, Any]:
        api, total = self.api, self.scale.evcs
        kubeconfig = install_identity(self.plane, self.workdir / "operator.kubeconfig")
        await self._step("namespace", lambda: self.api.namespaces(self.namespaces))
        operator = self.operator = Operator(kubeconfig, self.workdir / "operator-1.log", env={
            "GRACE_PERIOD": str(GRACE_SECONDS), "EXPIRY_PERIOD": "3600"})
        await self._step("operator start-up", lambda: until(
            lambda: int(operator.ready()), 1, "ready", limit=600, check=self._check_operator))
        claims, pods = ClaimWatch(), PodPhases()
        self._background(claims.run(api, await api.resource_version(EVCS)))
        self._background(pods.run(api, await api.resource_version(PODS)))

        async def create_claim(key: Key) -> None:
            await api.request("POST", f"/apis/zalando.org/v1/namespaces/{key[0]}/"
                              f"ephemeralvolumeclaims", workload.evc(key[1], "10Mi"))
        await self._step(f"{total} claims (PVC created, Pending)", lambda: self._all(
            api.each(self.claims, create_claim), lambda: claims.count("Pending")))

        created: dict[Key, float] = {}

        async def start_users() -> None:
            start = time.monotonic()
            for number, (namespace, claim) in enumerate(self.claims):
                await asyncio.sleep(max(0.0, start + number / self.scale.rate - time.monotonic()))
                name = claim.replace("claim-", "user-")
                created[(namespace, name)] = time.time()
                await api.request("POST", f"/api/v1/namespaces/{namespace}/pods",
                                  workload.real_user_pod(name, claim, self.pod_seconds))
        await self._step(f"{total} real user pods, {self.scale.rate:g}/s, each "
                         f"{self.pod_seconds:g} s (claims InUse, then Idle)",
                         lambda: self._all(start_users(), lambda: claims.count("Idle"),
                                           limit=1800))
        await self._step("claims deleted at their deadlines", lambda: until(
            lambda: len(claims.deleted), total, "claims deleted", limit=GRACE_SECONDS + 600,
            check=self._check_operator))
        users = {key: (key[0], key[1].replace("claim-", "user-")) for key in self.claims}
        reaction = [claims.phases[key]["Idle"] - pods.seen[user]["Succeeded"]
                    for key, user in users.items()
                    if "Idle" in claims.phases.get(key, {})
                    and "Succeeded" in pods.seen.get(user, {})]
        lateness = [claims.deleted[key] - claims.deletes_at[key] for key in self.claims
                    if key in claims.deleted and key in claims.deletes_at]
        start = [pods.seen[key]["Running"] - at for key, at in created.items()
                 if "Running" in pods.seen.get(key, {})]
        return {
            "real_pods": True, "grace_seconds": GRACE_SECONDS, "pod_seconds": self.pod_seconds,
            "reaction_ms": _ms(reaction), "deletion_lateness_ms": _ms(lateness),
            "pod_start_ms": _ms(start),
            "pods_succeeded": pods.count("Succeeded"), "pods_failed": pods.count("Failed"),
            "deleted_before_idle": sum(1 for key in self.claims
                                       if "Idle" not in claims.phases.get(key, {})),
            "peak_rss_mib": round(operator.usage().peak_rss / 2**20, 1),
            "step_seconds": self.timings,
        }

    async def _all(self, work: Coroutine[Any, Any, Any], count: Any,
                   limit: float = 900) -> None:
        await work
        await until(count, self.scale.evcs, "claims", limit=limit, check=self._check_operator)


def table(result: dict[str, Any]) -> str:
    rows = [("reaction p50 / p99 / max (ms)", "reaction_ms"),
            ("deletion lateness p50 / p99 / max (ms)", "deletion_lateness_ms"),
            ("pod start p50 / p99 / max (ms)", "pod_start_ms")]
    lines = [f"{name:40} {result[key]['p50']} / {result[key]['p99']} / {result[key]['max']}"
             f"  ({result[key]['count']})" for name, key in rows]
    lines += [f"{'pods Succeeded / Failed':40} {result['pods_succeeded']} / "
              f"{result['pods_failed']}",
              f"{'claims deleted before Idle':40} {result['deleted_before_idle']}",
              f"{'operator RSS peak (MiB)':40} {result['peak_rss_mib']}"]
    return "\n".join(lines)
