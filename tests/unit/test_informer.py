"""The operator's own informers of pods and PVCs, and the proof that one is current
(proof.prove_current), against a scripted API (no cluster)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from evc_operator import errors, freshness, informer, listwatch, proof
from evc_operator import watched as watching
from evc_operator.users import PodView, pod_view
from evc_operator.workloads import workload_view


def pod(name: str, claim: str | None = None, phase: str = "Running",
        version: str = "1") -> dict[str, Any]:
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}] if claim else []
    return {"metadata": {"name": name, "namespace": "jobs", "resourceVersion": version,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"volumes": volumes}, "status": {"phase": phase}}


class ScriptedApi:
    """An informer.Source: lists return `lists` in turn; each watch yields the next
    script, then raises its last item if that is an exception (410 Gone, say), else ends."""

    def __init__(self, lists: list[list[dict[str, Any]]],
                 watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[str] = []

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        self.calls.append(f"list {kind}")
        for item in self.lists.pop(0) if self.lists else []:
            each(item)
        return "10"

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch {kind} from {resource_version}")
        if not self.watches:
            await asyncio.Event().wait()  # nothing more happens
        for step in self.watches.pop(0):
            if isinstance(step, BaseException):
                raise step
            yield step

    async def collection_version(self, kind: str, namespace: str) -> int:
        raise AssertionError("informers do not ask for it")

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        raise AssertionError("informers list through list_all")


class ProofApi(ScriptedApi):
    """An informer.Source for proofs of freshness: the collection is at `now`, a watch
    from the informer's version yields `barrier` (the next yields the next of `later`, then
    nothing), a full list one pod, "listed"."""

    def __init__(self, now: int, barrier: list[Any], *later: list[Any]) -> None:
        super().__init__(lists=[], watches=[barrier, *later])
        self.now = now

    async def collection_version(self, kind: str, namespace: str) -> int:
        self.calls.append("version")
        return self.now

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch from {resource_version} for {seconds} s")
        for step in self.watches.pop(0) if self.watches else []:
            if isinstance(step, BaseException):
                raise step
            yield step

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        self.calls.append("full list")
        return [pod_view(pod("listed", "x"))], self.now


def run_informer(api: ScriptedApi, until: Callable[[], bool],
                 ) -> tuple[informer.Informer[PodView], list[tuple[str, bool, bool]]]:
    changes: list[tuple[str, bool, bool]] = []
    subject = informer.Informer(
        api, "pods", "jobs", pod_view,
        lambda name, old, new: changes.append((name, old is not None, new is not None)),
        lambda: None)

    async def scenario() -> None:
        task = asyncio.create_task(subject.run())
        for _ in range(200):
            if until():
                break
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    return subject, changes


def test_watch_events_keep_the_projections_current() -> None:
    api = ScriptedApi(lists=[[pod("a", "x")]], watches=[[
        ("ADDED", pod("b", "x", version="11")),
        ("MODIFIED", pod("b", "x", version="12")),  # nothing the projection holds changed
        ("BOOKMARK", {"metadata": {"resourceVersion": "13"}}),
        ("MODIFIED", pod("a", "x", phase="Succeeded", version="14")),
        ("DELETED", pod("b", "x", version="15")),
    ]])
    subject, changes = run_informer(api, lambda: len(api.calls) >= 3)
    assert subject.synced
    assert changes == [("a", False, True), ("b", False, True), ("a", True, True),
                       ("b", True, False)]
    assert set(subject.items) == {"a"}
    assert not subject.items["a"].active
    assert api.calls[-1] == "watch pods from 15"  # resumes where the last watch ended
    assert subject.breaks == 0  # a watch the API server ended on time is no gap


def test_a_relist_after_410_reports_pods_deleted_while_the_watch_was_away() -> None:
    api = ScriptedApi(lists=[[pod("ghost", "x"), pod("kept", "x")], [pod("kept", "x")]],
                      watches=[[errors.Gone("too old")]])
    subject, changes = run_informer(api, lambda: api.calls.count("list pods") == 2)
    assert api.calls[:3] == ["list pods", "watch pods from 10", "list pods"]
    assert ("ghost", True, False) in changes
    assert set(subject.items) == {"kept"}
    assert subject.breaks == 1  # proofs of freshness from before the 410 no longer hold


class FlakyApi(ScriptedApi):
    """Lists fail `failing` times (the API server unreachable), then work."""

    def __init__(self, failing: int, lists: list[list[dict[str, Any]]],
                 watches: list[list[Any]]) -> None:
        super().__init__(lists, watches)
        self.failing = failing

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        if self.failing:
            self.failing -= 1
            self.calls.append(f"list {kind} failed")
            raise OSError("Connect call failed")
        return await super().list_all(kind, namespace, each)


def run_until(api: ScriptedApi, done: Callable[[informer.Informer[PodView]], bool], *,
              clock: Callable[[], float] | None = None
              ) -> tuple[informer.Informer[PodView], list[float]]:
    """A pods informer over `api` run until `done` says so (or 200 turns); it and the
    waits it slept between failed attempts."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    subject = informer.Informer(api, "pods", "jobs", pod_view, lambda *_: None,
                                lambda: None, sleep=sleep, clock=clock or time.monotonic)

    async def scenario() -> None:
        task = asyncio.create_task(subject.run())
        for _ in range(200):
            if done(subject):
                break
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    return subject, waits


