"""A namespace's budget for status writes that only say who the users are (budget.py), and
the reconciler that keeps to it: churn in one namespace's pods does not become thousands
of status writes a second that slow the API server for every other namespace."""

from __future__ import annotations

import datetime

from evc_operator.budget import UsersBudget
from evc_operator.podchanges import USERS_COALESCE
from evc_operator.users import pod_view
from tests.unit.fakes import NOW, FakeApi, drain, make, pod_body, reconcile_now

SECOND = datetime.timedelta(seconds=1)
KEY = ("jobs", "scratch")


def test_a_burst_goes_at_once_then_writes_are_spaced_in_order() -> None:
    budget = UsersBudget(rate=2, burst=3)
    assert [budget.reserve("noisy", NOW) for _ in range(5)] == [
        NOW, NOW, NOW, NOW + SECOND / 2, NOW + SECOND]
    assert budget.reserve("quiet", NOW) == NOW  # another namespace has its own budget
    # Once the reserved moments have passed, the burst is there again.
    later = NOW + 10 * SECOND
    assert [budget.reserve("noisy", later) for _ in range(3)] == [later] * 3


def test_a_change_of_users_alone_waits_for_the_budget_and_a_change_of_phase_does_not() -> None:
    clock = [NOW]
    fake = FakeApi(fresh_pods=[])
    scheduler, index = make(fake, [pod_body("a")], clock=lambda: clock[0])
    scheduler.reconciler.budget = UsersBudget(rate=1, burst=1)
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_status:InUse") == 1  # a change of phase: never budgeted

    def users(*names: str, phase: str = "Running") -> None:
        index.by_claim[KEY] = [pod_view(pod_body(name, phase)) for name in names]
        index.in_namespace["jobs"] = index.by_claim[KEY]

    clock[0] = NOW + 10 * SECOND
    users("a", "b")
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_status:InUse") == 2  # the burst
    users("a", "b", "c")
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_status:InUse") == 2  # waits: the budget is spent
    record = scheduler.claims.get(KEY)
    assert record is not None
    assert record.write_after == clock[0] + SECOND
    reconcile_now(scheduler, KEY)  # looked at again meanwhile: still its reserved moment
    assert record.write_after == clock[0] + SECOND
    clock[0] += SECOND
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_status:InUse") == 3
    assert record.view.status["users"] == 3
    # Reserved again for a further change, then the users end: Idle is written at once.
    users("a", "b")
    reconcile_now(scheduler, KEY)
    assert record.write_after is not None
    users("a", "b", phase="Succeeded")
    reconcile_now(scheduler, KEY)
    assert "patch_status:Idle" in fake.calls
    assert record.write_after is None


def test_a_claim_waiting_for_its_budget_is_decided_again_soon_not_at_every_pod_change() -> None:
    clock = [NOW]
    scheduler, _ = make(FakeApi(fresh_pods=[]), [pod_body("a")], clock=lambda: clock[0])
    drain(scheduler)
    record = scheduler.claims.get(KEY)
    assert record is not None
    scheduler.poke_for_pod("jobs", ["scratch"])
    assert scheduler.queue.waiting(KEY)  # nothing waits for the budget: at once
    drain(scheduler)
    record.write_after = NOW + 30 * SECOND
    scheduler.queue.add_after(KEY, record.write_after)
    for _ in range(12):  # a dozen pod edits
        scheduler.poke_for_pod("jobs", ["scratch"])
    assert not scheduler.queue.waiting(KEY)
    assert scheduler.queue.later.get(KEY) == NOW + USERS_COALESCE
    # Being worked on, its outcome would replace the timer: looked at again after it.
    scheduler.queue.add(KEY)
    assert [key for key, _ in scheduler.queue.take()] == [KEY]
    assert scheduler.queue.busy(KEY)
    scheduler.poke_for_pod("jobs", ["scratch"])
    assert scheduler.queue.waiting(KEY)


def test_a_record_due_for_confirmation_is_confirmed_while_a_users_write_waits() -> None:
    """InUse written 2 s after Pending is read back once 6 s have passed (confirm.py); a
    second pod joining meanwhile is a change of users alone, waiting for its budget. Left
    due, the confirmation's passed moment had the claim looked at again at once, again
    and again, until the budget's (a review's spin)."""
    clock = [NOW]
    fake = FakeApi(fresh_pods=[])
    scheduler, index = make(fake, [pod_body("a")], clock=lambda: clock[0])
    scheduler.reconciler.budget = UsersBudget(rate=0.05, burst=1)
    scheduler.reconciler.budget.reserve("jobs", NOW)  # a churning namespace: spent
    reconcile_now(scheduler, KEY)
    record = scheduler.claims.get(KEY)
    assert record is not None
    record.confirm_after = NOW + 6 * SECOND  # as a young record's write leaves it
    index.by_claim[KEY] = [pod_view(pod_body(name)) for name in ("a", "b")]
    index.in_namespace["jobs"] = index.by_claim[KEY]
    clock[0] = NOW + SECOND
    reconcile_now(scheduler, KEY)
    assert record.write_after is not None
    assert record.write_after > NOW + 7 * SECOND
    clock[0] = NOW + 7 * SECOND  # the confirmation is due; the budget's moment is not
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert fake.calls == ["read_evc"]  # confirmed as written: no write yet
    assert record.confirm_after is None
    assert scheduler.queue.later.get(KEY) == record.write_after  # not at once, again


def test_a_namespace_partly_spent_keeps_what_it_spent_when_others_are_forgotten() -> None:
    """Past a thousand namespaces, those whose budget is full again are forgotten; one
    that spent 45 of its 50 was forgotten too, and got its whole burst back."""
    budget = UsersBudget()
    for _ in range(45):
        budget.reserve("noisy", NOW)
    for number in range(1_001):
        budget.reserve(f"quiet-{number}", NOW)
    at_once = sum(budget.reserve("noisy", NOW) == NOW for _ in range(50))
    assert at_once == 5
