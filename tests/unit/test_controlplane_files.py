"""State files read by other processes are replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane import files


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