def test_after_a_watch_that_worked_a_break_is_retried_at_the_shortest_wait() -> None:
    """A watch that broke after it had worked waits 1 s, not the wait that the failures
    before it had grown to (10 s, during which pods that end are not seen)."""
    api = FlakyApi(3, lists=[[pod("a", "x")]], watches=[[
        ("MODIFIED", pod("a", "x", phase="Succeeded", version="11")),
        OSError("Response payload is not completed")]])
    subject, waits = run_until(api, lambda _: "watch pods from 11" in api.calls)
    assert waits == [1, 2, 5, 1]  # the fourth: a new spell, after the list and an event
    assert api.calls.count("list pods") == 1  # the watch resumed; nothing listed again
    # From the last change it applied (11), not from where the broken watch began (10):
    # replayed, the change would take the view back in time until it came round.
    assert api.calls.count("watch pods from 10") == 1
    assert subject.items["a"].active is False


def test_a_watch_that_ends_with_nothing_is_reopened_after_a_wait_not_at_once() -> None:
    """The API server sends a bookmark a minute: a watch that ends with no event and no
    bookmark ended early (a server going away, a proxy). Reopened at once, in a loop of
    requests; now it waits, longer each time, as any failure does."""
    bookmark = ("BOOKMARK", pod("a", "x", version="12"))
    api = ScriptedApi(lists=[[pod("a", "x")]], watches=[[], [], [], [bookmark]])
    _, waits = run_until(api, lambda subject: subject.version == 12)
    assert waits[:3] == [1, 2, 5]
    assert api.calls.count("list pods") == 1  # nothing was missed: resumed, not listed
    assert api.calls.count("watch pods from 10") == 4


def test_a_quiet_watch_that_lasted_its_time_with_nothing_is_no_failure() -> None:
    """Bookmarks are not promised (a kind the watch cache saw no change of sends none): a
    watch that brought nothing but lasted its time ended as it should, and is reopened
    at once, its view still proven live (no break)."""
    bookmark = ("BOOKMARK", pod("a", "x", version="12"))
    api = ScriptedApi(lists=[[pod("a", "x")]], watches=[[], [], [bookmark]])
    now = [0.0]

    def clock() -> float:
        now[0] += listwatch.WATCH_SECONDS / 2  # each watch: opened, then ended on time
        return now[0]

    subject, waits = run_until(api, lambda subject: subject.version == 12, clock=clock)
    assert (waits, subject.breaks) == ([], 0)


