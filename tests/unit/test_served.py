"""An operator started before its CRD: a restart when Kopf never begins to watch claims.

The race itself (discovery lagging the CRD's `Established` condition) is Kopf's and the
API server's; `tests/integration/test_bad_environment.py` applies the CRD under a running
operator. Here: which requests count as watching claims, and when the restart comes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from evc_operator import served

ESTABLISHED = {"status": {"conditions": [{"type": "NamesAccepted", "status": "True"},
                                         {"type": "Established", "status": "True"}]}}
ACCEPTED = {"status": {"conditions": [{"type": "NamesAccepted", "status": "True"},
                                      {"type": "Established", "status": "False"}]}}
LOGGER = logging.getLogger("test-served")


@pytest.mark.parametrize(("method", "path", "watches"), [
    ("GET", "/apis/zalando.org/v1/namespaces/default/ephemeralvolumeclaims", True),
    ("GET", "/apis/zalando.org/v1/ephemeralvolumeclaims", True),
    ("GET", "/apis/zalando.org/v1", False),  # discovery
    ("GET", "/apis/zalando.org/v1/namespaces/default/ephemeralvolumeclaims/a", False),
    ("PATCH", "/apis/zalando.org/v1/namespaces/default/ephemeralvolumeclaims/a", False),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", False),
    ("GET", "/api/v1/namespaces/default/persistentvolumeclaims", False),
])
def test_only_a_list_or_watch_of_claims_counts(method: str, path: str, watches: bool) -> None:
    async def run() -> bool:
        watch = served.ClaimsWatch(_serves, environ={})
        watch.observe(method, path)
        return watch.seen.is_set()

    assert asyncio.run(run()) is watches


def test_kopfs_requests_are_traced_on_its_session() -> None:
    async def run() -> tuple[bool, bool]:
        app = web.Application()
        async def empty(_: web.Request) -> web.Response:
            return web.json_response({})

        app.router.add_get("/{tail:.*}", empty)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        watch = served.ClaimsWatch(_serves, environ={})
        try:
            async with aiohttp.ClientSession(trace_configs=[watch.trace()]) as session:
                base = f"http://127.0.0.1:{port}"
                await (await session.get(f"{base}/apis/zalando.org/v1")).read()
                before = watch.seen.is_set()
                url = f"{base}/apis/zalando.org/v1/namespaces/default/ephemeralvolumeclaims"
                await (await session.get(url, params={"watch": "true"})).read()
                return before, watch.seen.is_set()
        finally:
            await runner.cleanup()

    assert asyncio.run(run()) == (False, True)


async def _serves() -> bool:
    return True


async def _serves_not() -> bool:
    return False


async def _expectation_ends(watch: served.ClaimsWatch) -> None:
    """Until the expectation the CRD's events started, if any, has ended, however long
    that takes (no wall-clock sleep, which a loaded machine overruns): only it restarts,
    so once it ended, no restart can come; with none started, none can."""
    task = watch._task
    if task is not None:
        await task


def _restarts(crd: dict[str, Any], *, requested: bool, environ: dict[str, str],
              listed: str | None = "ADDED", serves: served.Served = _serves) -> list[int]:
    restarts: list[int] = []

    async def run() -> None:
        watch = served.ClaimsWatch(serves, restart=restarts.append, wait=0.05,
                                   environ=environ)
        watch.crd_seen(listed, crd, LOGGER)
        watch.crd_seen("MODIFIED", crd, LOGGER)  # the CRD's next event: one expectation
        if requested:
            watch.observe("GET", "/apis/zalando.org/v1/ephemeralvolumeclaims")
        await _expectation_ends(watch)
        await watch.close()

    asyncio.run(run())
    return restarts


def test_claims_served_but_not_requested_after_the_crd_changed_restart_once() -> None:
    assert _restarts(ESTABLISHED, requested=False, environ={}) == [1]


def test_kopf_watching_claims_means_no_restart() -> None:
    assert _restarts(ESTABLISHED, requested=True, environ={}) == []


def test_claims_not_served_are_said_and_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="test-served"):
        assert _restarts(ESTABLISHED, requested=False, environ={}, serves=_serves_not) == []
    assert "does not serve zalando.org/v1 EphemeralVolumeClaims" in caplog.text


def test_a_crd_not_yet_established_is_not_waited_for() -> None:
    assert _restarts(ACCEPTED, requested=False, environ={}) == []


def test_a_crd_listed_at_start_is_not_waited_for() -> None:
    """Kopf's first scan saw it; not watching claims then has another cause (e.g. the
    namespace to watch does not exist), which a restart would not mend."""
    restarts: list[int] = []

    async def run() -> None:
        watch = served.ClaimsWatch(_serves, restart=restarts.append, wait=0.05,
                                   environ={})
        watch.crd_seen(None, ESTABLISHED, LOGGER)
        await _expectation_ends(watch)
        await watch.close()

    asyncio.run(run())
    assert not restarts


def test_restarts_in_a_row_are_counted_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    assert _restarts(ESTABLISHED, requested=False,
                     environ={served.RESTARTED: "2"}) == [3]
    with caplog.at_level(logging.WARNING, logger="test-served"):
        assert _restarts(ESTABLISHED, requested=False,
                         environ={served.RESTARTED: "3"}) == []
    assert "after 3 restarts" in caplog.text


def test_a_watch_of_claims_ends_the_row_of_restarts() -> None:
    """Kopf watched claims in this process: a later miss restarts as the first again."""
    restarts: list[int] = []

    async def run() -> None:
        watch = served.ClaimsWatch(_serves, restart=restarts.append, wait=0.05,
                                   environ={served.RESTARTED: "3"})
        watch.observe("GET", "/apis/zalando.org/v1/ephemeralvolumeclaims")
        watch.seen.clear()  # as if the CRD were replaced and its claims missed
        watch.crd_seen("MODIFIED", ESTABLISHED, LOGGER)
        await _expectation_ends(watch)
        await watch.close()

    asyncio.run(run())
    assert restarts == [1]


def test_a_restart_runs_the_same_command_line_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve",
                        lambda path, args, env: calls.append((path, args, env)))
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "evc_operator", "--x"])
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    served.restart_in_place(2)
    [(path, args, env)] = calls
    assert path == sys.executable
    assert args == [sys.executable, "-m", "evc_operator", "--x"]
    assert env[served.RESTARTED] == "2"
