"""Fakes of what the per-claim reconcile reads and calls (seams.ClaimApi, seams.PodIndex),
and a scheduler built on them, for unit tests."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import pytest

from evc_operator import evc, handlers, kube, seal, status
from evc_operator import watched as watching
from evc_operator.auth import Credentials, Static
from evc_operator.claims import PvcView, pvc_view
from evc_operator.freshness import Lister, PodSnapshot
from evc_operator.limiter import DEFAULT_BOUNDS, Bounds
from evc_operator.scheduler import Scheduler
from evc_operator.settings import Settings
from evc_operator.timestamps import parse_time
from evc_operator.unwatched import FOLLOWED
from evc_operator.users import PodView, pod_view
from tests.unit.support import T0

Key = tuple[str, str]
NOW = T0 + datetime.timedelta(seconds=100)  # long past the 30 s expiry


def evc_body() -> dict[str, Any]:
    return {
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "scratch", "namespace": "jobs", "uid": "evc-uid",
                     "resourceVersion": "10", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"size": "1Gi"},
        "status": sealed({"phase": "Pending", "conditions": [
            {"type": "PvcReady", "status": "True", "reason": "PvcReady"}]}),
    }


def sealed(status: dict[str, Any], uid: str = "evc-uid",
           at: datetime.datetime = T0) -> dict[str, Any]:
    """`status` as the operator writes it: with its seal (the default Settings' key), made
    `at` then."""
    since = status.get("unusedSince")
    return {**status, "seal": seal.seal(b"", uid, status.get("phase"),
                                        parse_time(since) if since else None, at)}


def pod_body(name: str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "jobs",
                         "creationTimestamp": "2026-01-01T00:00:50Z"},
            "spec": {"volumes": [{"name": "v",
                                  "persistentVolumeClaim": {"claimName": "scratch"}}]},
            "status": {"phase": phase}}


OWN_PVC = pvc_view({"metadata": {
    "name": "scratch", "namespace": "jobs", "uid": "pvc-uid", "resourceVersion": "5",
    "ownerReferences": [{"uid": "evc-uid", "controller": True}],
    "annotations": {"evc.zalando.org/managed-labels": "[]"}},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})


class FakeApi:
    """Records what the reconcile asks of the API (seams.ClaimApi), and lists pods."""

    def __init__(self, fresh_pods: list[dict[str, Any]] | Exception) -> None:
        self.fresh_pods = fresh_pods
        self.calls: list[str] = []
        self.delete_error: Exception | None = None
        self.written_version = 0  # the resourceVersion of the last status write
        self.event_error: Exception | None = None
        self.status_error: Exception | None = None  # every status write refused with it
        self.resize_error: Exception | None = None  # every resize refused with it
        self.body: dict[str, Any] | None = None  # the EVC a status write returns
        self.evc: dict[str, Any] | None = None  # the EVC as stored since the last status write
        self.read_error: Exception | None = None  # every read of the EVC fails with it
        self.create_error: Exception | None = None  # every PVC creation refused with it
        # What the API server keeps of a PVC it creates (as sent, by default).
        self.stored: Callable[[Mapping[str, Any]], dict[str, Any]] = dict

    async def list_pods(self, namespace: str) -> PodSnapshot:
        self.calls.append("list_pods")
        if isinstance(self.fresh_pods, Exception):
            raise self.fresh_pods
        return PodSnapshot([pod_view(pod) for pod in self.fresh_pods])

    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(f"patch_status:{status['phase']}")
        if self.status_error is not None:
            raise self.status_error
        body = copy.deepcopy(self.body) if self.body is not None else evc_body()
        # Each write a resourceVersion of its own, as the API server's: 11 the first.
        self.written_version = max(self.written_version,
                                   int(body["metadata"].get("resourceVersion") or 0)) + 1
        body["metadata"]["resourceVersion"] = str(self.written_version)
        body["status"] = dict(status)
        self.evc = copy.deepcopy(body)
        return body

    async def read_evc(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("read_evc")
        if self.read_error is not None:
            raise self.read_error
        return copy.deepcopy(self.evc if self.evc is not None else self.body or evc_body())

    async def delete_evc(self, namespace: str, name: str, uid: str,
                         resource_version: str, orphan: bool = False) -> None:
        if self.delete_error is not None:
            self.calls.append("delete:conflict")
            raise self.delete_error
        self.calls.append(f"delete:{uid}:{resource_version}" + (":orphan" if orphan else ""))

    async def post_event(self, namespace: str, name: str, uid: str, event: status.Event,
                         now: datetime.datetime) -> None:
        if self.event_error is not None:
            self.calls.append("event refused")
            raise self.event_error
        self.calls.append(f"event:{event.reason}")

    async def create_pvc(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append("create_pvc")
        if self.create_error is not None:
            raise self.create_error
        return self.stored(body)

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("read_pvc")
        return None

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        self.calls.append(f"patch_pvc:{','.join(patch)}@{resource_version}")
        if "spec" in patch and self.resize_error is not None:
            raise self.resize_error
        return str(int(resource_version) + 1)


@dataclasses.dataclass
class FakeIndex:
    """The pod index (seams.PodIndex) as plain maps."""

    by_claim: dict[Key, list[PodView]] = dataclasses.field(default_factory=dict)
    in_namespace: dict[str, list[PodView]] = dataclasses.field(default_factory=dict)
    pvcs: dict[Key, PvcView] = dataclasses.field(default_factory=dict)
    listed: Callable[[str], bool] = lambda _namespace: True
    watched: watching.Watched | None = None  # if set, the pods are the informers'

    def pods_of_claim(self, key: Key) -> list[PodView]:
        if self.watched is not None:
            return self.watched.pods_of_claim(key)
        return self.by_claim.get(key, [])

    def pods_in(self, namespace: str) -> list[PodView]:
        if self.watched is not None:
            return self.watched.pods_in(namespace)
        return self.in_namespace.get(namespace, [])

    def pvc(self, key: Key) -> PvcView | None:
        return self.pvcs.get(key)

    def controller_seen(self, namespace: str, runner: str) -> bool | None:
        """As watched.Watched: a built-in workload by `Kind/name`, a custom resource's by
        its group and name; None for other kinds."""
        if self.watched is not None:
            return self.watched.controller_seen(namespace, runner)
        qualified, _, name = runner.partition("/")
        kind, _, group = qualified.partition(".")
        names = {view.name for view in self.in_namespace.get(namespace, [])}
        if "." in group:
            custom = {view for view in names if view.partition("/")[0].endswith(f".{group}")}
            return name in {view.partition("/")[2] for view in custom} if custom else None
        if qualified not in FOLLOWED:
            return None
        return f"{kind}/{name}" in names

    def synced(self, namespace: str) -> bool:
        return self.listed(namespace)

    def all_synced(self) -> bool:
        return True


def make(fake: FakeApi, indexed_pods: list[dict[str, Any]], *, complete: bool = True,
         settings: Settings | None = None, lister: Lister | None = None,
         clock: Callable[[], datetime.datetime] = lambda: NOW,
         latest: Callable[[], datetime.datetime] | None = None,
         watched: watching.Watched | None = None,
         body: dict[str, Any] | None = None,
         bounds: Bounds = DEFAULT_BOUNDS,
         ahead: Callable[[str], None] | None = None) -> tuple[Scheduler, FakeIndex]:
    views = [pod_view(body) for body in indexed_pods]
    index = FakeIndex(by_claim={("jobs", "scratch"): views}, in_namespace={"jobs": views},
                      pvcs={("jobs", "scratch"): OWN_PVC}, watched=watched)
    scheduler = Scheduler(fake, settings or Settings(), kopf.OperatorSettings(), index,
                          lister or fake.list_pods, clock=clock, latest=latest, bounds=bounds,
                          ahead=ahead)
    scheduler.pods_view_complete = complete
    scheduler.observe_evc(None, body or evc_body())
    return scheduler, index


def reconcile_now(scheduler: Scheduler, key: Key) -> None:
    asyncio.run(scheduler.reconcile(key))


def drain(scheduler: Scheduler) -> None:
    """Empty the work queue, as if every claim waiting in it had been looked at."""
    for key, _ in scheduler.queue.take():
        scheduler.queue.done(key)


def view_of(scheduler: Scheduler, key: Key) -> evc.EvcView:
    claim = scheduler.claims.get(key)
    assert claim is not None
    return claim.view


class OfflineApi:
    """What `kube.connect` returns for a start-up without a cluster."""

    credentials = Credentials(server="https://localhost", ssl=ssl.create_default_context(),
                              auth=Static("Bearer t"))

    async def close(self) -> None:
        pass


def offline(monkeypatch: pytest.MonkeyPatch, config: Settings | None = None) -> None:
    """handlers.start without a cluster: no connection, a v1.37 API server, `config`
    (metrics off unless it says otherwise) in place of the environment's."""
    async def connect() -> OfflineApi:
        return OfflineApi()

    async def read_version(_api: object) -> dict[str, str]:
        return {"major": "1", "minor": "37", "gitVersion": "v1.37.2"}

    monkeypatch.setattr(kube, "connect", connect)
    monkeypatch.setattr(kube, "read_version", read_version)
    monkeypatch.setattr(handlers, "CONFIG", config or Settings(metrics_port=0))


def work_once(scheduler: Scheduler) -> None:
    """What the scheduler's loop does with the claims it takes from its queue (a failure
    that leaves the reconciliation is caught and retried there, as in production)."""
    async def once() -> None:
        for key, added_at in scheduler.queue.take():
            scheduler.limit.take()
            await scheduler._work(key, added_at)

    asyncio.run(once())
