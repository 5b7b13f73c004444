"""Exec credential plugins: what they are given, what is kept, when they run again.

The plugins here are real executables (small scripts); no API server is involved, but
for a TLS server that shows which client certificate each request presented.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from evc_operator import execplugin, kube
from evc_operator.auth import ConfigError, Credentials, authorizing, session, tls_context
from evc_operator.execplugin import ExecError, ExecPlugin, parse
from tests.unit.pki import Pki, certificate, client_verifying_server, handshake, key_pem, pem

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def plugin(tmp_path: Path, *, version: str = V1, expiry: str | None = "2026-01-01T00:10:00Z",
           exit_code: int = 0) -> Path:
    """A plugin that prints token-N on its N-th call and records what it was given."""
    script = tmp_path / "plugin"
    status: dict[str, Any] = {"token": "TOKEN"}
    if expiry:
        status["expirationTimestamp"] = expiry
    template = json.dumps({"apiVersion": version, "kind": "ExecCredential", "status": status})
    script.write_text(f"""#!{sys.executable}
import json, os, pathlib, sys
here = pathlib.Path({str(tmp_path)!r})
calls = here / "calls"
count = len(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text("x" * count)
(here / "given").write_text(json.dumps({{"args": sys.argv[1:], "env": os.environ.get("COLOR"),
    "info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]), "stdin": sys.stdin.read()}}))
print({template!r}.replace("TOKEN", f"token-{{count}}"))
print("a warning for the user", file=sys.stderr)
sys.exit({exit_code})
""")
    script.chmod(0o755)
    return script


def calls(tmp_path: Path) -> int:
    path = tmp_path / "calls"
    return len(path.read_text()) if path.exists() else 0


def make(spec: dict[str, Any], clock: Clock | None = None,
         cluster: dict[str, Any] | None = None) -> ExecPlugin:
    return ExecPlugin({"apiVersion": V1, **spec}, cluster=cluster,
                      context=ssl.create_default_context(), clock=clock or Clock())


def test_the_credential_is_kept_until_it_expires(tmp_path: Path) -> None:
    clock = Clock()
    exec_plugin = make({"command": str(plugin(tmp_path))}, clock)

    async def scenario() -> None:
        assert await exec_plugin.header() == "Bearer token-1"
        assert exec_plugin.expires() == T0 + datetime.timedelta(minutes=10)
        clock.now += datetime.timedelta(minutes=9, seconds=59)
        assert await exec_plugin.header() == "Bearer token-1"
        assert calls(tmp_path) == 1
        clock.now += datetime.timedelta(seconds=1)  # expired
        assert await exec_plugin.header() == "Bearer token-2"
        assert calls(tmp_path) == 2

    asyncio.run(scenario())


def test_a_401_runs_it_again_once_however_many_requests_saw_it(tmp_path: Path) -> None:
    exec_plugin = make({"command": str(plugin(tmp_path, expiry=None))})

    async def scenario() -> None:
        assert await exec_plugin.header() == "Bearer token-1"
        failed = exec_plugin.generation()
        results = await asyncio.gather(*(exec_plugin.refresh(failed) for _ in range(5)))
        assert results == [True] * 5
        assert await exec_plugin.header() == "Bearer token-2"
        assert calls(tmp_path) == 2
        assert exec_plugin.expires() is None  # no expirationTimestamp: kept until a 401

    asyncio.run(scenario())


def test_it_gets_args_env_and_the_cluster_but_no_terminal(tmp_path: Path) -> None:
    cluster = {"server": "https://10.0.0.1", "certificate-authority-data": "Q0E="}
    spec = {"command": str(plugin(tmp_path)), "args": ["get-token", "--cluster", "x"],
            "env": [{"name": "COLOR", "value": "blue"}], "provideClusterInfo": True}
    asyncio.run(make(spec, cluster=cluster).header())
    given = json.loads((tmp_path / "given").read_text())
    assert given["args"] == ["get-token", "--cluster", "x"]
    assert given["env"] == "blue"
    assert given["stdin"] == ""
    assert given["info"] == {"apiVersion": V1, "kind": "ExecCredential",
                             "spec": {"interactive": False, "cluster": cluster}}
    del spec["provideClusterInfo"]
    asyncio.run(make(spec, cluster=cluster).header())
    assert "cluster" not in json.loads((tmp_path / "given").read_text())["info"]["spec"]


def test_v1beta1_is_understood(tmp_path: Path) -> None:
    exec_plugin = ExecPlugin({"apiVersion": V1BETA1,
                              "command": str(plugin(tmp_path, version=V1BETA1))},
                             cluster=None, context=ssl.create_default_context())
    assert asyncio.run(exec_plugin.header()) == "Bearer token-1"


def test_a_missing_plugin_names_it_and_gives_its_install_hint_on_one_line() -> None:
    exec_plugin = make({"command": "evc-no-such-plugin",
                        "installHint": "Install it:\n  brew install evc-plugin\n"})
    with pytest.raises(ExecError) as raised:
        asyncio.run(exec_plugin.header())
    assert str(raised.value) == ("its exec plugin 'evc-no-such-plugin' was not found: "
                                 "Install it: brew install evc-plugin")


def test_a_failing_plugin_says_its_exit_code_and_last_words(tmp_path: Path) -> None:
    exec_plugin = make({"command": str(plugin(tmp_path, exit_code=4))})
    with pytest.raises(ExecError, match=r"failed with exit code 4: a warning for the user$"):
        asyncio.run(exec_plugin.header())


def test_a_plugin_that_answers_in_another_version_is_refused(tmp_path: Path) -> None:
    exec_plugin = make({"command": str(plugin(tmp_path, version=V1BETA1))})
    with pytest.raises(ExecError, match=r"not 'client\.authentication\.k8s\.io/v1'"):
        asyncio.run(exec_plugin.header())


@pytest.mark.parametrize(("spec", "message"), [
    ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}, "apiVersion"),
    ({"command": ""}, "no command"),
    ({"command": "x", "interactiveMode": "Always"}, "needs a terminal"),
])
def test_specs_that_cannot_work_are_refused_before_any_run(spec: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(spec)


@pytest.mark.parametrize(("output", "message"), [
    (b"not json", "no JSON"),
    (b'{"kind": "Other"}', "other than an ExecCredential"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential"}).encode(), "no status"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": {}}).encode(),
     "neither a token nor"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential",
                 "status": {"clientCertificateData": "x"}}).encode(), "neither a token"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential",
                 "status": {"token": "t", "expirationTimestamp": "soon"}}).encode(),
     "RFC 3339"),
])
def test_what_is_not_a_usable_exec_credential(output: bytes, message: str) -> None:
    with pytest.raises(ExecError, match=message):
        parse(output, V1)


def test_an_exec_credential_with_a_timestamp() -> None:
    credential = parse(json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": {
        "token": "t", "expirationTimestamp": "2026-01-01T00:00:00Z"}}).encode(), V1)
    assert credential.token == "t"
    assert not credential.expired(T0 - datetime.timedelta(seconds=1))
    assert credential.expired(T0)


Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey, str | None]  # and its expiry


def cert_plugin(tmp_path: Path, issued: list[Issued]) -> Path:
    """A plugin that gives the N-th certificate and key on its N-th call (the last one
    after that), and counts its calls as plugin() does."""
    statuses = [{"clientCertificateData": pem(cert).decode(),
                 "clientKeyData": key_pem(key).decode(),
                 **({"expirationTimestamp": expiry} if expiry else {})}
                for cert, key, expiry in issued]
    script = tmp_path / "cert-plugin"
    script.write_text(f"""#!{sys.executable}
import json, pathlib
calls = pathlib.Path({str(tmp_path)!r}) / "calls"
count = len(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text("x" * count)
statuses = {statuses!r}
print(json.dumps({{"apiVersion": {V1!r}, "kind": "ExecCredential",
                  "status": statuses[min(count, len(statuses)) - 1]}}))
""")
    script.chmod(0o755)
    return script


def test_a_client_certificate_from_the_plugin_is_presented(tmp_path: Path) -> None:
    pki = Pki()
    script = cert_plugin(tmp_path, [(pki.client, pki.client_key, None)])
    context = ssl.create_default_context(cadata=pem(pki.ca).decode())
    exec_plugin = ExecPlugin({"apiVersion": V1, "command": str(script)}, cluster=None,
                             context=context)
    assert asyncio.run(exec_plugin.header()) is None  # no token: the certificate it is
    peer = handshake(context, pki, tmp_path)
    assert peer["subject"] == ((("commonName", "evc-user"),),)


def test_a_plugin_failing_after_the_start_is_a_connection_error_to_retry(
        tmp_path: Path) -> None:
    """Kopf and the operator's own requests retry connection errors with a backoff, and
    log each attempt: the plugin's error is that log line, until it works again."""
    exec_plugin = make({"command": str(plugin(tmp_path, exit_code=1))})
    sent: list[object] = []

    async def handler(request: object) -> Any:
        sent.append(request)

    async def request() -> None:
        await authorizing(exec_plugin)(cast(Any, object()), handler)

    with pytest.raises(aiohttp.ClientConnectionError,
                       match=r"No credentials: its exec plugin .* failed with exit code 1"):
        asyncio.run(request())
    assert sent == []


def test_a_401_to_a_certificate_replaced_since_runs_the_plugin_no_more(tmp_path: Path) -> None:
    """A certificate has no header to tell which one failed: its generation does."""
    pki = Pki()
    exec_plugin = make({"command": str(cert_plugin(tmp_path,
                                                   [(pki.client, pki.client_key, None)]))})

    async def scenario() -> None:
        assert await exec_plugin.header() is None
        failed = exec_plugin.generation()
        results = await asyncio.gather(*(exec_plugin.refresh(failed) for _ in range(5)))
        assert results == [True] * 5  # a newer one to retry with
        assert calls(tmp_path) == 2
        assert await exec_plugin.refresh(failed)  # a request sent before the new one
        assert calls(tmp_path) == 2
        assert await exec_plugin.refresh(exec_plugin.generation())  # the new one fails
        assert calls(tmp_path) == 3

    asyncio.run(scenario())


@pytest.mark.parametrize("expires", [True, False])
def test_a_rotated_client_certificate_is_presented_on_the_next_request(
        tmp_path: Path, expires: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server stops taking the old certificate (it expired, or a 401 says so):
    the plugin runs once for the next one, and the connections kept alive with the old
    one are not reused, as they would present it again on every request."""
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    pki, clock, refused = Pki(), Clock(), set[str]()
    new_key = ec.generate_private_key(ec.SECP256R1())
    new = certificate("new-user", new_key, "test-ca", pki.ca_key,
                      usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    script = cert_plugin(tmp_path, [
        (pki.client, pki.client_key, "2026-01-01T00:10:00Z" if expires else None),
        (new, new_key, "2026-01-01T01:00:00Z" if expires else None)])
    server = client_verifying_server(pki, tmp_path)

    async def whoami(request: web.Request) -> web.Response:
        assert request.transport is not None
        user = request.transport.get_extra_info("peercert")["subject"][0][0][1]
        return web.json_response({"user": user}, status=401 if user in refused else 200)

    async def scenario() -> list[str]:
        app = web.Application()
        app.router.add_get("/whoami", whoami)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server).start()
        url = "https://127.0.0.1:{}/whoami".format(*runner.addresses[0][1:2])
        context = tls_context(ca_data=pem(pki.ca).decode(), server_name="localhost")
        exec_plugin = ExecPlugin({"apiVersion": V1, "command": str(script)}, cluster=None,
                                 context=context, clock=clock)
        seen = []
        credentials = Credentials(server=url, ssl=context, auth=exec_plugin)
        async with session(credentials, limit=4) as http:
            for request in range(4):
                if request == 1:
                    refused.add("evc-user")
                    clock.now += datetime.timedelta(minutes=11)  # expired, if it expires
                async with http.get(url) as response:
                    seen.append(f"{response.status} {(await response.json())['user']}")
        await runner.cleanup()
        return seen

    assert asyncio.run(scenario()) == ["200 evc-user"] + ["200 new-user"] * 3
    assert calls(tmp_path) == 2


def hung_plugin(tmp_path: Path) -> Path:
    """A plugin that writes its process id and never answers."""
    script = tmp_path / "hung-plugin"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\nexec sleep 300\n")
    script.chmod(0o755)
    return script


async def started(tmp_path: Path) -> int:
    for _ in range(500):
        text = (tmp_path / "pid").read_text() if (tmp_path / "pid").exists() else ""
        if text.strip():
            return int(text)
        await asyncio.sleep(0.01)
    raise AssertionError("the plugin did not start")


def alive(pid: int) -> bool:
    """Whether the process exists, as a zombie too (never waited for)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    os.kill(pid, 9)  # not to outlive a failing test
    return True


def test_a_plugin_that_does_not_answer_is_killed_and_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execplugin, "TIMEOUT", 1.0)
    script = hung_plugin(tmp_path)
    exec_plugin = make({"command": str(script)})

    async def handler(request: object) -> Any:
        raise AssertionError("no request without credentials")

    async def request() -> None:
        await authorizing(exec_plugin)(cast(Any, object()), handler)

    with pytest.raises(aiohttp.ClientConnectionError,
                       match=f"^No credentials: its exec plugin '{script}' did not answer "
                             f"within 1 s$"):
        asyncio.run(request())
    assert not alive(int((tmp_path / "pid").read_text()))


def test_a_plugin_is_given_up_before_the_request_it_serves() -> None:
    """A request's timer runs around the plugin: the plugin's own must fire first, for
    its error to name it rather than a bare timeout."""
    budget, request = execplugin.TIMEOUT, kube.REQUEST_TIMEOUT.total
    assert request is not None
    assert budget <= request / 2


def test_a_cancelled_run_leaves_no_plugin_behind(tmp_path: Path) -> None:
    """The request's timeout (or a shutdown) cancels the wait for the plugin."""
    exec_plugin = make({"command": str(hung_plugin(tmp_path))})

    async def scenario() -> int:
        run = asyncio.create_task(exec_plugin.header())
        pid = await started(tmp_path)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return pid

    pid = asyncio.run(scenario())
    assert not alive(pid)


def test_a_plugin_that_started_a_child_is_given_up_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrapper that started a child holding the pipes: the wait for the killed plugin
    lasted as long as that child (here for ever), every request waiting behind it."""
    monkeypatch.setattr(execplugin, "TIMEOUT", 1.0)
    script = tmp_path / "wrapper"
    script.write_text(f"#!/bin/sh\nsleep 3600 &\necho $! > {tmp_path / 'pid'}\n"
                      "exec sleep 3600\n")
    script.chmod(0o755)
    exec_plugin = make({"command": str(script)})

    async def scenario() -> None:  # the bound: a hang caught, not a time measured
        await asyncio.wait_for(exec_plugin.header(), 60)

    try:
        with pytest.raises(execplugin.ExecError, match="did not answer within 1 s"):
            asyncio.run(scenario())
        child = int((tmp_path / "pid").read_text())
        assert _state(child) in (None, "Z")  # killed (a zombie until its adopter reaps it)
    finally:
        alive(int((tmp_path / "pid").read_text()))  # not to outlive a failing test


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, Z...), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
