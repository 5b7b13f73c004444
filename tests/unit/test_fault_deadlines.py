"""The fault observer's deadline rule (tests/faults/deadlines.py): users before the deadline
move it; latecomers, created after the claim was due, are counted and do not; lateness is
judged past the latest deadline a latecomer the operator may have seen could set. A
Deployment's spans above zero replicas are uses each (docs/lifecycle.md, "Workloads")."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from tests.faults.deadlines import Use, latest, settle
from tests.faults.judge import Spans

T0 = datetime.datetime(2026, 12, 3, 15, 0, 0, tzinfo=datetime.UTC)
GRACE = datetime.timedelta(seconds=4)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_no_users_means_the_expiry_deadline() -> None:
    verdict = settle(at(5), [], GRACE)
    assert verdict.deadline == at(5)
    assert verdict.users == verdict.latecomers == ()


def test_a_user_before_the_deadline_moves_it_to_its_end_plus_grace() -> None:
    verdict = settle(at(5), [Use("a", at(4), at(10))], GRACE)
    assert verdict.deadline == at(14)
    assert [use.name for use in verdict.users] == ["a"]


def test_a_pod_created_after_the_claim_was_due_is_a_latecomer() -> None:
    # Seen in the fault campaign: a claim due at 5 s, deleted (late) at 6.7 s, and a pod
    # created at 5.15 s that ended at 5.58 s. The claim was owed its deletion before it came.
    verdict = settle(at(5), [Use("late", at(5.15), at(5.58))], GRACE)
    assert verdict.deadline == at(5)
    assert [use.name for use in verdict.latecomers] == ["late"]


def test_a_chain_of_users_each_within_the_last_grace_keeps_the_claim() -> None:
    uses = [Use("b", at(12), at(20)), Use("a", at(4), at(10)), Use("c", at(23.9), at(30))]
    verdict = settle(at(5), uses, GRACE)
    assert verdict.deadline == at(34)
    assert verdict.latecomers == ()


def test_a_user_that_never_ended_leaves_no_deadline_and_takes_every_later_pod() -> None:
    uses = [Use("a", at(4), None), Use("b", at(100), at(101))]
    verdict = settle(at(5), uses, GRACE)
    assert verdict.deadline is None
    assert len(verdict.users) == 2


def test_a_pod_created_exactly_at_the_deadline_still_counts() -> None:
    verdict = settle(at(5), [Use("edge", at(5), at(6))], GRACE)
    assert verdict.deadline == at(10)


def lag(seconds: float) -> Callable[[datetime.datetime], datetime.datetime]:
    return lambda deadline: deadline + datetime.timedelta(seconds=seconds)


def test_a_latecomer_within_the_allowed_lag_may_keep_the_claim_to_its_end() -> None:
    # Seen on the real node: due at 5 s in an API server outage (allowed until 15 s); a pod
    # created at 8 s as the server came back, ended at 22 s. Kept until 26 s: not late.
    uses = [Use("seen", at(8), at(22))]
    assert settle(at(5), uses, GRACE).deadline == at(5)
    assert latest(at(5), uses, GRACE, lag(10)) == at(26)


def test_a_latecomer_after_the_allowed_lag_moves_nothing() -> None:
    uses = [Use("too-late", at(16), at(22))]
    assert latest(at(5), uses, GRACE, lag(10)) == at(5)


def test_latecomers_within_the_lag_chain_and_one_that_never_ended_leaves_no_deadline() -> None:
    uses = [Use("a", at(4), at(10)), Use("b", at(16), at(20)), Use("c", at(26), None)]
    assert settle(at(5), uses, GRACE).deadline == at(14)
    assert latest(at(5), uses, GRACE, lag(3)) is None  # b by 17 s, then c by 27 s
    assert latest(at(5), uses, GRACE, lag(1)) == at(14)  # b after 15 s: nothing moves


def _spans(*bounds: tuple[float, float | None]) -> list[Use]:
    """A Deployment's spans above zero replicas (judge.Spans), as the judge makes them uses."""
    spans = Spans()
    for began, ended in bounds:
        spans.begin("Deployment/web", at(began))
        if ended is not None:
            spans.end("Deployment/web", at(ended))
    return [Use(span.name, span.began, span.ended) for span in spans.spans["Deployment/web"]]


def test_a_deployment_at_zero_is_due_a_grace_after_its_scale_down() -> None:
    # Replicas 1 from 1 s, scaled to 0 at 4 s: due at 8 s, whatever its expiry.
    verdict = settle(at(60), _spans((1, 4)), GRACE)
    assert verdict.deadline == at(8)


def test_a_deployment_scaled_up_within_the_grace_keeps_the_claim_to_its_next_scale_down(
        ) -> None:
    uses = _spans((1, 4), (6, 9))
    assert [use.name for use in uses] == ["Deployment/web", "Deployment/web#2"]
    assert settle(at(60), uses, GRACE).deadline == at(13)
    # Scaled up only after the claim was due (8 s): a latecomer, as a pod would be.
    late = settle(at(60), _spans((1, 4), (8.5, 9)), GRACE)
    assert late.deadline == at(8)
    assert [use.name for use in late.latecomers] == ["Deployment/web#2"]


def test_a_deployment_above_zero_leaves_no_deadline() -> None:
    assert settle(at(60), _spans((1, 4), (6, None)), GRACE).deadline is None


def test_a_status_write_names_the_span_it_was_written_in() -> None:
    spans = Spans()
    spans.begin("Deployment/web", at(1))
    spans.end("Deployment/web", at(4))
    spans.begin("Deployment/web", at(6))
    assert spans.named_at("Deployment/web", at(5)) == "Deployment/web"
    assert spans.named_at("Deployment/web", at(7)) == "Deployment/web#2"
    assert spans.named_at("Deployment/db", at(7)) == "Deployment/db"  # no span: its name
