"""The API server's serving certificate of a cluster with a node: loopback clients and pods
(by the Service's IP or name, or the advertised address) verify it with the one file
kubeconfigs and pods get as their CA bundle; any other name fails."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.pki import write_serving_certificate

ADDRESSES = ("127.0.0.1", "192.0.2.1", "10.0.0.1")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server on loopback with the written certificate; its port and CA bundle."""
    bundle = write_serving_certificate(tmp_path / "pki", ADDRESSES)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(bundle, tmp_path / "pki" / "apiserver.key")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], bundle
    stop.set()
    thread.join()
    listener.close()


def _dial(port: int, bundle: Path, name: str) -> bytes:
    client = ssl.create_default_context(cafile=str(bundle))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client.wrap_socket(raw, server_hostname=name) as tls:
        return tls.recv(2)


@pytest.mark.parametrize("name", [*ADDRESSES, "kubernetes.default.svc", "kubernetes",
                                  "localhost"])
def test_every_way_to_the_api_server_verifies(server: tuple[int, Path], name: str) -> None:
    port, bundle = server
    assert _dial(port, bundle, name) == b"ok"


@pytest.mark.parametrize("name", ["192.0.2.2", "10.0.0.2", "example.com"])
def test_other_names_do_not(server: tuple[int, Path], name: str) -> None:
    port, bundle = server
    with pytest.raises(ssl.SSLCertVerificationError):
        _dial(port, bundle, name)


def test_only_its_owner_reads_the_key(tmp_path: Path) -> None:
    write_serving_certificate(tmp_path, ADDRESSES)
    assert (tmp_path / "apiserver.key").stat().st_mode & 0o077 == 0
