"""The writes that must land only on the object decided about carry its identity in the
request itself (kube.py): the claim's deletion its uid and resourceVersion as the API
server's `preconditions`, the PVC's merge patch its uid and resourceVersion in
`metadata`. The API server refuses either (409 Conflict) once the object was replaced or
changed since; without them it would delete, or patch, whatever holds that name now.

A review found that no test looked at the requests actually sent: the preconditions could
be dropped and every test still passed. Here the requests go over loopback HTTP to a
stand-in for the API server that records each one and, as the API server does, refuses a
write whose preconditions no longer hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from evc_operator import errors, kube
from evc_operator.auth import Credentials, Static

EVC_PATH = "/apis/zalando.org/v1/namespaces/jobs/ephemeralvolumeclaims/scratch"
PVC_PATH = "/api/v1/namespaces/jobs/persistentvolumeclaims/scratch"


class Server:
    """One EVC and one PVC, each as stored (uid, resourceVersion), and every request that
    reached it: method, path, Content-Type and JSON body."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, str]] = {
            EVC_PATH: {"uid": "evc-uid", "resourceVersion": "10"},
            PVC_PATH: {"uid": "pvc-uid", "resourceVersion": "5"},
        }
        self.requests: list[tuple[str, str, str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("DELETE", EVC_PATH, self.delete)
        app.router.add_route("PATCH", PVC_PATH, self.patch)
        return app

    async def _recorded(self, request: web.Request) -> Any:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append((request.method, request.path,
                              request.headers.get("Content-Type", ""), body))
        return body

    @staticmethod
    def _conflict(message: str) -> web.Response:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": "Conflict", "code": 409},
                                 status=409)

    def _refused(self, path: str, uid: str | None, version: str | None) -> bool:
        """Whether the API server would refuse: a precondition given that does not hold."""
        held = self.stored.get(path)
        return held is not None and ((uid is not None and uid != held["uid"]) or (
            version is not None and version != held["resourceVersion"]))

    async def delete(self, request: web.Request) -> web.Response:
        body = await self._recorded(request) or {}
        preconditions = body.get("preconditions") or {}
        if self._refused(request.path, preconditions.get("uid"),
                         preconditions.get("resourceVersion")):
            return self._conflict("Precondition failed: UID or ResourceVersion in "
                                  "precondition does not match")
        self.stored.pop(request.path, None)
        return web.json_response({"kind": "Status", "status": "Success"})

    async def patch(self, request: web.Request) -> web.Response:
        body = await self._recorded(request) or {}
        metadata = body.get("metadata") or {}
        if self._refused(request.path, metadata.get("uid"), metadata.get("resourceVersion")):
            return self._conflict("the object has been modified; please apply your changes "
                                  "to the latest version and try again")
        held = self.stored[request.path]
        held["resourceVersion"] = str(int(held["resourceVersion"]) + 1)
        return web.json_response({"metadata": {"name": "scratch", "namespace": "jobs",
                                               **held}})


@contextlib.asynccontextmanager
async def _api(server: Server) -> AsyncIterator[kube.Api]:
    """A client of `server`, served on a free loopback port."""
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.SockSite(runner, socket.create_server(("127.0.0.1", 0)))
    await site.start()
    port = site._sock.getsockname()[1]
    api = kube.Api(Credentials(server=f"http://127.0.0.1:{port}",
                               ssl=ssl.create_default_context(), auth=Static("Bearer t")))
    try:
        yield api
    finally:
        await api.close()
        await runner.cleanup()


def test_a_claims_deletion_sends_its_uid_and_resource_version_as_preconditions() -> None:
    """The DELETE of a claim carries, in its body, the uid and resourceVersion the
    decision was made on (the API server then refuses it if the claim was made again or
    changed since: a claim in use again must not go). Found untested by a review."""
    server = Server()

    async def scenario() -> None:
        async with _api(server) as api:
            # Changed since the decision (resourceVersion 9 -> 10): refused, and kept.
            with pytest.raises(errors.Conflict):
                await kube.delete_evc(api, "jobs", "scratch", "evc-uid", "9")
            assert EVC_PATH in server.stored
            # Another claim of that name (made again): refused, and kept.
            with pytest.raises(errors.Conflict):
                await kube.delete_evc(api, "jobs", "scratch", "old-uid", "10")
            assert EVC_PATH in server.stored
            # The very object decided about: deleted.
            await kube.delete_evc(api, "jobs", "scratch", "evc-uid", "10")
            assert EVC_PATH not in server.stored

    asyncio.run(scenario())
    sent = [(method, path, ctype.split(";")[0], body["preconditions"])
            for method, path, ctype, body in server.requests]
    assert sent == [
        ("DELETE", EVC_PATH, "application/json", {"uid": "evc-uid", "resourceVersion": "9"}),
        ("DELETE", EVC_PATH, "application/json", {"uid": "old-uid", "resourceVersion": "10"}),
        ("DELETE", EVC_PATH, "application/json", {"uid": "evc-uid", "resourceVersion": "10"}),
    ]
    # The PVC goes with it through its owner reference, in the background.
    assert {body["propagationPolicy"] for *_, body in server.requests} == {"Background"}


def test_a_pvc_patch_sends_its_uid_and_resource_version_in_its_metadata() -> None:
    """The merge patch of a claim's PVC carries, in `metadata`, the uid and
    resourceVersion it was decided on, beside the patch's own metadata (the API server
    then refuses it if the PVC was replaced or changed since). Found untested by a
    review."""
    server = Server()
    patch = {"metadata": {"labels": {"team": "data"}},
             "spec": {"resources": {"requests": {"storage": "2Gi"}}}}

    async def scenario() -> None:
        async with _api(server) as api:
            with pytest.raises(errors.Conflict):  # changed since (5 -> 6 elsewhere)
                await kube.patch_pvc(api, "jobs", "scratch", "pvc-uid", "4", patch)
            with pytest.raises(errors.Conflict):  # another PVC of that name
                await kube.patch_pvc(api, "jobs", "scratch", "other-uid", "5", patch)
            assert server.stored[PVC_PATH]["resourceVersion"] == "5"  # untouched
            patched = await kube.patch_pvc(api, "jobs", "scratch", "pvc-uid", "5", patch)
            assert patched["metadata"]["resourceVersion"] == "6"

    asyncio.run(scenario())
    assert [(method, path, ctype.split(";")[0]) for method, path, ctype, _ in
            server.requests] == [("PATCH", PVC_PATH, "application/merge-patch+json")] * 3
    bodies = [body for *_, body in server.requests]
    assert [body["metadata"] for body in bodies] == [
        {"labels": {"team": "data"}, "uid": "pvc-uid", "resourceVersion": "4"},
        {"labels": {"team": "data"}, "uid": "other-uid", "resourceVersion": "5"},
        {"labels": {"team": "data"}, "uid": "pvc-uid", "resourceVersion": "5"},
    ]
    assert all(body["spec"] == patch["spec"] for body in bodies)
    assert patch == {"metadata": {"labels": {"team": "data"}},  # the caller's, untouched
                     "spec": {"resources": {"requests": {"storage": "2Gi"}}}}


def test_a_pvc_patch_without_metadata_of_its_own_still_sends_the_preconditions() -> None:
    """A patch of the spec alone gets a `metadata` with just the uid and resourceVersion.
    Found untested by a review."""
    server = Server()

    async def scenario() -> None:
        async with _api(server) as api:
            await kube.patch_pvc(api, "jobs", "scratch", "pvc-uid", "5",
                                 {"spec": {"resources": {"requests": {"storage": "3Gi"}}}})

    asyncio.run(scenario())
    assert [body for *_, body in server.requests] == [{
        "metadata": {"uid": "pvc-uid", "resourceVersion": "5"},
        "spec": {"resources": {"requests": {"storage": "3Gi"}}}}]


def test_a_claim_deleted_orphaning_keeps_its_dependents() -> None:
    """`orphan`: a PVC of its name that is not its own but names it as an owner is kept,
    only that owner reference removed by the garbage collector (reconcile.py)."""
    server = Server()

    async def scenario() -> None:
        async with _api(server) as api:
            await kube.delete_evc(api, "jobs", "scratch", "evc-uid", "10", orphan=True)

    asyncio.run(scenario())
    assert [(body["propagationPolicy"], body["preconditions"])
            for *_, body in server.requests] == [
        ("Orphan", {"uid": "evc-uid", "resourceVersion": "10"})]
