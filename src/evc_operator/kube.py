"""The client that talks to the Kubernetes API on the operator's behalf, and its verbs.

Everything here is async (plain aiohttp) because it runs inside Kopf's event
loop; a sync client there would stall every other handler. Functions return
plain dicts (the API's own JSON) and raise typed errors (`NotFound`, `Conflict`,
`Invalid`, `Forbidden`, `Gone`, ... all `ApiException`s); deciding what to do
about either is the caller's business. Nothing here knows EVCs' rules, views or
metrics: every request, every failed call and every response's Date header are
reported to the hooks of apihooks.py, projections are the informer's.

Lists and watches of collections, on the same client, are listwatch.py's.

No generated client library: the operator uses a dozen endpoints, and importing
one costs tens of MiB before any object exists (Kopf imports it too when it is
installed).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import quote

import aiohttp
import orjson

from evc_operator import apihooks, parsing
from evc_operator.auth import session
from evc_operator.credentials import Credentials, load_credentials
from evc_operator.errors import ApiException, NotFound, Unreadable, api_error
from evc_operator.resources import API_VERSION, GROUP, KIND, PLURAL, VERSION
from evc_operator.timestamps import boottime, format_time

JSON = "application/json"
# Explicit: custom resources refuse strategic merge patch.
MERGE_PATCH = "application/merge-patch+json"
# The API server names the field manager of our writes after the User-Agent.
COMPONENT = "evc-operator"

# Requests and watches have a pool each. Requests share at most this many connections
# (HTTP/1.1: one request at a time on each): as many as the adaptive limit lets
# reconciliations be in flight (limiter.py), so that limit, not the pool, sets the pace;
# Events and reads wait for a free connection instead of opening more. Each open TLS
# connection holds about 75 KiB (asyncio's read buffer, OpenSSL's state, aiohttp's): at
# 10,000 claims, 128 rather than 256 took the burst's peak RSS from 125 to 116 MiB, as
# fast (docs/benchmarks.md; the bare client saturates the API server with 32).
REQUEST_CONNECTIONS = 128
# Watches: no cap (aiohttp: 0). Each holds its connection for minutes, two or nine a
# namespace with claims (watched.py), and one past a cap waited, unsaid, for another to
# end (minutes): with 1,000 and nine a namespace, the namespaces past about the 110th had
# stale views. Open files: openfiles.py.
WATCH_CONNECTIONS = 0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)  # every request but watches
# What a call that got no word from the API server about the request raises: no answer in
# time, or no connection (an API server restarting, a lost network). Not an `ApiException`:
# nothing was refused; worth the same call again later. (errors.transient counts only the
# timeout: errors.py knows no transport.)
UNANSWERED = (TimeoutError, aiohttp.ClientError, Unreadable)
# Watch events carry whole objects, one per line, and etcd allows 1.5 MiB per object.
READ_BUFFER = 2**21


_Fn = TypeVar("_Fn", bound=Callable[..., Awaitable[Any]])


OPERATIONS: list[str] = []  # the operations whose failures the error hook hears of


def counted(operation: str) -> Callable[[_Fn], _Fn]:
    """Report failed calls to the error hook, by operation and status."""
    OPERATIONS.append(operation)

    def decorate(fn: _Fn) -> _Fn:
        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ApiException as error:
                apihooks.error_hook(operation, error.status or 0)
                raise
            except UNANSWERED:
                apihooks.error_hook(operation, 0)
                raise
        return cast(_Fn, call)
    return decorate


# The client.

class Api:
    """One API server, its credentials, and two connection pools to it: one for
    requests, one for watches (a watch holds its connection for minutes)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.server = credentials.server
        self.session = self._pool(REQUEST_CONNECTIONS)
        self.watches = self._pool(WATCH_CONNECTIONS)

    def _pool(self, limit: int) -> aiohttp.ClientSession:
        return session(  # sets a fresh Authorization, retries once after a 401
            self.credentials, limit=limit,
            headers={"User-Agent": COMPONENT, "Accept": JSON},
            timeout=REQUEST_TIMEOUT,
            read_bufsize=READ_BUFFER,
        )

    async def close(self) -> None:
        await self.session.close()
        await self.watches.close()

    @contextlib.asynccontextmanager
    async def request(self, method: str, path: str, *,
                      params: Mapping[str, str] | None = None, body: Any = None,
                      content_type: str = JSON,
                      timeouts: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
                      watch: bool = False,
                      ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The raw response, whatever its status; the caller reads and checks it. A
        `watch` goes through the pool of watches."""
        headers: dict[str, str] = {}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = content_type
        verb, resource = apihooks.verb_and_resource(method, path, params)
        answered = False
        sent = boottime()
        try:
            async with (self.watches if watch else self.session).request(
                    method, self.server + path, params=params, data=data, headers=headers,
                    timeout=timeouts) as response:
                answered = True
                apihooks.request_hook(verb, resource, response.status)
                apihooks.date_hook(response.headers.get("Date"), sent, boottime())
                yield response
        except (aiohttp.ClientError, TimeoutError):
            if not answered:
                apihooks.request_hook(verb, resource, 0)
            raise

    async def call(self, method: str, path: str, *, body: Any = None,
                   content_type: str = JSON) -> Any:
        """The response's JSON; raises ApiException unless it is 2xx."""
        async with self.request(method, path, body=body, content_type=content_type) as response:
            data = await response.read()
            check(response.status, response.reason, data, response.headers)
        if not data and method == "GET":  # a read answers with the object, or a 404
            raise Unreadable(f"a {response.status} answer to a read, with no body")
        return parsed(data, response.status) if data else None


async def connect() -> Api:
    """An API client for the cluster this process runs in, else the kubeconfig's."""
    return Api(load_credentials())


def parsed(data: bytes, status: int) -> dict[str, Any]:
    """A 2xx answer's JSON object; raises Unreadable if its body is none."""
    try:
        found = parsing.loads(data)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise Unreadable(f"a {status} answer whose body is not a JSON object: "
                         f"{bytes(data[:60])!r}")
    return found


def check(status: int, reason: str | None, data: bytes,
          headers: Mapping[str, str] | None = None) -> None:
    if not 200 <= status <= 299:
        raise api_error(status, reason, data, headers)


def quoted(name: str) -> str:
    return quote(name, safe="")


def core_path(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quoted(namespace)}/{plural}"
    return f"{path}/{quoted(name)}" if name is not None else path


def _leases(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{quoted(namespace)}/leases"
    return f"{path}/{quoted(name)}" if name is not None else path


def _evc(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quoted(namespace)}/{PLURAL}/{quoted(name)}"


async def _read_or_none(api: Api, path: str) -> dict[str, Any] | None:
    """The object at `path`, or None if it does not exist (404)."""
    try:
        found: dict[str, Any] = await api.call("GET", path)
    except NotFound:
        return None
    return found


@counted("create_pvc")
async def create_pvc(api: Api, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create a PVC; raises Conflict if one of that name exists (never touched)."""
    created: dict[str, Any] = await api.call(
        "POST", core_path(body["metadata"]["namespace"], "persistentvolumeclaims"),
        body=dict(body))
    return created


@counted("read_pvc")
async def read_pvc(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    return await _read_or_none(api, core_path(namespace, "persistentvolumeclaims", name))


@counted("patch_pvc")
async def patch_pvc(api: Api, namespace: str, name: str, uid: str,
                    resource_version: str, patch: Mapping[str, Any]) -> dict[str, Any]:
    """Merge-patch our PVC, only if it is still the object (uid) and version we decided on;
    returns the patched PVC."""
    body = dict(patch)
    body["metadata"] = {**(patch.get("metadata") or {}), "uid": uid,
                        "resourceVersion": resource_version}
    patched: dict[str, Any] = await api.call(
        "PATCH", core_path(namespace, "persistentvolumeclaims", name), body=body,
        content_type=MERGE_PATCH)
    return patched


@counted("read_evc")
async def read_evc(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The EVC as stored now (a read of the latest state, not of a cache); None if gone."""
    return await _read_or_none(api, _evc(namespace, name))


@counted("patch_evc_status")
async def patch_evc_status(api: Api, namespace: str, name: str,
                           status: Mapping[str, Any]) -> dict[str, Any]:
    """Merge-patch the EVC's status subresource; None values remove fields."""
    body: dict[str, Any] = {"status": dict(status)}
    patched: dict[str, Any] = await api.call(
        "PATCH", f"{_evc(namespace, name)}/status", body=body, content_type=MERGE_PATCH)
    return patched


@counted("delete_evc")
async def delete_evc(api: Api, namespace: str, name: str, uid: str,
                     resource_version: str, orphan: bool = False) -> None:
    """Delete the EVC only if it is still exactly the object we decided about.

    The preconditions make the API server refuse (Conflict) if the EVC was replaced
    (uid) or changed in any way (resourceVersion) since. The PVC goes with it
    through its owner reference (garbage collector, in the background); `orphan`: its
    dependents are kept, their owner references to it removed (a PVC of its name that is
    not its own but names it as an owner).
    """
    await api.call("DELETE", _evc(namespace, name), body={
        "preconditions": {"uid": uid, "resourceVersion": resource_version},
        "propagationPolicy": "Orphan" if orphan else "Background",
    })


@counted("read_lease")
async def read_lease(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    return await _read_or_none(api, _leases(namespace, name))


@counted("create_lease")
async def create_lease(api: Api, namespace: str, name: str,
                       spec: Mapping[str, Any]) -> None:
    """Create the Lease; Conflict if another replica created it first."""
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
    await api.call("POST", _leases(namespace), body=body)


@counted("replace_lease")
async def replace_lease(api: Api, lease: Mapping[str, Any],
                        spec: Mapping[str, Any]) -> None:
    """Replace the Lease's spec; Conflict if anyone changed it since `lease` was read."""
    metadata = lease["metadata"]
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"],
                         "resourceVersion": metadata["resourceVersion"]},
            "spec": dict(spec)}
    await api.call("PUT", _leases(metadata["namespace"], metadata["name"]), body=body)


@counted("access_review")
async def may(api: Api, verb: str, group: str, resource: str, subresource: str = "",
              namespace: str = "", name: str = "") -> bool:
    """Whether the API server allows us this (a SelfSubjectAccessReview, which every
    authenticated user may create); namespace "" asks for all namespaces, name "" for
    any object of the kind."""
    attributes = {"verb": verb, "group": group, "resource": resource,
                  "subresource": subresource, "namespace": namespace, "name": name}
    review = await api.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                            body={"apiVersion": "authorization.k8s.io/v1",
                                  "kind": "SelfSubjectAccessReview",
                                  "spec": {"resourceAttributes": attributes}})
    return bool((review.get("status") or {}).get("allowed"))


@counted("post_event")
async def post_event(api: Api, namespace: str, name: str, uid: str, *, type: str,
                     reason: str, message: str, now: datetime.datetime) -> None:
    """Post a Kubernetes Event about the EVC (type Normal or Warning)."""
    stamp = format_time(now)
    body = {
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": name,
                           "namespace": namespace, "uid": uid},
        "type": type, "reason": reason, "message": message,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    await api.call("POST", core_path(namespace, "events"), body=body)


@counted("read_version")
async def read_version(api: Api) -> dict[str, Any]:
    """The API server's `/version` (anyone may read it)."""
    found: dict[str, Any] = await api.call("GET", "/version")
    return found


@counted("read_discovery")
async def serves(api: Api, group_version: str, plural: str) -> bool:
    """Whether the API server's discovery lists `plural` in `group_version` (e.g.
    "zalando.org/v1", "ephemeralvolumeclaims"): whether it serves that resource now."""
    found = await _read_or_none(api, f"/apis/{group_version}")
    return any(resource.get("name") == plural for resource in (found or {}).get("resources", []))


@counted("read_secret")
async def read_secret(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret (only the signing key's: RBAC names it), or None if it does not exist."""
    return await _read_or_none(api, core_path(namespace, "secrets", name))


@counted("patch_secret")
async def patch_secret(api: Api, namespace: str, name: str, resource_version: str,
                       data: Mapping[str, str]) -> None:
    """Merge `data` into the Secret, only if nobody changed it since `resource_version`
    (Conflict otherwise: another replica filled it first)."""
    await api.call("PATCH", core_path(namespace, "secrets", name), content_type=MERGE_PATCH,
                   body={"metadata": {"resourceVersion": resource_version},
                         "data": dict(data)})
