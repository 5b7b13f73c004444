"""A small async REST client for the harness's own load: fast, and not the operator's.

The load generator must not share code paths with the thing it measures, and must
create tens of thousands of objects quickly: plain aiohttp requests with an admin
token, JSON in and out, a bounded number in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import aiohttp

from bench import workload

T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


class Api:
    def __init__(self, server: str, token: str, ca_file: str, *, in_flight: int = 32) -> None:
        self.server = server
        context = ssl.create_default_context(cafile=ca_file)
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}", "User-Agent": "evc-bench"},
            connector=aiohttp.TCPConnector(ssl=context, limit=in_flight + 8),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        self.in_flight = in_flight

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      params: Mapping[str, str] | None = None,
                      retries: int = 5) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        for attempt in range(retries + 1):
            try:
                async with self.session.request(
                        method, self.server + path, data=data, params=params,
                        headers={"Content-Type": content_type},
                        timeout=aiohttp.ClientTimeout(total=120)) as response:
                    text = await response.text()
                    if response.status == 429 or response.status >= 500:
                        raise ApiError(response.status, text)  # overloaded: retry
                    if response.status >= 400:
                        raise _Final(ApiError(response.status, text))
                    result: dict[str, Any] = json.loads(text) if text else {}
                    return result
            except _Final as final:
                raise final.error from None
            except (ApiError, aiohttp.ClientError, TimeoutError):
                if attempt == retries:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    async def each(self, items: Iterable[T], work: Callable[[T], Awaitable[Any]]) -> int:
        """Run `work` on every item, `in_flight` at a time; returns how many were done."""
        iterator = iter(items)
        done = 0

        async def worker() -> None:
            nonlocal done
            for item in iterator:
                await work(item)
                done += 1

        await asyncio.gather(*(worker() for _ in range(self.in_flight)))
        return done

    async def create_all(self, objects: list[tuple[str, dict[str, Any]]], plural: str) -> None:
        """Create each (namespace, body) as a core `plural`, with progress every 10 s."""
        total, done = len(objects), 0
        start = last = time.monotonic()

        async def create(item: tuple[str, dict[str, Any]]) -> None:
            nonlocal done, last
            namespace, body = item
            await self.request("POST", f"/api/v1/namespaces/{namespace}/{plural}", body)
            done += 1
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                print(f"  {plural}: {done}/{total} ({last - start:.0f} s)", flush=True)
        await self.each(objects, create)

    async def namespaces(self, names: Iterable[str], *, limit: float = 120) -> None:
        """Create each namespace (one that exists is kept) and wait until each has its
        default ServiceAccount: pods are admitted only once it exists."""
        names = list(names)
        for name in names:
            with contextlib.suppress(ApiError):
                await self.request("POST", "/api/v1/namespaces", workload.namespace(name))

        async def accounts() -> int:
            found = 0
            for name in names:
                with contextlib.suppress(ApiError):
                    await self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/"
                                       "default", retries=0)
                    found += 1
            return found
        deadline = time.monotonic() + limit
        while await accounts() < len(names):
            if time.monotonic() > deadline:
                raise TimeoutError("default ServiceAccounts were not created")
            await asyncio.sleep(0.5)

    async def resource_version(self, path: str) -> str:
        """The current resourceVersion of a collection (a consistent read of one item)."""
        listed = await self.request("GET", path, params={"limit": "1"})
        return str(listed["metadata"]["resourceVersion"])

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        """Watch events from `resource_version` on, reconnecting where the stream ended."""
        while True:
            params = {"watch": "1", "resourceVersion": resource_version,
                      "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
            async with self.session.get(self.server + path, params=params,
                                        timeout=aiohttp.ClientTimeout(total=None)) as stream:
                if stream.status != 200:
                    raise ApiError(stream.status, await stream.text())
                async for line in stream.content:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        raise ApiError(event["object"].get("code", 0), str(event["object"]))
                    resource_version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        yield event


class _Final(Exception):
    """An answer that retrying would not change (4xx other than 429)."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
