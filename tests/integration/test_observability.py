"""Metrics and readiness, scraped from a running operator."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

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
             GRACE_PERIOD="3", COUNTDOWN_INTERVAL="1", PER_CLAIM_METRICS="true")
    base = f"http://127.0.0.1:{port}"
    eventually(lambda: fetch(f"{base}/readyz")[0] == 200, what="ready with no claims at all")
    families = {family.name: family for family in
                text_string_to_metric_families(fetch(f"{base}/metrics")[1])}
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["evc_build_info"].samples[0].labels["version"]
    assert not [s.name for f in families.values() for s in f.samples
                if s.name.endswith("_created")]
    assert families["evc_deletions"].samples  # at 0, before any deletion

    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "measured"}, "spec": {"size": "1Gi"}}))
    eventually(lambda: sample(fetch(f"{base}/metrics")[1], "evc_claims", phase="Pending")
               == 1.0, what="one Pending claim in evc_claims")
    text = fetch(f"{base}/metrics")[1]
    assert (sample(text, "evc_api_requests_total", code="200", resource="pods", verb="list")
            or 0) >= 1  # the claim's namespace, listed
    assert sample(text, "evc_pod_view_complete") == 1.0
    assert 'evc_deletion_timestamp_seconds{countdown="expiry",name="measured"' in text
    assert (sample(text, "evc_reaction_seconds_count") or 0) >= 1

    eventually(lambda: kubectl.get("evc", "measured") is None, timeout=15, what="expiry")
    text = eventually(lambda: (lambda t: t if sample(t, "evc_deletions_total",
                                                       reason="expiry") == 1.0 else "")(
        fetch(f"{base}/metrics")[1]), what="evc_deletions_total")
    assert sample(text, "evc_deletion_lateness_seconds_count") == 1.0
    assert sample(text, "evc_claims", phase="Pending") == 0.0
