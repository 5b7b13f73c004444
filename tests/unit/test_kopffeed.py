"""Claims' events go from Kopf's watch stream straight to the operator (kopffeed.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest
from kopf._cogs.clients import watching
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

from evc_operator import kopffeed
from evc_operator.resources import GROUP, PLURAL

CLAIMS = references.Resource(GROUP, "v1", PLURAL, namespaced=True)
CRDS = references.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                           namespaced=False)


def _claim(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "jobs", "name": name, "uid": f"uid-{name}"}}


class _Toggles:
    """Kopf's readiness toggles (aiotoggles.ToggleSet), as far as the watcher uses them."""

    def __init__(self) -> None:
        self.dropped: list[object] = []

    async def drop_toggle(self, toggle: object) -> None:
        self.dropped.append(toggle)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[str | None, str]],
                                                         list[Any]]:
    """The feed installed over a stream of scripted events and a recording Kopf watcher:
    (what the feed was handed, the resources Kopf's own watcher was called for)."""
    fed: list[tuple[str | None, str]] = []
    kopfs: list[Any] = []
    script: list[Any] = [
        {"type": None, "object": _claim("listed")},  # the initial list
        watching.Bookmark.LISTED,
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        {"type": "MODIFIED", "object": _claim("listed")},
        {"type": "ADDED", "object": _claim("broken")},
        {"type": "DELETED", "object": _claim("listed")},
    ]

    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        assert kwargs["resource"] is CLAIMS
        for event in script:
            yield event

    async def kopfs_watcher(*, namespace: Any, settings: Any, resource: Any, processor: Any,
                            operator_paused: Any = None, operator_indexed: Any = None,
                            resource_indexed: Any = None) -> None:
        kopfs.append(resource)

    def feed(event_type: str | None, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        fed.append((event_type, name))
        if name == "broken":
            raise ValueError("a bug of the operator's")

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    monkeypatch.setattr(kopffeed, "_KOPFS", kopfs_watcher)
    monkeypatch.setattr(queueing, "watcher", queueing.watcher)  # put back afterwards
    assert kopffeed.install(GROUP, PLURAL, feed)
    return fed, kopfs


def _watch(resource: references.Resource, toggles: _Toggles | None = None) -> None:
    """Kopf's call of its watcher (orchestration.py), with what these tests look at."""
    watcher: Any = queueing.watcher
    asyncio.run(watcher(namespace="jobs", settings=object(), resource=resource,
                        processor=lambda **_: None, operator_paused=None,
                        operator_indexed=toggles, resource_indexed="claims@jobs"))


def test_each_claim_event_is_handed_to_the_feed_in_the_streams_order(
        installed: tuple[list[tuple[str | None, str]], list[Any]]) -> None:
    fed, kopfs = installed
    toggles = _Toggles()
    _watch(CLAIMS, toggles)
    # Listed objects come with no type; Kopf's marks and the API server's bookmarks are
    # not events of a claim. No worker per object: every event, in order.
    assert fed == [(None, "listed"), ("MODIFIED", "listed"), ("ADDED", "broken"),
                   ("DELETED", "listed")]
    assert toggles.dropped == ["claims@jobs"]  # the end of the list still tells readiness
    assert kopfs == []


def test_a_failing_event_is_logged_with_its_claim_and_the_stream_goes_on(
        installed: tuple[list[tuple[str | None, str]], list[Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    fed, _ = installed
    with caplog.at_level(logging.ERROR, logger=kopffeed.__name__):
        _watch(CLAIMS)
    assert "Handling the ADDED event of claim jobs/broken failed." in caplog.text
    assert "a bug of the operator's" in caplog.text  # with its traceback
    assert fed[-1] == ("DELETED", "listed")  # the events after it were handled


def test_other_resources_go_kopfs_own_way(
        installed: tuple[list[tuple[str | None, str]], list[Any]]) -> None:
    fed, kopfs = installed
    _watch(CRDS)
    assert kopfs == [CRDS]
    assert fed == []


def test_a_kopf_whose_watcher_differs_keeps_its_own_path(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def other_watcher(*, resource: Any, processor: Any) -> None:
        pass

    monkeypatch.setattr(kopffeed, "_KOPFS", other_watcher)
    monkeypatch.setattr(queueing, "watcher", other_watcher)
    assert not kopffeed.install(GROUP, PLURAL, lambda _type, _body: None)
    assert queueing.watcher is cast(Any, other_watcher)
    assert "go through Kopf's per-object handling" in caplog.text


def test_uninstall_puts_kopfs_watcher_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queueing, "watcher", kopffeed._KOPFS)
    assert kopffeed.install(GROUP, PLURAL, lambda _type, _body: None)
    assert queueing.watcher is not kopffeed._KOPFS
    kopffeed.uninstall()
    assert queueing.watcher is kopffeed._KOPFS


def test_the_namespace_streamed_is_told_before_the_first_claim(
        installed: tuple[list[tuple[str | None, str]], list[Any]]) -> None:
    fed, _ = installed
    told: list[tuple[str | None, int]] = []

    async def scope(namespace: str | None) -> None:
        told.append((namespace, len(fed)))

    assert kopffeed.install(GROUP, PLURAL, lambda kind, body: fed.append((kind, "")), scope)
    asyncio.run(cast(Any, queueing.watcher)(
        namespace=None, settings=object(), resource=CLAIMS, processor=lambda **_: None))
    assert told == [(None, 0)]  # every namespace served, told before any event
    assert len(fed) == 4  # then the events


def test_each_complete_list_tells_the_claims_it_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a list again after 410 Gone lacks was deleted meanwhile (handlers.py forgets it):
    each list is told apart. A list cut short (no LISTED) and begun again is told by a
    claim listed twice: only the new list's count. Added to the next, a claim on the cut
    list deleted before the new one was in neither list nor any event, never read, and
    stayed tracked (a review); one the new list had before the claim listed twice is read
    (`missing`), at worst."""
    lists: list[tuple[str | None, set[tuple[str, str]]]] = []
    script: list[Any] = [
        {"type": None, "object": _claim("a")},
        {"type": None, "object": _claim("b")},
        watching.Bookmark.LISTED,
        {"type": "ADDED", "object": _claim("c")},
        {"type": "DELETED", "object": _claim("a")},
        {"type": None, "object": _claim("b")},  # 410 Gone: listed again
        {"type": None, "object": _claim("c")},
        watching.Bookmark.LISTED,
        {"type": None, "object": _claim("b")},  # 410 Gone again: a list cut short...
        {"type": None, "object": _claim("x")},
        {"type": None, "object": _claim("b")},  # ...and begun again (x deleted meanwhile)
        {"type": None, "object": _claim("c")},
        watching.Bookmark.LISTED,
    ]

    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        for event in script:
            yield event
        await asyncio.sleep(0.01)  # the lists are told in tasks of their own

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    monkeypatch.setattr(queueing, "watcher", queueing.watcher)  # put back afterwards
    async def listed(namespace: str | None, keys: set[tuple[str, str]]) -> None:
        lists.append((namespace, keys))

    assert kopffeed.install(GROUP, PLURAL, lambda *_: None, listed=listed)
    _watch(CLAIMS)
    assert lists == [("jobs", {("jobs", "a"), ("jobs", "b")}),
                     ("jobs", {("jobs", "b"), ("jobs", "c")}),
                     ("jobs", {("jobs", "b"), ("jobs", "c")})]


def test_the_stream_goes_on_while_a_list_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telling a list may read claims (handlers.claims_listed): awaited in the stream, it
    held Kopf's watch past its inactivity timeout, which cancelled the watcher for good
    (a review). The events after the list reach the feed while it is told."""
    fed: list[str] = []
    told = asyncio.Event()
    script: list[Any] = [
        {"type": None, "object": _claim("a")},
        watching.Bookmark.LISTED,
        {"type": "ADDED", "object": _claim("b")},
    ]

    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        for event in script:
            yield event
        assert not told.is_set()  # the list is still being told
        fed.append("stream went on")

    async def listed(namespace: str | None, keys: set[tuple[str, str]]) -> None:
        await told.wait()  # slow reads

    monkeypatch.setattr(watching, "infinite_watch", infinite_watch)
    monkeypatch.setattr(queueing, "watcher", queueing.watcher)  # put back afterwards
    assert kopffeed.install(GROUP, PLURAL,
                            lambda kind, body: fed.append(body["metadata"]["name"]),
                            listed=listed)
    _watch(CLAIMS)
    assert fed == ["a", "b", "stream went on"]


def test_a_claim_a_list_lacks_is_read_and_fed_as_it_is() -> None:
    reads: list[str] = []
    fed: list[tuple[str | None, Mapping[str, Any]]] = []
    stored = {"there": _claim("there"), "again": {"metadata": {
        "namespace": "jobs", "name": "again", "uid": "uid-new"}}}
    failing = {"flaky": 2}

    async def read(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        if failing.get(name):
            failing[name] -= 1
            raise TimeoutError("no answer")
        return stored.get(name)

    async def no_wait(seconds: float) -> None:
        pass

    # Read, then seen deleted by the stream, which goes on meanwhile (and perhaps made
    # again: another uid held by that name): not brought back.
    stored["since"] = _claim("since")
    held_since = {("jobs", "since")}
    tracked = {("jobs", name): f"uid-{name}"
               for name in ("listed", "there", "again", "gone", "flaky", "since")}
    tracked[("other", "elsewhere")] = "uid-elsewhere"
    asyncio.run(kopffeed.missing("jobs", {("jobs", "listed")}, tracked, read,
                                 lambda kind, body: fed.append((kind, body)),
                                 lambda key, uid: key not in held_since, sleep=no_wait))
    assert sorted(reads) == ["again", "flaky", "flaky", "flaky", "gone", "since", "there"]
    by_name = {body["metadata"]["name"]: (kind, body) for kind, body in fed}
    assert by_name["there"][0] is None  # there still (a list cut short): taken in
    assert by_name["again"] == (None, stored["again"])  # another of its name: taken in
    # Gone: deleted with the uid it was known by (another of its name, seen since, stays).
    assert by_name["gone"] == ("DELETED", {"metadata": {
        "namespace": "jobs", "name": "gone", "uid": "uid-gone"}})
    assert by_name["flaky"] == ("DELETED", {"metadata": {
        "namespace": "jobs", "name": "flaky", "uid": "uid-flaky"}})
    assert "elsewhere" not in by_name  # not this list's namespace
    assert "since" not in by_name  # not brought back


def test_a_claim_whose_feed_fails_stops_no_other() -> None:
    fed: list[str] = []

    async def read(namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"namespace": namespace, "name": name, "uid": name}}

    def feed(kind: str | None, body: Mapping[str, Any]) -> None:
        if body["metadata"]["name"] == "bad":
            raise ValueError("a bug of the operator's")
        fed.append(body["metadata"]["name"])

    asyncio.run(kopffeed.missing("jobs", set(), {("jobs", "bad"): "bad", ("jobs", "ok"): "ok"},
                                 read, feed, lambda key, uid: True))
    assert fed == ["ok"]


def test_a_claim_a_list_lacks_is_read_until_it_can_be_while_it_is_held() -> None:
    """Reads that fail are tried again after each of `READ_RETRY`, then every last of
    them, for as long as the claim the list lacked is held; once the stream has seen it
    (deleted, or made again), no more."""
    reads: list[str] = []
    waits: list[float] = []
    held = [True]

    async def read(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        raise TimeoutError("no answer")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 6:
            held[0] = False  # the stream saw it deleted

    asyncio.run(kopffeed.missing("jobs", set(), {("jobs", "x"): "uid-x"}, read,
                                 lambda kind, body: None, lambda key, uid: held[0],
                                 sleep=sleep))
    assert waits == [*kopffeed.READ_RETRY, *[kopffeed.READ_RETRY[-1]] * 3]
    assert len(reads) == 6

