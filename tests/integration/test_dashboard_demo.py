"""`make dashboard-picture` keeps working: `python -m monitoring` run for one minute on its
own control plane, two replicas with leader election as the shipped ServiceAccount, a real
Prometheus scraping them, and a picture with every panel of the dashboard drawn from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from monitoring import dashboard

REPO = Path(__file__).resolve().parents[2]


def test_the_dashboard_picture_is_drawn_from_a_real_run(tmp_path: Path) -> None:
    out, workdir = tmp_path / "dashboard.svg", tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "monitoring", "--minutes", "1",
                          "--out", str(out), "--workdir", str(workdir)],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    logs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}"
                     for log in sorted(workdir.glob("operator-*.log")))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{logs}"
    picture = out.read_text()
    _, panels = dashboard.load()
    for panel in panels:
        assert f">{panel.title}<" in picture, panel.title
    assert "(the leader) killed at" in picture, picture
    assert "its standby took over" in picture, picture
    for log in workdir.glob("operator-*.log"):  # as the shipped RBAC allows, nothing missing
        assert "Missing permission" not in log.read_text(), logs
        assert "Traceback" not in log.read_text(), logs
