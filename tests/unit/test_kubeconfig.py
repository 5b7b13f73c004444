"""Reading a kubeconfig as kubectl does, and handing the result to Kopf's connection."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from evc_operator import auth, credentials, kubeconfig
from evc_operator.execplugin import ExecPlugin


def write(path: Path, *, current: str | None = "test", cluster: dict[str, Any] | None = None,
          user: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
          names: tuple[str, str, str] = ("test", "c", "u")) -> Path:
    ctx, cluster_name, user_name = names
    document: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster or {
            "server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": user_name, "user": user or {"token": "t"}}],
        "contexts": [{"name": ctx, "context": {"cluster": cluster_name, "user": user_name,
                                               **(context or {})}}]}
    if current:
        document["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def load(*paths: Path) -> auth.Credentials:
    loaded = kubeconfig.load({"KUBECONFIG": ":".join(map(str, paths))})
    assert loaded is not None
    return loaded


def header(loaded: auth.Credentials) -> str | None:
    return asyncio.run(loaded.auth.header())


def test_several_files_merge_first_wins_and_missing_ones_are_skipped(tmp_path: Path) -> None:
    first = write(tmp_path / "a", user={"token": "first"}, context={"namespace": "team"})
    second = write(tmp_path / "b", current="other", user={"token": "second"})
    loaded = load(tmp_path / "missing", first, second)
    assert header(loaded) == "Bearer first"
    assert loaded.namespace == "team"
    assert loaded.server == "https://10.0.0.1:6443"
    assert loaded.source == (f"the kubeconfig {tmp_path / 'missing'}:{first}:{second}, "
                             "context 'test', user 'u'")


def test_no_kubeconfig_at_all_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig.load({}) is None
    with pytest.raises(auth.ConfigError, match="no kubeconfig file exists"):
        kubeconfig.load({"KUBECONFIG": str(tmp_path / "absent")})


def test_a_token_file_relative_to_the_kubeconfig_is_read_again_after_a_401(
        tmp_path: Path) -> None:
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "token").write_text("one\n")
    loaded = load(write(tmp_path / "kube" / "config", user={"tokenFile": "token"}))

    async def scenario() -> None:
        assert await loaded.auth.header() == "Bearer one"
        failed = loaded.auth.generation()
        (tmp_path / "kube" / "token").write_text("two")
        assert await loaded.auth.refresh(failed)
        assert await loaded.auth.header() == "Bearer two"
        assert not await loaded.auth.refresh(loaded.auth.generation())  # nothing new

    asyncio.run(scenario())


def test_a_token_file_wins_over_a_token(tmp_path: Path) -> None:
    """As in client-go: the file is read (and read again as it rotates), not the token."""
    (tmp_path / "token").write_text("from-the-file\n")
    loaded = load(write(tmp_path / "config", user={"token": "inline", "tokenFile": "token"}))
    assert header(loaded) == "Bearer from-the-file"


def test_a_token_beside_a_token_file_not_there_yet_is_used_until_it_is(tmp_path: Path) -> None:
    """As in client-go: the file is tried again as it comes; meanwhile the token. (Taken
    first for a while, the file then stopped the start when it could not be read.)"""
    loaded = load(write(tmp_path / "config", user={"token": "inline", "tokenFile": "token"}))
    assert header(loaded) == "Bearer inline"
    (tmp_path / "token").write_text("from-the-file\n")
    assert asyncio.run(loaded.auth.refresh(loaded.auth.generation()))  # after a 401
    assert header(loaded) == "Bearer from-the-file"


def test_an_empty_token_file_is_no_token(tmp_path: Path) -> None:
    """Empty (being written, or never), the file gave `Bearer ` in place of the token."""
    (tmp_path / "token").write_text("\n")
    loaded = load(write(tmp_path / "config", user={"token": "inline", "tokenFile": "token"}))
    assert header(loaded) == "Bearer inline"
    with pytest.raises(auth.ConfigError, match="it is empty"):
        load(write(tmp_path / "alone", user={"tokenFile": "token"}))


def test_the_exec_command_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    loaded = load(write(tmp_path / "kube" / "config", user={"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/plugin"}}))
    assert isinstance(loaded.auth, ExecPlugin)
    assert loaded.auth.command == [str(tmp_path / "kube" / "./bin/plugin")]


def test_tls_server_name_is_the_name_checked_whatever_the_address(tmp_path: Path) -> None:
    loaded = load(write(tmp_path / "config", cluster={
        "server": "https://127.0.0.1:6443", "tls-server-name": "api.example"}))
    tls = loaded.ssl.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert tls.server_hostname == "api.example"
    assert loaded.ssl.verify_mode == ssl.CERT_REQUIRED
    assert loaded.ssl.check_hostname


@pytest.mark.parametrize(("user", "cluster", "message"), [
    ({"auth-provider": {"name": "oidc", "config": {"access-token": "x"}}}, None,
     "its auth-provider 'oidc' is not supported"),
    ({"token": "t", "as": "someone"}, None, r"impersonation \(as\) is not supported"),
    ({"tokenFile": "absent"}, None, "its tokenFile .*absent cannot be read"),
    ({"client-certificate-data": "Zm9v"}, None, "certificate without its key"),
    ({"client-key-data": "not base64!"}, None, "client-key-data is not base64"),
    (None, {"server": ""}, "has no server"),
    (None, {"server": "https://x", "proxy-url": "socks5://proxy:1080"}, "SOCKS"),
    (None, {"server": "https://x", "certificate-authority": "absent.crt"},
     "certificate-authority .*absent.crt cannot be read"),
])
def test_what_cannot_be_used_is_one_clear_line(tmp_path: Path, user: dict[str, Any] | None,
                                               cluster: dict[str, Any] | None,
                                               message: str) -> None:
    path = write(tmp_path / "config", user=user, cluster=cluster)
    with pytest.raises(auth.ConfigError,
                       match=f"^Cannot use the kubeconfig {path}, context 'test', user 'u': "
                             f".*{message}") as raised:
        load(path)
    assert "\n" not in str(raised.value)


def test_contexts_that_lead_nowhere(tmp_path: Path) -> None:
    with pytest.raises(auth.ConfigError, match="no current-context"):
        load(write(tmp_path / "a", current=None))
    with pytest.raises(auth.ConfigError, match="'elsewhere' is not one of its contexts"):
        load(write(tmp_path / "b", current="elsewhere"))
    path = write(tmp_path / "c", context={"user": "ghost"})
    with pytest.raises(auth.ConfigError, match="user 'ghost': its user is not in"):
        load(path)
    (tmp_path / "d").write_text("clusters: [")
    with pytest.raises(auth.ConfigError, match="is not valid YAML"):
        load(tmp_path / "d")


def test_a_missing_plugin_stops_the_start_naming_context_user_and_hint(
        tmp_path: Path) -> None:
    path = write(tmp_path / "config", names=("prod", "c", "alice"), current="prod",
                 user={"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                "command": "evc-absent-plugin",
                                "installHint": "See the docs."}})
    loaded = load(path)
    with pytest.raises(auth.ConfigError) as raised:
        asyncio.run(loaded.check())
    assert str(raised.value) == (
        f"Cannot use the kubeconfig {path}, context 'prod', user 'alice': its exec plugin "
        "'evc-absent-plugin' was not found: See the docs.")


# Kopf's connection: the same credentials, in a session of its own.

def test_kopf_gets_the_same_server_tls_proxy_and_namespace(tmp_path: Path) -> None:
    loaded = load(write(tmp_path / "config", context={"namespace": "team"}, cluster={
        "server": "https://10.0.0.1", "proxy-url": "http://proxy:3128"}))

    async def scenario() -> None:
        info, began = await credentials.kopf_login(loaded)
        assert began == loaded.auth.generation()
        try:
            assert (info.server, info.default_namespace, info.expiration) == (
                "https://10.0.0.1", "team", None)  # never expires: the session refreshes
            connector = info.aiohttp_session.connector
            assert isinstance(connector, aiohttp.TCPConnector)
            assert connector._ssl is loaded.ssl
            assert "Authorization" not in info.aiohttp_session.headers  # per request
        finally:
            await info.aiohttp_session.close()

    asyncio.run(scenario())


def test_kopf_logging_in_again_gets_a_new_session_only_if_something_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf logs in again after a 401 the session's own refresh did not fix: the same
    answer again is refused by Kopf (an error, not a loop)."""
    (tmp_path / "token").write_text("one")
    loaded = load(write(tmp_path / "config", user={"tokenFile": "token"}))
    monkeypatch.setattr(credentials, "RELOGIN_PAUSE", 0)

    async def scenario() -> None:
        first = await credentials.kopf_login(loaded)
        assert await credentials.kopf_login(loaded, first) is first
        (tmp_path / "token").write_text("second")
        second = await credentials.kopf_login(loaded, first)
        assert second[0] != first[0]
        assert second[1] == loaded.auth.generation() != first[1]
        assert await loaded.auth.header() == "Bearer second"
        for info, _ in (first, second):
            await info.aiohttp_session.close()

    asyncio.run(scenario())
