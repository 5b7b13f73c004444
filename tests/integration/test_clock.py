"""Deadlines on the API server's clock: an operator whose own clock is 30 s off (either
way, libfaketime in its environment) deletes neither before the true deadline nor late.
The test process and the control plane share the machine's true clock."""

from __future__ import annotations

import datetime
import time

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually, faked
from tests.integration.test_lifecycle import evc, now, parse, status

FAST = {"EXPIRY_PERIOD": "5", "GRACE_PERIOD": "5", "COUNTDOWN_INTERVAL": "1"}


@pytest.mark.parametrize("offset", ["+30s", "-30s"])
def test_an_operator_clock_off_by_30_s_deletes_on_time(
        offset: str, kubectl: Kubectl, operator: OperatorFactory) -> None:
    process = operator(kubectl.namespace, **FAST, **faked(offset))
    kubectl("apply", "-f", "-", input=evc("punctual"))
    stamp: str = eventually(lambda: status(kubectl, "punctual").get("deletesAt") or "",
                            what="a deadline")
    body = kubectl.get("evc", "punctual")
    assert body is not None
    created = parse(body["metadata"]["creationTimestamp"])
    deadline = parse(stamp)
    # Counted on the server's clock: creation's second rounded up, plus the period.
    assert deadline == created + datetime.timedelta(seconds=1 + 5)
    while kubectl.get("evc", "punctual") is not None:
        assert now() < deadline + datetime.timedelta(seconds=8), "deleted late"
        time.sleep(0.1)
    assert now() >= deadline, "deleted before the deadline"
    sign = offset[0]
    warnings = [line for line in process.log_text().splitlines()
                if "The API server's clock is" in line]
    # The server is behind a clock that runs ahead: a negative skew, and the other way.
    assert len(warnings) == 1
    assert f"clock is {'-' if sign == '+' else '+'}" in warnings[0]
