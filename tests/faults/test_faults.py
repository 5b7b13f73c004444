"""A bounded number of fault scenarios for every test run (`make faults` runs 200)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cluster import ControlPlane
from tests.faults.scenario import Scenario

REPO = Path(__file__).resolve().parents[2]
SEEDS = range(int(os.environ.get("EVC_FAULT_SEED", "1")),
              int(os.environ.get("EVC_FAULT_SEED", "1")) + int(os.environ.get("EVC_FAULTS", "3")))


@pytest.fixture(scope="module")
def audited_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own: these tests stop and restart its API server."""
    plane = ControlPlane.start(tmp_path_factory.mktemp("faults"), crds=[REPO / "crd.yaml"],
                               audit=True)
    yield plane
    plane.stop()


@pytest.mark.parametrize("seed", SEEDS)
def test_invariants_hold_under_faults(audited_plane: ControlPlane, seed: int,
                                      tmp_path: Path) -> None:
    report = Scenario(audited_plane, seed, tmp_path).run()
    print(report.line())
    assert report.claims > 0
    assert not report.violations, "\n".join([report.line(), *report.violations])