def test_namespace_pods_index_users_by_claim() -> None:
    pods = watching.NamespacePods()
    first = pod_view(pod("p", "x"))
    assert pods.update("p", None, first) == {"x"}
    moved = pod_view(pod("p", "y"))
    assert pods.update("p", first, moved) == {"x", "y"}
    assert set(pods.by_claim) == {"y"}
    assert pods.update("p", moved, None) == {"y"}
    assert pods.by_claim == {}


def test_watched_is_synced_once_pods_and_pvcs_are_listed() -> None:
    api = ScriptedApi(lists=[[pod("p", "x")], []], watches=[])
    synced: list[str] = []
    poked: list[tuple[str, list[str]]] = []

    async def scenario() -> watching.Watched:
        watched = watching.Watched(api,
                                   pods_changed=lambda ns, c, _: poked.append((ns, list(c))),
                                   pvc_changed=lambda key: None,
                                   namespace_synced=synced.append)
        assert watched.all_synced()  # nothing to watch yet
        watched.ensure("jobs")
        watched.ensure("jobs")  # once
        assert not watched.synced("jobs")
        for _ in range(100):
            await asyncio.sleep(0.001)
        await watched.close()
        return watched

    watched = asyncio.run(scenario())
    assert synced == ["jobs"]
    assert watched.synced("jobs")
    assert watched.all_synced()
    assert poked == [("jobs", ["x"])]
    assert [p.name for p in watched.pods_of_claim(("jobs", "x"))] == ["p"]
    assert [p.name for p in watched.pods_in("jobs")] == ["p"]
    assert watched.pvc(("jobs", "x")) is None
    assert api.calls.count("list pods") + api.calls.count("list persistentvolumeclaims") == 2


@pytest.fixture(autouse=True)
def _no_wait_between_short_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proof, "RETRY_SECONDS", 0)


def _synced_watched(*, version: int, now: int, barrier: list[Any],
                    later: tuple[list[Any], ...] = ()) -> tuple[watching.Watched, list[str]]:
    api = ProofApi(now, barrier, *later)
    watched = watching.Watched(api, pods_changed=lambda ns, c, _: None,
                               pvc_changed=lambda key: None, namespace_synced=lambda ns: None)
    held = informer.Informer(api, "pods", "jobs", pod_view, lambda *_: None, lambda: None)
    held.items = {"old": pod_view(pod("old", "x"))}
    held.version, held.synced = version, True
    watched.pods["jobs"] = held
    return watched, api.calls


def test_an_informer_that_has_seen_that_far_is_current() -> None:
    watched, calls = _synced_watched(version=50, now=40, barrier=[])
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert [p.name for p in snapshot.pods] == ["old"]
    assert calls == ["version"]  # one consistent read of one object, nothing else
    assert snapshot.live()
    assert not snapshot.behind()  # nothing in it that the informer lacks
    watched.pods["jobs"].breaks += 1  # its watch failed since: the live view has a gap
    assert not snapshot.live()


def test_a_lagging_informer_is_brought_up_to_date_by_a_short_watch() -> None:
    watched, calls = _synced_watched(version=30, now=40, barrier=[
        ("ADDED", pod("newcomer", "x", version="35")),
        ("DELETED", pod("old", "x", version="36")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "41"}}),
        ("ADDED", pod("too-late-to-matter", "x", version="42")),
    ])
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    # "old" stays as its deletion showed it: running until then, after the informer's 30.
    assert [(p.name, p.active) for p in snapshot.pods] == [("old", True), ("newcomer", True)]
    assert calls == ["version", "watch from 30 for 3 s"]
    assert set(watched.pods["jobs"].items) == {"old"}  # the informer's own view is untouched
    # Live only once the informer itself has applied the changes the proof saw (to 36).
    assert not snapshot.live()
    watched.pods["jobs"].version = 36
    assert snapshot.live()
    watched.pods["jobs"].breaks += 1
    assert not snapshot.live()


def test_a_quiet_namespace_is_proven_by_a_bookmark_and_its_informer_stays_live() -> None:
    # No pod changed since the informer's version: it holds the truth as it is, and
    # whatever changes next reaches it through the same unbroken watch.
    watched, calls = _synced_watched(version=30, now=40, barrier=[
        ("BOOKMARK", {"metadata": {"resourceVersion": "41"}})])
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert [p.name for p in snapshot.pods] == ["old"]
    assert calls == ["version", "watch from 30 for 3 s"]
    assert watched.pods["jobs"].version == 30
    assert snapshot.live()


