"""One measured run: claims and pods at scale, from creation to deletion, and a restart.

Steps (each timed, with progress on the terminal):
 1. unrelated pods spread over the namespaces (the rest of a cluster);
 2. a bare client's PVC creations and status patches: the machine's speed (capacity.py);
 3. the operator starts (it reads pods only of namespaces that hold claims: none yet);
 4. the claims are created at once (the operator creates their PVCs: the burst, against
    the bare client's), then one pod for each, which the harness marks Running: every
    claim in use (with `jobs`, one Job for each, whose pod the Job controller creates:
    the claim has two users);
 5. nothing changes for a while: idle footprint and API writes;
 6. the pods finish one by one at a steady rate, or in `steps` of rising pace:
    reaction against the harness's own bare watch of pods (the floor; with `jobs`, also
    its watch of the Jobs turning Complete), the operator's own share, and the footprint;
 7. the operator is killed and started again: time until every countdown resumed;
 8. the claims are deleted at their deadlines: lateness.
The operator's API requests are read from the audit log, by its ServiceAccount.
"""

from __future__ import annotations

import asyncio
import datetime
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench import accounted, apiprofile, audit, capacity, reaction, traced, workload
from bench.client import MERGE_PATCH, Api
from bench.cost import Cost
from bench.observe import (
    EVCS,
    JOBS,
    PODS,
    ClaimWatch,
    JobWatch,
    Key,
    PodWatch,
    reseals,
    until,
)
from bench.operator import (
    USER,
    Operator,
    Sampler,
    by_steps,
    footprint,
    install_identity,
    mib,
    wind_down,
)
from bench.reaction import summary_ms
from bench.scale import Scale
from controlplane.cluster import ControlPlane

# After the last claim shows InUse, before the idle window opens: its Events, and the
# second write of a record that replaced one sealed under 6 s before (seal.SPACING), land.
SETTLE_SECONDS = 12.0
BARE_PATCHES = 5000  # status patches of unrelated pods, to time a bare client's writes


def user_name(key: Key) -> str:
    """The name of a claim's user: its pod, or with `--jobs` its Job."""
    return key[1].replace("claim-", "user-")


