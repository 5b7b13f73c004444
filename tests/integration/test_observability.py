"""Metrics and readiness, scraped from a running operator."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from controlplane.cluster import free_port
from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def test_metrics_and_readiness(kubectl: Kubectl, operator: OperatorFactory) -> None:
    port = free_port()
    operator(kubectl.namespace, METRICS_PORT=str(port), EXPIRY_PERIOD="3",
             GRACE_PERIOD="3", COUNTDOWN_INTERVAL="1")
    base = f"http://127.0.0.1:{port}"
    eventually(lambda: fetch(f"{base}/readyz")[0] == 200, what="ready with no claims at all")

    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "measured"}, "spec": {"size": "1Gi"}}))
    eventually(lambda: sample(fetch(f"{base}/metrics")[1], "evc_claims", phase="Pending")
               == 1.0, what="one Pending claim in evc_claims")
    text = fetch(f"{base}/metrics")[1]
    assert sample(text, "evc_pod_view_complete") == 1.0
    assert 'evc_deletion_timestamp_seconds{countdown="expiry",name="measured"' in text
    assert (sample(text, "evc_reaction_seconds_count") or 0) >= 1

    eventually(lambda: kubectl.get("evc", "measured") is None, timeout=15, what="expiry")
    text = eventually(lambda: (lambda t: t if sample(t, "evc_deletions_total",
                                                       reason="expiry") == 1.0 else "")(
        fetch(f"{base}/metrics")[1]), what="evc_deletions_total")
    assert sample(text, "evc_deletion_lateness_seconds_count") == 1.0
    assert sample(text, "evc_claims", phase="Pending") == 0.0
