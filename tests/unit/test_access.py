"""The permissions checked at start are those the shipped RBAC grants; Kopf's retries of a
forbidden request are told once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

import pytest
import yaml

from evc_operator import access, kube
from evc_operator.access import Permission

REPO = Path(__file__).resolve().parents[2]


def granted(*paths: str) -> set[Permission]:
    permissions = set()
    for path in paths:
        for document in yaml.safe_load_all((REPO / path).read_text()):
            for rule in (document or {}).get("rules") or ():
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        name, _, sub = resource.partition("/")
                        permissions |= {Permission(verb, group, name, sub, one)
                                        for verb in rule["verbs"]
                                        for one in rule.get("resourceNames") or [""]}
    return permissions


def test_the_checked_permissions_are_exactly_those_of_config_rbac() -> None:
    assert set(access.DISCOVERY + access.NAMESPACED) == granted(
        "config/rbac/cluster_role.yaml")
    assert set(access.lease("evc-operator")) == granted(
        "config/rbac/leader_election_role.yaml")
    assert set(access.CLUSTER) == granted("config/rbac-namespaced/discovery_cluster_role.yaml")
    assert set(access.NAMESPACED + access.lease("evc-operator")) == granted(
        "config/rbac-namespaced/role.yaml")


def test_a_permission_reads_as_kubectl_auth_can_i_would_ask_it() -> None:
    assert str(Permission("patch", "zalando.org", "ephemeralvolumeclaims", "status")) == (
        "patch ephemeralvolumeclaims/status.zalando.org")
    assert str(Permission("list", "", "pods")) == "list pods"
    assert str(access.lease("x")[0]) == "get leases.coordination.k8s.io named x"


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, message, None, None)


def test_kopfs_retries_of_a_forbidden_request_are_told_once_in_one_line() -> None:
    quiet = access.QuietForbidden()
    url = "GET https://127.0.0.1:6443/apis/zalando.org/v1/ephemeralvolumeclaims"
    raw = (f"Request attempt #N failed; will retry: {url} -> APIForbiddenError("
           f"'ephemeralvolumeclaims.zalando.org is forbidden: User \"x\" cannot list', "
           f"{{'apiVersion': 'v1', 'kind': 'Status', 'code': 403}})")
    first = record(raw.replace("N", "1"))
    assert quiet.filter(first)
    assert first.getMessage() == (
        f"Forbidden: {url}: ephemeralvolumeclaims.zalando.org is forbidden: User \"x\" "
        f"cannot list; {access.APPLY}. Retrying until it is allowed.")
    again = record(raw.replace("N", "2"))
    assert not quiet.filter(again)  # DEBUG, and the root logger is not at DEBUG
    assert again.levelno == logging.DEBUG
    other = record("Request attempt #1 failed; will retry: GET /x -> ClientConnectorError()")
    assert quiet.filter(other)
    assert other.getMessage().startswith("Request attempt #1")


def test_granted_cluster_wide_no_namespace_costs_a_request_more(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    asked: list[tuple[str, str, str]] = []

    async def may(_api: object, verb: str, _group: str, resource: str, _sub: str = "",
                  namespace: str = "", _name: str = "") -> bool:
        asked.append((verb, resource, namespace))
        return resource != "pods" or namespace == "granted"  # a namespaced install

    monkeypatch.setattr(kube, "may", may)

    async def scenario() -> None:
        check = access.AccessCheck(cast(kube.Api, None))
        for namespace in ("granted", "other", "granted"):
            check.check(access.NAMESPACED, namespace)
        while check.tasks:
            await asyncio.gather(*check.tasks)

    with caplog.at_level(logging.ERROR, logger="evc_operator.access"):
        asyncio.run(scenario())
    assert len([a for a in asked if a[2] == ""]) == len(access.NAMESPACED)  # once
    assert sorted(a for a in asked if a[2]) == [
        ("list", "pods", "granted"), ("list", "pods", "other"),
        ("watch", "pods", "granted"), ("watch", "pods", "other")]
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "Missing permission: list pods in namespace other",
        "Missing permission: watch pods in namespace other"]


def test_each_permission_is_asked_cluster_wide_once_whoever_needs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str, str]] = []
    down = {"count": 1}  # the first question about deployments finds the API server down

    async def may(_api: object, verb: str, _group: str, resource: str, _sub: str = "",
                  namespace: str = "", _name: str = "") -> bool:
        asked.append((verb, resource, namespace))
        await asyncio.sleep(0)
        if resource == "deployments" and down["count"]:
            down["count"] -= 1
            raise ConnectionError("refused")
        return True

    monkeypatch.setattr(kube, "may", may)

    async def scenario() -> None:
        check = access.AccessCheck(cast(kube.Api, None))
        check.check(access.NAMESPACED, "a")  # a claim's namespace, while the choice is made
        with pytest.raises(ConnectionError):
            await check.lacking_cluster_wide(access.WORKLOADS)
        assert await check.lacking_cluster_wide(access.WORKLOADS) == []  # asked again
        while check.tasks:
            await asyncio.gather(*check.tasks)

    asyncio.run(scenario())
    assert all(namespace == "" for _, _, namespace in asked)
    again = [("list", "deployments", "")]
    assert sorted(asked) == sorted(
        [(p.verb, p.resource, "") for p in access.NAMESPACED] + again)