@pytest.mark.parametrize("barrier", [
    [("ADDED", pod("newcomer", "x", version="35"))],  # ended before reaching version 40
    [errors.Gone("too old")],
])
def test_without_proof_of_freshness_the_namespace_is_listed(barrier: list[Any]) -> None:
    watched, calls = _synced_watched(version=30, now=40, barrier=barrier)
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert [p.name for p in snapshot.pods] == ["listed"]
    # Only after as many short watches as a proof opens, each ending short.
    assert calls == ["version", *["watch from 30 for 3 s"] * proof.ATTEMPTS, "full list"]
    assert not snapshot.live()


@pytest.mark.parametrize("first", [
    # Its bookmark too soon, or the API server's watch cache behind the proof's read.
    [("ADDED", pod("p", "x", version="35")), ("BOOKMARK", {"metadata": {"resourceVersion": "38"}})],
    [errors.Gone("too old")],  # or it failed
])
def test_a_short_watch_that_ends_short_is_followed_by_another_not_a_list(
        first: list[Any]) -> None:
    """Pod p, a user of the claim, was created and deleted while the informer lagged (at
    30); the proof reads 40. The first short watch ends short of it; a list would lack p
    (and the claim would be deleted a grace early): the next short watch proves it."""
    watched, calls = _synced_watched(version=30, now=40, barrier=first, later=([
        ("ADDED", pod("p", "x", version="35")),
        ("DELETED", pod("p", "x", version="38")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "41"}}),
    ],))
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert ("p", True) in [(p.name, p.active) for p in snapshot.pods]
    assert calls == ["version", "watch from 30 for 3 s", "watch from 30 for 3 s"]


def test_a_kind_of_few_objects_held_alike_by_a_lagging_informer_is_proven_too() -> None:
    """The informer lags at 30 (its watch broken and waiting to retry, or slow) and holds
    what a list at 40 would say; pod p was created and deleted between the two, a user of
    the claim until 38. A list was once taken as proof here, and the claim deleted a grace
    early: the changes since the informer's version are the proof, and p is in them."""
    watched, calls = _synced_watched(version=30, now=40, barrier=[
        ("ADDED", pod("p", "x", version="35")),
        ("DELETED", pod("p", "x", version="38")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "41"}}),
    ])
    watched.pods["jobs"].items = {"listed": pod_view(pod("listed", "x"))}  # the list's
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert ("p", True) in [(p.name, p.active) for p in snapshot.pods]
    assert not snapshot.live()  # the informer has not applied p's changes yet
    assert calls == ["version", "watch from 30 for 3 s"]


def test_a_pod_made_and_deleted_during_a_proof_stays_in_its_view() -> None:
    """The informer lags at 30; the proof reads 40, where pod p (created at 35, after the
    claim's last recorded use) runs; p is deleted at 41, before the bookmark at 42. The
    proof's view has p as it was when deleted, running: the claim is in use."""
    watched, _calls = _synced_watched(version=30, now=40, barrier=[
        ("ADDED", pod("p", "x", version="35")),
        ("DELETED", pod("p", "x", version="41")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "42"}}),
    ])
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert ("p", True) in [(p.name, p.active) for p in snapshot.pods]


def test_a_list_its_informer_lacks_is_ahead_until_the_informer_catches_up() -> None:
    watched, _ = _synced_watched(version=30, now=40, barrier=[])
    held = watched.pods["jobs"]
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert snapshot.behind()  # the informer has "old", not yet "listed"
    held.version = 35  # a change before the list's read: still short of it
    assert snapshot.behind()
    held.items = {"listed": pod_view(pod("listed", "x"))}
    held.version = 38  # it holds what was listed: nothing left to catch up
    assert not snapshot.behind()
    held.items = {}  # "listed" deleted after the list's read: the informer is the later
    held.version = 41
    assert not snapshot.behind()


