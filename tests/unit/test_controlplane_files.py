"""State files read by other processes are replaced whole; a finished run's bulk goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane import auditing, files


def test_a_state_file_is_replaced_whole_and_a_failed_write_leaves_the_old(
        tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    files.write_json(path, {"pids": {"etcd": 1}})
    files.write_json(path, {"pids": {"etcd": 2}})
    assert json.loads(path.read_text()) == {"pids": {"etcd": 2}}
    with pytest.raises(TypeError):
        files.write_json(path, {"pids": {"etcd": object()}})  # fails midway through
    assert json.loads(path.read_text()) == {"pids": {"etcd": 2}}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # nothing left staged


def test_a_finished_runs_bulk_is_its_database_and_audit_logs(tmp_path: Path) -> None:
    """etcd's data and the audit logs (the current one and those rotated) go; the
    components' logs and the rest stay."""
    (tmp_path / "etcd" / "member" / "wal").mkdir(parents=True)
    (tmp_path / "etcd" / "member" / "wal" / "0.wal").write_bytes(b"w" * 1000)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "audit.log").write_bytes(b"a" * 200)
    (tmp_path / "logs" / "audit-2026-12-06T22-00-00.000.log").write_bytes(b"a" * 30)
    (tmp_path / "logs" / "kube-apiserver.log").write_text("started\n")
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text("cert")
    assert auditing.discard_bulk(tmp_path) == 1230
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "logs", "logs/kube-apiserver.log", "pki", "pki/ca.crt"]
    assert auditing.discard_bulk(tmp_path) == 0  # nothing left to free


def test_the_full_audit_record_keeps_the_bodies_of_the_claims_status_writes(
        tmp_path: Path) -> None:
    """The fault runs' judge reads who the operator named as users from them; a named
    users' record (the benchmarks') keeps metadata only, as it costs the API server."""
    def rules(users: list[str]) -> list[dict[str, object]]:
        auditing.flags(tmp_path, tmp_path / "audit.log", users, None)
        policy = json.loads((tmp_path / "audit-policy.json").read_text())
        return [rule for rule in policy["rules"] if rule["level"] == "RequestResponse"]

    assert rules([]) == [{"level": "RequestResponse", "resources": [
        {"group": "zalando.org", "resources": ["ephemeralvolumeclaims/status"]}]}]
    assert rules(["bench"]) == []
