"""A proxy in front of the real API server that cuts the claims' first initial list with
410 Gone, as the API server does when the revision a list began at is compacted.

Every request is forwarded to the control plane's API server (its token passes through,
TLS to it is verified with its CA) and every answer comes back as the API server gave
it, streamed line by line for watches. Only one thing is added: the first watch of claims
that asks for its initial events (`sendInitialEvents`, the initial list as a stream) ends
after its first object with an `ERROR` event of code 410, the way the API server ends a
watch whose revision is gone. The operator reaches the proxy over plain HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from controlplane.cluster import ControlPlane

GONE = {"type": "ERROR", "object": {
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
    "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410}}
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding",
        "accept-encoding"}


class GoneProxy:
    def __init__(self, plane: ControlPlane) -> None:
        self.upstream = plane.server
        self.ssl = ssl.create_default_context(cafile=str(plane.ca_file))
        self.claim_streams = 0  # watches of claims asking for their initial events
        self.cut = 0  # of which cut with 410 Gone after their first object
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="gone-proxy", daemon=True)

    def kubeconfig(self, path: Path, token: str) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {
                "server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "admin"}}],
            "current-context": "proxy"}))
        path.chmod(0o600)
        return path

    @contextmanager
    def running(self) -> Iterator[GoneProxy]:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        try:
            yield self
        finally:
            stop = self._stop
            if stop is not None:
                self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Watches still open when the test ends are cut within a second, so the proxy's
        # thread ends in running()'s join, not up to a minute into the next test.
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None)) as self.session:
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    def _to_cut(self, request: web.Request) -> bool:
        if (request.method != "GET" or not request.path.endswith("/ephemeralvolumeclaims")
                or request.query.get("sendInitialEvents") != "true"):
            return False
        self.claim_streams += 1
        if self.cut:
            return False
        self.cut += 1
        return True

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in _HOP}
        async with self.session.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=await request.read() if request.can_read_body else None,
                auto_decompress=True) as upstream:
            answer = web.StreamResponse(status=upstream.status, headers={
                name: value for name, value in upstream.headers.items()
                if name.lower() not in _HOP})
            await answer.prepare(request)
            if request.query.get("watch") not in ("true", "1"):
                await answer.write(await upstream.read())
            elif self._to_cut(request):
                objects = 0
                async for line in upstream.content:
                    await answer.write(line)
                    objects += b'"BOOKMARK"' not in line
                    if objects:
                        await answer.write(json.dumps(GONE).encode() + b"\n")
                        break
            else:
                async for line in upstream.content:
                    await answer.write(line)
            await answer.write_eof()
            return answer
