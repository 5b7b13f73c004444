"""The fault scenarios' judge (tests/faults/judge.py) on audit logs written here: when a
pod ended, with and without a kubelet. The checker is checked."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults.judge import Claim, Deployment, Judge, Pod, Report

NS = "faults-1"
T0 = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC)


def entry(second: float, verb: str, resource: str, name: str, *, agent: str = "kubectl",
          subresource: str = "", phase: str | None = None) -> dict[str, Any]:
    stamp = (T0 + datetime.timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ref = {"resource": resource, "namespace": NS, "name": name}
    line: dict[str, Any] = {"stage": "ResponseComplete", "verb": verb, "userAgent": agent,
                            "stageTimestamp": stamp, "responseStatus": {"code": 200},
                            "objectRef": {**ref, **({"subresource": subresource}
                                                    if subresource else {})}}
    if phase:
        line["responseObject"] = {"status": {"phase": phase}}
    return line


def judge(tmp_path: Path, entries: list[dict[str, Any]], *, kubelet: bool,
          grace: int = 2, expiry: int = 60,
          outages: tuple[tuple[float, float], ...] = ()) -> Report:
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    report = Report(seed=1, namespace=NS)
    claim = Claim("claim-0", expiry=expiry, grace=grace, created=T0)
    down = [(T0 + datetime.timedelta(seconds=began), T0 + datetime.timedelta(seconds=ended))
            for began, ended in outages]
    Judge(log, NS, [claim], [Pod("user-0", "claim-0")], {}, down, report,
          kubelet=kubelet).run(0)
    return report


def graceful_delete_then_kubelet(deleted_claim_at: float) -> list[dict[str, Any]]:
    """A running pod deleted at 5 s; its container is killed and reported Failed at 8 s,
    then the kubelet removes it; the operator deletes the claim at `deleted_claim_at`."""
    return [
        entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
        entry(0.5, "create", "pods", "user-0"),
        entry(2, "patch", "pods", "user-0", agent="kubelet/v1.37.2", subresource="status",
              phase="Running"),
        entry(5, "delete", "pods", "user-0"),
        entry(8, "patch", "pods", "user-0", agent="kubelet/v1.37.2", subresource="status",
              phase="Failed"),
        entry(8.5, "delete", "pods", "user-0", agent="kubelet/v1.37.2"),
        entry(deleted_claim_at, "delete", "ephemeralvolumeclaims", "claim-0",
              agent="evc-operator/1"),
    ]


def test_on_a_real_node_a_gracefully_deleted_pod_is_active_until_the_kubelet_ends_it(
        tmp_path: Path) -> None:
    early = judge(tmp_path, graceful_delete_then_kubelet(7.5), kubelet=True)
    assert any("while user-0 was active" in v for v in early.violations), early.violations
    in_grace = judge(tmp_path, graceful_delete_then_kubelet(9), kubelet=True)
    assert any("early" in v for v in in_grace.violations), in_grace.violations
    on_time = judge(tmp_path, graceful_delete_then_kubelet(10.2), kubelet=True)
    assert on_time.violations == []


def test_without_a_kubelet_any_status_write_or_delete_ends_a_pod(tmp_path: Path) -> None:
    # The same log read as the simulated mode reads it: the first status write (2 s) ends
    # the pod, so a deletion at 4.5 s is on time there.
    report = judge(tmp_path, graceful_delete_then_kubelet(4.5), kubelet=False)
    assert report.violations == []


def test_on_a_real_node_a_status_write_that_is_not_terminal_ends_nothing(
        tmp_path: Path) -> None:
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(0.5, "create", "pods", "user-0"),
               entry(2, "patch", "pods", "user-0", agent="kubelet/v1.37.2",
                     subresource="status", phase="Running"),
               entry(5, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1")]
    report = judge(tmp_path, entries, kubelet=True)
    assert any("while user-0 was active" in v for v in report.violations), report.violations


def test_a_latecomer_that_came_while_the_deletion_was_owed_may_keep_its_claim(
        tmp_path: Path) -> None:
    # Seed 4 on the real node: a claim due at 3 s (expiry 2 s) while the API server was
    # down (0.2 to 8 s: the deletion was allowed until 18 s); a pod for it created at 8.5 s
    # as the server came back ran until 22.6 s; the operator, which saw it, deleted the
    # claim a grace (4 s) later. Not late; much later than that still is.
    def run(deleted_at: float) -> list[str]:
        entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
                   entry(8.5, "create", "pods", "user-0"),
                   entry(10, "patch", "pods", "user-0", agent="kubelet/v1.37.2",
                         subresource="status", phase="Running"),
                   entry(22.6, "patch", "pods", "user-0", agent="kubelet/v1.37.2",
                         subresource="status", phase="Failed"),
                   entry(deleted_at, "delete", "ephemeralvolumeclaims", "claim-0",
                         agent="evc-operator/1")]
        return judge(tmp_path, entries, kubelet=True, grace=4, expiry=2,
                     outages=((0.2, 8),)).violations

    assert run(27.0) == []
    assert any("after its deadline" in v for v in run(40.0))


def test_a_pod_is_created_when_it_is_created_not_when_it_is_bound(tmp_path: Path) -> None:
    # Seed 9 on the real node: a pod for the claim created at 27.5 s, within the grace of
    # the user before it (ended at 29.8 s), bound to the node only at 81.2 s (the scheduler
    # was behind after two API server restarts), ended at 85.9 s. Its binding is a create
    # of the pod's `binding` subresource: read as its creation, it made the pod a
    # latecomer and the deletion a grace after its end look 56 s late.
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(27.5, "create", "pods", "user-0"),
               entry(81.2, "create", "pods", "user-0", agent="kube-scheduler/v1.37.2",
                     subresource="binding"),
               entry(82, "patch", "pods", "user-0", agent="kubelet/v1.37.2",
                     subresource="status", phase="Running"),
               entry(85.9, "patch", "pods", "user-0", agent="kubelet/v1.37.2",
                     subresource="status", phase="Failed"),
               entry(89.2, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1")]
    report = judge(tmp_path, entries, kubelet=True, grace=3, expiry=30)
    assert report.violations == []
    assert report.latecomers == 0


def _judge_claim(tmp_path: Path, entries: list[dict[str, Any]], pods: list[str], *,
                 grace: int, expiry: int, remaining: set[str] | None = None) -> Report:
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    report = Report(seed=1, namespace=NS)
    claim = Claim("claim-0", expiry=expiry, grace=grace, created=T0)
    Judge(log, NS, [claim], [Pod(name, "claim-0") for name in pods], {}, [], report,
          remaining=remaining).run(0)
    return report


def _operator_status(second: float, users: list[str]) -> dict[str, Any]:
    written = entry(second, "patch", "ephemeralvolumeclaims", "claim-0",
                    agent="evc-operator/1", subresource="status")
    written["responseObject"] = {"status": {"phase": "InUse" if users else "Idle",
                                            "userNames": users}}
    return written


def test_a_user_that_came_while_the_claim_was_kept_for_a_latecomer_is_judged(
        tmp_path: Path) -> None:
    """Due at 3 (expiry 2). user-0, created at 3.5, a latecomer, is named by the operator
    as a user: the claim kept for it until 9 (its end at 6, grace 3). user-1, created at 7
    while the claim was kept, still runs when the claim is deleted at 8. Judged as a
    latecomer too, it went unjudged (a review of the checker)."""
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(3.5, "create", "pods", "user-0"),
               _operator_status(3.8, ["user-0"]),
               entry(6.0, "patch", "pods", "user-0", subresource="status"),
               entry(7.0, "create", "pods", "user-1"),
               entry(8.0, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1"),
               entry(20.0, "patch", "pods", "user-1", subresource="status")]
    report = _judge_claim(tmp_path, entries, ["user-0", "user-1"], grace=3, expiry=2)
    assert "claim-0 deleted at 12:00:08.000000 while user-1 was active" in report.violations
    unseen = [e for e in entries if e["objectRef"].get("subresource") != "status"
              or e["objectRef"]["resource"] != "ephemeralvolumeclaims"]
    quiet = _judge_claim(tmp_path, unseen, ["user-0", "user-1"], grace=3, expiry=2)
    assert quiet.violations == []  # never named: a latecomer the operator need not see
    assert quiet.latecomers == 2


def test_a_claim_gone_with_no_delete_in_the_audit_log_cannot_be_judged(
        tmp_path: Path) -> None:
    """Its DELETE answered 5xx after its write (or its entry lost): taken as still there,
    and so on time, it was judged so (a review of the checker)."""
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(0.5, "create", "pods", "user-0"),
               entry(5.0, "patch", "pods", "user-0", subresource="status")]
    report = _judge_claim(tmp_path, entries, ["user-0"], grace=5, expiry=2, remaining=set())
    assert report.violations == ["claim-0 is gone, and no DELETE of the operator's is in "
                                 "the audit log: its deletion cannot be judged"]
    # One answered 5xx (the API server stopped after its write: seen in CI) is the
    # deletion, judged as any: here early, received at 6 against a deadline of 10.
    unanswered = entry(6.0, "delete", "ephemeralvolumeclaims", "claim-0",
                       agent="evc-operator/1")
    unanswered["responseStatus"] = {"code": 504}
    unanswered["requestReceivedTimestamp"] = unanswered["stageTimestamp"]
    report = _judge_claim(tmp_path, [*entries, unanswered], ["user-0"], grace=5, expiry=2,
                          remaining=set())
    assert report.violations == ["claim-0 deleted 4.00 s early"]
    on_time = dict(unanswered, stageTimestamp=entry(10.5, "x", "x", "x")["stageTimestamp"])
    report = _judge_claim(tmp_path, [*entries, on_time], ["user-0"], grace=5, expiry=2,
                          remaining=set())
    assert report.violations == ["claim-0 deleted 4.00 s early"]  # as received, not answered
    still = _judge_claim(tmp_path, [*entries, unanswered], ["user-0"], grace=5, expiry=2,
                         remaining={"claim-0"})  # there still: that DELETE did nothing
    assert not [v for v in still.violations if "early" in v]


def test_a_deletion_counts_when_the_server_received_it_and_the_first_counts(
        tmp_path: Path) -> None:
    """Received at 6.95, answered at 7.01 (after its write), due at 7: early. A second
    DELETE of a claim a finalizer holds does not hide the first (a review)."""
    first = entry(7.01, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1")
    first["requestReceivedTimestamp"] = (T0 + datetime.timedelta(seconds=6.95)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(0.5, "create", "pods", "user-0"),
               entry(5.0, "patch", "pods", "user-0", subresource="status"),
               first,
               entry(9.0, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1")]
    report = _judge_claim(tmp_path, entries, ["user-0"], grace=2, expiry=60)
    assert report.violations == ["claim-0 deleted 0.05 s early"]


KCM = "kube-controller-manager/v1.37.2"
RS = "deploy-0-5d8f7c9b4"  # the Deployment's ReplicaSet: <deployment>-<pod template hash>


def _judge_workloads(tmp_path: Path, entries: list[dict[str, Any]], *, grace: int = 3,
                     expiry: int = 60, scales: list[int] | None = None,
                     cronjobs: dict[str, str] | None = None) -> Report:
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    report = Report(seed=1, namespace=NS)
    claim = Claim("claim-0", expiry=expiry, grace=grace, created=T0)
    deployments = {"deploy-0": Deployment("claim-0", scales or [])} if scales is not None else {}
    Judge(log, NS, [claim], [], {}, [], report, deployments=deployments,
          cronjobs=cronjobs or {}).run(0)
    return report


def _deployment(scale_at: float | None = None, rs_written_at: float | None = None,
                pod_gone_at: float | None = None) -> list[dict[str, Any]]:
    """claim-0 at 0; deploy-0 (replicas 1) at 1, its ReplicaSet at 1.1 and its pod at 1.2;
    scaled to 0 at `scale_at`, its ReplicaSet scaled by its controller at `rs_written_at`,
    its pod removed at `pod_gone_at`."""
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(1, "create", "deployments", "deploy-0"),
               entry(1.1, "create", "replicasets", RS, agent=KCM),
               entry(1.15, "update", "replicasets", RS, agent=KCM, subresource="status"),
               # Its pod, named by the server (generateName): the audit log's metadata
               # does not name it; its removal does.
               entry(1.2, "create", "pods", "", agent=KCM)]
    if scale_at is not None:
        entries.append(entry(scale_at, "patch", "deployments", "deploy-0", subresource="scale"))
    if rs_written_at is not None:
        entries.append(entry(rs_written_at, "update", "replicasets", RS, agent=KCM))
    if pod_gone_at is not None:
        entries.append(entry(pod_gone_at, "delete", "pods", f"{RS}-x7k2p", agent=KCM))
    return entries


def _deleted(second: float) -> dict[str, Any]:
    return entry(second, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1")


def test_a_claim_deleted_while_its_deployment_has_replicas_is_a_violation(
        tmp_path: Path) -> None:
    report = _judge_workloads(tmp_path, [*_deployment(), _deleted(5)], scales=[])
    assert "claim-0 deleted at 12:00:05.000000 while Deployment/deploy-0 was active" in (
        report.violations)
    assert f"claim-0 deleted at 12:00:05.000000 while ReplicaSet/{RS} was active" in (
        report.violations)


def test_a_deployment_is_a_user_until_its_scale_to_zero_then_a_grace(tmp_path: Path) -> None:
    # Scaled to 0 at 5; its ReplicaSet follows at 5.1 and its pod is removed at 5.2: due
    # at 8.2 (grace 3), from the last of them.
    scaled = _deployment(scale_at=5, rs_written_at=5.1, pod_gone_at=5.2)
    early = _judge_workloads(tmp_path, [*scaled, _deleted(7.5)], scales=[0])
    assert early.violations == ["claim-0 deleted 0.70 s early"]
    on_time = _judge_workloads(tmp_path, [*scaled, _deleted(8.5)], scales=[0])
    assert on_time.violations == []
    assert on_time.lateness == [pytest.approx(0.3)]
    # Without its pod (never made, or failed and not replaced yet), the Deployment's own
    # scale-down, then its ReplicaSet's, end the use.
    alone = [e for e in scaled if e["objectRef"]["resource"] != "pods"]
    assert _judge_workloads(tmp_path, [*alone, _deleted(8.05)], scales=[0]).violations == [
        "claim-0 deleted 0.05 s early"]
    assert _judge_workloads(tmp_path, [*alone, _deleted(8.15)], scales=[0]).violations == []


def test_a_replicaset_stays_a_user_until_its_controller_scales_it(tmp_path: Path) -> None:
    # The Deployment went to 0 at 5, its ReplicaSet only at 9 (the controller behind, as
    # after an API server restart): the claim deleted at 8.5 was still used by it.
    late_rs = _deployment(scale_at=5, rs_written_at=9)
    report = _judge_workloads(tmp_path, [*late_rs, _deleted(8.5)], scales=[0])
    assert report.violations == [
        f"claim-0 deleted at 12:00:08.500000 while ReplicaSet/{RS} was active",
        "claim-0 deleted 3.50 s early"]


def test_a_deployment_pod_is_a_user_from_its_replicasets_span(tmp_path: Path) -> None:
    # Its pod, removed at 5.2 after its ReplicaSet went to 0 at 5.1, is known by its
    # removal only: a user from its ReplicaSet's span (1.1) to then.
    entries = [*_deployment(scale_at=5, rs_written_at=5.1, pod_gone_at=5.2), _deleted(5.15)]
    report = _judge_workloads(tmp_path, entries, scales=[0])
    assert report.violations == [
        f"claim-0 deleted at 12:00:05.150000 while {RS}-x7k2p was active",
        "claim-0 deleted 3.05 s early"]


def test_a_deployment_scaled_back_up_is_a_user_again_until_deleted(tmp_path: Path) -> None:
    # 1 from 1 to 4, 0 until 6, 1 again until its deletion at 12 (garbage collected: its
    # ReplicaSet removed at 12.3). A deletion at 10 is in its second span; one at 15.2
    # (grace 3) is on time.
    entries = [*_deployment(scale_at=4, rs_written_at=4.1, pod_gone_at=4.2),
               entry(6, "patch", "deployments", "deploy-0", subresource="scale"),
               entry(6.1, "update", "replicasets", RS, agent=KCM),
               entry(12, "delete", "deployments", "deploy-0"),
               entry(12.1, "patch", "replicasets", RS, agent="kube-controller-manager/gc"),
               entry(12.3, "delete", "replicasets", RS, agent=KCM)]
    during = _judge_workloads(tmp_path, [*entries, _deleted(10)], scales=[0, 1])
    assert during.violations == [
        "claim-0 deleted at 12:00:10.000000 while Deployment/deploy-0#2 was active",
        f"claim-0 deleted at 12:00:10.000000 while ReplicaSet/{RS}#2 was active",
        "claim-0 deleted 5.30 s early"]
    # Its ReplicaSet keeps its replicas until it is removed (12.3), not the GC's patch.
    assert _judge_workloads(tmp_path, [*entries, _deleted(15.2)],
                            scales=[0, 1]).violations == ["claim-0 deleted 0.10 s early"]
    assert _judge_workloads(tmp_path, [*entries, _deleted(15.4)], scales=[0, 1]).violations == []


def test_a_scale_up_after_the_claim_was_due_is_a_latecomer(tmp_path: Path) -> None:
    # Due at 7.2 (its pod removed at 4.2, grace 3); scaled up again at 7.3, then the
    # claim deleted at 7.5: it was owed its deletion before that use came (as a pod
    # created after the deadline, counted, not judged).
    entries = [*_deployment(scale_at=4, rs_written_at=4.1, pod_gone_at=4.2),
               entry(7.3, "patch", "deployments", "deploy-0", subresource="scale"),
               entry(7.35, "update", "replicasets", RS, agent=KCM), _deleted(7.5)]
    report = _judge_workloads(tmp_path, entries, scales=[0, 1])
    assert report.violations == []
    assert report.latecomers == 2  # the Deployment's second span, and its ReplicaSet's


def test_a_cronjob_is_a_user_while_it_exists(tmp_path: Path) -> None:
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(1, "create", "cronjobs", "cron-0"),
               entry(6, "delete", "cronjobs", "cron-0")]
    cron = {"cron-0": "claim-0"}
    during = _judge_workloads(tmp_path, [*entries[:2], _deleted(4)], cronjobs=cron)
    assert during.violations == [
        "claim-0 deleted at 12:00:04.000000 while CronJob/cron-0 was active"]
    assert _judge_workloads(tmp_path, [*entries, _deleted(8.5)], cronjobs=cron).violations == [
        "claim-0 deleted 0.50 s early"]
    assert _judge_workloads(tmp_path, [*entries, _deleted(9.1)], cronjobs=cron).violations == []


def test_a_job_pod_whose_creation_the_log_does_not_name_counts_from_its_job(
        tmp_path: Path) -> None:
    # The Job controller's pods have generated names, which the audit log's metadata of
    # their creation lacks: such a pod was never judged. It counts from its Job's
    # creation; here failed at 5 while its Job, finished at 4 by its condition's second,
    # is due at 7: the claim deleted at 6 was early.
    entries = [entry(0, "create", "ephemeralvolumeclaims", "claim-0"),
               entry(1, "create", "jobs", "job-0"),
               entry(1.1, "create", "pods", "", agent=KCM),
               entry(5, "patch", "pods", "job-0-abcde", subresource="status"),
               entry(6, "delete", "ephemeralvolumeclaims", "claim-0", agent="evc-operator/1")]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    report = Report(seed=1, namespace=NS)
    Judge(log, NS, [Claim("claim-0", expiry=60, grace=2, created=T0)],
          [Pod("Job/job-0", "claim-0"), Pod("job-0-abcde", "claim-0")],
          {"Job/job-0": T0 + datetime.timedelta(seconds=4)}, [], report).run(0)
    assert report.violations == ["claim-0 deleted 1.00 s early"]


def test_a_deployment_pod_named_nowhere_in_the_log_counts_when_listed(tmp_path: Path) -> None:
    # Still Pending when judged, never written nor removed: the driver lists it. Its
    # ReplicaSet's controller scaled it down only at 9 (behind: seen in seed 400, 13 s).
    entries = [*_deployment(scale_at=5), _deleted(8)]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    report = Report(seed=1, namespace=NS)
    Judge(log, NS, [Claim("claim-0", expiry=60, grace=3, created=T0)],
          [Pod(f"{RS}-x7k2p", "claim-0")], {}, [], report,
          deployments={"deploy-0": Deployment("claim-0", [0])}).run(0)
    assert report.violations == [
        f"claim-0 deleted at 12:00:08.000000 while {RS}-x7k2p was active",
        f"claim-0 deleted at 12:00:08.000000 while ReplicaSet/{RS} was active"]
