"""Components that exit on their own are started again, as systemd's `Restart=always`.

A node in production runs the kubelet and containerd under systemd, which starts them
again when they exit; the kubelet counts on it ("rely on the babysitter to retry starting
kubelet"): it exits whenever its start finds no container runtime, e.g. containerd
restarting. Without one, a node's kubelet that exited stayed down until someone started it,
and the node NotReady (a real-node fault run lost ten minutes of scenarios to that).

It polls the components' processes. For a node that lives as long as the process that
started it (tests), it is a thread of that process; the components it starts again die
with that thread (Linux's parent-death signal follows the thread that forked), so the
thread lives as long as the node, and a failed restart is reported and tried again,
never ends it. For a node that outlives the command that started it (`make cluster`),
it is a process of its own (`python -m controlplane supervise-node`), stopped first by
`make cluster-down`. A component stopped on purpose (its pid taken out of the table under
the lock) is left alone; one that exited is started again after `delay`, unless someone
else started it meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from controlplane.processes import alive

RESTART_DELAY = 1.0  # systemd's RestartSec: a component that exits at once is not spun
POLL_SECONDS = 0.2


class Supervised(Protocol):
    """The table of running components the supervisor keeps running."""

    @property
    def lock(self) -> threading.Lock:
        """Held while the table changes: a component stopped on purpose is not one that
        exited."""

    @property
    def pids(self) -> dict[str, int]:
        """The components that should run, by name: their current pids."""

    def respawn(self, name: str) -> None:
        """Start `name` again with its own command (called with the lock held)."""


class Supervisor:
    """Keeps `table`'s components running until `stop`."""

    def __init__(self, table: Supervised, *, delay: float = RESTART_DELAY,
                 report: Callable[[str], None] = lambda line: None) -> None:
        self.table = table
        self.delay = delay
        self.report = report
        self.restarts: dict[str, int] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name="node-supervisor",
                                        daemon=True)

    def start(self) -> None:
        """Supervise in a thread of this process."""
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def run(self) -> None:
        """Supervise in this thread, until `stop` (e.g. from a signal handler)."""
        exited: dict[str, tuple[int, float]] = {}  # name: (the pid that exited, when)
        while not self._stopping.wait(POLL_SECONDS):
            with self.table.lock:
                pids = self.table.pids
                for name in [name for name, (pid, _) in exited.items()
                             if pids.get(name) != pid]:
                    del exited[name]  # stopped or started by someone else meanwhile
                now = time.monotonic()
                for name, pid in list(pids.items()):
                    if name in exited:
                        if now - exited[name][1] >= self.delay:
                            try:
                                self.table.respawn(name)
                            except Exception as error:  # reported, and tried again
                                exited[name] = (pid, now)
                                self.report(f"{name} could not be started again: {error}")
                                continue
                            del exited[name]
                            self.restarts[name] = self.restarts.get(name, 0) + 1
                            self.report(f"{name} started again (it had exited on its own)")
                    elif not alive(pid):
                        exited[name] = (pid, now)
