"""Container images made on the machine itself, from Debian's static busybox.

Two images share one layer (busybox and a link for each of its applets):
`busybox` (runs `sh`, like the public image) and the pod sandbox image (`pause`, which
only waits). They are written as content-addressed blobs that `controlplane.registry`
serves, so the node pulls them like any image and nothing comes from outside.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")  # Debian package busybox-static
# Repository names as the registry sees them, and the tag the node asks for.
BUSYBOX_REPOSITORY = "library/busybox"
PAUSE_REPOSITORY = "pause"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
# Waits for ever, and exits at once when asked to: what a pod sandbox needs.
PAUSE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_EPOCH = 0  # every file and archive dated the same: the same busybox gives the same digests


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _add(archive: tarfile.TarFile, name: str, *, kind: bytes = tarfile.DIRTYPE,
         data: bytes = b"", mode: int = 0o755, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, _EPOCH, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _layer(busybox: bytes, applets: list[str]) -> bytes:
    """A gzipped tar: the usual top folders, bin/busybox and one symlink per applet."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        folders = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "var", "root",
                   "proc", "sys", "dev"}
        for folder in sorted(folders):
            _add(archive, folder, mode=0o1777 if folder == "tmp" else 0o755)
        _add(archive, "bin/busybox", kind=tarfile.REGTYPE, data=busybox)
        for applet in sorted(set(applets) - {"bin/busybox"}):
            depth = applet.count("/")
            _add(archive, applet, kind=tarfile.SYMTYPE, link="../" * depth + "bin/busybox")
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=_EPOCH) as stream:
        stream.write(raw.getvalue())
    return packed.getvalue()


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blobs / digest.replace(":", "/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return digest


def _descriptor(media_type: str, digest: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def write_images(root: Path) -> dict[str, str]:
    """Write the images' blobs under `root/blobs` and `root/repositories.json`, which
    maps each repository name to its manifest's digest; return that map."""
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing (Debian package busybox-static)")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    blobs = root / "blobs"
    layer = _layer(BUSYBOX.read_bytes(), applets)
    layer_digest = _write_blob(blobs, layer)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    repositories: dict[str, str] = {}
    commands = {BUSYBOX_REPOSITORY: {"Cmd": ["sh"]},
                PAUSE_REPOSITORY: {"Entrypoint": PAUSE_COMMAND}}
    for repository, command in commands.items():
        config = json.dumps({
            "architecture": _architecture(), "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], **command},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }, sort_keys=True).encode()
        config_digest = _write_blob(blobs, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _descriptor("application/vnd.oci.image.config.v1+json",
                                  config_digest, config),
            "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar+gzip",
                                   layer_digest, layer)],
        }, sort_keys=True).encode()
        repositories[repository] = _write_blob(blobs, manifest)
    (root / "repositories.json").write_text(json.dumps(repositories, indent=2))
    return repositories
