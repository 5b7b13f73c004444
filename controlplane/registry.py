"""A tiny read-only image registry on loopback, for the local node's container runtime.

It speaks just enough of the registry HTTP API (v2) for a pull: the version check,
manifests by tag or digest, and blobs by digest. Every tag of a known repository is
the same image (`busybox`, `busybox:latest` and `busybox:1.36` all run the local
busybox); an unknown repository answers 404, so an image "that cannot be pulled" is
simply one with another name. Run it with `python -m controlplane.registry ROOT PORT`.
"""

from __future__ import annotations

import json
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
        manifest = self.server.repositories.get(name)
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
        self.repositories: dict[str, str] = json.loads(
            (root / "repositories.json").read_text())


def main(argv: list[str]) -> int:
    root, port = Path(argv[0]), int(argv[1])
    with _Registry(root, port) as registry:
        registry.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
