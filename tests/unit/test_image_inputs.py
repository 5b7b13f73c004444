"""What the image build reads without building: the Dockerfile's base, the cache key of the
inputs, and the SBOM made from a root filesystem (controlplane.image, controlplane.sbom)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from controlplane.image import REPO, base_images, inputs_key
from controlplane.sbom import debian_packages, python_packages, spdx


def dockerfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_the_repositorys_dockerfile_builds_from_the_slim_python_tag() -> None:
    assert base_images(REPO / "Dockerfile") == ("python:3.11-slim-bookworm",
                                                 {"PYTHON_BASE": "python:3.11-slim-bookworm"})


def test_a_base_named_by_a_global_arg_is_built_from_its_tag(tmp_path: Path) -> None:
    path = dockerfile(tmp_path, 'ARG BASE="python:3.11-slim@sha256:abc"\n'
                                "FROM ${BASE} AS build\nRUN true\nFROM $BASE\n"
                                "COPY --from=build /a /a\n")
    assert base_images(path) == ("python:3.11-slim", {"BASE": "python:3.11-slim"})


def test_a_literal_digest_or_two_bases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="pinned by digest"):
        base_images(dockerfile(tmp_path, "FROM python:3.11-slim@sha256:abc\n"))
    with pytest.raises(RuntimeError, match="one base image"):
        base_images(dockerfile(tmp_path, "FROM python:3.11-slim AS a\nFROM python:3.12\n"))


def test_the_inputs_key_follows_the_sources_and_not_their_caches(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt",
                 "README.md"):
        shutil.copy(REPO / name, repo / name)
    (repo / "src/pkg").mkdir(parents=True)
    (repo / "src/pkg/a.py").write_text("A = 1\n")
    key = inputs_key(repo, "base", "1.0")
    (repo / "src/pkg/__pycache__").mkdir()
    (repo / "src/pkg/__pycache__/a.cpython-311.pyc").write_bytes(b"x")
    (repo / "docs.md").write_text("not copied into the image\n")
    assert inputs_key(repo, "base", "1.0") == key
    assert inputs_key(repo, "other base", "1.0") != key
    assert inputs_key(repo, "base", "1.1") != key
    (repo / "src/pkg/a.py").write_text("A = 2\n")
    changed = inputs_key(repo, "base", "1.0")
    assert changed != key
    (repo / "src/pkg/a.py").rename(repo / "src/pkg/b.py")
    assert inputs_key(repo, "base", "1.0") not in (key, changed)


STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library
 with a continuation line: Package: not-a-package

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: python3.11
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u6
Source: python3.11 (3.11.2-6)
"""


def root_filesystem(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS)
    site = root / "opt/venv/lib/python3.11/site-packages"
    for name, version in (("kopf", "1.45.2"), ("PyYAML", "6.0.4")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n")
    return root


def test_installed_packages_are_read_as_the_installers_recorded_them(tmp_path: Path) -> None:
    root = root_filesystem(tmp_path)
    assert python_packages(root, "/opt/venv") == {"kopf": "1.45.2", "PyYAML": "6.0.4"}
    assert debian_packages(root) == [
        {"name": "libc6", "version": "2.36-9+deb12u10", "architecture": "amd64",
         "source": "glibc"},
        {"name": "python3.11", "version": "3.11.2-6+deb12u6", "architecture": "amd64",
         "source": "python3.11"}]


def test_the_sbom_is_spdx_with_a_purl_per_package(tmp_path: Path) -> None:
    document = spdx(root_filesystem(tmp_path), image="docker.io/library/evc-operator:0.1.0",
                    digest="sha256:ab", venv="/opt/venv", created="2026-01-01T00:00:00Z")
    json.dumps(document)  # serialisable as it is
    purls = [package["externalRefs"][0]["referenceLocator"] for package in document["packages"]]
    assert purls == ["pkg:oci/evc-operator@sha256%3Aab?tag=0.1.0",
                     "pkg:pypi/kopf@1.45.2", "pkg:pypi/pyyaml@6.0.4",
                     "pkg:deb/debian/libc6@2.36-9+deb12u10?arch=amd64&distro=debian-12"
                     "&upstream=glibc",
                     "pkg:deb/debian/python3.11@3.11.2-6+deb12u6?arch=amd64&distro=debian-12"]
    contained = {r["relatedSpdxElement"] for r in document["relationships"]
                 if r["relationshipType"] == "CONTAINS"}
    assert contained == {p["SPDXID"] for p in document["packages"][1:]}
    assert document["packages"][0]["primaryPackagePurpose"] == "CONTAINER"
