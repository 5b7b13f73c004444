"""controlplane/kubectl.py: kubectl's failures say what kubectl said, and waiting for CRDs
survives a failed poll and names what is still not Established."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from controlplane.kubectl import (
    KubectlError,
    NotEstablished,
    checked,
    not_established,
    wait_established,
)


def crd(name: str, established: str | None) -> dict[str, Any]:
    conditions = [{"type": "NamesAccepted", "status": "True"}]
    if established is not None:
        conditions.append({"type": "Established", "status": established})
    return {"kind": "CustomResourceDefinition", "metadata": {"name": name},
            "status": {"conditions": conditions}}


def answer(code: int, body: Any = None, stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["kubectl"], code, json.dumps(body), stderr)


def test_a_failure_carries_kubectls_stderr_in_its_message() -> None:
    with pytest.raises(KubectlError) as raised:
        checked(answer(1, stderr="error: the server doesn't have a resource type \"evc\"\n"))
    assert "the server doesn't have a resource type \"evc\"" in str(raised.value)
    assert isinstance(raised.value, subprocess.CalledProcessError)
    assert checked(answer(0, {"ok": 1})) == '{"ok": 1}'


def test_not_established_reads_one_object_or_a_list() -> None:
    assert not_established(crd("a", "True")) == []
    assert not_established(crd("a", None)) == ["a"]
    listed = {"kind": "List", "items": [crd("a", "True"), crd("b", "False"), crd("c", None)]}
    assert not_established(listed) == ["b", "c"]


def test_waiting_retries_a_failed_poll_and_ends_once_all_are_established() -> None:
    answers = [answer(1, stderr="watch closed"),
               answer(0, {"kind": "List", "items": [crd("a", "True"), crd("b", None)]}),
               answer(0, {"kind": "List", "items": [crd("a", "True"), crd("b", "True")]})]
    asked: list[tuple[str, ...]] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        asked.append(args)
        return answers.pop(0)

    wait_established(run, ("crd/a", "crd/b"), timeout=60, interval=0)
    assert answers == []
    assert asked[0] == ("get", "crd/a", "crd/b", "-o", "json")


def test_waiting_gives_up_at_the_deadline_naming_what_is_not_established() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return answer(0, crd("servicemonitors.monitoring.coreos.com", "False"))

    with pytest.raises(NotEstablished, match="not yet Established: servicemonitors"):
        wait_established(run, ("-f", "crds/"), timeout=0, interval=0)
