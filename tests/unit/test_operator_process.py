"""The integration tests' operator process (tests/integration/support.py): an operator
that does not start in time is aborted so the failure shows where it was stuck; one stuck
before Kopf's first line is started once more, with a warning.

The operator is stood in for by a small Python script in kopf's place, run with the same
environment (so PYTHONFAULTHANDLER is honoured as it is by the real one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import pytest

from controlplane.cluster import ControlPlane
from tests.integration import support

# The stand-in counts its runs in RUNS_FILE; runs up to STUCK_RUNS hang, after printing
# Kopf's first line when SAY_STARTING is set; later runs start as the operator does.
STAND_IN = """\
import os, sys, time
from pathlib import Path
runs = Path(os.environ["RUNS_FILE"])
count = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(count))
if count <= int(os.environ["STUCK_RUNS"]):
    if os.environ.get("SAY_STARTING"):
        print("Starting Kopf 1.45.2.", file=sys.stderr, flush=True)
    def stuck_here() -> None:
        time.sleep(600)
    stuck_here()
print("Starting Kopf 1.45.2.", file=sys.stderr, flush=True)
print("Starting the watch-stream for ephemeralvolumeclaims.v1.zalando.org in 'ns'.",
      file=sys.stderr, flush=True)
time.sleep(600)
"""


class _Plane:
    def environ(self) -> dict[str, str]:
        return dict(os.environ)


def _process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, stuck_runs: int,
             say_starting: bool = False) -> support.OperatorProcess:
    script = tmp_path / "kopf"
    script.write_text(f"#!{sys.executable}\n{STAND_IN}")
    script.chmod(0o755)
    monkeypatch.setattr(support, "KOPF", script)
    env = {"RUNS_FILE": str(tmp_path / "runs"), "STUCK_RUNS": str(stuck_runs)}
    if say_starting:
        env["SAY_STARTING"] = "1"
    return support.OperatorProcess(cast(ControlPlane, _Plane()), "ns", tmp_path / "log", env)


def test_stuck_before_kopf_is_started_once_more_with_a_warning_that_shows_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process = _process(tmp_path, monkeypatch, stuck_runs=1)
    try:
        with pytest.warns(UserWarning, match="operator start-up retried") as caught:
            # The second run must start within it: a loaded machine takes more than 2 s to
            # start an interpreter at times (a review of the tests).
            process.wait_ready(timeout=5)
        assert "in stuck_here" in str(caught[0].message)
        assert (tmp_path / "runs").read_text() == "2"
    finally:
        process.stop()


def test_stuck_twice_before_kopf_fails(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    process = _process(tmp_path, monkeypatch, stuck_runs=2)
    with (pytest.warns(UserWarning, match="retried"),
          pytest.raises(AssertionError, match="in stuck_here")):
        process.wait_ready(timeout=2)
    assert (tmp_path / "runs").read_text() == "2"


def test_stuck_after_kopf_started_fails_at_once_showing_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process = _process(tmp_path, monkeypatch, stuck_runs=1, say_starting=True)
    with pytest.raises(AssertionError, match=r"(?s)operator start-up.*in stuck_here"):
        process.wait_ready(timeout=2)
    assert (tmp_path / "runs").read_text() == "1"
    assert process.process.poll() is not None  # aborted, not left running
