"""Where the API server is and how to prove who we are to it, for both connections.

In a Pod: the ServiceAccount's token (re-read as the kubelet rotates it) and CA, and the
API server from KUBERNETES_SERVICE_HOST/PORT, as client-go finds it: no DNS lookup.
Elsewhere: the kubeconfig's current context (kubeconfig.py). A configuration that cannot
be used is a ConfigError with one clear message, never a silent fall-back to anonymous.

The operator's API layer (kube.py) uses the Credentials directly; Kopf's connection gets
the same ones from the login handler (`kopf_login`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import kopf

from evc_operator import kubeconfig
from evc_operator.auth import (
    TOKEN_PERIOD,
    ConfigError,
    Credentials,
    TokenFile,
    session,
    tls_context,
)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

__all__ = ["TOKEN_PERIOD", "ConfigError", "Credentials", "TokenFile", "in_cluster",
           "kopf_login", "load_credentials"]


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


KopfLogin = tuple[kopf.AiohttpSession, int]  # and the credentials' generation it began with
RELOGIN_PAUSE = 1.0  # seconds: a 401 that keeps coming back is not retried in a busy loop


async def kopf_login(credentials: Credentials, previous: KopfLogin | None = None,
                     trace: aiohttp.TraceConfig | None = None) -> KopfLogin:
    """What Kopf's login handler returns: a session of its own with our credentials and
    the same middleware as ours, so that Kopf never sees an expired token nor a 401 that
    a refresh fixes (and never tears down its watches for one). `trace` observes Kopf's
    requests (served.py).

    Kopf logs in again only after a 401 that the refresh did not fix. Unless the
    credentials have changed since, `previous` is returned, which Kopf refuses as failed
    already: an error in the log, never a loop.
    """
    auth = credentials.auth
    if previous is not None:
        await asyncio.sleep(RELOGIN_PAUSE)
        await auth.refresh(previous[1])
    await auth.header()  # the credentials now: a plugin's first run, an expired one's next
    if previous is not None and auth.generation() == previous[1]:
        return previous
    return kopf.AiohttpSession(
        server=credentials.server, default_namespace=credentials.namespace,
        aiohttp_session=session(credentials, limit=0,  # Kopf's own pool: no limit
                                trace_configs=[trace] if trace is not None else None),
    ), auth.generation()
