"""How Kopf lists claims, whether it has begun to watch them, and a restart when it
missed them.

Where the API server serves streaming lists (Kubernetes 1.34 and later: `streams_lists`),
Kopf lists claims as a stream rather than in pages, which it cannot resume after a 410.

Kopf learns which resources exist from the API server's discovery: once at start, and
again at each event of a CustomResourceDefinition. An operator started before its CRD is
applied, or before the claims' version is served, depends on the rescans at the CRD's
events. The API server's discovery lags the CRD's own changes: if the rescan at the
CRD's last event still misses the claims, no event comes to trigger another, and Kopf
never watches claims. The operator would stay idle, saying nothing, until restarted.

So Kopf's own requests are watched (a trace on the session it is given at login): a
request for claims means it watches them. When a change to the CRD, seen while the
operator runs, leaves it established and no such request came within `WAIT` seconds, the
operator asks discovery itself. If the claims are served, Kopf missed them: the operator
starts itself again in its own process (the same command line), and the new start finds
them. Nothing is lost: the claims were never watched, and a start decides every claim
from the cluster alone, as after any restart. If they are not served (e.g. the CRD serves
no `v1`), it says so and waits for the CRD's next change. At most `RESTARTS` times in a
row (counted in the environment), so that a cause a restart does not mend cannot make a
loop; past that it says what it sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from evc_operator import kube
from evc_operator.errors import ApiException, describe
from evc_operator.resources import API_VERSION, CRD_NAME, GROUP, PLURAL

STREAMING_LISTS = (1, 34)  # the first Kubernetes version whose streaming lists are GA
WAIT = 10.0  # seconds from the CRD's change to Kopf's first request for claims
RESTARTS = 3  # restarts in a row at most
RESTARTED = "EVC_RESTARTED_FOR_CRD"  # in the environment: restarts so far, in a row
_CLAIMS = re.compile(rf"^/apis/{re.escape(GROUP)}/[^/]+/(namespaces/[^/]+/)?{PLURAL}$")

Restart = Callable[[int], None]
Served = Callable[[], Awaitable[bool]]


def established(crd: Mapping[str, Any]) -> bool:
    """Whether a CRD's status says it is `Established` (served, as far as it knows)."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(condition.get("type") == "Established" and condition.get("status") == "True"
               for condition in conditions)


def restart_in_place(count: int) -> None:
    """Replace this process with the same command line, marked as the `count`th restart."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, RESTARTED: str(count)})


def _restarts(environ: Mapping[str, str]) -> int:
    try:
        return max(0, int(environ.get(RESTARTED) or 0))
    except ValueError:
        return 0


class ClaimsWatch:
    """Whether Kopf has asked the API server for claims (a list or a watch)."""

    def __init__(self, served: Served, *, restart: Restart = restart_in_place,
                 wait: float = WAIT, environ: Mapping[str, str] = os.environ) -> None:
        self.seen = asyncio.Event()
        self.served = served
        self.restart = restart
        self.wait = wait
        self.restarts = _restarts(environ)
        self._task: asyncio.Task[None] | None = None

    def observe(self, method: str, path: str) -> None:
        if method == "GET" and _CLAIMS.match(path):
            self.seen.set()
            self.restarts = 0  # watched: a later restart is the first in a row again

    def trace(self) -> aiohttp.TraceConfig:
        """A trace for the session Kopf is given: each request it starts is observed."""
        async def on_start(_session: aiohttp.ClientSession, _context: Any,
                           params: aiohttp.TraceRequestStartParams) -> None:
            self.observe(params.method, params.url.path)

        config = aiohttp.TraceConfig()
        config.on_request_start.append(on_start)
        return config

    def crd_seen(self, event: str | None, crd: Mapping[str, Any],
                 logger: logging.Logger | Any) -> None:
        """At each event of the CRD: once a change seen while the operator runs (not the
        listing at start, which Kopf's first scan saw) leaves it established, expect
        Kopf's request for claims within `wait` seconds (one expectation at a time)."""
        if (event in ("ADDED", "MODIFIED") and not self.seen.is_set()
                and (self._task is None or self._task.done()) and established(crd)):
            self._task = asyncio.create_task(self.expect(logger), name="evc-claims-watch")

    async def expect(self, logger: logging.Logger | Any) -> None:
        try:
            await asyncio.wait_for(self.seen.wait(), self.wait)
            return
        except TimeoutError:
            pass
        try:
            served = await self.served()
        except (ApiException, *kube.UNANSWERED) as error:
            logger.warning("Kopf does not watch EphemeralVolumeClaims %ss after a change to "
                           "their CRD, and discovery could not be read (%s): the CRD's next "
                           "change looks again.", self.wait, describe(error))
            return
        if not served:
            logger.warning(
                "The CustomResourceDefinition %s is established, but the API server does "
                "not serve %s EphemeralVolumeClaims: they are served once it does.",
                CRD_NAME, API_VERSION)
        elif self.restarts >= RESTARTS:
            logger.warning(
                "The API server serves %s EphemeralVolumeClaims, but Kopf does not watch "
                "them, after %s restarts. Does the namespace to watch exist? Claims are not "
                "served until the operator is restarted.", API_VERSION, self.restarts)
        else:
            logger.warning(
                "The API server serves %s EphemeralVolumeClaims, but Kopf has not begun to "
                "watch them %ss after a change to their CRD (discovery did not serve them "
                "yet when Kopf looked): the operator starts again to serve them.",
                API_VERSION, self.wait)
            self.restart(self.restarts + 1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def streams_lists_here(api: kube.Api,
                             logger: logging.Logger | logging.LoggerAdapter[Any]) -> bool:
    """Whether Kopf should list claims as a stream (`sendInitialEvents`: a watch that
    begins with every object) rather than in pages: where the API server serves them
    (Kubernetes 1.34 and later). A page is refused with 410 Gone once etcd compacted the
    revision the list began at, and Kopf ends the operator on that; a stream has no
    pages, and parses one claim at a time."""
    try:
        version = await kube.read_version(api)
    except (ApiException, *kube.UNANSWERED) as error:
        logger.warning("Could not read the API server's version (%s): claims are listed "
                       "in pages.", describe(error))
        return False
    streams = streams_lists(version)
    logger.debug("API server %s: claims are listed %s.", version.get("gitVersion"),
                 "as a stream" if streams else "in pages")
    return streams


def streams_lists(version: Mapping[str, Any]) -> bool:
    """Whether an API server of this `/version` serves streaming lists (1.34 and later;
    a minor version such as "34+" counts as 34)."""
    minor = re.match(r"\d+", str(version.get("minor") or ""))
    try:
        major = int(str(version.get("major")))
    except ValueError:
        return False
    return minor is not None and (major, int(minor[0])) >= STREAMING_LISTS
