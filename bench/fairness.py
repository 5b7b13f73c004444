"""`python -m bench.fairness`: a quiet namespace's claims alone, then beside a noisy one.

    python -m bench.fairness                        # 400 noisy claims, 12 label edits/s
    python -m bench.fairness --noisy 100 --edits 4 --noise flip

It starts a control plane and the operator (as `python -m bench` does). The noisy
namespace holds `--noisy` claims whose selector matches its `--noisy-pods` running pods.
Each round, `--quiet` claims are created in the quiet namespace one after another
(`--pace` per second): provisioning is from the create request to the harness's watch
seeing the claim `Pending` (its PVC created); then a pod for each is started, and the pods
finish at the same pace: reaction is from the pod's `Succeeded` to the claim seen `Idle`,
beside the harness's bare watch of the same pods (the floor). Rounds:

- `alone`: the noisy namespace is there, and still;
- `touch`: its pods' labels are edited `--edits` times a second, on a label no selector
  reads (the users of no claim change);
- `flip`: the same rate of edits flip the selected label on half of its pods, so each edit
  changes the users (and the status) of every noisy claim;
- `alone` again, once the noise stopped and the operator caught up.

Ratios are of the same run (a round with noise over the first `alone`); the issue's goal
is the quiet namespace's p50 and p99 within 2x of running alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from bench import standalone, stats, workload
from bench.client import MERGE_PATCH, Api
from bench.observe import EVCS, PODS, ClaimWatch, Key, PodWatch, until
from bench.operator import Operator, install_identity, wind_down
from controlplane.cluster import ControlPlane

QUIET, NOISY = "quiet", "noisy"
TIER = "bench.evc.zalando.org/tier"  # what the noisy claims' selector reads
LIMIT = 600.0  # seconds any one wait may take


@dataclasses.dataclass(frozen=True)
class Load:
    quiet: int = 20  # claims of the quiet namespace per round
    pace: float = 2.0  # quiet claims created (and their pods finished) per second
    noisy: int = 400  # claims with a selector in the noisy namespace
    noisy_pods: int = 20  # the pods their selector matches
    edits: float = 12.0  # label edits per second on the noisy pods
    noise: tuple[str, ...] = ("touch", "flip")  # the rounds with noise, in order
    settle: float = 10.0  # seconds before each round (the last one's writes land)


def _ms(values: Iterable[float]) -> dict[str, Any]:
    return {key: value if key == "count" or value is None else round(value * 1000, 1)
            for key, value in stats.summary(list(values)).items()}


def ratios(alone: dict[str, Any], other: dict[str, Any]) -> dict[str, float | None]:
    """Each measure's p50 and p99 in `other` over the same in `alone`."""
    found: dict[str, float | None] = {}
    for measure in ("provisioning_ms", "reaction_ms"):
        for quantile in ("p50", "p99"):
            base, value = alone[measure][quantile], other[measure][quantile]
            found[f"{measure[:-3]}_{quantile}"] = (round(value / base, 2)
                                                   if base and value is not None else None)
    return found


