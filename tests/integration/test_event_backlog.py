"""Events that give way to claims waiting for a slot (outbox.py), on the real control plane.

The operator's PVC creates go through a proxy that answers each one late, so a burst of
claims fills every slot and the rest wait: their reconciliations' Normal Events wait in
the outbox while claims wait, then go out with the slots no claim needs. Every claim
still gets each of its Events exactly once."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from controlplane.cluster import ControlPlane, free_port
from evc_operator import limiter
from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually
from tests.integration.test_lifecycle import phase_is
from tests.integration.test_observability import fetch, sample
from tests.integration.test_watch_delay import DelayingProxy

CLAIMS = 2 * limiter.DEFAULT_BOUNDS.initial + 8  # more than the slots there are at first
PVC_DELAY = 2.0  # seconds each PVC create is answered late


class SlowPvcCreates(DelayingProxy):
    """Every create of a PVC is answered `delay` seconds late; the rest at once."""

    def _delayed(self, request: web.Request) -> bool:
        return request.method == "POST" and request.path.endswith("/persistentvolumeclaims")


@pytest.fixture
def slow_pvc_creates(control_plane: ControlPlane) -> Iterator[SlowPvcCreates]:
    proxy = SlowPvcCreates(control_plane, PVC_DELAY)
    with proxy:
        yield proxy


class Peak:
    """The highest value of the operator's `evc_events_waiting`, polled in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.highest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            status, text = fetch(self.url)
            if status == 200:
                self.highest = max(self.highest, sample(text, "evc_events_waiting") or 0.0)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _lifecycle_events(kubectl: Kubectl) -> collections.Counter[tuple[str, str]]:
    """(claim, reason) of every Event about a claim in the namespace, counted."""
    listing = json.loads(kubectl("get", "events", "-o", "json", "--field-selector",
                                 "involvedObject.kind=EphemeralVolumeClaim"))
    return collections.Counter(
        (event["involvedObject"]["name"], event["reason"]) for event in listing["items"]
        for _ in range(int(event.get("count") or 1)))


def test_events_wait_while_claims_wait_and_each_is_posted_once(
        control_plane: ControlPlane, slow_pvc_creates: SlowPvcCreates, kubectl: Kubectl,
        operator: OperatorFactory, tmp_path: Path) -> None:
    port = free_port()
    process = operator(kubectl.namespace, KUBECONFIG=str(slow_pvc_creates.kubeconfig(
        tmp_path / "slow.kubeconfig")), METRICS_PORT=str(port), EXPIRY_PERIOD="10m")
    names = [f"burst-{n}" for n in range(CLAIMS)]
    with Peak(f"http://127.0.0.1:{port}/metrics") as peak:
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": [_claim(n) for n in names]}))
        eventually(lambda: all(phase_is(kubectl, name, "Pending") for name in names),
                   timeout=120, what=f"all {CLAIMS} claims Pending")
        wanted = {(name, reason) for name in names for reason in ("PvcCreated", "Expiring")}
        eventually(lambda: wanted <= set(_lifecycle_events(kubectl)), timeout=60,
                   what="every claim's two Events")
        time.sleep(1)  # an Event posted twice would show up by now
        counted = _lifecycle_events(kubectl)
    assert peak.highest > 0, "no Event ever waited: the burst made no backlog"
    assert {key: n for key, n in counted.items() if n != 1} == {}, "an Event posted twice"
    assert set(counted) == wanted, f"Events other than expected: {set(counted) - wanted}"
    eventually(lambda: sample(fetch(f"http://127.0.0.1:{port}/metrics")[1],
                              "evc_events_waiting") == 0.0, what="the outbox empty")
    assert "Events not posted" not in process.log_text()


def _claim(name: str) -> dict[str, object]:
    return {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
            "metadata": {"name": name}, "spec": {"size": "1Gi"}}
