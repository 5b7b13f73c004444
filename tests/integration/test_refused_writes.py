"""A refused status write never lets a later decision rest on older facts: on the real
control plane, a ValidatingAdmissionPolicy refuses every write to the claims' status
subresource for a while."""

from __future__ import annotations

import datetime
import time

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, allow_status_writes, eventually, refuse_status_writes
from tests.integration.test_lifecycle import finish, now, phase_is, pod, used_then_idle


def test_a_user_whose_status_write_was_refused_still_gets_its_grace(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory) -> None:
    process = operator(kubectl.namespace, EXPIRY_PERIOD="30", GRACE_PERIOD="6",
                       COUNTDOWN_INTERVAL="1")
    used_then_idle(kubectl, "guarded", "first")
    binding = refuse_status_writes(control_plane, kubectl.namespace)
    try:
        # The policy takes a moment to be enforced: until a write is refused, it is not.
        eventually(lambda: "status writes refused" in kubectl.run(
            "patch", "evc", "guarded", "--subresource=status", "--type=merge",
            "-p", '{"status": {}}').stderr, what="the policy enforced")
        kubectl("apply", "-f", "-", input=pod("second", "guarded"))
        eventually(lambda: "status writes refused" in process.log_text(), timeout=30,
                   what="a refused status write")
        assert phase_is(kubectl, "guarded", "Idle")  # the stored status is the old one
        time.sleep(7)  # the stored grace runs out while the second user runs
        ended = now()
        finish(kubectl, "second")
        time.sleep(3)
        assert kubectl.get("evc", "guarded") is not None, "deleted on the stored, older end"
    finally:
        allow_status_writes(control_plane, binding)
    # Once writes go through again, the claim is recorded Idle since the later end, or,
    # if that moment has passed, deleted at once: either way not before it.
    eventually(lambda: kubectl.get("evc", "guarded") is None, timeout=60, what="deletion")
    assert now() >= ended + datetime.timedelta(seconds=6)
