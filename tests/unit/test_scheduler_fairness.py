"""The scheduler under one namespace's churn: claims of another namespace are served in
turn, reconciliations in flight stay within the adaptive limit, and a pod's label edit
looks again only at the claims whose selector it matched or matches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evc_operator.limiter import Bounds
from evc_operator.users import pod_view
from tests.unit import fakes
from tests.unit.support import settle


def _claim(namespace: str, name: str, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    body = fakes.evc_body()
    body["metadata"].update(name=name, namespace=namespace, uid=f"{namespace}-{name}")
    if selector is not None:
        body["spec"]["selector"] = selector
    return body


def _pod(labels: dict[str, str], phase: str = "Running") -> Any:
    body = fakes.pod_body("worker", phase)
    body["metadata"]["labels"] = labels
    body["spec"]["volumes"] = []
    return pod_view(body)


def test_a_quiet_namespaces_claim_is_reconciled_beside_a_noisy_backlog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [],
                              bounds=Bounds(initial=2, minimum=2, maximum=2))
    started: list[tuple[str, str]] = []
    most = 0
    release = asyncio.Event()

    async def reconcile(key: tuple[str, str]) -> None:
        nonlocal most
        started.append(key)
        most = max(most, scheduler.limit.in_flight)
        await release.wait()

    monkeypatch.setattr(scheduler, "reconcile", reconcile)
    fakes.drain(scheduler)
    for number in range(50):
        scheduler.observe_evc(None, _claim("noisy", f"c{number:02d}"))
    scheduler.observe_evc(None, _claim("quiet", "q"))

    async def scenario() -> None:
        task = asyncio.create_task(scheduler.run())
        await settle()
        assert ("quiet", "q") in started[:2]  # not behind 50 claims of the noisy one
        assert len(started) == 2  # no more in flight than the limit
        release.set()
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(started) == 51
    assert most <= 2


def test_a_label_edit_looks_again_only_at_claims_whose_users_it_changes() -> None:
    scheduler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [])
    for name, app in (("web", "web"), ("batch", "batch"), ("db", "db")):
        scheduler.observe_evc(None, _claim("jobs", name, {"matchLabels": {"app": app}}))
    fakes.drain(scheduler)

    def waiting() -> set[str]:
        found = {name for name in ("scratch", "web", "batch", "db")
                 if scheduler.queue.waiting(("jobs", name))}
        fakes.drain(scheduler)
        return found

    scheduler.poke_for_pod("jobs", [], (_pod({"app": "web"}), _pod({"app": "batch"})))
    assert waiting() == {"web", "batch"}  # a user of web no more, of batch now
    scheduler.poke_for_pod("jobs", [], (_pod({"app": "web"}), _pod({"app": "web", "rev": "2"})))
    assert waiting() == set()  # still web's user, the same way: nothing to decide
    scheduler.poke_for_pod("jobs", [], (_pod({"app": "web"}),
                                        _pod({"app": "web"}, phase="Succeeded")))
    assert waiting() == {"web"}  # still web's, but it ended
    scheduler.poke_for_pod("jobs", [], (None, _pod({"app": "db"})))
    assert waiting() == {"db"}  # a new pod
    scheduler.poke_for_pod("jobs", ["scratch"], (_pod({"app": "other"}), None))
    assert waiting() == {"scratch"}  # it mounted this one
    scheduler.poke_for_pod("jobs", [])  # what the pod was is not known: every selector
    assert waiting() == {"web", "batch", "db"}