def job(name: str, claim: str, version: str = "1", finished: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True",
                   "lastTransitionTime": "2026-01-01T00:01:00Z"}] if finished else []
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]
    return {"metadata": {"name": name, "namespace": "jobs", "resourceVersion": version,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"template": {"spec": {"volumes": volumes}}},
            "status": {"conditions": conditions}}


class KindsApi(ScriptedApi):
    """Lists by kind: `by_kind[kind]` (else nothing); watches never end."""

    def __init__(self, by_kind: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(lists=[], watches=[])
        self.by_kind = by_kind

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        self.calls.append(f"list {kind}")
        for item in self.by_kind.get(kind, []):
            each(item)
        return "10"


def test_workloads_of_every_kind_are_watched_and_index_beside_pods() -> None:
    api = KindsApi({"pods": [pod("p", "x")], "batch/v1/jobs": [job("j", "x")]})
    poked: list[tuple[str, list[str]]] = []

    async def scenario() -> watching.Watched:
        watched = watching.Watched(api,
                                   pods_changed=lambda ns, c, _: poked.append((ns, list(c))),
                                   pvc_changed=lambda key: None,
                                   namespace_synced=lambda ns: None)
        watched.ensure("jobs")
        for _ in range(100):
            await asyncio.sleep(0.001)
        assert watched.synced("jobs")
        return watched

    watched = asyncio.run(scenario())
    listed = {call.removeprefix("list ") for call in api.calls if call.startswith("list ")}
    assert listed == {"pods", "persistentvolumeclaims", "batch/v1/jobs", "batch/v1/cronjobs",
                      "apps/v1/deployments", "apps/v1/replicasets", "apps/v1/statefulsets",
                      "apps/v1/daemonsets", "v1/replicationcontrollers"}
    assert sorted(p.name for p in watched.pods_of_claim(("jobs", "x"))) == ["Job/j", "p"]
    assert sorted(p.name for p in watched.pods_in("jobs")) == ["Job/j", "p"]
    assert ("jobs", ["x"]) in poked  # the Job's arrival pokes the claim it names


def test_a_released_namespace_is_no_longer_watched() -> None:
    api = KindsApi({"pods": [pod("p", "x")]})

    async def scenario() -> tuple[watching.Watched, list[asyncio.Task[Any]]]:
        watched = watching.Watched(api, pods_changed=lambda ns, c, _: None,
                                   pvc_changed=lambda key: None,
                                   namespace_synced=lambda ns: None)
        watched.ensure("jobs")
        await asyncio.sleep(0.01)
        tasks = [task for task in asyncio.all_tasks() if task.get_name().endswith(" in jobs")]
        watched.release("jobs")
        await asyncio.sleep(0.01)
        return watched, tasks

    watched, tasks = asyncio.run(scenario())
    assert len(tasks) == 9
    assert all(task.cancelled() for task in tasks)
    assert watched.watching() == []
    assert watched.pods_in("jobs") == []
    assert not watched.pods
    assert not watched.pvcs
    assert not watched.workloads
    assert watched.all_synced()  # nothing left to wait for


def test_a_job_its_lagging_watch_has_not_shown_yet_is_in_the_proof() -> None:
    watched, calls = _synced_watched(version=50, now=40, barrier=[])
    jobs = informer.Informer(watched.source, "batch/v1/jobs", "jobs",
                             lambda body: workload_view("Job", body), lambda *_: None,
                             lambda: None)
    jobs.version, jobs.synced = 30, True  # its watch lags behind the pods'
    watched.workloads["jobs"] = [jobs]
    assert isinstance(watched.source, ProofApi)
    watched.source.watches = [[("ADDED", job("late", "x", version="39")),
                               ("BOOKMARK", {"metadata": {"resourceVersion": "41"}})]]
    snapshot = asyncio.run(proof.prove_current(watched, "jobs"))
    assert sorted(p.name for p in snapshot.pods) == ["Job/late", "old"]
    assert calls == ["version", "version", "watch from 30 for 3 s"]  # one per kind
    assert not snapshot.live()  # until the Job informer itself has seen it
    assert snapshot.behind()  # meanwhile the proof's view is the later one
    jobs.breaks += 1  # and while it relists after a break
    assert snapshot.behind()
    jobs.breaks -= 1
    jobs.version = 39
    assert snapshot.live()
    assert not snapshot.behind()
    jobs.breaks += 1
    assert not snapshot.live()
    assert not snapshot.behind()  # a gap since, but it holds all the proof did


class StalledBarrierApi(ProofApi):
    """A proof's own watch that brings nothing (a quiet moment of the API server's
    bookmark timer): only the informer's own watch can prove it current."""

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch from {resource_version} for {seconds} s")
        await asyncio.Event().wait()
        yield "BOOKMARK", {}  # never reached


def test_a_lagging_informer_whose_own_watch_catches_up_first_proves_itself() -> None:
    api = StalledBarrierApi(40, [])
    watched = watching.Watched(api, pods_changed=lambda ns, c, _: None,
                               pvc_changed=lambda key: None, namespace_synced=lambda ns: None)
    held = informer.Informer(api, "pods", "jobs", pod_view, lambda *_: None, lambda: None)
    held.items = {"old": pod_view(pod("old", "x"))}
    held.version, held.synced = 30, True
    watched.pods["jobs"] = held

    async def scenario() -> freshness.PodSnapshot:
        proving = asyncio.create_task(proof.prove_current(watched, "jobs"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not proving.done()
        held.items["newcomer"] = pod_view(pod("newcomer", "x", version="39"))
        held.version = 39  # not yet as far as the consistent read
        for _ in range(5):
            await asyncio.sleep(0)
        assert not proving.done()
        held.items["later"] = pod_view(pod("later", "x", version="42"))
        held.version = 42  # its next change, past the read: every change to 40 is in
        snapshot = await asyncio.wait_for(proving, 1)
        assert [task for task in asyncio.all_tasks()
                if task is not asyncio.current_task()] == []  # the proof's watch is gone
        return snapshot

    snapshot = asyncio.run(scenario())
    assert sorted(p.name for p in snapshot.pods) == ["later", "newcomer", "old"]
    assert api.calls == ["version", "watch from 30 for 3 s"]
    assert snapshot.live()
    held.breaks += 1
    assert not snapshot.live()


def test_an_informer_says_when_it_has_reached_a_version() -> None:
    async def scenario() -> None:
        held = informer.Informer(ScriptedApi([], []), "pods", "jobs", pod_view,
                                 lambda *_: None, lambda: None)
        held.version = 10
        assert held.reached(10).done()
        given_up = held.reached(12)
        given_up.cancel()
        waiting = held.reached(15)
        # Those given up on go when another waits (a quiet namespace may not change).
        assert [target for target, _ in held._reaching] == [15]
        held.reached(20).cancel()
        held.version = 14
        assert not waiting.done()
        assert [target for target, _ in held._reaching] == [15]
        held.version = 15
        assert waiting.done()
        assert held._reaching == []

    asyncio.run(scenario())


def test_a_spell_of_failures_waits_longer_each_time_and_tells_the_same_failure_once(
        caplog: pytest.LogCaptureFixture) -> None:
    failures = informer.Failures("Watching pods in jobs")
    refused, gone = ConnectionRefusedError("refused"), TimeoutError("no answer")
    with caplog.at_level(logging.DEBUG, logger="evc_operator.informer"):
        delays = [failures.failed(refused) for _ in range(8)] + [failures.failed(gone)]
        failures.reset()
        delays.append(failures.failed(gone))
    assert delays[0] == delays[-1] == 1.0  # a new spell starts at the shortest wait
    assert delays[:8] == sorted(delays[:8])
    assert delays[0] < delays[7]
    assert max(delays) == informer.RETRY_CAP
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 7 + [logging.WARNING] * 2
    assert caplog.records[0].getMessage().startswith("Watching pods in jobs failed (")
