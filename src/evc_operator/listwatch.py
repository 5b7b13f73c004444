"""Collections of the API server: paged lists, a collection's resourceVersion, watches.

What the informers (informer.py) and the proofs of freshness (proof.py) read, through
the same client as every other request (kube.py: its pool of watches for the watches).
Objects come as the API's own JSON dicts; projecting them is the caller's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from evc_operator import parsing
from evc_operator.errors import Unreadable, api_error
from evc_operator.kube import Api, check, counted, parsed, quoted

LIST_PAGE = 100  # objects per page of a list: bounds memory, not the list's consistency
WATCH_SECONDS = 300  # the API server ends a watch after this; we resume where it ended
LISTED_KINDS = frozenset({"pods", "persistentvolumeclaims"})
# The longest watch event read (one object a line). etcd holds 1.5 MiB an object, stored as
# protobuf for built-in kinds; as JSON, each `<`, `>` or `&` of its strings is written in six
# bytes (`\u0026`): an object at the limit can be 9 MiB a line. Past aiohttp's own limit
# (twice the read buffer, 4 MiB) a line failed the watch, which was resumed from the same
# version to meet it again: the kind's view stood still until the API server answered 410.
# Not much more: aiohttp joins a long line's chunks one by one, at a cost that grows with
# the square of its length (4.5 s of the loop for 60 MiB).
EVENT_BYTES = 16 * 2**20


def collection_path(kind: str, namespace: str) -> str:
    """A collection's path: `kind` is a core plural ("pods") or "group/version/plural"
    ("batch/v1/jobs"); `namespace` "" is every namespace."""
    if "/" in kind:
        group_version, plural = kind.rsplit("/", 1)
    elif kind in LISTED_KINDS:
        group_version, plural = "v1", kind
    else:
        raise KeyError(kind)
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    if not namespace:  # every namespace (clusterwide.py)
        return f"{base}/{plural}"
    return f"{base}/namespaces/{quoted(namespace)}/{plural}"


async def list_all(api: Api, kind: str, namespace: str,
                   each: Callable[[dict[str, Any]], None]) -> str:
    """Pass every object of a kind in a namespace to `each`, page by page; returns the
    list's resourceVersion (where a watch resumes).

    No resourceVersion: the first page is a consistent read of the latest state, and the
    pages after it come from the same snapshot, so the whole list is as fresh as the moment
    it began. Pages are parsed from raw JSON and dropped once `each` has seen them.
    """
    path = collection_path(kind, namespace)
    token: str | None = None
    while True:
        params = {"limit": str(LIST_PAGE)}
        if token:
            params["continue"] = token
        async with api.request("GET", path, params=params) as response:
            data = await response.read()
            check(response.status, response.reason, data, response.headers)
        page = parsed(data, response.status)
        for item in page.get("items") or ():
            each(item)
        metadata = page.get("metadata") or {}
        token = metadata.get("continue")
        if not token:
            return str(metadata.get("resourceVersion") or "")


def _grace(seconds: int) -> int:
    """How long past its own end a watch's silence is waited out before it is taken for a
    dead connection: a minute for an informer's, 10 s for a proof's short watch (a minute,
    and a silently dropped connection held a proof up a minute at each attempt)."""
    return 10 if seconds <= 10 else 60


def as_number(version: str) -> int:
    """A list's resourceVersion, compared as a number (the proofs' "current to V"); an
    empty one (a fake API's, say) is 0: older than any."""
    return int(version or 0)


@counted("collection_version")
async def collection_version(api: Api, kind: str, namespace: str) -> int:
    """The resourceVersion of a collection now: a consistent read of at most one object."""
    async with api.request("GET", collection_path(kind, namespace),
                           params={"limit": "1"}) as response:
        data = await response.read()
        check(response.status, response.reason, data, response.headers)
    version = (parsed(data, response.status).get("metadata") or {}).get("resourceVersion")
    if not isinstance(version, str) or not version.isdigit():
        raise Unreadable(f"a list whose resourceVersion is not a number: {version!r}")
    return int(version)


async def watch(api: Api, kind: str, namespace: str, resource_version: str,
                seconds: int = WATCH_SECONDS) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, object) from `resource_version` on, until the API server ends the
    watch after `seconds`; bookmarks included (they only move the resourceVersion).
    Raises Gone when `resource_version` is too old."""
    params = {"watch": "true", "resourceVersion": resource_version,
              "allowWatchBookmarks": "true", "timeoutSeconds": str(seconds)}
    async with api.request(
            "GET", collection_path(kind, namespace), params=params,
            timeouts=aiohttp.ClientTimeout(sock_connect=10, sock_read=seconds + _grace(seconds)),
            watch=True,
    ) as response:
        if response.status != 200:
            check(response.status, response.reason, await response.read(),
                  response.headers)
        while line := await response.content.readline(max_line_length=EVENT_BYTES):
            if not line.strip():
                continue
            try:
                event = parsing.loads(line)
            except ValueError:
                event = None
            change = event.get("type") if isinstance(event, dict) else None
            body = event.get("object") if isinstance(event, dict) else None
            if not isinstance(change, str) or not isinstance(body, dict):
                raise Unreadable(f"a watch event that is not one: {bytes(line[:60])!r}")
            if change == "ERROR":
                raise api_error(body.get("code") or 0, body.get("message"))
            yield change, body
