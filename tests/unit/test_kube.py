"""The API client's pure parts: TLS session settings, error mapping, paths.

Requests themselves are exercised against the real control plane by the
integration tests; nothing here stands in for an API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from evc_operator import apihooks, errors, kube, limiter, listwatch, metrics, openfiles
from evc_operator.auth import Credentials, Static
from evc_operator.metrics import REGISTRY
from tests.unit.pki import Pki

# Errors.

def _status(code: int, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": message, "reason": "Invalid", "code": code}).encode()


def test_a_non_2xx_answer_is_an_api_exception_with_the_servers_message() -> None:
    body = _status(422, 'PersistentVolumeClaim "x" is invalid: spec: Forbidden')
    with pytest.raises(errors.Invalid) as caught:
        kube.check(422, "Unprocessable Entity", body, {"Content-Type": "application/json"})
    error = caught.value
    assert isinstance(error, errors.ApiException)
    assert (error.status, error.reason, error.body) == (422, "Unprocessable Entity", body)
    assert error.headers == {"Content-Type": "application/json"}
    assert errors.error_message(error) == 'PersistentVolumeClaim "x" is invalid: spec: Forbidden'
    assert errors.describe(error) == (
        'API error 422: PersistentVolumeClaim "x" is invalid: spec: Forbidden')
    assert str(error) == '(422) PersistentVolumeClaim "x" is invalid: spec: Forbidden'
    kube.check(201, "Created", b"{}")


def test_an_answer_without_a_status_body_falls_back_to_the_reason() -> None:
    with pytest.raises(errors.ApiException) as caught:
        kube.check(502, "Bad Gateway", b"<html>proxy error</html>")
    assert errors.error_message(caught.value) == "Bad Gateway"
    error = errors.ApiException(status=503, reason="Service Unavailable")
    assert (error.status, error.reason, error.body, error.headers) == (
        503, "Service Unavailable", None, None)
    assert str(error) == "(503) Service Unavailable"


def test_each_refusal_is_raised_as_its_own_type() -> None:
    for status, kind in ((401, errors.Unauthorized), (403, errors.Forbidden),
                         (404, errors.NotFound), (409, errors.Conflict), (410, errors.Gone),
                         (422, errors.Invalid)):
        with pytest.raises(kind) as caught:
            kube.check(status, "Refused", _status(status, "refused"))
        assert caught.value.status == status
        assert isinstance(caught.value, errors.ApiException)
    with pytest.raises(errors.Gone, match="too old"):
        kube.check(410, "Gone", _status(410, "too old resource version"))
    with pytest.raises(errors.ApiException) as other:
        kube.check(500, "Internal Server Error", b"")
    assert type(other.value) is errors.ApiException
    kube.check(200, "OK", b"{}")


def test_failed_calls_are_reported_to_the_hook_by_operation_and_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[tuple[str, int]] = []
    monkeypatch.setattr(apihooks, "error_hook", lambda *args: reported.append(args))

    @kube.counted("test_op")
    async def refused() -> None:
        raise errors.Conflict("Conflict")

    @kube.counted("test_op")
    async def unreachable() -> None:
        raise aiohttp.ClientConnectionError("refused")

    for call in (refused, unreachable):
        with pytest.raises((errors.ApiException, aiohttp.ClientError)):
            asyncio.run(call())
    assert reported == [("test_op", 409), ("test_op", 0)]


def test_metrics_count_failed_calls_by_operation_and_status() -> None:
    def count(status: str) -> float:
        return REGISTRY.get_sample_value(
            "evc_api_errors_total", {"operation": "test_op", "status": status}) or 0.0

    before = count("409"), count("0")
    metrics.count_api_error("test_op", 409)
    metrics.count_api_error("test_op", 0)
    assert (count("409"), count("0")) == (before[0] + 1, before[1] + 1)


def test_the_session_names_the_field_manager_and_caps_requests_not_watches(pki: Pki) -> None:
    credentials = Credentials(server="https://localhost", ssl=ssl.create_default_context(),
                              auth=Static("Bearer t"))

    async def scenario() -> None:
        api = kube.Api(credentials)
        try:
            assert api.session.headers["User-Agent"] == "evc-operator"
            assert "Authorization" not in api.session.headers  # made per request
            assert api.session.connector is not None
            # As many as reconciliations may be in flight: the limiter sets the pace.
            assert api.session.connector.limit == kube.REQUEST_CONNECTIONS == (
                limiter.DEFAULT_BOUNDS.maximum)
            assert api.session.timeout.total == 60
            # Watches hold their connections for minutes: a pool of their own, uncapped
            # (one past a cap would wait, unsaid, for another watch to end).
            assert api.watches.headers["User-Agent"] == "evc-operator"
            assert api.watches.connector is not None
            assert api.watches.connector.limit == kube.WATCH_CONNECTIONS == 0
        finally:
            await api.close()
        assert api.session.closed
        assert api.watches.closed

    asyncio.run(scenario())


def test_paths_quote_names() -> None:
    assert kube.core_path("ns", "persistentvolumeclaims", "a/b") == (
        "/api/v1/namespaces/ns/persistentvolumeclaims/a%2Fb")
    assert kube._evc("ns", "c") == "/apis/zalando.org/v1/namespaces/ns/ephemeralvolumeclaims/c"
    assert kube._leases("ops") == "/apis/coordination.k8s.io/v1/namespaces/ops/leases"
    with pytest.raises(KeyError):
        listwatch.collection_path("secrets", "ns")


@pytest.mark.parametrize(("method", "path", "params", "expected"), [
    ("GET", "/api/v1/namespaces/a/pods", {"limit": "500"}, ("list", "pods")),
    ("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}, ("watch", "pods")),
    ("GET", "/api/v1/namespaces/a/persistentvolumeclaims/x", None,
     ("get", "persistentvolumeclaims")),
    ("POST", "/api/v1/namespaces/a/events", None, ("create", "events")),
    ("PATCH", "/apis/zalando.org/v1/namespaces/a/ephemeralvolumeclaims/x/status", None,
     ("patch", "ephemeralvolumeclaims/status")),
    ("DELETE", "/apis/zalando.org/v1/namespaces/a/ephemeralvolumeclaims/x", None,
     ("delete", "ephemeralvolumeclaims")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l", None, ("update", "leases")),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None,
     ("create", "selfsubjectaccessreviews")),
    ("GET", "/api/v1/namespaces/a", None, ("get", "namespaces")),
])
def test_requests_are_named_by_verb_and_resource_as_the_api_server_names_them(
        method: str, path: str, params: dict[str, str] | None,
        expected: tuple[str, str]) -> None:
    assert apihooks.verb_and_resource(method, path, params) == expected


def test_every_request_is_reported_with_its_status_or_0_without_an_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On loopback: one answered request (404), one to a port where nobody listens. The
    answered one's Date header reaches the date hook too, between its send and receipt."""
    reported: list[tuple[str, str, int]] = []
    dates: list[tuple[str | None, float, float]] = []
    monkeypatch.setattr(apihooks, "request_hook", lambda *args: reported.append(args))
    monkeypatch.setattr(apihooks, "date_hook", lambda *args: dates.append(args))

    async def scenario() -> None:
        async def not_found(_: web.Request) -> web.Response:
            return web.json_response({"kind": "Status"}, status=404)

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/a/pods/{name}", not_found)
        context = ssl.create_default_context()
        async with _serving(app) as url:
            for server in (url, f"http://127.0.0.1:{_closed_port()}"):
                api = kube.Api(Credentials(server=server, ssl=context, auth=Static("Bearer t")))
                try:
                    with pytest.raises((errors.NotFound, aiohttp.ClientError)):
                        await api.call("GET", "/api/v1/namespaces/a/pods/x")
                finally:
                    await api.close()

    asyncio.run(scenario())
    assert reported == [("get", "pods", 404), ("get", "pods", 0)]
    assert [date is not None and sent <= received for date, sent, received in dates] == [True]


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    """`app` served on a free loopback port, by its URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.SockSite(runner, socket.create_server(("127.0.0.1", 0)))
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving_api(app: web.Application) -> AsyncIterator[kube.Api]:
    """The API client of `app` served on a free loopback port (a bearer token), closed
    after."""
    async with _serving(app) as url:
        api = kube.Api(Credentials(server=url, ssl=ssl.create_default_context(),
                                   auth=Static("Bearer t")))
        try:
            yield api
        finally:
            await api.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


def test_workload_collections_are_found_by_group_version_and_plural() -> None:
    from evc_operator.workloads import KINDS, collection

    paths = {kind: listwatch.collection_path(collection(kind), "ns") for kind in KINDS}
    assert paths["Job"] == "/apis/batch/v1/namespaces/ns/jobs"
    assert paths["Deployment"] == "/apis/apps/v1/namespaces/ns/deployments"
    assert paths["ReplicationController"] == "/api/v1/namespaces/ns/replicationcontrollers"


def test_a_watch_is_served_while_every_request_connection_is_busy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests share a bounded pool; watches have their own: with every request
    connection waiting for an answer, a watch still starts, and one more request waits."""
    monkeypatch.setattr(kube, "REQUEST_CONNECTIONS", 2)

    async def scenario() -> None:
        release, two_started = asyncio.Event(), asyncio.Event()
        started: list[str] = []

        async def slow(request: web.Request) -> web.Response:
            started.append(request.match_info["name"])
            if len(started) == 2:
                two_started.set()
            await release.wait()
            return web.json_response({"metadata": {"name": request.match_info["name"]}})

        async def pods(request: web.Request) -> web.StreamResponse:
            assert request.query["watch"] == "true"
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(json.dumps({"type": "ADDED", "object": {
                "metadata": {"name": "p", "resourceVersion": "2"}}}).encode() + b"\n")
            return response

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/a/pods/{name}", slow)
        app.router.add_get("/api/v1/namespaces/a/pods", pods)
        async with serving_api(app) as api:
            calls = [asyncio.create_task(api.call(
                "GET", f"/api/v1/namespaces/a/pods/{name}"))
                for name in ("one", "two", "three")]
            await two_started.wait()
            events = [event async for event in listwatch.watch(api, "pods", "a", "1",
                                                               seconds=5)]
            assert [(kind, body["metadata"]["name"]) for kind, body in events] == [
                ("ADDED", "p")]
            assert len(started) == 2  # the third waits for a connection
            release.set()
            answers = await asyncio.gather(*calls)
            assert sorted(answer["metadata"]["name"] for answer in answers) == [
                "one", "three", "two"]

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_watches_past_a_thousand_are_all_served_at_once() -> None:
    """Each watch holds a connection for minutes, nine a namespace with claims: with a cap
    on the watches' pool (it was 1,000), the ones past it waited, unsaid, for another
    to end, and their namespaces' views went stale."""
    openfiles.raise_soft_limit()  # two descriptors a watch here: the client's, the server's
    watches = 1_010

    async def scenario() -> None:
        all_open, started = asyncio.Event(), [0]

        async def pods(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            started[0] += 1
            if started[0] == watches:
                all_open.set()
            await all_open.wait()  # every watch is held open until all have started
            await response.write(json.dumps({"type": "ADDED", "object": {
                "metadata": {"name": "p", "resourceVersion": "2"}}}).encode() + b"\n")
            return response

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", pods)
        async with serving_api(app) as api:
            async def one(number: int) -> int:
                return len([event async for event in listwatch.watch(
                    api, "pods", f"ns-{number // 9}", "1", seconds=60)])
            counts = await asyncio.wait_for(
                asyncio.gather(*(one(number) for number in range(watches))), timeout=60)
        assert counts == [1] * watches

    asyncio.run(scenario())


def test_a_watch_event_longer_than_aiohttps_line_limit_is_read_and_so_is_the_next() -> None:
    """An object at etcd's limit whose strings the API server escapes (`&` in six bytes)
    is a line of up to 9 MiB; aiohttp refuses lines past 4 MiB, and the watch was failed,
    resumed at the same version, and failed again."""
    long = "&" * (5 * 2**20)

    async def scenario() -> list[tuple[str, int]]:
        async def pods(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            for name, value in (("long", long), ("next", "")):
                await response.write(json.dumps({"type": "ADDED", "object": {"metadata": {
                    "name": name, "resourceVersion": "2", "annotations": {"a": value}}}},
                ).encode() + b"\n")
            return response

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/a/pods", pods)
        async with serving_api(app) as api:
            return [(body["metadata"]["name"], len(body["metadata"]["annotations"]["a"]))
                    async for _, body in listwatch.watch(api, "pods", "a", "1", seconds=5)]

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [("long", len(long)), ("next", 0)]


@pytest.mark.parametrize(("seconds", "silence"), [(3, 13), (300, 360)])
def test_a_watch_silent_past_its_end_is_a_dead_connection_soon_for_a_short_one(
        seconds: int, silence: float) -> None:
    """A proof's short watch (3 s) waited a minute past its end on a silently dropped
    connection, at each of its attempts; an informer's (300 s) still waits a minute."""
    asked: list[aiohttp.ClientTimeout] = []

    class Api:
        @contextlib.asynccontextmanager
        async def request(self, *_: object, timeouts: aiohttp.ClientTimeout,
                          **__: object) -> AsyncIterator[object]:
            asked.append(timeouts)
            raise OSError("no connection")
            yield  # pragma: no cover

    async def scenario() -> None:
        with pytest.raises(OSError, match="no connection"):
            async for _ in listwatch.watch(Api(), "pods", "a", "1",  # type: ignore[arg-type]
                                           seconds=seconds):
                pass

    asyncio.run(scenario())
    assert [timeouts.sock_read for timeouts in asked] == [silence]


@pytest.mark.parametrize("body", [b"<html>Signed out</html>", b'["not", "an", "object"]',
                                  b'{"items": [', b'{"metadata": {"resourceVersion": "x"}}'])
# (the last: a JSON object, whose version only is unreadable; a watch event without a type)
def test_a_2xx_answer_that_is_not_a_json_object_is_unreadable_and_unanswered(
        body: bytes) -> None:
    """A proxy in the way, a body cut short: typed, and handled as a call with no answer
    (the request may or may not have been done), never a bare ValueError or KeyError."""
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html")

    async def stream(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return await answer(request)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(body + b"\n")
        return response

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/a/pods", stream)
        app.router.add_get("/api/v1/namespaces/a/pods/{name}", answer)
        async with serving_api(app) as api:
            calls = [api.call("GET", "/api/v1/namespaces/a/pods/p"),
                     listwatch.collection_version(api, "pods", "a"),
                     listwatch.list_all(api, "pods", "a", lambda _item: None),
                     _drained(listwatch.watch(api, "pods", "a", "1", seconds=5))]
            for call in calls:
                with pytest.raises(errors.Unreadable) as raised:
                    await call
                assert isinstance(raised.value, kube.UNANSWERED)

    if body.startswith(b'{"metadata"'):
        async def version_and_watch_only() -> None:
            app = web.Application()
            app.router.add_get("/api/v1/namespaces/a/pods", stream)
            async with serving_api(app) as api:
                with pytest.raises(errors.Unreadable):
                    await listwatch.collection_version(api, "pods", "a")
                with pytest.raises(errors.Unreadable):
                    await _drained(listwatch.watch(api, "pods", "a", "1", seconds=5))
        asyncio.run(asyncio.wait_for(version_and_watch_only(), 30))
        return
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def _drained(events: AsyncIterator[object]) -> None:
    async for _event in events:
        pass


def test_a_read_answered_with_no_body_is_unreadable_not_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty 200 was read as None, which `_read_or_none` gives for a 404: a claim that
    exists taken for deleted, the signing key for missing. Counted as an error too."""
    reported: list[tuple[str, int]] = []
    monkeypatch.setattr(apihooks, "error_hook", lambda *args: reported.append(args))

    async def empty(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_get("/apis/zalando.org/v1/namespaces/a/ephemeralvolumeclaims/c", empty)
        async with serving_api(app) as api:
            with pytest.raises(errors.Unreadable):
                await kube.read_evc(api, "a", "c")

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert reported == [("read_evc", 0)]
