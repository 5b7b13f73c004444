"""Kopf's peering is off: replicas elect the active one with the operator's own Lease.

Where another Kopf-based operator installed the KopfPeering CRDs, Kopf (left to detect
peering) would patch and watch a `default` peering object the operator's RBAC does not
grant. The start-up handler turns peering off; Kopf's orchestrator, which decides, runs
only after it. Without a cluster: Kopf's own orchestration step, given the CRDs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import references
from kopf._core.engines import peering
from kopf._core.reactor import orchestration

from evc_operator import handlers
from tests.unit.fakes import offline

PEERINGS = [
    references.Resource(group="kopf.dev", version="v1", plural="kopfpeerings",
                        kind="KopfPeering", namespaced=True),
    references.Resource(group="kopf.dev", version="v1", plural="clusterkopfpeerings",
                        kind="ClusterKopfPeering", namespaced=False),
]


def started(monkeypatch: pytest.MonkeyPatch, settings: kopf.OperatorSettings,
            logger: logging.Logger) -> None:
    """The operator's start-up handler run on `settings`, then its clean-up."""
    offline(monkeypatch)

    async def scenario() -> None:
        start: Any = handlers.start  # typed by Kopf's decorator as Kopf calls it
        stop: Any = handlers.stop
        memo = kopf.Memo()
        await start(settings=settings, memo=memo, logger=logger)
        await stop(memo=memo)

    asyncio.run(scenario())


def peering_tasks(settings: kopf.OperatorSettings, *, namespaced: bool) -> set[str]:
    """The peering tasks Kopf's orchestrator starts on `settings`, the peering CRDs served."""
    async def adjust() -> set[str]:
        insights = references.Insights()
        await insights.backbone.fill(resources=PEERINGS)
        insights.namespaces.add(references.NamespaceName("default") if namespaced else None)
        settings.peering.clusterwide = not namespaced
        paused = aiotoggles.ToggleSet(any)
        ensemble = orchestration.Ensemble(
            peering_missing=await paused.make_toggle(name="peering CRD is missing"),
            operator_paused=paused, operator_indexed=aiotoggles.ToggleSet(all))

        async def processor(**_: Any) -> None:
            pass

        await orchestration.adjust_tasks(processor=processor, insights=insights,
                                         settings=settings, identity=peering.Identity("t"),
                                         ensemble=ensemble)
        names = {task.get_name() for task in ensemble.get_tasks(ensemble.get_keys())}
        paused_now = paused.is_on()
        await orchestration.terminate_redundancies(remaining_resources=(),
                                                   remaining_namespaces=(),
                                                   ensemble=ensemble)
        return names | ({"paused"} if paused_now else set())

    return asyncio.run(adjust())


@pytest.mark.parametrize("namespaced", [True, False], ids=["namespaced", "clusterwide"])
def test_kopf_starts_no_peering_even_where_its_crds_exist(
        monkeypatch: pytest.MonkeyPatch, namespaced: bool) -> None:
    # Kopf left to detect peering: with the CRDs there, it would start it.
    assert peering_tasks(kopf.OperatorSettings(), namespaced=namespaced) == {
        "peering keep-alive for default@" + ("default" if namespaced else "None"),
        "peering observer for default@" + ("default" if namespaced else "None")}

    settings = kopf.OperatorSettings()  # as `kopf run` without --standalone makes them
    started(monkeypatch, settings, logging.getLogger("test"))
    assert settings.peering.standalone
    assert peering_tasks(settings, namespaced=namespaced) == set()


def test_a_peering_asked_for_is_not_used_and_the_log_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settings = kopf.OperatorSettings()
    settings.peering.mandatory = True  # `kopf run --peering=NAME`
    settings.peering.name = "team"
    with caplog.at_level(logging.WARNING, logger="test"):
        started(monkeypatch, settings, logging.getLogger("test"))
    assert "Kopf's peering (--peering) is not used" in caplog.text
    # Mandatory peering without its CRD would pause the operator for ever.
    assert peering_tasks(settings, namespaced=True) == set()