class Run:
    def __init__(self, plane: ControlPlane, workdir: Path, scale: Scale) -> None:
        self.plane = plane
        self.workdir = workdir
        self.scale = scale
        self.api = Api(plane.server, plane.admin_token, str(plane.ca_file),
                       in_flight=scale.in_flight)
        self.namespaces = [f"bench-{i:02d}" for i in range(scale.namespaces)]
        self.claims: list[Key] = [(self.namespaces[i % scale.namespaces], f"claim-{i:05d}")
                                  for i in range(scale.evcs)]
        self.result: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.steps_began: list[tuple[float, str]] = []  # (wall time, step), in order
        self.tasks: list[asyncio.Task[None]] = []
        self.operator: Operator | None = None
        self.sampler = Sampler()
        self.pods = PodWatch()
        self.user_pods: dict[Key, str] = {}  # each claim's user pod, by name
        self.stage_of: dict[Key, float] = {}  # the pace its user pod finished at
        self.killed_at = 0.0  # when the first operator was killed (step 7)
        self.sent: dict[Key, float] = {}  # when the harness ended each claim's user

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(work))

    def _check_operator(self) -> None:
        if self.operator is not None and not self.operator.alive():
            raise RuntimeError(f"the operator exited ({self.operator.process.returncode}); "
                               f"see {self.workdir.name}/operator-*.log")
        for task in self.tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"a watch failed: {task.exception()}")

    async def _step(self, name: str, work: Callable[[], Awaitable[Any]]) -> Any:
        print(f"- {name}", flush=True)
        self.steps_began.append((time.time(), name))
        start = time.monotonic()
        value = await work()
        self.timings[name] = round(time.monotonic() - start, 1)
        print(f"  done in {self.timings[name]} s", flush=True)
        return value if value is not None else time.monotonic() - start

    def _start_operator(self, kubeconfig: Path, number: int) -> Operator:
        traced_here = self.scale.trace_memory
        accounted_here = self.scale.account_memory
        operator = Operator(kubeconfig, self.workdir / f"operator-{number}.log", env={
            "GRACE_PERIOD": str(self.scale.grace_period),
            "EXPIRY_PERIOD": "3600",  # no claim expires while the pods are being made
            **dict(self.scale.operator_env),
            **({"BENCH_SNAPSHOTS": str(self._snapshots())} if traced_here else {}),
            **({"BENCH_ACCOUNTS": str(self._snapshots())} if accounted_here else {}),
        }, module="bench.traced" if traced_here
            else "bench.accounted" if accounted_here else "evc_operator")
        self.operator = operator
        self._background(self.sampler.run(operator))
        return operator

    def _snapshots(self) -> Path:
        folder = self.workdir / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        finally:
            await wind_down(self.tasks, self.operator, self.api)

    async def _run(self) -> dict[str, Any]:
        scale, api = self.scale, self.api
        kubeconfig = install_identity(self.plane, self.workdir / "operator.kubeconfig")
        await self._step("namespaces", lambda: self.api.namespaces(self.namespaces))
        unrelated = scale.pods - scale.evcs
        await self._step(f"{unrelated} unrelated pods", lambda: self.api.create_all(
            [(self.namespaces[i % scale.namespaces], workload.unrelated_pod(f"other-{i:05d}"))
             for i in range(unrelated)], "pods"))

        # The machine's own speed, before the operator runs: what a bare client gets.
        patched = [(self.namespaces[i % scale.namespaces], f"other-{i:05d}")
                   for i in range(min(unrelated, BARE_PATCHES))]
        bare_cost = Cost(self.plane)
        await bare_cost.begin()
        creates = await self._step(f"bare client: {scale.evcs} PVCs at once",
                                   lambda: capacity.bare_creates(api, scale.evcs))
        self.result["bare_client"] = {
            "pvc_creates": creates | {"cost": await bare_cost.end()},
            "status_patches": await self._step(
                f"bare client: {len(patched)} status patches",
                lambda: capacity.bare_status_patches(api, patched))}

        operator = self._start_operator(kubeconfig, 1)
        began = time.time()
        startup = await self._step("operator start-up", lambda: until(
            lambda: int(operator.ready()), 1, "ready", limit=600, check=self._check_operator))
        self.result["startup"] = {"seconds": round(startup, 1),
                                  "peak_rss_mib": mib(operator.usage().peak_rss)}

        claims = ClaimWatch()
        self._background(claims.run(api, await api.resource_version(EVCS)))
        created: dict[Key, float] = {}

        async def create_claim(key: Key) -> None:
            created[key] = time.time()
            await api.request("POST", f"/apis/zalando.org/v1/namespaces/{key[0]}/"
                              f"ephemeralvolumeclaims", workload.evc(key[1]))

        async def claims_pending() -> None:
            await api.each(self.claims, create_claim)
            await until(lambda: claims.count("Pending"), scale.evcs, "claims Pending",
                        limit=1800, check=self._check_operator)
        burst_cost = Cost(self.plane, operator.pid)
        await burst_cost.begin()
        profiled = asyncio.create_task(apiprofile.record(
            api, scale.profile_seconds, self.workdir / "apiserver-burst.pprof")
        ) if scale.profile_seconds else None
        burst = await self._step(f"{scale.evcs} claims (PVC created, Pending)", claims_pending)
        bare = self.result["bare_client"]["pvc_creates"]["seconds"]
        self.result["burst"] = {"seconds": round(burst, 1), "bare_seconds": bare,
                                "ratio": round(burst / bare, 2) if bare else None,
                                "cost": await burst_cost.end()}
        if profiled is not None:
            self.result["burst"]["apiserver_profile"] = await asyncio.to_thread(
                apiprofile.summary, await profiled)
        self.result["provisioning_ms"] = summary_ms([claims.phases[key]["Pending"] - at
                                                      for key, at in created.items()])

        started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)

        async def start_user(key: Key) -> None:
            name = self.user_pods[key] = user_name(key)
            await api.request("POST", f"/api/v1/namespaces/{key[0]}/pods",
                              workload.user_pod(name, key[1]))
            await self._run_pod(key, started)

        async def claims_in_use() -> None:
            if scale.jobs:  # the claim has two users: the Job and its pod
                await self._start_jobs(started)
                await until(lambda: claims.counting(2), scale.evcs, "claims InUse by 2",
                            limit=1800, check=self._check_operator)
            else:
                await api.each(self.claims, start_user)
                await until(lambda: claims.count("InUse"), scale.evcs, "claims InUse",
                            limit=1800, check=self._check_operator)
        users = "Jobs and their pods" if scale.jobs else "pods"
        await self._step(f"{scale.evcs} user {users} running (claims InUse)", claims_in_use)

        # Nothing changes now: the operator should be silent and small. Its last claims'
        # Events follow their status writes: the window opens once those have landed.
        await asyncio.sleep(SETTLE_SECONDS)
        idle_start, idle_usage = time.time(), operator.usage()
        await self._step(f"idle for {scale.idle_seconds:.0f} s",
                         lambda: asyncio.sleep(scale.idle_seconds))
        idle_end, idle_after = time.time(), operator.usage()
        if scale.trace_memory:
            self.result["memory_traced"] = traced.breakdown(
                await traced.take(operator, self._snapshots()))
        if scale.account_memory:
            self.result["memory_account"] = {
                "rss_mib": mib(operator.usage().rss),
                **await accounted.take(operator, self._snapshots())}

        pods, jobs = self.pods, JobWatch()
        if not scale.jobs:  # with Jobs, it has watched since before the Jobs were made
            self._background(pods.run(api, await api.resource_version(PODS)))
        else:
            self._background(jobs.run(api, await api.resource_version(JOBS)))
        busy_start, busy_usage = time.time(), operator.usage()
        acted = operator.histogram("evc_reaction_seconds")  # the operator's own share
        pace = "/".join(f"{rate:g}" for rate in scale.steps) or f"{scale.rate:g}"
        await self._step(f"{scale.evcs} user pods finish, {pace}/s (claims Idle)",
                         lambda: self._finish_users(self.sent, claims))
        busy_end, busy_after = time.time(), operator.usage()
        self.result["reaction_operator_ms"] = reaction.own_share(
            acted, operator.histogram("evc_reaction_seconds"))

        self._reaction(self.sent, claims, jobs)
        self.result["reseals"] = reseals(claims.phases)

        # A restart with every countdown running: nothing may be lost or reset.
        killed_at = self.killed_at = time.time()
        operator.stop(signal.SIGKILL)
        waiting = sum(1 for key in self.claims if key not in claims.deleted)
        deleted_before = len(claims.deleted)
        restarted = self._start_operator(kubeconfig, 2)

        def resumed() -> int:
            """Countdowns resumed, and those that ended meanwhile (none should)."""
            value = restarted.gauge("evc_countdowns")
            ended = len(claims.deleted) - deleted_before
            return (int(value or 0) if restarted.ready() else 0) + ended
        resume = await self._step("operator killed and started again (countdowns resumed)",
                                  lambda: until(resumed, waiting, "countdowns resumed",
                                                limit=600, check=self._check_operator))
        resumed_at = time.time()
        if scale.trace_memory:
            self.result["memory_traced_resumed"] = traced.breakdown(
                await traced.take(restarted, self._snapshots()))
        if scale.account_memory:  # before its deletions: untrimmed, not to change them
            self.result["memory_account_resumed"] = {
                "rss_mib": mib(restarted.usage().rss),
                **await accounted.take(restarted, self._snapshots(), trim=False)}
        self.result["resume"] = {"seconds": round(resume, 1), "countdowns": waiting,
                                 # Should be 0: deadlines that fell with no operator.
                                 "deadlines_while_down": sum(
                                     1 for at in claims.deletes_at.values()
                                     if killed_at <= at < resumed_at)}

        await self._step("claims deleted at their deadlines", lambda: until(
            lambda: len(claims.deleted), scale.evcs, "claims deleted",
            limit=scale.grace_period + 600, check=self._check_operator))
        lateness = [claims.deleted[key] - claims.deletes_at[key] for key in self.claims
                    if key in claims.deletes_at]
        self.result["deletion_lateness_ms"] = summary_ms(lateness)
        self.result["deletion_operator_ms"] = {  # the restarted operator made every deletion
            part: reaction.own_share({}, restarted.histogram(name)) for part, name in (
                ("proof", "evc_proof_seconds"), ("slot_wait", "evc_deletion_slot_wait_seconds"))}
        wrong = [key for key in self.claims if "Idle" not in claims.phases.get(key, {})]
        self.result["deleted_before_idle"] = len(wrong)
        await restarted.events_posted()  # the last deletions' Events come just after them
        ended = time.time()
        if scale.account_memory:  # the restarted operator's, where its peak is
            self.result["memory_account_deleted"] = {
                "rss_mib": mib(restarted.usage().rss),
                **await accounted.take(restarted, self._snapshots())}
        restarted.stop()

        self.result["footprint"] = {
            "idle": footprint(idle_usage, idle_after, idle_start, idle_end),
            "busy": footprint(busy_usage, busy_after, busy_start, busy_end),
            "peak_rss_mib": mib(max(u.peak_rss for _, u in self.sampler.samples)),
            **by_steps(self.sampler.samples, self.steps_began),
        }
        self.result["api"] = self._api_cost(began, ended, idle_start, idle_end, claims)
        if scale.jobs:
            self.result["controller_manager"] = audit.per_job(audit.between(
                audit.read(self.plane.audit_log, audit.CONTROLLER_MANAGER), began, ended),
                scale.evcs, busy_start, busy_end)
        self.result["step_seconds"] = self.timings
        return self.result

    async def _run_pod(self, key: Key, started: datetime.datetime) -> None:
        await self.api.request(
            "PATCH", f"/api/v1/namespaces/{key[0]}/pods/{self.user_pods[key]}/status",
            workload.running(started), content_type=MERGE_PATCH)

    async def _start_jobs(self, started: datetime.datetime) -> None:
        """A Job for each claim; once the Job controller has made its pod, the pod runs.
        Also times the Job controller's making of pods (rate-limited: docs/benchmarks.md)."""
        self._background(self.pods.run(self.api, await self.api.resource_version(PODS)))
        begun = time.monotonic()

        async def create(key: Key) -> None:
            await self.api.request("POST", f"/apis/batch/v1/namespaces/{key[0]}/jobs",
                                   workload.user_job(user_name(key), key[1]))
        await self.api.each(self.claims, create)
        await until(lambda: len(self.pods.of_job), len(self.claims), "Job pods created",
                    limit=3600, check=self._check_operator)
        seconds = time.monotonic() - begun
        self.result["job_pods_created"] = {"seconds": round(seconds, 1), "per_second": round(
            len(self.claims) / max(seconds, 1e-9), 1)}
        for key in self.claims:
            self.user_pods[key] = self.pods.of_job[(key[0], user_name(key))]
        await self.api.each(self.claims, lambda key: self._run_pod(key, started))

    def _reaction(self, sent: dict[Key, float], claims: ClaimWatch, jobs: JobWatch) -> None:
        """Reaction against its floors (reaction.py), from what the harness's watches saw."""
        pods = {key: (key[0], self.user_pods[key]) for key in sent}
        self.result.update(reaction.reaction(
            sent, {key: claims.phases[key]["Idle"] for key in sent},
            {key: self.pods.succeeded[pod] for key, pod in pods.items()
             if pod in self.pods.succeeded},
            self.stage_of if self.scale.steps else None,
            {key: jobs.complete[(key[0], user_name(key))] for key in sent
             if (key[0], user_name(key)) in jobs.complete} if self.scale.jobs else None))

    async def _finish_users(self, sent: dict[Key, float], claims: ClaimWatch) -> None:
        """Each user pod turns Succeeded, evenly paced; waits until every claim is Idle."""
        pending: set[asyncio.Task[None]] = set()

        async def finish(key: Key) -> None:
            name = self.user_pods[key]
            now = datetime.datetime.now(datetime.UTC)
            sent[key] = time.time()
            await self.api.request(
                "PATCH", f"/api/v1/namespaces/{key[0]}/pods/{name}/status",
                workload.succeeded(now - datetime.timedelta(seconds=5), now),
                content_type=MERGE_PATCH)

        plan = (capacity.stages(len(self.claims), self.scale.steps) if self.scale.steps
                else [(self.scale.rate, len(self.claims))])
        keys, done = iter(self.claims), 0
        for pace, count in plan:
            start = time.monotonic()
            for number in range(count):
                key = next(keys)
                self.stage_of[key] = pace
                delay = start + number / pace - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(finish(key))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            done += count
            if len(plan) > 1:  # each stage starts once the one before is seen through
                await until(lambda: claims.count("Idle"), done, "claims Idle",
                            limit=600, check=self._check_operator)
        await until(lambda: claims.count("Idle"), self.scale.evcs, "claims Idle",
                    limit=self.scale.grace_period + 600, check=self._check_operator)

    def _api_cost(self, began: float, ended: float, idle_start: float, idle_end: float,
                  claims: ClaimWatch) -> dict[str, Any]:
        found = audit.between(audit.read(self.plane.audit_log, USER), began, ended)
        for name, split in audit.splits(found, self.sent, claims.phases, claims.deletes_at,
                                        claims.deleted).items():
            self.result[name] = {k: summary_ms(v) for k, v in split.items()}
        # The young records the restarted operator found and read back.
        self.result["resume"]["records_read_back"] = audit.claims_read(found, self.killed_at)
        return audit.cost(found, self.scale.evcs, idle_start, idle_end)
