"""A pod created just before its claim's deadline keeps the claim, even while the
operator's watches deliver late (a loaded machine, a slow network): its informers' long
watches go through a proxy that holds their events back, on the real control plane."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from controlplane.cluster import ControlPlane
from evc_operator import listwatch
from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually
from tests.integration.test_lifecycle import (
    evc,
    now,
    parse,
    phase_is,
    pod,
    reasons,
    status,
)

DELAY = 5.0  # seconds the informers' watch events are held back (the test's setup, from
# the pod's creation to the claim's annotation, must fit in it: 2.6 s on a loaded machine)
DROPPED = {"host", "content-length", "transfer-encoding", "connection", "content-encoding",
           "accept-encoding", "keep-alive"}


class DelayingProxy:
    """Plain HTTP in, HTTPS to the API server out. The bodies of the long watches of users
    and PVCs (the informers'; not Kopf's EVC watch, nor a proof's short watch) reach the
    client `delay` seconds late, in order."""

    def __init__(self, plane: ControlPlane, delay: float) -> None:
        self.plane = plane
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopped: asyncio.Event | None = None

    def _delayed(self, request: web.Request) -> bool:
        return (request.query.get("watch") == "true"
                and request.query.get("timeoutSeconds") == str(listwatch.WATCH_SECONDS)
                and "ephemeralvolumeclaims" not in request.path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in DROPPED}
        body = await request.read()
        delayed = self._delayed(request)
        async with self._session.request(
                request.method, self.plane.server + request.path_qs, headers=headers,
                data=body or None, timeout=aiohttp.ClientTimeout(total=None)) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                name: value for name, value in upstream.headers.items()
                if name.lower() not in DROPPED})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if delayed:
                    await asyncio.sleep(self.delay)
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _serve(self, started: threading.Event) -> None:
        context = ssl.create_default_context(cafile=str(self.plane.ca_file))
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        runner = web.AppRunner(_app(self._handle), shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = runner.addresses[0][1]
        self._stopped = asyncio.Event()
        started.set()
        await self._stopped.wait()
        await self._session.close()  # the streams still open end: no handler waits
        await runner.cleanup()

    def __enter__(self) -> DelayingProxy:
        self._thread.start()
        started = threading.Event()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(started), self._loop)
        assert started.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stopped is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._serving.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def kubeconfig(self, into: Path) -> Path:
        """The admin's kubeconfig, through this proxy."""
        into.write_text(self.plane.kubeconfig.read_text().replace(
            self.plane.server, f"http://127.0.0.1:{self.port}"))
        return into


def _app(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def _create(plane: ControlPlane, namespace: str, manifest: str) -> None:
    """Create a pod straight on the API server (not through the proxy), quickly."""
    request = urllib.request.Request(
        f"{plane.server}/api/v1/namespaces/{namespace}/pods", data=manifest.encode(),
        method="POST", headers={"Content-Type": "application/json",
                                "Authorization": f"Bearer {plane.admin_token}"})
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        assert response.status == 201


@pytest.fixture
def delaying_proxy(control_plane: ControlPlane) -> Iterator[DelayingProxy]:
    with DelayingProxy(control_plane, DELAY) as proxy:
        yield proxy


# Few pods and many: proven alike, by the consistent read and a watch (few were once
# proven by a list).
@pytest.mark.parametrize("others", [0, 210])
def test_a_pod_created_just_before_the_deadline_keeps_its_claim_while_watches_lag(
        control_plane: ControlPlane, delaying_proxy: DelayingProxy, namespace: str,
        kubectl: Kubectl, operator: OperatorFactory, tmp_path: Path, others: int) -> None:
    if others:
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": [json.loads(pod(f"other-{n}"))
                                                                for n in range(others)]}))
    config = delaying_proxy.kubeconfig(tmp_path / "delayed.kubeconfig")
    operator(namespace, KUBECONFIG=str(config), EXPIRY_PERIOD="12", COUNTDOWN_INTERVAL="1")
    kubectl("apply", "-f", "-", input=evc("late"))
    deletes_at = parse(str(eventually(lambda: status(kubectl, "late").get("deletesAt"),
                                      timeout=30, what="the expiry countdown")))
    lead = (deletes_at - now()).total_seconds() - 0.8
    assert lead > 0, f"the countdown was written {-lead:.1f} s too late to test anything"
    time.sleep(lead)
    _create(control_plane, namespace, pod("user", "late"))
    created = now()
    assert created < deletes_at, "the pod was not created before the deadline"
    # Its event reaches the operator's informer DELAY seconds later: after the deadline.
    eventually(lambda: phase_is(kubectl, "late", "InUse"), timeout=30,
               what="the claim in use (status() fails at once if it was deleted)")
    assert json.loads(kubectl("get", "evc", "late", "-o", "json"))["status"]["users"] == 1
    # Nor does it go back to Idle (a new countdown, an Idle Event) when it is decided again
    # while the informer still lacks the pod the proof saw: a change to the claim (its watch
    # is not held back) has it reconciled at once. Past the delay, the informer has caught up.
    kubectl("annotate", "evc", "late", "example.com/touched=yes")
    assert (now() - created).total_seconds() < DELAY, "too late to test a lagging informer"
    time.sleep(DELAY + 1)
    assert phase_is(kubectl, "late", "InUse")
    assert "Idle" not in reasons(kubectl, "late")
