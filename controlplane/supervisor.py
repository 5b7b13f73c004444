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

A component that keeps exiting soon after each start (a kubelet whose configuration is
wrong, a containerd whose state directory is gone) is not started every second for ever:
each exit within `STABLE_SECONDS` of its start doubles the wait before the next, up to
`MAX_DELAY` (systemd's `RestartSteps=` and `RestartMaxDelaySec=`; 10 s is the kubelet's
`RestartSec` in kubeadm's unit), and the report says how long it waits. One that ran
`STABLE_SECONDS` is back to `delay`. A start that fails counts as such an exit. A
kubelet that exits while containerd is down is so started at most 10 s after
containerd is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from controlplane.processes import alive

RESTART_DELAY = 1.0  # systemd's RestartSec: a component that exits at once is not spun
MAX_DELAY = 10.0  # the longest wait of a component that keeps exiting: kubeadm's RestartSec
STABLE_SECONDS = 10.0  # a component that ran this long started well: its wait is reset
POLL_SECONDS = 0.2


def backoff(quick_exits: int, delay: float = RESTART_DELAY,
            most: float = MAX_DELAY) -> float:
    """The wait before a start after `quick_exits` exits in a row, each soon after its
    start (the first exit counts as one): `delay`, doubled for each one after the first,
    at most `most`."""
    return min(most, delay * (1 << min(max(quick_exits - 1, 0), 32)))


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
                 most: float = MAX_DELAY, stable: float = STABLE_SECONDS,
                 report: Callable[[str], None] = lambda line: None) -> None:
        self.table = table
        self.delay = delay
        self.most = most
        self.stable = stable
        self.report = report
        self.restarts: dict[str, int] = {}
        # Per component: the pid the supervisor last started (or failed to start again)
        # and when, and how many times in a row it exited within `stable` of such a start.
        self._started: dict[str, tuple[int, float]] = {}
        self._quick_exits: dict[str, int] = {}
        # name: (the pid that exited, when it may be started again)
        self._exited: dict[str, tuple[int, float]] = {}
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
        while not self._stopping.wait(POLL_SECONDS):
            self.step(time.monotonic())

    def step(self, now: float) -> None:
        """One look at the table at `now` (monotonic seconds): note what exited, start
        again what has waited long enough."""
        with self.table.lock:
            pids = self.table.pids
            for name in [name for name, (pid, _) in self._exited.items()
                         if pids.get(name) != pid]:
                del self._exited[name]  # stopped or started by someone else meanwhile
            for name, pid in list(pids.items()):
                if name in self._exited:
                    if now >= self._exited[name][1]:
                        self._start_again(name, pid, now)
                elif not alive(pid):
                    wait = self._wait(name, pid, now)
                    self._exited[name] = (pid, now + wait)
                    if self._quick_exits[name] > 1:
                        self.report(
                            f"{name} exited again {now - self._started[name][1]:.1f} s after"
                            f" its start ({self._quick_exits[name]} times in a row):"
                            f" starting it again in {wait:g} s")

    def _wait(self, name: str, pid: int, now: float) -> float:
        """How long `name`, its `pid` found exited (or failed to start) at `now`, waits.
        One started by someone else (its start unknown) counts as having started well."""
        started = self._started.get(name)
        if started is None or started[0] != pid or now - started[1] >= self.stable:
            self._quick_exits[name] = 1
        else:
            self._quick_exits[name] = self._quick_exits.get(name, 0) + 1
        return backoff(self._quick_exits[name], self.delay, self.most)

    def _start_again(self, name: str, pid: int, now: float) -> None:
        try:
            self.table.respawn(name)
        except Exception as error:  # reported, and tried again
            self._started[name] = (pid, now)
            wait = self._wait(name, pid, now)
            self._exited[name] = (pid, now + wait)
            self.report(f"{name} could not be started again: {error}; "
                        f"trying again in {wait:g} s")
            return
        del self._exited[name]
        self._started[name] = (self.table.pids[name], now)
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.report(f"{name} started again (it had exited on its own)")
