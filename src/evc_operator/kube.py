"""The one module that talks to the Kubernetes API on the operator's behalf.

Everything here is async (kubernetes_asyncio) because it runs inside Kopf's
event loop; a sync client there would stall every other handler. Functions
return plain dicts (the API's own JSON), or for pod lists only their projections,
and raise ApiException on failure; deciding what to do about either is the
caller's business.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from evc_operator.metrics import API_ERRORS
from evc_operator.resources import API_VERSION, GROUP, KIND, PLURAL, VERSION
from evc_operator.status import Event
from evc_operator.users import PodView, pod_view

# Explicit, or the client picks strategic merge patch, which custom resources refuse.
# (Its type stubs omit `_content_type`, which its code accepts: hence the ignores.)
MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "evc-operator"

log = logging.getLogger(__name__)
_Fn = TypeVar("_Fn", bound=Callable[..., Awaitable[Any]])


def _counted(operation: str) -> Callable[[_Fn], _Fn]:
    """Count failed calls in evc_api_errors{operation, status}."""
    def decorate(fn: _Fn) -> _Fn:
        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ApiException as error:
                API_ERRORS.labels(operation, str(error.status)).inc()
                raise
            except (aiohttp.ClientError, TimeoutError):
                API_ERRORS.labels(operation, "0").inc()
                raise
        return cast(_Fn, call)
    return decorate

__all__ = ["ApiException", "connect"]


async def connect() -> client.ApiClient:
    """An API client for the cluster this process runs in, else the kubeconfig's."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except config.ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    # Each namespace with claims holds two watches open: a cap that never starves requests.
    configuration.connection_pool_maxsize = 1000
    api = client.ApiClient(configuration)
    # The API server names the field manager of our writes after this: "evc-operator".
    api.user_agent = COMPONENT
    return api


def _plain(api: client.ApiClient, model: Any) -> dict[str, Any]:
    plain: dict[str, Any] = api.sanitize_for_serialization(model)
    return plain


async def _read_or_none(api: client.ApiClient, read: Awaitable[Any]) -> dict[str, Any] | None:
    """The object a read call returns, or None if it does not exist (404)."""
    try:
        found = await read
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return _plain(api, found)


@_counted("create_pvc")
async def create_pvc(api: client.ApiClient, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create a PVC; raises ApiException 409 if one of that name exists (never touched)."""
    core = client.CoreV1Api(api)
    # The client serialises plain dicts as they are; its models would add nothing here.
    created = await core.create_namespaced_persistent_volume_claim(
        body["metadata"]["namespace"], cast(client.V1PersistentVolumeClaim, dict(body)))
    return _plain(api, created)


@_counted("read_pvc")
async def read_pvc(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return await _read_or_none(
        api, client.CoreV1Api(api).read_namespaced_persistent_volume_claim(name, namespace))


@_counted("patch_pvc")
async def patch_pvc(api: client.ApiClient, namespace: str, name: str, uid: str,
                    resource_version: str, patch: Mapping[str, Any]) -> None:
    """Merge-patch our PVC, only if it is still the object (uid) and version we decided on."""
    body = dict(patch)
    body["metadata"] = {**(patch.get("metadata") or {}), "uid": uid,
                        "resourceVersion": resource_version}
    await client.CoreV1Api(api).patch_namespaced_persistent_volume_claim(
        name, namespace, body, _content_type=MERGE_PATCH)  # type: ignore[call-arg]


@_counted("patch_evc_status")
async def patch_evc_status(api: client.ApiClient, namespace: str, name: str,
                           status: Mapping[str, Any], *,
                           resource_version: str | None = None) -> dict[str, Any]:
    """Merge-patch the EVC's status subresource; None values remove fields.

    With `resource_version`, the API server refuses (409) if the EVC changed since.
    """
    body: dict[str, Any] = {"status": dict(status)}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    patched = await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, body,
        _content_type=MERGE_PATCH)  # type: ignore[call-arg]
    return cast(dict[str, Any], patched)


LIST_PAGE = 500  # objects per page of a list: bounds memory, not the list's consistency
WATCH_SECONDS = 300  # the API server ends a watch after this; we resume where it ended


class Gone(Exception):
    """410 Gone: the resourceVersion to resume from is too old; list again."""


def describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"API error {error.status}: {error_message(error)}"
    return f"{type(error).__name__}: {error}"


def _lister(api: client.ApiClient, kind: str) -> Callable[..., Awaitable[Any]]:
    core = client.CoreV1Api(api)
    listers: dict[str, Callable[..., Awaitable[Any]]] = {
        "pods": core.list_namespaced_pod,
        "persistentvolumeclaims": core.list_namespaced_persistent_volume_claim}
    return listers[kind]


def _raise_for(response: aiohttp.ClientResponse, data: bytes) -> None:
    # Raw responses skip the client's own check: raise what it would have.
    if response.status == 410:
        raise Gone(data[:200])
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = data
        error.headers = response.headers
        raise error


async def list_all(api: client.ApiClient, kind: str, namespace: str,
                   each: Callable[[dict[str, Any]], None]) -> str:
    """Pass every object of a kind in a namespace to `each`, page by page; returns the
    list's resourceVersion (where a watch resumes).

    No resourceVersion: the first page is a consistent read of the latest state, and the
    pages after it come from the same snapshot, so the whole list is as fresh as the moment
    it began. Pages are parsed from raw JSON and dropped once `each` has seen them: the
    client's models would cost far more than the list itself for thousands of objects.
    """
    lister = _lister(api, kind)
    token: str | None = None
    while True:
        paging: dict[str, Any] = {"_continue": token} if token else {}
        response = cast(aiohttp.ClientResponse, await lister(
            namespace, limit=LIST_PAGE, _preload_content=False, **paging))
        async with response:
            data = await response.read()
            _raise_for(response, data)
        page = orjson.loads(data)
        for item in page.get("items") or ():
            each(item)
        metadata = page.get("metadata") or {}
        token = metadata.get("continue")
        if not token:
            return str(metadata.get("resourceVersion") or "")


@_counted("collection_version")
async def collection_version(api: client.ApiClient, kind: str, namespace: str) -> int:
    """The resourceVersion of a collection now: a consistent read of at most one object."""
    response = cast(aiohttp.ClientResponse, await _lister(api, kind)(
        namespace, limit=1, _preload_content=False))
    async with response:
        data = await response.read()
        _raise_for(response, data)
    return int(orjson.loads(data)["metadata"]["resourceVersion"])


async def watch(api: client.ApiClient, kind: str, namespace: str, resource_version: str,
                seconds: int = WATCH_SECONDS) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, object) from `resource_version` on, until the API server ends the
    watch after `seconds`; bookmarks included (they only move the resourceVersion).
    Raises Gone (410)."""
    response = cast(aiohttp.ClientResponse, await _lister(api, kind)(
        namespace, watch=True, resource_version=resource_version,
        allow_watch_bookmarks=True, timeout_seconds=seconds, _preload_content=False,
        _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=seconds + 60)))
    async with response:
        if response.status != 200:
            _raise_for(response, await response.read())
        async for line in response.content:
            if not line.strip():
                continue
            event = orjson.loads(line)
            body = event.get("object") or {}
            if event.get("type") == "ERROR":
                if body.get("code") == 410:
                    raise Gone(body.get("message"))
                raise ApiException(status=body.get("code") or 0, reason=body.get("message"))
            yield event["type"], body


