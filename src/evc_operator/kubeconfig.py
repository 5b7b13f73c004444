"""The kubeconfig's current context, read as kubectl reads it.

KUBECONFIG (several files, the first to name something wins; missing files are skipped)
or ~/.kube/config. Relative paths in a file are relative to that file's directory. Users:
client certificates (file or data), `token`, `tokenFile`, `exec` plugins, `username` and
`password`. Clusters: `server`, the CA (file or data), `insecure-skip-tls-verify`,
`tls-server-name`, `proxy-url`. Contexts: `namespace`. Anything else that changes who we
are (an `auth-provider`, impersonation) is refused with a ConfigError, never ignored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from evc_operator.auth import (
    Authorization,
    ConfigError,
    Credentials,
    Static,
    TokenFile,
    load_client_certificate,
    tls_context,
)
from evc_operator.execplugin import ExecPlugin

PROXY_SCHEMES = ("http://", "https://")  # what aiohttp can tunnel through
UNSUPPORTED_USER_KEYS = ("as", "as-uid", "as-groups", "as-user-extra")


@dataclasses.dataclass
class _Entry:
    value: dict[str, Any]
    base: str  # the directory of the file that defined it


@dataclasses.dataclass
class Merged:
    """The kubeconfig files merged: the current context and the named entries."""
    current: str | None = None
    contexts: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    clusters: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    users: dict[str, _Entry] = dataclasses.field(default_factory=dict)


def paths(environ: dict[str, str] | None = None) -> list[Path]:
    """The kubeconfig files to read, in order; empty when there is none."""
    environ = dict(os.environ) if environ is None else environ
    listed = [part for part in (environ.get("KUBECONFIG") or "").split(os.pathsep) if part]
    if listed:
        return [Path(part).expanduser() for part in listed]
    default = Path("~/.kube/config").expanduser()
    return [default] if default.exists() else []


def merge(files: list[Path]) -> Merged:
    merged = Merged()
    found = False
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue  # as kubectl: a listed file that does not exist is skipped
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error}") from error
        found = True
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            problem = " ".join(str(error).split())
            raise ConfigError(f"{path} is not valid YAML: {problem}") from error
        if not isinstance(document, dict):
            raise ConfigError(f"{path} is not a kubeconfig (no mapping at its top)")
        base = str(path.resolve().parent)
        merged.current = merged.current or document.get("current-context") or None
        for key, kind, table in (("contexts", "context", merged.contexts),
                                 ("clusters", "cluster", merged.clusters),
                                 ("users", "user", merged.users)):
            for item in document.get(key) or []:
                if isinstance(item, dict) and item.get("name") is not None:
                    table.setdefault(str(item["name"]), _Entry(item.get(kind) or {}, base))
    if not found:
        raise ConfigError(f"no kubeconfig file exists of {os.pathsep.join(map(str, files))}")
    return merged


def _path(entry: _Entry, key: str) -> str | None:
    value = entry.value.get(key)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else Path(entry.base) / path)


def _data(entry: _Entry, key: str) -> bytes | None:
    value = entry.value.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ConfigError(f"its {key} is not base64") from error


def _cluster_info(cluster: _Entry, ca: bytes | None) -> dict[str, Any]:
    """The cluster as an exec plugin sees it (KUBERNETES_EXEC_INFO, provideClusterInfo)."""
    info: dict[str, Any] = {"server": cluster.value.get("server")}
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url"):
        if cluster.value.get(key):
            info[key] = cluster.value[key]
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    extensions = cluster.value.get("extensions") or []
    for extension in extensions:
        if isinstance(extension, dict) and extension.get(
                "name") == "client.authentication.k8s.io/exec":
            info["config"] = extension.get("extension")
    return info


def _ca(cluster: _Entry) -> bytes | None:
    data = _data(cluster, "certificate-authority-data")
    path = _path(cluster, "certificate-authority")
    if data is None and path is not None:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(f"its certificate-authority {path} cannot be read: "
                              f"{error.strerror}") from error
    return data


def _authorization(user: _Entry, cluster: _Entry, ca: bytes | None,
                   context: Any) -> Authorization:
    spec = user.value
    if spec.get("auth-provider"):
        name = (spec["auth-provider"] or {}).get("name", "?")
        raise ConfigError(f"its auth-provider {name!r} is not supported (client-go dropped "
                          f"them): use an exec plugin instead")
    for key in UNSUPPORTED_USER_KEYS:
        if spec.get(key):
            raise ConfigError(f"impersonation ({key}) is not supported")
    if spec.get("exec"):
        return ExecPlugin(spec["exec"], cluster=_cluster_info(cluster, ca), context=context,
                          base=user.base)
    token_file = _path(user, "tokenFile")
    if token_file is not None:  # before `token`: as in client-go, the file (re-read) wins,
        # the token used only while the file cannot be read
        tokens = TokenFile(Path(token_file), inline=spec.get("token") or None)
        try:
            tokens.token()
        except OSError as error:
            raise ConfigError(f"its tokenFile {token_file} cannot be read: "
                              f"{error.strerror}") from error
        return tokens
    if spec.get("token"):
        return Static(f"Bearer {spec['token']}")
    if spec.get("username") and spec.get("password"):
        return Static.basic(str(spec["username"]), str(spec["password"]))
    return Static(None)  # a client certificate, or anonymous if the user says so


def _credentials(merged: Merged, name: str, source: str) -> Credentials:
    context = merged.contexts[name].value
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if cluster_name not in merged.clusters:
        raise ConfigError(f"its cluster {cluster_name!r} is not in the kubeconfig")
    cluster = merged.clusters[str(cluster_name)]
    user = merged.users.get(str(user_name), _Entry({}, cluster.base))
    if user_name and str(user_name) not in merged.users:
        raise ConfigError("its user is not in the kubeconfig")
    server = str(cluster.value.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f"its cluster {cluster_name!r} has no server")
    proxy = cluster.value.get("proxy-url") or None
    if proxy is not None and not str(proxy).startswith(PROXY_SCHEMES):
        raise ConfigError(f"its proxy-url {proxy!r} is not http:// or https:// "
                          f"(SOCKS is not supported)")
    ca = _ca(cluster)
    try:
        tls = tls_context(ca_data=ca.decode("ascii") if ca else None,
                          insecure=bool(cluster.value.get("insecure-skip-tls-verify")),
                          server_name=cluster.value.get("tls-server-name") or None)
        cert_data, key_data = (_data(user, "client-certificate-data"),
                               _data(user, "client-key-data"))
        cert_file, key_file = _path(user, "client-certificate"), _path(user, "client-key")
        if (cert_data or cert_file) and (key_data or key_file):
            load_client_certificate(tls, cert_data=cert_data, cert_file=cert_file,
                                    key_data=key_data, key_file=key_file)
        elif cert_data or cert_file or key_data or key_file:
            raise ConfigError("it has a client certificate without its key, or a key "
                              "without its certificate")
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        raise ConfigError(f"its TLS settings cannot be used: {error}") from error
    return Credentials(server=server, ssl=tls, auth=_authorization(user, cluster, ca, tls),
                       proxy=str(proxy) if proxy else None,
                       namespace=context.get("namespace") or None, source=source)


def load(environ: dict[str, str] | None = None) -> Credentials | None:
    """The current context's credentials, or None if there is no kubeconfig at all."""
    files = paths(environ)
    if not files:
        return None
    where = os.pathsep.join(map(str, files))
    try:
        merged = merge(files)
    except ConfigError as error:
        raise ConfigError(f"Cannot use the kubeconfig {where}: {error}") from error
    if not merged.current:
        raise ConfigError(f"Cannot use the kubeconfig {where}: it has no current-context")
    if merged.current not in merged.contexts:
        raise ConfigError(f"Cannot use the kubeconfig {where}: its current-context "
                          f"{merged.current!r} is not one of its contexts")
    user = merged.contexts[merged.current].value.get("user")
    source = f"the kubeconfig {where}, context {merged.current!r}, user {user!r}"
    try:
        return _credentials(merged, merged.current, source)
    except ConfigError as error:
        raise ConfigError(f"Cannot use {source}: {error}") from error
