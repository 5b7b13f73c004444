"""A fault run (`python -m tests.faults`) stopped by a signal stops cleanly: the scenario
under way is not judged, the ones judged are summed up, and the run says it was stopped.
Long runs (half an hour, on a real node longer) are stopped this way."""

from __future__ import annotations

import os
import signal
from typing import Any, cast

import pytest

from tests.faults.__main__ import run_scenarios, stop_on_signals
from tests.faults.judge import Report
from tests.faults.scenario import Scenario


class _Scenario:
    def __init__(self, seed: int, interrupted_at: int) -> None:
        self.seed = seed
        self.interrupted_at = interrupted_at

    def run(self) -> Report:
        if self.seed == self.interrupted_at:
            raise KeyboardInterrupt("SIGTERM")
        return Report(seed=self.seed, namespace=f"faults-{self.seed}")


def _make(interrupted_at: int) -> Any:
    return lambda seed: cast(Scenario, _Scenario(seed, interrupted_at))


def test_a_run_stopped_keeps_the_scenarios_judged(capsys: pytest.CaptureFixture[str]) -> None:
    reports, stopped = run_scenarios(_make(interrupted_at=3), range(1, 6))
    assert stopped
    assert [report.seed for report in reports] == [1, 2]
    assert "stopped (SIGTERM) during seed 3, which is not judged" in capsys.readouterr().out


def test_a_run_not_stopped_judges_every_seed() -> None:
    reports, stopped = run_scenarios(_make(interrupted_at=0), range(1, 4))
    assert not stopped
    assert [report.seed for report in reports] == [1, 2, 3]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_a_background_sigint_stop_the_run_once(signum: signal.Signals) -> None:
    """SIGINT ignored, as a shell's background job inherits it: the run still stops."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_on_signals()
        with pytest.raises(KeyboardInterrupt, match=signum.name):
            os.kill(os.getpid(), signum)
        # The second acts as usual: SIGTERM's default ends the process, SIGINT raises.
        expected = (signal.default_int_handler if signum == signal.SIGINT
                    else signal.SIG_DFL)
        assert signal.getsignal(signum) == expected
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
