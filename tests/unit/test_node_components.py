"""A node component started again (the real-node fault scenarios' kubelet and containerd
crashes) is up before the next step runs. Real processes, no cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from controlplane import host, node
from controlplane.processes import terminate


def test_containerd_started_again_is_waited_for_until_its_socket_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubelet started the moment containerd is exits at once if containerd does not
    answer yet ("validate CRI v1 runtime API ... connection refused"); with no systemd to
    start it again, a real-node fault run's node stayed NotReady for ten minutes, its pods
    unscheduled. So `start_component` returns only once containerd's socket answers.
    Here a stand-in takes a second to listen."""
    monkeypatch.setattr(host, "RUN_DIR", tmp_path / "run")
    host.RUN_DIR.mkdir()
    socket_path = node._containerd_socket()
    component = node.Node(workdir=tmp_path)
    component.root.mkdir()
    component.logs.mkdir()
    component.commands["containerd"] = [sys.executable, "-c", (
        "import socket, time; time.sleep(1); s = socket.socket(socket.AF_UNIX); "
        f"s.bind({str(socket_path)!r}); s.listen(); time.sleep(60)")]
    try:
        component.start_component("containerd", timeout=30)
        assert node._listening(socket_path)
    finally:
        terminate(component.pids["containerd"], grace=0)
