"""`pip install .` gives the package, its typing marker and the console entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_holds_the_package_and_the_entry_point(tmp_path: Path) -> None:
    # As the Dockerfile builds it: with the pinned setuptools already installed, nothing fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(tmp_path), str(REPO)], check=True, timeout=300)
    [wheel] = tmp_path.glob("evc_operator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("handlers", "lifecycle", "scheduler", "kube", "__main__", "py.typed"):
        assert any(name.startswith(f"evc_operator/{module}") for name in names), module
    assert not any(name.startswith(("tests/", "controlplane/")) for name in names)
    [entry_points] = [name for name in names if name.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "evc-operator = evc_operator.__main__:main" in text
