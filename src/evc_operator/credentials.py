"""Where the API server is and how to prove who we are to it.

In a Pod: the ServiceAccount's token (re-read as the kubelet rotates it) and CA, and the
API server from KUBERNETES_SERVICE_HOST/PORT. Elsewhere: the kubeconfig's current context.
A configuration that cannot be used is a ConfigError with one clear message, never a
silent fall-back to anonymous.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import kopf

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_PERIOD = 60.0  # re-read the in-cluster token at least this often (seconds)

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """No usable cluster credentials: neither in-cluster nor from a kubeconfig."""



class TokenFile:
    """A bearer token in a file the kubelet rewrites: projected ServiceAccount tokens
    rotate (about hourly), so the file is read again once it changed, and at least
    every `period` seconds."""

    def __init__(self, path: Path, *, period: float = TOKEN_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.period = period
        self.clock = clock
        self._token: str | None = None
        self._read_at = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()  # follows the kubelet's ..data symlink swap
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def token(self) -> str:
        now, stamp = self.clock(), self._file_stamp()
        if (self._token is None or stamp != self._stamp
                or now - self._read_at >= self.period):
            try:
                self._token = self.path.read_text(encoding="utf-8").strip()
            except OSError as error:
                if self._token is None:
                    raise
                log.warning("Could not re-read the token %s (%s); keeping the last one.",
                            self.path, error)
            self._read_at, self._stamp = now, stamp
        return self._token

    def header(self) -> str:
        return f"Bearer {self.token()}"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are to it."""
    server: str  # e.g. https://10.0.0.1:443, no trailing slash
    ssl: ssl.SSLContext
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # static auth
    token: TokenFile | None = None  # in-cluster: read per request, the file rotates
    proxy: str | None = None


def in_cluster(environ: Mapping[str, str] | None = None,
               directory: Path | None = None) -> Credentials | None:
    """The Pod's ServiceAccount credentials, or None outside a cluster."""
    environ = os.environ if environ is None else environ
    directory = SERVICE_ACCOUNT if directory is None else directory
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    token = directory / "token"
    if not host or not port or not token.exists():
        return None
    ca = directory / "ca.crt"
    if not ca.exists():
        raise ConfigError(f"In a cluster, but its CA certificate {ca} does not exist.")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    tokens = TokenFile(token)
    try:
        tokens.token()  # fail here, at start, if it cannot be read
    except OSError as error:
        raise ConfigError(f"In a cluster, but its token cannot be read: {error}") from error
    return Credentials(server=f"https://{host}:{port}",
                       ssl=ssl.create_default_context(cafile=str(ca)), token=tokens)


def from_connection_info(info: kopf.ConnectionInfo) -> Credentials:
    """Credentials from Kopf's reading of a kubeconfig: server, CA, client certificate,
    bearer token or basic auth. Kopf writes certificate and key data to private
    temporary files only while its SSL context loads them."""
    if not info.server:
        raise ConfigError("The kubeconfig's cluster has no server.")
    return Credentials(server=info.server.rstrip("/"), ssl=info.as_ssl_context(),
                       headers=info.as_http_headers(), proxy=info.proxy_url)


def _kubeconfig() -> Credentials | None:
    source = os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        # Kopf's own reader: KUBECONFIG (several files allowed), else ~/.kube/config;
        # the current context. No exec plugins, auth providers only by their cached token.
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        return from_connection_info(info) if info is not None else None
    except ConfigError as error:
        raise ConfigError(f"Cannot use the kubeconfig {source}: {error}") from error
    except Exception as error:
        raise ConfigError(f"Cannot use the kubeconfig {source}: "
                          f"{type(error).__name__}: {error}") from error


def load_credentials() -> Credentials:
    """In-cluster credentials first, else the kubeconfig's current context."""
    credentials = in_cluster() or _kubeconfig()
    if credentials is None:
        raise ConfigError(
            "No Kubernetes credentials: not in a cluster (KUBERNETES_SERVICE_HOST, "
            f"KUBERNETES_SERVICE_PORT or {SERVICE_ACCOUNT / 'token'} missing) and no "
            "kubeconfig (KUBECONFIG unset and no ~/.kube/config).")
    return credentials
