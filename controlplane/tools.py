"""The image tools: buildah (an OCI image builder that needs no Docker engine) and
mmdebstrap (a Debian root filesystem from apt), installed from Debian when missing.

Both come from Debian bookworm's own packages, pinned here; a CI machine that starts bare
gets them with apt-get on the first `make image` (as root, like the node). Buildah runs
with chroot isolation and the vfs storage driver, which need neither a daemon nor
overlay mounts nor user namespaces, and keeps its storage in the project's cache folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Debian bookworm's versions (apt-cache policy buildah mmdebstrap).
PINS = {"buildah": "1.28.2+ds1-3+deb12u1+b3", "mmdebstrap": "1.3.5-7"}
HEARTBEAT_SECONDS = 30


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Tools:
    buildah_version: str
    mmdebstrap_version: str


def _version(command: list[str]) -> str:
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    match = re.search(r"\d+\.\d+(?:\.\d+)?", output)
    if not match:
        raise RuntimeError(f"{' '.join(command)}: no version in {output!r}")
    return match.group(0)


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("buildah and mmdebstrap are needed (Debian packages "
                           f"{', '.join(f'{k}={v}' for k, v in PINS.items())}); "
                           "run `make image` as root on Debian, or install them")
    command = ["apt-get", "install", "--yes", "--quiet", "--no-install-recommends",
               *[f"{name}={version}" for name, version in PINS.items()]]
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {', '.join(PINS)} with apt-get (once per machine)")
    if subprocess.run(command, env=environ, capture_output=True).returncode != 0:
        # A bare machine may have no package lists yet, or lists older than the pins.
        subprocess.run(["apt-get", "update", "--quiet"], env=environ, check=True,
                       capture_output=True)
        result = subprocess.run(command, env=environ, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get could not install the pinned image tools "
                               f"(update PINS in controlplane/tools.py?):\n{result.stderr}")


def ensure_tools() -> Tools:
    if not (shutil.which("buildah") and shutil.which("mmdebstrap")):
        _install()
    return Tools(buildah_version=_version(["buildah", "--version"]),
                 mmdebstrap_version=_version(["mmdebstrap", "--version"]))


@dataclasses.dataclass(frozen=True)
class Buildah:
    """buildah with the project's own storage (not the machine's default one)."""

    storage: Path

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.storage / "root"),
                "--runroot", str(self.storage / "run"), "--storage-driver", "vfs", *args]

    def run(self, *args: str, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, cwd=cwd)
        if check and result.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)} failed:\n{result.stderr}")
        return result

    def output(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    def image_label(self, image: str, label: str) -> str | None:
        """The image's label, or None if the storage has no such image."""
        result = self.run("inspect", "--type", "image", "--format",
                          f'{{{{index .OCIv1.Config.Labels "{label}"}}}}', image, check=False)
        return result.stdout.strip() if result.returncode == 0 else None


def run_with_heartbeat(command: list[str], log_path: Path, *, what: str,
                       env: dict[str, str] | None = None,
                       echo: Callable[[str], bool] = lambda line: False) -> None:
    """Run `command` with its output in `log_path`; lines `echo` selects are shown as
    progress, and a line every HEARTBEAT_SECONDS of silence says it is still alive."""
    started = time.monotonic()
    last = [started]
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(5):
            if time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
                log(f"still making {what}: {time.monotonic() - started:.0f} s so far")
                last[0] = time.monotonic()

    watcher = threading.Thread(target=heartbeat, daemon=True)
    watcher.start()
    try:
        with log_path.open("w") as sink, subprocess.Popen(
                command, env={**os.environ, **(env or {})}, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
            assert process.stdout is not None
            for line in process.stdout:
                sink.write(line)
                if echo(line):
                    log(line.rstrip()[:120])
                    last[0] = time.monotonic()
    finally:
        done.set()
        watcher.join()
    if process.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"making {what} failed ({' '.join(command[:3])} ...):\n{tail}")
