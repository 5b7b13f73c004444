"""A tiny read-only image registry on loopback, for the local node's container runtime.

It speaks just enough of the registry HTTP API (v2) for a pull: the version check,
manifests by tag or digest, and blobs by digest. Every tag of a known repository is
the same image (`busybox`, `busybox:latest` and `busybox:1.36` all run the local
busybox); an unknown repository answers 404, so an image "that cannot be pulled" is
simply one with another name. Run it with `python -m controlplane.registry ROOT PORT`.
`publish` adds an image (an OCI layout, e.g. the operator's) while it runs: a pull of it
right after finds it (`repositories.json` is read again whenever it changed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from controlplane.files import write_json
from controlplane.images import OCI_MANIFEST

ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Handler(BaseHTTPRequestHandler):
    server: _Registry

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            self._send(HTTPStatus.OK, b"{}", "application/json", body=body)
            return
        match = ROUTE.match(path)
        if match is None:
            self._error(HTTPStatus.NOT_FOUND, "NAME_UNKNOWN", body=body)
            return
        name, kind, reference = match.group("name", "kind", "reference")
        manifest = self.server.repositories().get(name)
        if kind == "manifests":
            if manifest is None or (DIGEST.match(reference) and reference != manifest):
                self._error(HTTPStatus.NOT_FOUND, "MANIFEST_UNKNOWN", body=body)
                return
            self._send_blob(manifest, OCI_MANIFEST, body=body)
            return
        if manifest is None or not DIGEST.match(reference):
            self._error(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", body=body)
            return
        self._send_blob(reference, "application/octet-stream", body=body)

    def _send_blob(self, digest: str, content_type: str, *, body: bool) -> None:
        path = self.server.root / "blobs" / digest.replace(":", "/")
        if not path.is_file():
            self._error(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", body=body)
            return
        self._send(HTTPStatus.OK, path.read_bytes(), content_type, body=body, digest=digest)

    def _error(self, status: HTTPStatus, code: str, *, body: bool) -> None:
        payload = json.dumps({"errors": [{"code": code, "message": self.path}]}).encode()
        self._send(status, payload, "application/json", body=body)

    def _send(self, status: HTTPStatus, payload: bytes, content_type: str, *, body: bool,
              digest: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")


class _Registry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root
        self._read: tuple[tuple[int, int], dict[str, str]] = ((-1, -1), {})

    def repositories(self) -> dict[str, str]:
        """Repository name -> manifest digest, as `repositories.json` says now."""
        path = self.root / "repositories.json"
        status = path.stat()
        changed = (status.st_ino, status.st_mtime_ns)
        if changed != self._read[0]:
            self._read = (changed, dict(json.loads(path.read_text())))
        return self._read[1]


def repository_of(name: str) -> str:
    """The repository a runtime pulling `name` asks its registry for, as containerd
    normalises names: "evc-operator:0.1.0" and "docker.io/library/evc-operator:0.1.0"
    -> "library/evc-operator"; "registry.k8s.io/pause:3.10" -> "pause"."""
    path = name.split("@", 1)[0]
    host, slash, rest = path.partition("/")
    if not (slash and ("." in host or ":" in host or host == "localhost")):
        host, rest = "docker.io", path
    folder, _, last = rest.rpartition("/")
    repository = f"{folder}/{last.split(':', 1)[0]}" if folder else last.split(":", 1)[0]
    if host == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return repository


def publish(root: Path, name: str, layout: Path, manifest: str) -> str:
    """Serve the image `manifest` (a digest) of the OCI layout `layout` from the registry
    whose content is in `root`, under the repository of `name`; return that repository.

    Blobs are hard-linked where the file system allows it, else copied; the repository
    list is replaced in one rename, so a registry reading it never sees half of it."""
    for blob in sorted((layout / "blobs").rglob("*")):
        if not blob.is_file():
            continue
        target = root / "blobs" / blob.relative_to(layout / "blobs")
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob, target)
        except OSError:
            shutil.copyfile(blob, target)
    repository = repository_of(name)
    listing = root / "repositories.json"
    repositories = dict(json.loads(listing.read_text())) if listing.exists() else {}
    repositories[repository] = manifest
    write_json(listing, repositories)
    return repository


def main(argv: list[str]) -> int:
    root, port = Path(argv[0]), int(argv[1])
    with _Registry(root, port) as registry:
        registry.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