class Fairness:
    def __init__(self, plane: ControlPlane, workdir: Path, load: Load) -> None:
        self.plane = plane
        self.workdir = workdir
        self.load = load
        self.api = Api(plane.server, plane.admin_token, str(plane.ca_file), in_flight=32)
        self.claims = ClaimWatch()
        self.pods = PodWatch()
        self.tasks: list[asyncio.Task[None]] = []
        self.operator: Operator | None = None
        self.started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)

    def _check(self) -> None:
        if self.operator is not None and not self.operator.alive():
            raise RuntimeError("the operator exited; see operator.log in the work directory")
        for task in self.tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"a watch failed: {task.exception()}")

    async def _until(self, keys: list[Key], phase: str) -> None:
        await until(lambda: sum(1 for key in keys if phase in self.claims.phases.get(key, {})),
                    len(keys), f"{phase} ({len(keys)})", limit=LIMIT, check=self._check)

    async def _paced(self, keys: list[Key],
                     work: Callable[[Key], Coroutine[Any, Any, None]]) -> None:
        """`work` on each key, `pace` a second, without waiting for one to start the next."""
        start = time.monotonic()
        pending = []
        for number, key in enumerate(keys):
            delay = start + number / self.load.pace - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(work(key)))
        await asyncio.gather(*pending)

    async def run(self) -> dict[str, Any]:
        """Every round, then everything it started stopped."""
        kubeconfig = install_identity(self.plane, self.workdir / "operator.kubeconfig")
        try:
            return await self._rounds(kubeconfig)
        finally:
            await wind_down(self.tasks, self.operator, self.api)

    async def _rounds(self, kubeconfig: Path) -> dict[str, Any]:
        load, api = self.load, self.api
        await api.namespaces((QUIET, NOISY))
        self.operator = operator = Operator(kubeconfig, self.workdir / "operator.log", env={
            "GRACE_PERIOD": "3600", "EXPIRY_PERIOD": "3600"})  # nothing is deleted meanwhile
        await until(lambda: int(operator.ready()), 1, "operator ready", limit=LIMIT,
                    check=self._check)
        self.tasks.append(asyncio.create_task(
            self.claims.run(api, await api.resource_version(EVCS))))
        self.tasks.append(asyncio.create_task(
            self.pods.run(api, await api.resource_version(PODS))))

        print(f"- noisy namespace: {load.noisy} claims with a selector, "
              f"{load.noisy_pods} pods", flush=True)
        await api.each(range(load.noisy_pods), self._noisy_pod)
        noisy = [(NOISY, f"claim-{number:04d}") for number in range(load.noisy)]
        await api.each(noisy, lambda key: api.request(
            "POST", f"/apis/zalando.org/v1/namespaces/{NOISY}/ephemeralvolumeclaims",
            _selecting(key[1])))
        await self._until(noisy, "InUse")

        rounds: dict[str, Any] = {}
        for name in ("alone", *load.noise, "alone-after"):
            await asyncio.sleep(load.settle)
            rounds[name] = await self._round(name, None if name.startswith("alone") else name)
        return {
            "load": dataclasses.asdict(load),
            "rounds": rounds,
            "ratios": {name: ratios(rounds["alone"], rounds[name])
                       for name in rounds if name != "alone"},
        }

    async def _noisy_pod(self, number: int) -> None:
        name = f"noisy-{number:03d}"
        body = workload.unrelated_pod(name)
        body["metadata"]["labels"][TIER] = NOISY
        await self.api.request("POST", f"/api/v1/namespaces/{NOISY}/pods", body)
        await self.api.request("PATCH", f"/api/v1/namespaces/{NOISY}/pods/{name}/status",
                               workload.running(self.started), content_type=MERGE_PATCH)

    async def _round(self, name: str, noise: str | None) -> dict[str, Any]:
        """One round of quiet claims, with `noise` ("touch", "flip") or none."""
        print(f"- round {name}: {self.load.quiet} quiet claims at {self.load.pace:g}/s"
              + (f", {self.load.edits:g} {noise} edits/s in {NOISY}" if noise else ""),
              flush=True)
        operator, api = self.operator, self.api
        assert operator is not None
        stop = asyncio.Event()
        edits: list[int] = [0]
        churn = asyncio.create_task(self._churn(noise, stop, edits)) if noise else None
        if churn is not None:
            await asyncio.sleep(self.load.settle / 2)  # the noise has set in
        before, began, load_before = operator.usage(), time.time(), os.getloadavg()[0]
        counted = operator.metrics().get("evc_reaction_seconds_count", 0.0)
        keys = [(QUIET, f"{name}-{number:03d}") for number in range(self.load.quiet)]
        created: dict[Key, float] = {}

        async def create(key: Key) -> None:
            created[key] = time.time()
            await api.request("POST", f"/apis/zalando.org/v1/namespaces/{QUIET}/"
                              "ephemeralvolumeclaims", workload.evc(key[1]))

        await self._paced(keys, create)
        await self._until(keys, "Pending")

        async def start_user(key: Key) -> None:
            await api.request("POST", f"/api/v1/namespaces/{QUIET}/pods",
                              workload.user_pod(f"user-{key[1]}", key[1]))
            await api.request("PATCH", f"/api/v1/namespaces/{QUIET}/pods/user-{key[1]}/status",
                              workload.running(self.started), content_type=MERGE_PATCH)

        await api.each(keys, start_user)
        await self._until(keys, "InUse")
        sent: dict[Key, float] = {}

        async def finish(key: Key) -> None:
            now = datetime.datetime.now(datetime.UTC)
            sent[key] = time.time()
            await api.request("PATCH", f"/api/v1/namespaces/{QUIET}/pods/user-{key[1]}/status",
                              workload.succeeded(now - datetime.timedelta(seconds=5), now),
                              content_type=MERGE_PATCH)

        await self._paced(keys, finish)
        await self._until(keys, "Idle")
        after, ended = operator.usage(), time.time()
        stop.set()
        if churn is not None:
            await churn
        seconds = max(ended - began, 1e-9)
        floor = [self.pods.succeeded[(QUIET, f"user-{key[1]}")] - at for key, at in sent.items()
                 if (QUIET, f"user-{key[1]}") in self.pods.succeeded]
        result = {
            "provisioning_ms": _ms(self.claims.phases[key]["Pending"] - at
                                   for key, at in created.items()),
            "reaction_ms": _ms(self.claims.phases[key]["Idle"] - at for key, at in sent.items()),
            "bare_watch_ms": _ms(floor),
            "seconds": round(seconds, 1),
            "operator_cpu_percent": round(100 * (after.cpu - before.cpu) / seconds, 1),
            "reconciliations": int(operator.metrics().get("evc_reaction_seconds_count", 0.0)
                                   - counted),
            "reconcile_limit": operator.gauge("evc_reconcile_limit"),
            "noisy_edits_per_second": round(edits[0] / seconds, 1),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        print("  " + json.dumps({key: result[key] for key in (
            "provisioning_ms", "reaction_ms", "operator_cpu_percent", "reconciliations")}),
            flush=True)
        return result

    async def _churn(self, noise: str, stop: asyncio.Event, edits: list[int]) -> None:
        """Label edits on the noisy pods, `edits` a second, until `stop`. "flip" turns
        the selected label off and on again on the first half of the pods (the other half
        keep every noisy claim in use); "touch" sets a label nobody selects."""
        half = max(1, self.load.noisy_pods // 2)

        async def edit(pod: int, labels: dict[str, str]) -> None:
            await self.api.request("PATCH", f"/api/v1/namespaces/{NOISY}/pods/noisy-{pod:03d}",
                                   {"metadata": {"labels": labels}}, content_type=MERGE_PATCH)
            edits[0] += 1

        async def one(number: int) -> None:
            if noise == "flip":
                await edit(number % half,
                           {TIER: "off" if (number // half) % 2 == 0 else NOISY})
            else:
                await edit(number % self.load.noisy_pods, {"revision": str(number)})

        await standalone.paced(self.load.edits, lambda: not stop.is_set(), one)
        if noise == "flip":  # every pod selected again, as the next round expects
            await asyncio.gather(*(edit(pod, {TIER: NOISY}) for pod in range(half)))


async def _measure(plane: ControlPlane, workdir: Path, load: Load) -> dict[str, Any]:
    return await Fairness(plane, workdir, load).run()  # its client needs the running loop


def _selecting(name: str) -> dict[str, Any]:
    body = workload.evc(name)
    body["spec"]["selector"] = {"matchLabels": {TIER: NOISY}}
    return body


def table(result: dict[str, Any]) -> str:
    lines = ["| round | provisioning p50 / p99 (ms) | reaction p50 / p99 (ms) | bare watch "
             "p99 (ms) | operator CPU | reconciliations | edits/s | load avg |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, measured in result["rounds"].items():
        provisioning, reaction = measured["provisioning_ms"], measured["reaction_ms"]
        lines.append(
            f"| {name} | {provisioning['p50']} / {provisioning['p99']} | {reaction['p50']} / "
            f"{reaction['p99']} | {measured['bare_watch_ms']['p99']} | "
            f"{measured['operator_cpu_percent']} % | {measured['reconciliations']} | "
            f"{measured['noisy_edits_per_second']} | {measured['load_average_1m'][1]} |")
    lines.append("")
    lines.append("| round | provisioning p50 / p99 vs alone | reaction p50 / p99 vs alone |")
    lines.append("| --- | --- | --- |")
    for name, ratio in result["ratios"].items():
        lines.append(f"| {name} | {ratio['provisioning_p50']} / {ratio['provisioning_p99']} | "
                     f"{ratio['reaction_p50']} / {ratio['reaction_p99']} |")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Load()
    parser.add_argument("--quiet", type=int, default=defaults.quiet,
                        help="quiet claims per round (%(default)s)")
    parser.add_argument("--pace", type=float, default=defaults.pace,
                        help="quiet claims (and pod ends) per second (%(default)s)")
    parser.add_argument("--noisy", type=int, default=defaults.noisy,
                        help="noisy claims, each with a selector (%(default)s)")
    parser.add_argument("--noisy-pods", type=int, default=defaults.noisy_pods,
                        help="noisy pods their selector matches (%(default)s)")
    parser.add_argument("--edits", type=float, default=defaults.edits,
                        help="label edits per second in the noisy namespace (%(default)s)")
    parser.add_argument("--noise", default=",".join(defaults.noise),
                        help="rounds with noise, in order: touch, flip (%(default)s)")
    parser.add_argument("--settle", type=float, default=defaults.settle,
                        help="seconds before each round (%(default)s)")
    standalone.where_options(parser, "fairness")
    arguments = parser.parse_args(argv)
    noise = tuple(kind for kind in arguments.noise.split(",") if kind)
    if set(noise) - {"touch", "flip"}:
        parser.error("--noise takes touch and flip")
    arguments.noise = noise
    return arguments


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    arguments = parse(given)
    load = Load(quiet=arguments.quiet, pace=arguments.pace, noisy=arguments.noisy,
                noisy_pods=arguments.noisy_pods, edits=arguments.edits, noise=arguments.noise,
                settle=arguments.settle)
    return standalone.run("fairness", given, arguments,
                          functools.partial(_measure, load=load), table)


if __name__ == "__main__":
    sys.exit(main())
