"""A kubeconfig user's `exec` credential plugin (client.authentication.k8s.io v1, v1beta1).

The plugin runs without a terminal (the operator never prompts), with the kubeconfig's
`env` added to the operator's environment, and KUBERNETES_EXEC_INFO describing the call
(with the cluster when `provideClusterInfo` is set). Its ExecCredential is kept until its
`expirationTimestamp` and asked for again after that, or after a 401. A bearer token goes
into the Authorization header; a client certificate into the shared TLS context, whose
pools then close the connections that present the old one (auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from evc_operator.auth import ConfigError, load_client_certificate

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# Seconds a plugin may take before it is killed and counts as failed. Clearly less than a
# request's own timeout (kube.REQUEST_TIMEOUT, 60 s), which runs around the middleware
# that runs the plugin: else the request's timer fires first, and the caller sees a bare
# timeout instead of this one naming the plugin.
TIMEOUT = 30.0
REAP_SECONDS = 5.0  # waited for a killed plugin to be gone (a child out of its group lives on)


class ExecError(ConfigError):
    """The plugin is missing, failed, or printed something that is not an ExecCredential."""


class ExecCredential:
    """What one run of the plugin said: a token and/or a client certificate, and when
    they stop being valid."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.token: str | None = status.get("token") or None
        self.cert: str | None = status.get("clientCertificateData") or None
        self.key: str | None = status.get("clientKeyData") or None
        if not self.token and not (self.cert and self.key):
            raise ExecError("its ExecCredential has neither a token nor a client "
                            "certificate and key")
        if bool(self.cert) != bool(self.key):
            raise ExecError("its ExecCredential has a client certificate without its key, "
                            "or a key without its certificate")
        stamp = status.get("expirationTimestamp")
        self.expiry: datetime.datetime | None = None
        if stamp:
            try:
                self.expiry = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError as error:
                raise ExecError(f"its expirationTimestamp {stamp!r} is not RFC 3339") from error
            if self.expiry.tzinfo is None:
                self.expiry = self.expiry.replace(tzinfo=datetime.UTC)

    def expired(self, now: datetime.datetime) -> bool:
        return self.expiry is not None and now >= self.expiry


def parse(output: bytes, api_version: str) -> ExecCredential:
    """The plugin's standard output: one ExecCredential of the version it was asked for."""
    try:
        document = json.loads(output)
    except ValueError as error:
        raise ExecError(f"it printed no JSON ExecCredential ({error})") from error
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise ExecError("it printed something other than an ExecCredential")
    if document.get("apiVersion") != api_version:
        raise ExecError(f"it printed an ExecCredential of apiVersion "
                        f"{document.get('apiVersion')!r}, not {api_version!r}")
    status = document.get("status")
    if not isinstance(status, dict):
        raise ExecError("its ExecCredential has no status")
    return ExecCredential(status)


class ExecPlugin:
    """The kubeconfig's `user.exec`, as an Authorization (see auth.py)."""

    def __init__(self, spec: Mapping[str, Any], *, cluster: Mapping[str, Any] | None,
                 context: ssl.SSLContext, base: str | None = None,
                 clock: Any = None) -> None:
        self.api_version = str(spec.get("apiVersion") or "")
        if self.api_version not in API_VERSIONS:
            raise ConfigError(f"its exec plugin's apiVersion {self.api_version!r} is not "
                              f"one of {', '.join(API_VERSIONS)}")
        command = str(spec.get("command") or "")
        if not command:
            raise ConfigError("its exec plugin has no command")
        if os.sep in command and base is not None:  # relative to the kubeconfig's directory
            command = os.path.normpath(os.path.join(base, command))
        if spec.get("interactiveMode") == "Always":
            raise ConfigError("its exec plugin needs a terminal (interactiveMode: Always), "
                              "which an operator does not have")
        self.command: Sequence[str] = [command, *[str(arg) for arg in spec.get("args") or []]]
        self.env = {str(item["name"]): str(item["value"]) for item in spec.get("env") or []}
        self.install_hint = str(spec.get("installHint") or "").strip()
        info: dict[str, Any] = {"interactive": False}
        if spec.get("provideClusterInfo") and cluster is not None:
            info["cluster"] = cluster
        self.exec_info = json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential",
                                     "spec": info})
        self.context = context
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.calls = 0
        self._current: ExecCredential | None = None
        self._generation = 0  # counts the credentials the plugin gave: see generation()
        self._lock = asyncio.Lock()

    def _missing(self) -> ExecError:
        hint = " ".join(self.install_hint.split())  # one line
        return ExecError(f"its exec plugin {self.command[0]!r} was not found"
                         + (f": {hint}" if hint else ""))

    async def _run(self) -> ExecCredential:
        if shutil.which(self.command[0]) is None:
            raise self._missing()
        environ = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": self.exec_info}
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, env=environ, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)  # its own group: killed with what it started
        except OSError as error:
            raise (self._missing() if isinstance(error, FileNotFoundError)
                   else ExecError(f"its exec plugin {self.command[0]!r} cannot run: {error}")
                   ) from error
        try:
            output, errors = await asyncio.wait_for(process.communicate(), TIMEOUT)
        except BaseException as error:
            # Our timeout, or the caller's (a request's timer cancels us): either way no
            # one reads the plugin's answer any more, so it must not outlive the wait.
            # The whole group: a child it started (a wrapper's, an agent) holds the pipes
            # open, and the wait for it lasted as long as that child.
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), REAP_SECONDS)
            if isinstance(error, TimeoutError):
                raise ExecError(f"its exec plugin {self.command[0]!r} did not answer "
                                f"within {TIMEOUT:.0f} s") from error
            raise
        self.calls += 1
        if process.returncode != 0:
            said = errors.decode(errors="replace").strip().splitlines()
            raise ExecError(f"its exec plugin {self.command[0]!r} failed with exit code "
                            f"{process.returncode}" + (f": {said[-1].strip()}" if said else ""))
        try:
            credential = parse(output, self.api_version)
        except ExecError as error:
            raise ExecError(f"its exec plugin {self.command[0]!r}: {error}") from error
        before = (self._current.cert, self._current.key) if self._current else (None, None)
        if credential.cert and credential.key and (credential.cert, credential.key) != before:
            # Only a new one: the pools close their connections when one is loaded.
            load_client_certificate(self.context, cert_data=credential.cert.encode(),
                                    key_data=credential.key.encode())
        return credential

    async def credential(self, *, stale: ExecCredential | None = None) -> ExecCredential:
        """The cached ExecCredential, or a new one if it expired or is `stale`."""
        async with self._lock:
            current = self._current
            if current is None or current is stale or current.expired(self.clock()):
                self._current = current = await self._run()
                self._generation += 1
            return current

    async def header(self) -> str | None:
        token = (await self.credential()).token
        return f"Bearer {token}" if token else None

    def generation(self) -> int:
        return self._generation

    async def refresh(self, failed: int) -> bool:
        """Run the plugin again only if the credential that failed is still the current
        one: a 401 to one replaced since (requests sent before a run, or the others of a
        burst that failed together) needs no other run."""
        current = self._current
        if current is not None and failed == self._generation:
            await self.credential(stale=current)
        return self._generation != failed

    def expires(self) -> datetime.datetime | None:
        return self._current.expiry if self._current is not None else None
