"""The Dockerfile's base image, made on this machine from Debian packages.

There is no registry to pull `python:3.11-slim-bookworm` from here, so the project makes
an image that stands in for it: a Debian bookworm root filesystem (mmdebstrap, variant
minbase, plus Python 3.11 with venv and `python` on PATH, CA certificates, netbase). It is
imported into the builder's storage under the very name the Dockerfile's FROM uses, so the
Dockerfile builds unmodified, and anywhere else the official image is pulled instead.

Debian's Python lives in /usr/bin, the official image's in /usr/local/bin: the Dockerfile
only ever calls `python` through PATH and the virtualenv, which works on both.

The root filesystem is cached outside the work tree under a digest of its recipe (suite,
variant, package list, dpkg filters, mmdebstrap version): the same recipe is made once per
machine, reproducibly (SOURCE_DATE_EPOCH fixes every file date). The versions that went in
are listed in the operator image's SBOM (read from the image's dpkg database). A new
Debian point release is taken when the recipe changes (bump REVISION to take one).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from controlplane.tools import Buildah, log, run_with_heartbeat

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase")
# Documentation and translations are not needed in an image (copyright files are kept).
DPKG_OPTIONS = ("path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
                "path-exclude=/usr/share/locale/*")
REVISION = 1
# What the official image sets and the operator relies on; CMD as there.
ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8"}
KEY_LABEL = "io.github.evc-operator.base-recipe"


def recipe() -> dict[str, object]:
    return {"suite": SUITE, "variant": VARIANT, "packages": list(PACKAGES),
            "dpkg": list(DPKG_OPTIONS), "revision": REVISION, "environment": ENVIRONMENT}


def recipe_key(mmdebstrap_version: str) -> str:
    text = json.dumps({**recipe(), "mmdebstrap": mmdebstrap_version}, sort_keys=True)
    return f"debian-{SUITE}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def root_filesystem(cache: Path, mmdebstrap_version: str) -> Path:
    """The folder holding `rootfs.tar`, made if absent."""
    target = cache / recipe_key(mmdebstrap_version)
    if (target / "rootfs.tar").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".base-", dir=cache))
    log(f"making the base root filesystem: Debian {SUITE} {VARIANT} + {', '.join(PACKAGES)} "
        f"(once per recipe; about 90 s)")
    started = time.monotonic()
    command = ["mmdebstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
               *[f"--dpkgopt={option}" for option in DPKG_OPTIONS],
               SUITE, str(staging / "rootfs.tar")]
    try:
        run_with_heartbeat(command, staging / "mmdebstrap.log", what="the base root filesystem",
                           env={"SOURCE_DATE_EPOCH": "0"})
    except RuntimeError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / "mmdebstrap.log").unlink()
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    log(f"base root filesystem made in {time.monotonic() - started:.0f} s")
    return target


def ensure_base(buildah: Buildah, name: str, cache: Path, mmdebstrap_version: str) -> str:
    """Make sure the builder's storage holds the local base image as `name`; return its
    recipe key (the image carries it as a label, so a stale import is replaced)."""
    key = recipe_key(mmdebstrap_version)
    if buildah.image_label(name, KEY_LABEL) == key:
        return key
    folder = root_filesystem(cache, mmdebstrap_version)
    log(f"importing the base root filesystem into the builder as {name}")
    container = buildah.output("from", "--pull=never", "scratch")
    try:
        buildah.run("add", container, str(folder / "rootfs.tar"), "/")
        config = [f"--env={key_}={value}" for key_, value in ENVIRONMENT.items()]
        buildah.run("config", *config, "--cmd=python3", f"--label={KEY_LABEL}={key}",
                    "--created-by=controlplane.baseimage (mmdebstrap)", container)
        buildah.run("commit", "--quiet", "--timestamp=0", container, name)
    finally:
        buildah.run("rm", container, check=False)
    return key

