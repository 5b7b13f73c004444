"""A dry run reports each deadline it would have deleted at once, and keeps only the last
(a set of every one grew by one an idle period, for as long as the claim lived)."""

from __future__ import annotations

import datetime

from evc_operator.settings import Settings
from evc_operator.users import pod_view
from tests.unit.fakes import FakeApi, make, pod_body, reconcile_now
from tests.unit.support import T0

KEY = ("jobs", "scratch")


def test_a_dry_run_reports_each_deadline_once_and_keeps_the_last() -> None:
    moment = [T0 + datetime.timedelta(seconds=60)]  # past its expiry: due, never used
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, [], settings=Settings.from_environ({"DRY_RUN": "true"}),
                             clock=lambda: moment[0])
    reconcile_now(reconciler, KEY)
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:WouldDelete") == 1
    claim = reconciler.claims.get(KEY)
    assert claim is not None
    first = claim.reported_dry_run
    assert first is not None
    for cycle in range(1, 4):  # used again, then idle past its grace: a new deadline
        busy = pod_body(f"user-{cycle}")
        busy["metadata"]["creationTimestamp"] = (moment[0]).strftime("%Y-%m-%dT%H:%M:%SZ")
        index.by_claim[KEY] = index.in_namespace["jobs"] = [pod_view(busy)]
        reconcile_now(reconciler, KEY)
        moment[0] += datetime.timedelta(seconds=5)
        index.by_claim[KEY] = index.in_namespace["jobs"] = []
        reconcile_now(reconciler, KEY)
        moment[0] += datetime.timedelta(seconds=60)
        reconcile_now(reconciler, KEY)
        reconcile_now(reconciler, KEY)
        assert fake.calls.count("event:WouldDelete") == 1 + cycle
        assert isinstance(claim.reported_dry_run, datetime.datetime)
        assert claim.reported_dry_run > first
        first = claim.reported_dry_run
