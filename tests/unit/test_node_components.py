"""A node component started again (the real-node fault scenarios' kubelet and containerd
crashes) is up before the next step runs. Real processes, no cluster."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane import host, node, supervisor
from controlplane.processes import alive, terminate


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
    component = _component(tmp_path)
    component.commands["containerd"] = [sys.executable, "-c", (
        "import socket, time; time.sleep(1); s = socket.socket(socket.AF_UNIX); "
        f"s.bind({str(socket_path)!r}); s.listen(); time.sleep(60)")]
    try:
        component.start_component("containerd", timeout=30)
        assert node._listening(socket_path)
    finally:
        terminate(component.pids["containerd"], grace=0)


def _component(tmp_path: Path) -> node.Node:
    component = node.Node(workdir=tmp_path)
    component.root.mkdir()
    component.logs.mkdir()
    return component


def _eventually(condition: Callable[[], bool], what: str, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_component_that_exits_on_its_own_is_started_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubelet started while containerd is down exits ("failed to create kubelet: get
    remote runtime typed version failed"), as it does when containerd is killed in the
    first half second of its start: a real-node fault run stopped there. Kubernetes counts
    on systemd to start it again; the node's supervisor does, with the same command and
    environment. A component stopped on purpose stays down until started."""
    starts = tmp_path / "starts"
    component = _component(tmp_path)
    component.commands["kubelet"] = [sys.executable, "-c", (
        "import os, time; "
        f"open({str(starts)!r}, 'a').write(os.environ['COMPONENT_MARK'] + '\\n'); "
        "time.sleep(60)")]
    component.environments["kubelet"] = dict(os.environ, COMPONENT_MARK="kept")
    lines: list[str] = []
    try:
        component.start_component("kubelet")
        component.supervise(progress=lines.append)
        first = component.pids["kubelet"]
        _eventually(lambda: starts.exists(), "the first start")
        os.kill(first, signal.SIGKILL)  # a crash, not a stop
        _eventually(lambda: component.pids["kubelet"] != first, "started again")
        _eventually(lambda: len(starts.read_text().splitlines()) == 2, "its second start")
        assert starts.read_text() == "kept\nkept\n"
        assert alive(component.pids["kubelet"])
        assert component.supervisor is not None
        assert component.supervisor.restarts == {"kubelet": 1}
        assert lines == ["kubelet started again (it had exited on its own)"]
        assert "exited on its own" in (component.logs / "kubelet.log").read_text()

        looks: list[float] = []  # when the supervisor looked at the table, from now on
        step = component.supervisor.step

        def look(now: float) -> None:
            step(now)
            looks.append(now)

        def looked_long_enough() -> bool:
            """The supervisor looked after the stop, and again a restart delay later,
            when it would have started a kubelet it took for one that exited."""
            after = [now for now in looks if now >= stopped]
            return bool(after) and after[-1] >= after[0] + supervisor.RESTART_DELAY

        monkeypatch.setattr(component.supervisor, "step", look)
        component.stop_component("kubelet")
        stopped = time.monotonic()
        # Not a wall-clock sleep, which passed whenever the supervisor was slow.
        _eventually(looked_long_enough, "the supervisor's looks after the stop")
        assert "kubelet" not in component.pids
        assert component.supervisor.restarts == {"kubelet": 1}
    finally:
        if component.supervisor is not None:
            component.supervisor.stop()
        for pid in component.pids.values():
            terminate(pid, grace=0)


def test_a_detached_nodes_supervisor_outlives_the_command_and_stops_first(
        tmp_path: Path) -> None:
    """`make cluster`'s node outlives the command that started it: its supervisor is a
    process of its own, which starts a component that exits again, records the new pid
    where `make cluster-down` reads it, and is stopped before the components are."""
    starts = tmp_path / "starts"
    answers = tmp_path / "answers"
    component = _component(tmp_path)
    component.detached = True
    component._spawn("kubelet", True, [sys.executable, "-c", (
        "import os, signal, time; "  # it answers SIGUSR1 from its start on
        f"signal.signal(signal.SIGUSR1, lambda *_: open({str(answers)!r}, 'a').write("
        "str(os.getpid()) + '\\n')); "
        f"open({str(starts)!r}, 'a').write(os.environ['COMPONENT_MARK'] + '\\n'); "
        "time.sleep(60)")], {"COMPONENT_MARK": "kept"})
    first = component.pids["kubelet"]
    try:
        component.supervise_apart()
        supervisor_pid = component.supervisor_pid
        _eventually(lambda: starts.exists(), "the first start")
        os.kill(first, signal.SIGKILL)
        _eventually(lambda: len(starts.read_text().splitlines()) == 2, "started again")
        assert starts.read_text() == "kept\nkept\n"
        # What `down` reads: the new pid, and the supervisor's.
        recorded = node.Node.load(tmp_path)
        assert recorded is not None
        assert recorded.pids["kubelet"] != first
        assert alive(recorded.pids["kubelet"])
        assert recorded.supervisor_pid == supervisor_pid

        stale = node.Node.load(tmp_path)
        assert stale is not None
        stale.pids["kubelet"] = first  # read before the restart, as a `down` might have
        stale.stop_supervisor()
        assert not alive(supervisor_pid)
        assert stale.pids == recorded.pids  # read again once the supervisor is stopped
        # A detached node's components outlive its supervisor. Not a wall-clock sleep
        # (it passed whenever a kill was slow to land): the supervisor is gone, so a
        # parent-death signal would have been sent; the kubelet answering a signal after
        # that ran on, which a process with a SIGKILL pending never does.
        kubelet = recorded.pids["kubelet"]
        os.kill(kubelet, signal.SIGUSR1)
        _eventually(lambda: answers.exists() and f"{kubelet}\n" in answers.read_text(),
                    "the kubelet's answer once its supervisor stopped")
        assert alive(kubelet)
    finally:
        for pid in {component.supervisor_pid, *component.pids.values(),
                    *(node.Node.load(tmp_path) or component).pids.values()}:
            if pid:
                terminate(pid, grace=0)
