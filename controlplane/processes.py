"""Child processes of a local cluster: start one with its own log, check it, stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(command: Sequence[str], logfile: Path, *, cwd: Path, detached: bool,
          env: dict[str, str] | None = None) -> int:
    """Start `command` in its own session, output appended to `logfile`; return its pid.

    `detached` lets it outlive this Python process; otherwise it is killed with it.
    """
    with logfile.open("ab") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=cwd, env=env,
            preexec_fn=None if detached else _die_with_parent,
        )
    # The child is reaped by terminate() through its pid; Popen must not warn about it.
    process.returncode = 0
    return process.pid


def _die_with_parent() -> None:
    """Ask Linux to kill the child when the process that started it dies."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        finished = 0  # not our child (a detached cluster): ask the kernel instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie we cannot reap still answers kill(0); its /proc status says otherwise.
        try:
            return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
    return finished == 0


def terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while alive(pid):
        time.sleep(0.05)
