"""The node's supervisor waits longer and longer before starting a component that keeps
exiting soon after its start, and no longer once it ran well. A table of made-up pids and
the supervisor's own steps at chosen moments: no process, no clock."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest

from controlplane import supervisor
from controlplane.supervisor import Supervisor, backoff


class Table:
    """Components by name; `respawn` gives a new pid, or fails while `refuse` says so."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pids = {"kubelet": 100}
        self.dead: set[int] = set()
        self.starts: list[float] = []
        self.refuse = False
        self.now = 0.0

    def respawn(self, name: str) -> None:
        if self.refuse:
            raise OSError("no such file")
        self.starts.append(self.now)
        self.pids[name] += 1


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Table:
    made = Table()
    monkeypatch.setattr(supervisor, "alive", lambda pid: pid not in made.dead)
    return made


def _run(watcher: Supervisor, table: Table, until: float, *, crash_after: float | None
         ) -> None:
    """Step every 1/8 s (exact in binary) up to `until`; each started pid dies
    `crash_after` s later, just before the step that sees it."""
    while table.now < until:
        table.now += 0.125
        if (crash_after is not None and table.starts
                and table.now - table.starts[-1] >= crash_after):
            table.dead.add(table.pids["kubelet"])
        watcher.step(table.now)


def test_the_wait_doubles_up_to_its_most() -> None:
    assert [backoff(n, 1.0, 30.0) for n in range(0, 8)] == [1, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(10_000, 1.0, 30.0) == 30


def test_a_component_exiting_at_once_waits_longer_each_time(table: Table) -> None:
    lines: list[str] = []
    watcher = Supervisor(table, delay=1.0, most=8.0, stable=10.0, report=lines.append)
    table.dead.add(100)  # the first exit, seen at the first step
    _run(watcher, table, 40.0, crash_after=0.5)
    assert table.starts[0] == 1.125  # the first wait: 1 s
    gaps = [b - a for a, b in pairwise(table.starts)]
    # Each pid lives 0.5 s, then waits 2, 4, 8, 8, ... s.
    assert gaps[:5] == [2.5, 4.5, 8.5, 8.5, 8.5]
    assert watcher.restarts["kubelet"] == len(table.starts)
    assert "kubelet exited again 0.5 s after its start (2 times in a row):" \
        " starting it again in 2 s" in lines


def test_one_that_ran_well_is_started_again_after_the_first_wait(table: Table) -> None:
    watcher = Supervisor(table, delay=1.0, most=8.0, stable=10.0)
    table.dead.add(100)
    _run(watcher, table, 20.0, crash_after=0.5)  # a crash loop: its wait has grown
    assert [b - a for a, b in pairwise(table.starts)][-1] == 8.5
    before = len(table.starts)
    table.now = 100.0
    _run(watcher, table, 200.0, crash_after=20.0)  # now it runs 20 s each time
    later = table.starts[before:]
    gaps = [b - a for a, b in pairwise(later)]
    assert len(gaps) >= 3
    assert set(gaps) == {21.0}  # 20 s up, then the first wait, 1 s


def test_a_start_that_fails_counts_as_a_quick_exit(table: Table) -> None:
    lines: list[str] = []
    watcher = Supervisor(table, delay=1.0, most=30.0, stable=10.0, report=lines.append)
    table.refuse = True
    table.dead.add(100)
    _run(watcher, table, 8.0, crash_after=None)
    failures = [line for line in lines if "could not be started again" in line]
    # Tried at 1.125, 3.125 and 7.125 s: each failure doubles the wait.
    assert [line.rsplit(" in ", 1)[1] for line in failures] == ["2 s", "4 s", "8 s"]
    table.refuse = False
    _run(watcher, table, 16.0, crash_after=None)
    assert table.starts == [15.125]


def test_one_started_by_someone_else_counts_as_started_well(table: Table) -> None:
    watcher = Supervisor(table, delay=1.0, most=30.0, stable=10.0)
    table.dead.add(100)
    _run(watcher, table, 5.0, crash_after=0.5)  # the supervisor's starts, quick exits
    assert table.starts == [1.125, 3.625]
    with table.lock:
        table.pids["kubelet"] = 500  # a fault scenario started it itself
    table.dead.add(500)
    before = len(table.starts)
    _run(watcher, table, 7.0, crash_after=None)  # 1.5 s after the supervisor's last start
    assert table.starts[before:] == [6.125]  # the first wait, not a grown one
