"""Workloads watched once for the cluster (clusterwide.py), each namespace seeing its part
as its own, in the index and in proofs; against a scripted API (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from evc_operator import access, clusterwide, errors, handlers, kube, listwatch, proof
from evc_operator import watched as watching
from evc_operator.barrier import WATCH_SECONDS
from evc_operator.settings import Settings
from evc_operator.users import PodView
from evc_operator.workloads import BUILT_IN, KINDS, collection

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


SHORT = "#short"  # the queue suffix of proofs' short watches (ClusterApi.watch)


class ClusterApi:
    """An informer.Source over one cluster: `objects[(kind, namespace)]` listed at version
    `now` ("" namespace: every namespace's of that kind); each watch takes its events from
    `events[(kind, namespace)]`, where a test puts them, and never ends on its own."""

    def __init__(self, objects: dict[tuple[str, str], list[dict[str, Any]]],
                 now: int = 10) -> None:
        self.objects = objects
        self.now = now
        self.events: dict[tuple[str, str], asyncio.Queue[Any]] = {}
        self.calls: list[str] = []
        self.cancelled: list[str] = []  # lists cancelled once sent: the API server's failed
        # A list of (kind, namespace) named here waits at each gate in turn, before passing
        # `each` the objects of the gate's namespace and those after it (a list's pages).
        self.gates: dict[tuple[str, str], list[tuple[str, asyncio.Event]]] = {}

    def queue(self, kind: str, namespace: str) -> asyncio.Queue[Any]:
        return self.events.setdefault((kind, namespace), asyncio.Queue())

    def _held(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        if namespace:
            return self.objects.get((kind, namespace), [])
        return [item for (held, _), items in self.objects.items() if held == kind
                for item in items]

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        self.calls.append(f"list {kind} in {namespace or 'all'}")
        version = self.now  # a list is current to the moment it began
        items = sorted(self._held(kind, namespace),
                       key=lambda item: item["metadata"]["namespace"])
        gates = self.gates.pop((kind, namespace), [])
        try:
            for item in items:
                while gates and item["metadata"]["namespace"] >= gates[0][0]:
                    await gates.pop(0)[1].wait()
                each(item)
            for _, gate in gates:
                await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(f"list {kind} in {namespace or 'all'}")
            raise
        return str(version)

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch {kind} in {namespace or 'all'} from {resource_version}")
        # A proof's short watch has events of its own (as every watch does from the API
        # server): `queue(kind, namespace + SHORT)`.
        events = self.queue(kind, namespace + (SHORT if seconds <= WATCH_SECONDS else ""))
        while True:
            step: Any = await events.get()
            if isinstance(step, BaseException):
                raise step
            yield step

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


async def watching_a(api: ClusterApi) -> watching.Watched:
    """Workloads shared, "a" the first namespace with claims, its lists in."""
    watched = shared_watched(api)
    watched.ensure("a")
    await settle()
    return watched


async def attach_b_listed_at_20(api: ClusterApi, watched: watching.Watched
                                ) -> asyncio.Event:
    """b attached while the watch runs: its own list, current to 20 (Job "old", claim
    "x", version 18), waits at the gate returned."""
    api.objects[(JOBS, "b")] = [job("old", "b", "x", version="18")]
    api.now = 20
    gate = asyncio.Event()
    api.gates[(JOBS, "b")] = [("b", gate)]
    watched.ensure("b")
    await settle()
    return gate


def test_each_workload_kind_is_watched_once_for_the_namespaces_with_claims() -> None:
    api = ClusterApi({(JOBS, "a"): [job("train", "a", "x")],
                      (JOBS, "b"): [job("train", "b", "y")],
                      (JOBS, "quiet"): [job("other", "quiet", "z")]})

    async def scenario() -> None:
        watched = shared_watched(api)
        watched.ensure("a")  # the first: the cluster-wide lists hold it
        await settle()
        watched.ensure("b")  # while they watch: its part is listed on its own
        await settle()
        assert watched.synced("a")
        assert watched.synced("b")
        # Each namespace's part only, under the names a namespace's own informer uses.
        assert [view.name for view in watched.pods_in("a")] == ["Job/train"]
        assert [view.name for view in watched.pods_of_claim(("b", "y"))] == ["Job/train"]
        assert watched.pods_of_claim(("a", "y")) == []
        # A namespace without claims is not held; those with claims are held once, in
        # their parts, not in the cluster-wide informers too.
        assert [key for shared in watched.shared for key in shared.informer.items] == []
        jobs = api.queue(JOBS, "")
        await jobs.put(("ADDED", job("serve", "a", "x", version="12")))
        await jobs.put(("ADDED", job("other", "quiet", "x", version="13")))
        await jobs.put(("DELETED", job("train", "a", "x", version="14")))
        await settle()
        assert [view.name for view in watched.pods_in("a")] == ["Job/serve"]
        assert [key for shared in watched.shared for key in shared.informer.items] == []
        await watched.close()

    asyncio.run(scenario())
    lists = [call for call in api.calls if call.startswith("list")]
    assert sorted(lists) == sorted(
        [f"list {kind} in {namespace}" for namespace in ("a", "b")
         for kind in ("pods", "persistentvolumeclaims")]
        + [f"list {collection(kind)} in {namespace}" for kind in KINDS
           for namespace in ("all", "b")])


def test_namespaces_attached_before_the_first_list_begins_are_in_it_without_lists_of_their_own(
) -> None:
    api = ClusterApi({(JOBS, "a"): [job("train", "a", "x")],
                      (JOBS, "b"): [job("train", "b", "y")]})

    async def scenario() -> None:
        gate = asyncio.Event()
        api.gates[(JOBS, "")] = [("a", gate)]  # the cluster-wide list takes its time
        watched = shared_watched(api)
        watched.ensure("a")
        watched.ensure("b")  # in the same moment: the first list has not begun yet
        await settle()
        gate.set()
        await settle()
        assert watched.synced("a")
        assert watched.synced("b")
        assert [view.name for view in watched.pods_of_claim(("b", "y"))] == ["Job/train"]
        await watched.close()

    asyncio.run(scenario())
    # One list of each kind for the cluster: no list of b's own, begun and then cancelled
    # (the API server counts each such as a failed request).
    assert sorted(call for call in api.calls if call.startswith("list") and "pods" not in call
                  and "persistentvolumeclaims" not in call) == sorted(
        f"list {collection(kind)} in all" for kind in KINDS)


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
        await jobs.put(("DELETED", job("train", "a", "x", version="13")))
        await settle()
        assert watched.pods_of_claim(("a", "x")) == []
        assert poked[-1] == ("a", ["x"])
        watched.ensure("b")
        await settle()
        watched.release("b")
        told = len(poked)
        await jobs.put(("MODIFIED", job("train", "b", "y", version="14")))
        await settle()
        assert len(poked) == told  # b, released, is told nothing
        await watched.close()

    asyncio.run(scenario())


def test_a_namespace_attached_while_the_watch_runs_is_its_list_and_the_changes_past_it(
) -> None:
    """b's part is a list of its own, current to 20, while the cluster-wide watch lags:
    its changes up to 20 (in the list) are passed over, whether they come before the
    list is in or after; those past 20 are applied."""
    api = ClusterApi({})

    async def scenario() -> None:
        watched = await watching_a(api)
        jobs = api.queue(JOBS, "")
        gate = await attach_b_listed_at_20(api, watched)
        assert not watched.synced("b")  # not decided on until filled
        await jobs.put(("ADDED", job("old", "b", "early", version="12")))  # then changed
        await settle()
        gate.set()
        await settle()
        assert watched.synced("b")
        assert [view.name for view in watched.pods_of_claim(("b", "x"))] == ["Job/old"]
        assert watched.pods_of_claim(("b", "early")) == []
        # The watch, still behind the list, brings the changes that led to it.
        await jobs.put(("MODIFIED", job("old", "b", "stale", version="15")))
        await settle()
        assert watched.pods_of_claim(("b", "stale")) == []
        await jobs.put(("MODIFIED", job("old", "b", "x", version="18")))
        await jobs.put(("ADDED", job("new", "b", "x", version="25")))
        await jobs.put(("MODIFIED", job("old", "b", "stale", version="30")))
        await settle()
        assert [view.name for view in watched.pods_of_claim(("b", "x"))] == ["Job/new"]
        assert [view.name for view in watched.pods_of_claim(("b", "stale"))] == ["Job/old"]
        await watched.close()

    asyncio.run(scenario())


def test_a_namespace_attached_while_the_cluster_is_listed_is_listed_after_it() -> None:
    """The cluster-wide list had passed some of b's objects when b came: b's part is not
    taken from it, but from a list of b's own once it is in."""
    api = ClusterApi({(JOBS, "a"): [job("train", "a", "x")],
                      (JOBS, "b"): [job("early", "b", "x")],
                      (JOBS, "c"): [job("late", "c", "x")]})

    async def scenario() -> None:
        watched = shared_watched(api)
        gate = asyncio.Event()
        api.gates[(JOBS, "")] = [("c", gate)]  # a's and b's objects passed, then a wait
        watched.ensure("a")
        await settle()
        watched.ensure("b")
        await settle()
        assert f"list {JOBS} in b" not in api.calls
        gate.set()
        await settle()
        assert f"list {JOBS} in b" in api.calls
        assert watched.synced("b")
        assert [view.name for view in watched.pods_of_claim(("b", "x"))] == ["Job/early"]
        assert [view.name for view in watched.pods_of_claim(("a", "x"))] == ["Job/train"]
        await watched.close()

    asyncio.run(scenario())


def test_a_namespace_released_and_watched_again_during_one_list_is_listed_after_it() -> None:
    """b, attached when the cluster-wide list began, is released before the list reaches
    its objects and attached again after: that list does not hold it whole."""
    api = ClusterApi({(JOBS, "a"): [job("train", "a", "x")],
                      (JOBS, "b"): [job("early", "b", "x")],
                      (JOBS, "c"): [job("late", "c", "x")]})

    async def scenario() -> None:
        watched = shared_watched(api)
        before_b, before_c = asyncio.Event(), asyncio.Event()
        api.gates[(JOBS, "")] = [("b", before_b), ("c", before_c)]
        watched.ensure("a")
        watched.ensure("b")
        await settle()
        watched.release("b")
        before_b.set()
        await settle()
        watched.ensure("b")
        before_c.set()
        await settle()
        assert watched.synced("b")
        assert [view.name for view in watched.pods_of_claim(("b", "x"))] == ["Job/early"]
        await watched.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("released", [False, True])
def test_a_namespaces_own_list_that_fails_is_tried_again_after_a_wait_unless_released(
        caplog: pytest.LogCaptureFixture, released: bool) -> None:
    """Not synced (so never decided on) until its list comes in; its namespace released
    meanwhile, it is not tried again."""
    api = ClusterApi({(JOBS, "b"): [job("train", "b", "x")]})
    real_list = api.list_all
    failures = [errors.ApiException(503, "unavailable")]

    async def failing_once(kind: str, namespace: str,
                           each: Callable[[dict[str, Any]], None]) -> str:
        if namespace == "b" and failures:
            api.calls.append(f"list {kind} in b")
            raise failures.pop()
        return await real_list(kind, namespace, each)

    waited: list[float] = []
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        await gate.wait()

    api.list_all = failing_once  # type: ignore[method-assign]

    async def scenario() -> None:
        shared = clusterwide.Shared(api, BUILT_IN[0], sleep=sleep)
        shared.attach("a", lambda *_: None, lambda: None)
        await settle()
        part = shared.attach("b", lambda *_: None, lambda: None)
        await settle()
        assert not part.synced
        assert waited == [1.0]
        if released:
            shared.detach("b")
        gate.set()
        await settle()
        if released:
            assert api.calls.count(f"list {JOBS} in b") == 1
            assert not shared._fills  # ended: nothing left to try
        else:
            assert part.synced
            assert list(part.items) == ["train"]
        await shared.close()

    with caplog.at_level("WARNING"):
        asyncio.run(scenario())
    assert f"Listing {JOBS} in b failed" in caplog.text


def test_after_410_gone_the_parts_are_the_cluster_wide_list_again() -> None:
    api = ClusterApi({(JOBS, "a"): [job("train", "a", "x")]})

    async def scenario() -> None:
        watched = await watching_a(api)
        # While the watch was away: train deleted, serve created (no event of either).
        api.objects[(JOBS, "a")] = [job("serve", "a", "x", version="40")]
        api.now = 40
        await api.queue(JOBS, "").put(errors.Gone("too old"))
        await settle()
        part = watched.users("a")[1]
        assert part.breaks == 1
        assert part.version == 40
        assert [view.name for view in watched.pods_of_claim(("a", "x"))] == ["Job/serve"]
        await watched.close()

    asyncio.run(scenario())


def test_a_namespace_released_during_its_own_list_lets_the_list_end_and_passes_it_over(
) -> None:
    """b's own list is under way when b's last claim goes: the list is not cancelled (the
    API server would count a failed request) and what it brings is not held; b attached
    again is listed anew, and the operator's close ends a list still under way."""
    api = ClusterApi({(JOBS, "b"): [job("old", "b", "x")]})

    async def scenario() -> None:
        watched = await watching_a(api)
        gate = asyncio.Event()
        api.gates[(JOBS, "b")] = [("b", gate)]
        watched.ensure("b")
        await settle()
        watched.release("b")
        gate.set()
        await settle()
        assert api.cancelled == []
        assert watched.pods_of_claim(("b", "x")) == []
        shared = next(held for held in watched.shared if held.informer.kind == JOBS)
        assert "b" not in shared.slices
        assert not [key for key in shared.informer.items if key.startswith("b/")]

        api.objects[(JOBS, "b")] = [job("new", "b", "y")]
        watched.ensure("b")
        await settle()
        assert api.calls.count(f"list {JOBS} in b") == 2
        assert [view.name for view in watched.pods_of_claim(("b", "y"))] == ["Job/new"]
        assert watched.pods_of_claim(("b", "x")) == []

        api.gates[(JOBS, "b")] = [("b", asyncio.Event())]  # never opened
        watched.release("b")
        watched.ensure("b")
        await settle()
        watched.release("b")
        await watched.close()  # the released namespace's list ends with it
        assert api.cancelled == [f"list {JOBS} in b"]

    asyncio.run(scenario())


def test_a_namespaces_own_list_overtaken_by_a_relist_after_410_is_passed_over() -> None:
    """b's own list began at 20; the cluster-wide watch expired meanwhile and its list, at
    40, holds b whole: b's part is that list's, and b's own, older, ends and is passed over
    (not cancelled)."""
    api = ClusterApi({})

    async def scenario() -> None:
        watched = await watching_a(api)
        gate = await attach_b_listed_at_20(api, watched)
        api.objects[(JOBS, "b")] = [job("serve", "b", "y", version="35")]
        api.now = 40
        await api.queue(JOBS, "").put(errors.Gone("too old"))
        await settle()
        assert watched.synced("b")
        gate.set()
        await settle()
        assert api.cancelled == []
        assert [view.name for view in watched.pods_of_claim(("b", "y"))] == ["Job/serve"]
        assert watched.pods_of_claim(("b", "x")) == []
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


def test_a_proof_reads_a_namespaces_part_from_one_watch_of_every_namespace() -> None:
    """A shared kind is proven by one short watch of the kind in every namespace, from the
    cluster-wide informer's version (not one a namespace: a new connection a second for
    each kind in each namespace with deadlines); each namespace takes its own part."""
    api = ClusterApi({(JOBS, "a"): [job("old", "a", "x")],
                      (JOBS, "b"): [job("elsewhere", "b", "x")]}, now=10)

    async def scenario() -> list[str]:
        watched = await watching_a(api)
        watched.ensure("b")
        await settle()
        api.now = 15  # changes since the informers' lists: a Job in a, just created
        jobs = api.queue(JOBS, SHORT)
        await jobs.put(("ADDED", job("newcomer", "a", "x", version="14")))
        await jobs.put(("ADDED", job("other", "b", "x", version="14")))
        await jobs.put(("BOOKMARK", {"metadata": {"resourceVersion": "15"}}))
        await api.queue("pods", "a" + SHORT).put(
            ("BOOKMARK", {"metadata": {"resourceVersion": "15"}}))
        for kind in (collection(kind) for kind in KINDS if kind != "Job"):
            await api.queue(kind, SHORT).put(
                ("BOOKMARK", {"metadata": {"resourceVersion": "15"}}))
        snapshot = await proof.prove_current(watched, "a")
        await watched.close()
        return sorted(view.name for view in snapshot.pods)

    assert asyncio.run(scenario()) == ["Job/newcomer", "Job/old"]
    assert f"watch {JOBS} in all from 10" in api.calls  # every namespace's, from the cluster's
    assert f"watch {JOBS} in a from 10" not in api.calls


def test_a_short_watch_opened_before_a_namespaces_part_was_filled_never_proves_it() -> None:
    """A short watch of every namespace copies the parts filled when it opens; of one
    filled after, it has only the changes since. Its bookmark once proved b with none of
    b's Jobs (the Job "old", unchanged, lacking): b's proof waits for a watch of its own."""
    api = ClusterApi({}, now=10)

    async def scenario() -> list[str]:
        watched = await watching_a(api)
        prover = proof.Prover(watched)
        prover.anticipate("a")  # a's deadline: watches opened, b not yet attached
        await settle()
        gate = await attach_b_listed_at_20(api, watched)
        gate.set()
        await settle()
        api.now = 25
        proving = asyncio.create_task(prover("b"))  # while a's watches are open
        await settle()
        for kind in (collection(kind) for kind in KINDS):
            for _ in range(2):  # the watch opened for a first, then b's own
                await api.queue(kind, SHORT).put(
                    ("BOOKMARK", {"metadata": {"resourceVersion": "25"}}))
        await api.queue("pods", "b" + SHORT).put(
            ("BOOKMARK", {"metadata": {"resourceVersion": "25"}}))
        snapshot = await asyncio.wait_for(proving, 5)
        await prover.close()
        await watched.close()
        return sorted(view.name for view in snapshot.pods)

    assert asyncio.run(scenario()) == ["Job/old"]


def test_the_shared_kinds_of_many_namespaces_share_their_short_watches() -> None:
    """Two namespaces with deadlines: their pods each a short watch, each shared kind one."""
    api = ClusterApi({}, now=10)

    async def scenario() -> int:
        watched = await watching_a(api)
        watched.ensure("b")
        await settle()
        prover = proof.Prover(watched)
        prover.anticipate("a")
        prover.anticipate("b")
        opened = len(prover.barriers)
        await prover.close()
        await watched.close()
        return opened

    assert asyncio.run(scenario()) == 2 + len(KINDS)  # not 2 * (1 + len(KINDS))


def test_a_cluster_wide_collection_has_no_namespace_in_its_path() -> None:
    assert listwatch.collection_path(JOBS, "") == "/apis/batch/v1/jobs"
    assert listwatch.collection_path(JOBS, "a") == "/apis/batch/v1/namespaces/a/jobs"
    assert listwatch.collection_path("v1/replicationcontrollers", "") == (
        "/api/v1/replicationcontrollers")
    assert listwatch.collection_path("pods", "a") == "/api/v1/namespaces/a/pods"


class _Memo:
    def __init__(self) -> None:
        self.api = object()
        self.access = access.AccessCheck(cast(kube.Api, self.api))
        self.watched = watching.Watched(ClusterApi({}), pods_changed=lambda *_: None,
                                        pvc_changed=lambda key: None,
                                        namespace_synced=lambda namespace: None)


@pytest.mark.parametrize(("namespace", "lacking", "setting", "shared"), [
    (None, [], "", True),  # every namespace served, and allowed: once for the cluster
    ("default", [], "", False),  # one namespace served: only its own are read
    (None, ["list jobs.batch"], "", False),  # not allowed cluster-wide: per namespace
    (None, [], "false", False),  # allowed, and CLUSTER_WORKLOAD_WATCHES=false: per namespace
])
def test_workloads_are_shared_only_when_every_namespace_is_served_and_allowed(
        monkeypatch: pytest.MonkeyPatch, namespace: str | None, lacking: list[str],
        setting: str, shared: bool) -> None:
    async def may(_api: object, verb: str, group: str, resource: str, *_: str) -> bool:
        return f"{verb} {resource}.{group}" not in lacking

    monkeypatch.setattr(kube, "may", may)
    monkeypatch.setattr(handlers, "CONFIG", Settings.from_environ(
        {"CLUSTER_WORKLOAD_WATCHES": setting}))
    memo: Any = _Memo()
    asyncio.run(handlers._serving(memo, namespace))
    assert bool(memo.watched.shared) is shared


@pytest.mark.parametrize(("namespace", "checked"), [(None, False), ("default", True)])
def test_namespaces_are_checked_only_where_kopf_lists_them(
        monkeypatch: pytest.MonkeyPatch, namespace: str | None, checked: bool) -> None:
    """Serving named namespaces, Kopf lists namespaces; serving every one, it lists none,
    and the install for all namespaces (config/rbac) does not grant it."""
    monkeypatch.setattr(handlers, "CONFIG", Settings.from_environ({}))
    memo: Any = _Memo()
    asked: list[tuple[list[access.Permission], str]] = []
    monkeypatch.setattr(memo.access, "check",
                        lambda permissions, where="": asked.append((permissions, where)))

    async def serving() -> None:
        monkeypatch.setattr(memo.access, "lacking_cluster_wide", _granted)
        await handlers._serving(memo, namespace)

    asyncio.run(serving())
    assert ((access.NAMESPACES, "") in asked) is checked


async def _granted(_permissions: list[access.Permission]) -> list[access.Permission]:
    return []
