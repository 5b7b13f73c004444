from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evc_operator.settings import Settings, SettingsError, parse_duration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("2.5", 2.5), ("0", 0.0), ("90s", 90.0), ("15m", 900.0),
    ("1h30m", 5400.0), ("1d", 86400.0), ("500ms", 0.5), ("1h0m5s", 3605.0), (" 10s ", 10.0),
])
def test_parse_duration_accepts_seconds_and_go_style_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "abc", "-5", "10x", "m", "1h 30m", "30s10", "nan", "inf", "1e400", "5 s", "h1",
])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(hours=st.integers(0, 1000), minutes=st.integers(0, 59), seconds=st.integers(0, 59))
def test_parse_duration_sums_its_parts(hours: int, minutes: int, seconds: int) -> None:
    assert parse_duration(f"{hours}h{minutes}m{seconds}s") == hours * 3600 + minutes * 60 + seconds


def test_defaults_are_the_seeds() -> None:
    assert Settings.from_environ({}) == Settings(expiry_period=30, grace_period=30,
                                                 countdown_interval=10)


def test_environment_overrides() -> None:
    settings = Settings.from_environ(
        {"EXPIRY_PERIOD": "2m", "GRACE_PERIOD": "45", "COUNTDOWN_INTERVAL": "1s"})
    assert settings == Settings(expiry_period=120, grace_period=45, countdown_interval=1)


@pytest.mark.parametrize(("name", "value"), [
    ("EXPIRY_PERIOD", "soon"), ("GRACE_PERIOD", "-1"), ("COUNTDOWN_INTERVAL", "0"),
    ("COUNTDOWN_INTERVAL", "ten"), ("METRICS_ADDRESS", "everywhere"),
    ("PER_CLAIM_METRICS", "some"),
])
def test_invalid_environment_names_the_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({name: value})
    assert name in str(error.value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize(("name", "value"), [("EXPIRY_PERIOD", "soon"), ("DRY_RUN", "maybe")])
def test_operator_refuses_to_start_with_one_clear_line(name: str, value: str) -> None:
    """Before any cluster is contacted: no traceback, the variable named, exit code 1."""
    environ = {**os.environ, name: value, "KUBECONFIG": "/nonexistent"}
    result = subprocess.run([str(Path(sys.executable).parent / "kopf"), "run", "--standalone",
                             "--namespace=default", "ephemeral.py"], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"invalid configuration: {name}={value!r} is invalid" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_leader_election_needs_a_lease_namespace() -> None:
    with pytest.raises(SettingsError, match="LEASE_NAMESPACE"):
        Settings.from_environ({"LEADER_ELECTION": "true"})
    settings = Settings.from_environ({"LEADER_ELECTION": "true", "POD_NAMESPACE": "ops",
                                      "POD_NAME": "evc-operator-abc"})
    assert (settings.lease_namespace, settings.identity) == ("ops", "evc-operator-abc")


def test_lifecycle_events_are_on_unless_turned_off() -> None:
    assert Settings.from_environ({}).lifecycle_events
    assert Settings.from_environ({"LIFECYCLE_EVENTS": ""}).lifecycle_events
    assert not Settings.from_environ({"LIFECYCLE_EVENTS": "false"}).lifecycle_events
    with pytest.raises(SettingsError, match="LIFECYCLE_EVENTS='sometimes'"):
        Settings.from_environ({"LIFECYCLE_EVENTS": "sometimes"})


def test_metrics_listen_on_loopback_and_aggregate_by_default() -> None:
    """`make run` on a laptop serves nobody else; per-claim series only when asked for."""
    assert Settings.from_environ({}).metrics_address == "127.0.0.1"
    assert not Settings.from_environ({}).per_claim_metrics
    settings = Settings.from_environ({"METRICS_ADDRESS": "0.0.0.0", "PER_CLAIM_METRICS": "true"})
    assert (settings.metrics_address, settings.per_claim_metrics) == ("0.0.0.0", True)
    assert Settings.from_environ({"METRICS_ADDRESS": "[::]"}).metrics_address == "::"


def test_workloads_are_watched_for_the_cluster_unless_told_otherwise() -> None:
    assert Settings.from_environ({}).cluster_workload_watches
    assert not Settings.from_environ({"CLUSTER_WORKLOAD_WATCHES": "false"}).cluster_workload_watches
    with pytest.raises(SettingsError, match="CLUSTER_WORKLOAD_WATCHES='some'"):
        Settings.from_environ({"CLUSTER_WORKLOAD_WATCHES": "some"})