@_counted("list_pods")
async def list_pod_views(api: client.ApiClient, namespace: str) -> list[PodView]:
    """All pods of a namespace, read from the API server itself (not a cache), as PodViews."""
    views: list[PodView] = []
    await list_all(api, "pods", namespace, lambda item: views.append(pod_view(item)))
    return views


@_counted("delete_evc")
async def delete_evc(api: client.ApiClient, namespace: str, name: str, uid: str,
                     resource_version: str) -> None:
    """Delete the EVC only if it is still exactly the object we decided about.

    The preconditions make the API server refuse (409) if the EVC was replaced
    (uid) or changed in any way (resourceVersion) since. The PVC goes with it
    through its owner reference (garbage collector, in the background).
    """
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name,
        body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version),
            propagation_policy="Background",
        ),
    )


@_counted("read_lease")
async def read_lease(api: client.ApiClient, namespace: str,
                     name: str) -> dict[str, Any] | None:
    return await _read_or_none(
        api, client.CoordinationV1Api(api).read_namespaced_lease(name, namespace))


@_counted("create_lease")
async def create_lease(api: client.ApiClient, namespace: str, name: str,
                       spec: Mapping[str, Any]) -> None:
    """Create the Lease; 409 if another replica created it first."""
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
    await client.CoordinationV1Api(api).create_namespaced_lease(
        namespace, cast(client.V1Lease, body))


@_counted("replace_lease")
async def replace_lease(api: client.ApiClient, lease: Mapping[str, Any],
                        spec: Mapping[str, Any]) -> None:
    """Replace the Lease's spec; 409 if anyone changed it since `lease` was read."""
    metadata = lease["metadata"]
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"],
                         "resourceVersion": metadata["resourceVersion"]},
            "spec": dict(spec)}
    await client.CoordinationV1Api(api).replace_namespaced_lease(
        metadata["name"], metadata["namespace"], cast(client.V1Lease, body))


def error_message(error: ApiException) -> str:
    """The API server's own explanation from an error response, else its reason."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason)


async def post_event(api: client.ApiClient, namespace: str, name: str, uid: str,
                     event: Event, now: datetime.datetime) -> None:
    """Post a Kubernetes Event about the EVC. Best effort: a lost Event loses no data."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": name,
                           "namespace": namespace, "uid": uid},
        "type": event.type, "reason": event.reason, "message": event.message,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    try:
        await client.CoreV1Api(api).create_namespaced_event(
            namespace, cast(client.CoreV1Event, body))
    except ApiException as error:
        API_ERRORS.labels("post_event", str(error.status)).inc()
        log.warning("Could not post Event %s on %s/%s: %s %s", event.reason, namespace, name,
                    error.status, error.reason)
