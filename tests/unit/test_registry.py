"""The node's image registry: what a container runtime's pull asks, and what it gets."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.images import OCI_MANIFEST
from controlplane.registry import _Registry, publish, repository_of


def _blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    layer = _blob(tmp_path, b"layer bytes")
    manifest = _blob(tmp_path, json.dumps({"layers": [{"digest": layer}]}).encode())
    (tmp_path / "repositories.json").write_text(json.dumps({"library/busybox": manifest}))
    server = _Registry(tmp_path, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", {"manifest": manifest, "layer": layer}
    server.shutdown()
    server.server_close()


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_every_tag_of_a_known_repository_is_its_one_image(
        registry: tuple[str, dict[str, str]]) -> None:
    base, digests = registry
    assert _get(f"{base}/v2/")[0] == 200
    for reference in ("latest", "1.36", digests["manifest"]):
        status, headers, body = _get(f"{base}/v2/library/busybox/manifests/{reference}")
        assert status == 200
        assert headers["Content-Type"] == OCI_MANIFEST
        assert headers["Docker-Content-Digest"] == digests["manifest"]
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digests["manifest"]
    status, headers, body = _get(f"{base}/v2/library/busybox/manifests/latest", "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(
        _get(f"{base}/v2/library/busybox/manifests/latest")[2])))
    status, _, body = _get(f"{base}/v2/library/busybox/blobs/{digests['layer']}")
    assert (status, body) == (200, b"layer bytes")


def test_anything_else_cannot_be_pulled(registry: tuple[str, dict[str, str]]) -> None:
    base, digests = registry
    other = "sha256:" + "0" * 64
    for path in ("/v2/library/no-such-image/manifests/latest",
                 f"/v2/library/busybox/manifests/{other}",
                 f"/v2/library/busybox/blobs/{other}",
                 f"/v2/no-such-image/blobs/{digests['layer']}",
                 "/v2/library/busybox/blobs/../../repositories.json",
                 "/elsewhere"):
        status, _, body = _get(base + path)
        assert status == 404, path
        assert json.loads(body)["errors"], path


def test_an_image_published_while_it_runs_can_be_pulled_at_once(
        registry: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """`make image` beside a running node: the operator's OCI layout joins the registry."""
    base, digests = registry
    layout = tmp_path / "layout"
    layer = _blob(layout, b"operator layer")
    manifest = _blob(layout, json.dumps({"layers": [{"digest": layer}]}).encode())
    assert _get(f"{base}/v2/library/evc-operator/manifests/0.1.0")[0] == 404

    repository = publish(tmp_path, "docker.io/library/evc-operator:0.1.0", layout, manifest)

    assert repository == "library/evc-operator"
    status, headers, _ = _get(f"{base}/v2/library/evc-operator/manifests/0.1.0")
    assert (status, headers["Docker-Content-Digest"]) == (200, manifest)
    assert _get(f"{base}/v2/library/evc-operator/blobs/{layer}")[2] == b"operator layer"
    # What was there stays, and publishing again (a rebuilt image) moves only the name.
    assert _get(f"{base}/v2/library/busybox/manifests/latest")[0] == 200
    rebuilt = _blob(layout, json.dumps({"layers": [{"digest": digests["layer"]}]}).encode())
    publish(tmp_path, "evc-operator:0.1.0", layout, rebuilt)
    status, headers, _ = _get(f"{base}/v2/library/evc-operator/manifests/0.1.0")
    assert (status, headers["Docker-Content-Digest"]) == (200, rebuilt)


@pytest.mark.parametrize(("name", "repository"), [
    ("evc-operator:0.1.0", "library/evc-operator"),
    ("docker.io/library/evc-operator:0.1.0", "library/evc-operator"),
    ("busybox", "library/busybox"),
    ("team/app:1", "team/app"),
    ("registry.k8s.io/pause:3.10", "pause"),
    ("localhost:5000/a/b:1", "a/b"),
    ("quay.io/x/y@sha256:" + "a" * 64, "x/y"),
])
def test_names_map_to_the_repository_containerd_asks_for(name: str, repository: str) -> None:
    assert repository_of(name) == repository
