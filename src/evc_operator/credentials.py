"""Where the API server is and how to prove who we are to it, for both connections.

In a Pod: the ServiceAccount's token (re-read as the kubelet rotates it) and CA, and the
API server from KUBERNETES_SERVICE_HOST/PORT, as client-go finds it: no DNS lookup.
Elsewhere: the kubeconfig's current context (kubeconfig.py). A configuration that cannot
be used is a ConfigError with one clear message, never a silent fall-back to anonymous.

The operator's API layer (kube.py) uses the Credentials directly; Kopf's connection gets
the same ones, as a ConnectionInfo, from the login handler (`connection_info`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import kopf

from evc_operator import kubeconfig
from evc_operator.auth import TOKEN_PERIOD, ConfigError, Credentials, TokenFile, tls_context

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

__all__ = ["TOKEN_PERIOD", "ConfigError", "Credentials", "TokenFile", "connection_info",
           "in_cluster", "load_credentials"]


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
    try:
        namespace = (directory / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        namespace = None
    return Credentials(server=f"https://{host}:{port}", ssl=tls_context(ca_file=str(ca)),
                       auth=tokens, namespace=namespace,
                       source=f"the in-cluster ServiceAccount token {token}")


def load_credentials() -> Credentials:
    """In-cluster credentials first, else the kubeconfig's current context."""
    credentials = in_cluster() or kubeconfig.load()
    if credentials is None:
        raise ConfigError(
            "No Kubernetes credentials: not in a cluster (KUBERNETES_SERVICE_HOST, "
            f"KUBERNETES_SERVICE_PORT or {SERVICE_ACCOUNT / 'token'} missing) and no "
            "kubeconfig (KUBECONFIG unset and no ~/.kube/config).")
    return credentials


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Connection(kopf.ConnectionInfo):
    """Kopf's connection info, whose TLS context is ours: the same CA, client certificate
    (also one an exec plugin hands out later) and tls-server-name as our own connection."""
    context: ssl.SSLContext | None = dataclasses.field(default=None, compare=False)

    def as_ssl_context(self) -> ssl.SSLContext:
        assert self.context is not None
        return self.context


async def connection_info(credentials: Credentials, *, refresh: bool = False,
                          failed: str | None = None) -> tuple[kopf.ConnectionInfo, str | None]:
    """What Kopf's login handler returns, and the Authorization in it.

    Kopf calls its login handlers again when the credentials it was given expire or get a
    401: with `refresh`, `failed` (the Authorization it had) is refreshed (the plugin run
    again, the token file re-read) unless our own connection already did so. Kopf
    refuses a ConnectionInfo equal to one that failed: a 401 that nothing can fix stays
    an error, never a loop.
    """
    auth = credentials.auth
    if refresh:
        await auth.refresh(failed)
    header = await auth.header()
    scheme, _, token = (header or "").partition(" ")
    expires: datetime.datetime | None = auth.expires()
    return _Connection(
        server=credentials.server, scheme=scheme or None, token=token or None,
        default_namespace=credentials.namespace, proxy_url=credentials.proxy,
        trust_env=True,  # HTTPS_PROXY and NO_PROXY, as our own connection
        expiration=expires, context=credentials.ssl), header
