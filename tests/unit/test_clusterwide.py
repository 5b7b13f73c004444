"""Workloads watched once for the cluster (clusterwide.py), each namespace seeing its part
as its own, in the index and in proofs; against a scripted API (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from evc_operator import access, handlers, listwatch, proof
from evc_operator import watched as watching
from evc_operator.users import PodView
from evc_operator.workloads import KINDS, collection

JOBS = collection("Job")


def job(name: str, namespace: str, claim: str, version: str = "5") -> dict[str, Any]:
    template = {"spec": {"volumes": [{"name": "v",
                                      "persistentVolumeClaim": {"claimName": claim}}]}}
    return {"kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": version,
                         "uid": f"uid-{namespace}-{name}",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"template": template}, "status": {"active": 1}}


def pod(name: str, namespace: str, claim: str, version: str = "5") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"volumes": [{"name": "v",
                                  "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": "Running"}}


class ClusterApi:
    """An informer.Source over one cluster: `objects[(kind, namespace)]` listed at version
    `now` ("" namespace: every namespace's of that kind); each watch takes its events from
    `events[(kind, namespace)]`, where a test puts them, and never ends on its own."""

    def __init__(self, objects: dict[tuple[str, str], list[dict[str, Any]]],
                 now: int = 10) -> None:
        self.objects = objects
        self.now = now
        self.events: dict[tuple[str, str], asyncio.Queue[tuple[str, dict[str, Any]]]] = {}
        self.calls: list[str] = []

    def queue(self, kind: str, namespace: str) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        return self.events.setdefault((kind, namespace), asyncio.Queue())

    def _held(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        if namespace:
            return self.objects.get((kind, namespace), [])
        return [item for (held, _), items in self.objects.items() if held == kind
                for item in items]

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        self.calls.append(f"list {kind} in {namespace or 'all'}")
        for item in self._held(kind, namespace):
            each(item)
        return str(self.now)

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch {kind} in {namespace or 'all'} from {resource_version}")
        events = self.queue(kind, namespace)
        while True:
            yield await events.get()

    async def collection_version(self, kind: str, namespace: str) -> int:
        self.calls.append(f"version of {kind} in {namespace}")
        return self.now

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        raise AssertionError("a synced namespace is not listed whole")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def shared_watched(api: ClusterApi,
                   poked: list[tuple[str, list[str]]] | None = None) -> watching.Watched:
    def pods_changed(namespace: str, claims: Any, _views: Any) -> None:
        if poked is not None:
            poked.append((namespace, sorted(claims)))

    watched = watching.Watched(api, pods_changed=pods_changed, pvc_changed=lambda key: None,
                               namespace_synced=lambda namespace: None)
    watched.share_workloads()
    return watched


def test_each_workload_kind_is_watched_once_for_every_namespace() -> None:
    api = ClusterApi({(JOBS, "a"): [job("train", "a", "x")],
                      (JOBS, "b"): [job("train", "b", "y")],
                      (JOBS, "quiet"): [job("other", "quiet", "z")]})

    async def scenario() -> watching.Watched:
        watched = shared_watched(api)
        watched.ensure("a")
        watched.ensure("b")
        await settle()
        assert watched.synced("a")
        assert watched.synced("b")
        # Each namespace's part only, under the names a namespace's own informer uses.
        assert [view.name for view in watched.pods_in("a")] == ["Job/train"]
        assert [view.name for view in watched.pods_of_claim(("b", "y"))] == ["Job/train"]
        assert watched.pods_of_claim(("a", "y")) == []
        await watched.close()
        return watched

    asyncio.run(scenario())
    lists = [call for call in api.calls if call.startswith("list")]
    # Per namespace: its pods and PVCs; per workload kind: one list, in every namespace.
    assert sorted(lists) == sorted(
        [f"list {kind} in {namespace}" for namespace in ("a", "b")
         for kind in ("pods", "persistentvolumeclaims")]
        + [f"list {collection(kind)} in all" for kind in KINDS])


def test_a_namespace_sees_the_changes_of_its_own_part_only() -> None:
    api = ClusterApi({})
    poked: list[tuple[str, list[str]]] = []

    async def scenario() -> None:
        watched = shared_watched(api, poked)
        watched.ensure("a")
        await settle()
        jobs = api.queue(JOBS, "")
        await jobs.put(("ADDED", job("train", "a", "x", version="11")))
        await jobs.put(("ADDED", job("train", "b", "x", version="12")))  # b has no claim
        await settle()
        assert poked == [("a", ["x"])]
        slice_a = watched.users("a")[1]
        assert slice_a.kind == JOBS
        assert slice_a.namespace == "a"
        assert list(slice_a.items) == ["train"]
        assert slice_a.version == 12  # the cluster's: every change to 12 is applied here
        # A namespace seen before its first claim has its workloads at once.
        watched.ensure("b")
        assert [view.name for view in watched.pods_of_claim(("b", "x"))] == ["Job/train"]
        await jobs.put(("DELETED", job("train", "a", "x", version="13")))
        await settle()
        assert watched.pods_of_claim(("a", "x")) == []
        assert [view.name for view in watched.pods_of_claim(("b", "x"))] == ["Job/train"]
        watched.release("b")
        await jobs.put(("DELETED", job("train", "b", "x", version="14")))
        await settle()
        assert poked[-1] == ("a", ["x"])  # b, released, is told nothing
        await watched.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("shared", [True, False])
def test_a_pod_and_a_job_of_one_name_are_two_users(shared: bool) -> None:
    """The index holds users by their views' names: the pod x ending leaves the Job x
    (served alone or with every namespace)."""
    api = ClusterApi({(JOBS, "a"): [job("x", "a", "data")],
                      ("pods", "a"): [pod("x", "a", "data")]})

    async def scenario() -> None:
        watched = shared_watched(api)
        if not shared:
            watched.shared = []
        watched.ensure("a")
        await settle()
        assert sorted(view.name for view in watched.pods_of_claim(("a", "data"))) == [
            "Job/x", "x"]
        await api.queue("pods", "a").put(("DELETED", pod("x", "a", "data", version="20")))
        await settle()
        assert [view.name for view in watched.pods_of_claim(("a", "data"))] == ["Job/x"]
        await watched.close()

    asyncio.run(scenario())


def test_a_proof_reads_a_namespaces_part_and_watches_that_namespace_from_the_clusters_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proof, "LIST_OUTRIGHT", 0)  # prove by a watch, not a list
    api = ClusterApi({(JOBS, "a"): [job("old", "a", "x")],
                      (JOBS, "b"): [job("elsewhere", "b", "x")]}, now=10)

    async def scenario() -> list[str]:
        watched = shared_watched(api)
        watched.ensure("a")
        await settle()
        api.now = 15  # changes since the informers' lists: a Job in a, just created
        jobs_in_a = api.queue(JOBS, "a")
        await jobs_in_a.put(("ADDED", job("newcomer", "a", "x", version="14")))
        await jobs_in_a.put(("BOOKMARK", {"metadata": {"resourceVersion": "15"}}))
        for kind in ("pods", *(collection(kind) for kind in KINDS if kind != "Job")):
            queue = api.queue(kind, "a")
            await queue.put(("BOOKMARK", {"metadata": {"resourceVersion": "15"}}))
        snapshot = await proof.prove_current(watched, "a")
        await watched.close()
        return sorted(view.name for view in snapshot.pods)

    assert asyncio.run(scenario()) == ["Job/newcomer", "Job/old"]
    assert f"watch {JOBS} in a from 10" in api.calls  # the namespace's, from the cluster's


def test_a_cluster_wide_collection_has_no_namespace_in_its_path() -> None:
    assert listwatch.collection_path(JOBS, "") == "/apis/batch/v1/jobs"
    assert listwatch.collection_path(JOBS, "a") == "/apis/batch/v1/namespaces/a/jobs"
    assert listwatch.collection_path("v1/replicationcontrollers", "") == (
        "/api/v1/replicationcontrollers")
    assert listwatch.collection_path("pods", "a") == "/api/v1/namespaces/a/pods"


class _Memo:
    def __init__(self) -> None:
        self.api = object()
        self.watched = watching.Watched(ClusterApi({}), pods_changed=lambda *_: None,
                                        pvc_changed=lambda key: None,
                                        namespace_synced=lambda namespace: None)


@pytest.mark.parametrize(("namespace", "lacking", "shared"), [
    (None, [], True),  # every namespace served, and allowed: once for the cluster
    ("default", [], False),  # one namespace served: only its own are read
    (None, ["list jobs.batch"], False),  # not allowed cluster-wide: per namespace
])
def test_workloads_are_shared_only_when_every_namespace_is_served_and_allowed(
        monkeypatch: pytest.MonkeyPatch, namespace: str | None, lacking: list[str],
        shared: bool) -> None:
    async def missing(_api: object, permissions: list[Any]) -> list[str]:
        return lacking

    monkeypatch.setattr(access, "missing", missing)
    memo: Any = _Memo()
    asyncio.run(handlers._serving(memo, namespace))
    assert bool(memo.watched.shared) is shared

