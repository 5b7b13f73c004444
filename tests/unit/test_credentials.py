"""Credentials: kubeconfig, in-cluster ServiceAccount, token rotation, TLS.

Requests themselves are exercised against the real control plane by the
integration tests; nothing here stands in for an API server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from pathlib import Path

import pytest

from evc_operator import auth
from evc_operator import credentials as creds
from tests.unit.pki import Pki, handshake, key_pem, pem


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Neither in a cluster nor any kubeconfig: HOME is an empty directory."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def _kubeconfig(path: Path, cluster: dict[str, object], user: dict[str, object]) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c", "user": "nobody"}}],
    }))
    return path


# Credentials from a kubeconfig.

def header(credentials: creds.Credentials) -> str | None:
    return asyncio.run(credentials.auth.header())


def test_kubeconfig_with_ca_data_and_a_token(no_cluster: Path, tmp_path: Path, pki: Pki,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = _kubeconfig(tmp_path / "config",
                       {"server": "https://localhost:6443/",
                        "certificate-authority-data": _b64(pem(pki.ca))},
                       {"token": "secret-token"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    credentials = creds.load_credentials()
    assert credentials.server == "https://localhost:6443"
    assert header(credentials) == "Bearer secret-token"
    assert credentials.ssl.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl.check_hostname
    assert [cert["subject"] for cert in credentials.ssl.get_ca_certs()] == [
        ((("commonName", "test-ca"),),)]


def test_kubeconfig_client_certificate_data_is_presented(no_cluster: Path, tmp_path: Path,
                                                         pki: Pki,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    path = _kubeconfig(tmp_path / "config",
                       {"server": "https://localhost:6443",
                        "certificate-authority-data": _b64(pem(pki.ca))},
                       {"client-certificate-data": _b64(pem(pki.client)),
                        "client-key-data": _b64(key_pem(pki.client_key))})
    monkeypatch.setenv("KUBECONFIG", str(path))
    credentials = creds.load_credentials()
    assert header(credentials) is None
    peer = handshake(credentials.ssl, pki, tmp_path)
    assert peer["subject"] == ((("commonName", "evc-user"),),)


def test_kubeconfig_relative_file_paths_insecure_basic_auth_and_proxy(
        no_cluster: Path, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in a kubeconfig are relative to its own directory, not the working one."""
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "client.crt").write_bytes(pem(pki.client))
    (tmp_path / "kube" / "client.key").write_bytes(key_pem(pki.client_key))
    path = _kubeconfig(tmp_path / "kube" / "config",
                       {"server": "https://localhost:6443", "insecure-skip-tls-verify": True,
                        "proxy-url": "http://proxy:3128"},
                       {"client-certificate": "client.crt", "client-key": "client.key",
                        "username": "admin", "password": "pw"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    credentials = creds.load_credentials()
    assert credentials.ssl.verify_mode == ssl.CERT_NONE
    assert not credentials.ssl.check_hostname
    assert header(credentials) == "Basic " + base64.b64encode(b"admin:pw").decode()
    assert credentials.proxy == "http://proxy:3128"
    peer = handshake(credentials.ssl, pki, tmp_path)
    assert peer["subject"] == ((("commonName", "evc-user"),),)


def test_kubeconfig_ca_file_path(no_cluster: Path, pki: Pki, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.crt").write_bytes(pem(pki.ca))
    path = _kubeconfig(tmp_path / "config",
                       {"server": "https://localhost", "certificate-authority": "ca.crt"},
                       {"token": "t"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    credentials = creds.load_credentials()
    assert header(credentials) == "Bearer t"
    assert len(credentials.ssl.get_ca_certs()) == 1


def test_a_broken_kubeconfig_is_a_clear_error(no_cluster: Path, tmp_path: Path, pki: Pki,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(creds.ConfigError, match="absent"):
        creds.load_credentials()
    path = _kubeconfig(tmp_path / "config",
                       {"server": "https://localhost",
                        "certificate-authority-data": _b64(pem(pki.ca))},
                       {"client-certificate-data": _b64(pem(pki.client)),
                        "client-key-data": _b64(b"not a key")})
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(creds.ConfigError, match="Cannot use the kubeconfig"):
        creds.load_credentials()


def test_no_cluster_and_no_kubeconfig_is_a_clear_error(no_cluster: Path) -> None:
    with pytest.raises(creds.ConfigError, match=r"not in a cluster.*no kubeconfig"):
        creds.load_credentials()


# In-cluster credentials.

def _service_account(directory: Path, pki: Pki, token: str = "token-1") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token + "\n")
    (directory / "ca.crt").write_bytes(pem(pki.ca))
    return directory


def test_in_cluster_credentials(tmp_path: Path, pki: Pki) -> None:
    directory = _service_account(tmp_path / "sa", pki)
    credentials = creds.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, directory)
    assert credentials is not None
    assert credentials.server == "https://10.96.0.1:443"
    assert header(credentials) == "Bearer token-1"
    assert len(credentials.ssl.get_ca_certs()) == 1
    ipv6 = creds.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, directory)
    assert ipv6 is not None
    assert ipv6.server == "https://[fd00::1]:443"


def test_in_cluster_needs_the_environment_and_the_token(tmp_path: Path, pki: Pki) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert creds.in_cluster({}, _service_account(tmp_path / "sa", pki)) is None
    assert creds.in_cluster(env, tmp_path / "absent") is None
    (tmp_path / "sa" / "ca.crt").unlink()
    with pytest.raises(creds.ConfigError, match="CA certificate"):
        creds.in_cluster(env, tmp_path / "sa")


def test_in_cluster_comes_before_the_kubeconfig(no_cluster: Path, tmp_path: Path, pki: Pki,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _service_account(tmp_path / "sa", pki)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(creds, "SERVICE_ACCOUNT", directory)
    path = _kubeconfig(tmp_path / "config", {"server": "https://elsewhere"}, {"token": "x"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert creds.load_credentials().server == "https://10.96.0.1:443"


# The token file rotates.

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rotated_token_is_read_at_once(tmp_path: Path) -> None:
    """The kubelet writes a new file and swaps a symlink to it: a new file, read at once."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "token").write_text("old")
    (tmp_path / "data").symlink_to("v1")
    clock = Clock()
    token = creds.TokenFile(tmp_path / "data" / "token", clock=clock)
    assert token.token() == "old"
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "token").write_text("new")
    (tmp_path / "data-new").symlink_to("v2")
    (tmp_path / "data-new").replace(tmp_path / "data")
    clock.now += 1
    assert token.token() == "new"


def test_the_token_is_read_again_at_least_every_period(tmp_path: Path) -> None:
    """Even when the file looks unchanged (same inode, size and mtime)."""
    path = tmp_path / "token"
    path.write_text("aaa")
    stamp = path.stat().st_mtime_ns
    clock = Clock()
    token = creds.TokenFile(path, clock=clock)
    assert token.token() == "aaa"
    path.write_text("bbb")
    os.utime(path, ns=(stamp, stamp))
    clock.now += creds.TOKEN_PERIOD - 1
    assert token.token() == "aaa"
    clock.now += 1
    assert token.token() == "bbb"


def test_a_token_that_vanishes_keeps_the_last_one(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("kept")
    token = creds.TokenFile(path, clock=Clock())
    assert token.token() == "kept"
    path.unlink()
    assert token.token() == "kept"
    with pytest.raises(FileNotFoundError):
        creds.TokenFile(path).token()


def test_the_environments_proxy_is_read_once_for_the_api_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY and NO_PROXY are honoured, read when the session is made: aiohttp's
    trust_env read them, and ~/.netrc, again for every request."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert auth.environment_proxy("https://10.0.0.1:6443") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert auth.environment_proxy("https://10.0.0.1:6443") == "http://proxy:3128"
    assert auth.environment_proxy("http://10.0.0.1:8080") is None  # HTTP_PROXY: none
    monkeypatch.setenv("NO_PROXY", "10.0.0.1,.cluster.local")
    assert auth.environment_proxy("https://10.0.0.1:6443") is None
    assert auth.environment_proxy("https://api.cluster.local") is None
    assert auth.environment_proxy("https://example.org") == "http://proxy:3128"
    # Ranges, as Go reads them: a Service range exempts the in-cluster API server.
    monkeypatch.setenv("NO_PROXY", "10.96.0.0/12, .svc,fd00::/8,example.org:443")
    assert auth.environment_proxy("https://10.96.0.1:443") is None
    assert auth.environment_proxy("https://10.111.255.254:443") is None
    assert auth.environment_proxy("https://10.112.0.1:443") == "http://proxy:3128"
    assert auth.environment_proxy("https://[fd00::1]:443") is None
    assert auth.environment_proxy("https://[fe80::1]:443") == "http://proxy:3128"
    assert auth.environment_proxy("https://kubernetes.default.svc") is None
