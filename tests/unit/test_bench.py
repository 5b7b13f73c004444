"""The benchmark's own arithmetic and parsing (bench/), without a cluster."""

from __future__ import annotations

import copy
import json
import math
import os
import tracemalloc
from pathlib import Path

import pytest

from bench import (
    accounted,
    apiprofile,
    audit,
    capacity,
    cost,
    elsewhere,
    fairness,
    reaction,
    report,
    stats,
    traced,
    workload,
)
from bench.__main__ import controller_args, parse
from bench.observe import Key, reseals
from bench.operator import (
    TICKS,
    Usage,
    buckets,
    by_steps,
    requests_to,
    rss_by_step,
    sockets,
    sockets_by_step,
)
from bench.scale import Scale
from evc_operator.seal import SPACING

USER = "system:serviceaccount:evc-operator:evc-operator"


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile([3.0], 99) == 3.0
    assert stats.percentile([], 50) is None


def test_slope_of_a_line_and_of_a_flat_series() -> None:
    assert stats.slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == pytest.approx(2.0)
    assert stats.slope([(0, 7.0), (1, 7.0), (2, 7.0)]) == pytest.approx(0.0)
    assert stats.slope([(1, 7.0)]) is None
    assert stats.slope([(1, 7.0), (1, 8.0)]) is None


def _entry(audit_id: str, verb: str, resource: str, *, user: str = USER,
           subresource: str | None = None, stage: str = "ResponseComplete") -> str:
    ref = {"resource": resource, "namespace": "a", "name": "x"}
    if subresource:
        ref["subresource"] = subresource
    return json.dumps({"auditID": audit_id, "stage": stage, "verb": verb,
                       "user": {"username": user}, "objectRef": ref,
                       "responseStatus": {"code": 200},
                       "requestReceivedTimestamp": "2026-11-26T10:00:00.250000Z"})


def test_audit_counts_each_request_of_the_user_once() -> None:
    lines = [
        _entry("1", "watch", "pods", stage="ResponseStarted"),
        _entry("1", "watch", "pods"),  # the same watch, when it ends
        _entry("2", "patch", "ephemeralvolumeclaims", subresource="status"),
        _entry("3", "create", "persistentvolumeclaims"),
        _entry("4", "create", "pods", user="admin"),  # the harness: not counted
        '{"auditID": "5", "verb": "cre',  # cut short by a stopped API server
        _entry("6", "create", "selfsubjectaccessreviews"),  # asks; stores nothing
    ]
    found = list(audit.requests(lines, USER))
    assert [request.label for request in found] == [
        "watch pods", "patch ephemeralvolumeclaims/status", "create persistentvolumeclaims",
        "create selfsubjectaccessreviews"]
    assert [request.write for request in found] == [False, True, True, False]
    assert found[0].at == pytest.approx(1795687200.25)
    assert audit.tally(found) == {"watch pods": 1, "patch ephemeralvolumeclaims/status": 1,
                                  "create persistentvolumeclaims": 1,
                                  "create selfsubjectaccessreviews": 1}
    assert audit.between(found, 0, found[0].at) == []


def test_deletion_split_times_each_part_from_the_audit_log() -> None:
    lines = [json.dumps({"auditID": str(n), "verb": verb, "user": {"username": USER},
                         "objectRef": {"resource": resource, "namespace": "a",
                                       "name": name},
                         "requestURI": uri, "responseStatus": {"code": code},
                         "requestReceivedTimestamp": f"2026-11-26T10:00:{at}Z",
                         "stageTimestamp": f"2026-11-26T10:00:{done}Z"})
             for n, (verb, resource, name, uri, code, at, done) in enumerate([
                 ("list", "pods", "", "/api/v1/namespaces/a/pods?limit=1", 200,
                  "10.100000", "10.120000"),  # the proof of the deadline at 10 s
                 ("list", "pods", "", "/api/v1/namespaces/a/pods", 200,
                  "10.500000", "10.900000"),  # a full list: no proof's read
                 ("list", "pods", "", "/api/v1/namespaces/a/pods?limit=1", 200,
                  "10.950000", "10.960000"),  # a later proof's read: not x's
                 ("delete", "ephemeralvolumeclaims", "x", "", 200,
                  "11.000000", "11.050000"),
                 ("delete", "ephemeralvolumeclaims", "y", "", 409,  # refused: not a deletion
                  "11.100000", "11.110000"),
                 ("list", "pods", "", "/api/v1/namespaces/a/pods?limit=1", 200,
                  "12.000000", "12.010000")])]  # a later proof: not x's
    deadline = audit._seconds("2026-11-26T10:00:10Z")
    split = audit.deletion_split(list(audit.requests(lines, USER)),
                                 {("a", "x"): deadline, ("a", "y"): deadline},
                                 {("a", "x"): deadline + 1.25})
    assert {part: [round(value, 3) for value in values]
            for part, values in split.items()} == {
        "proof_began": [0.1], "proof_to_delete": [0.9], "delete_answered": [0.05],
        "seen_after_answer": [0.2]}


def test_reaction_split_times_the_operators_next_status_write() -> None:
    lines = [json.dumps({"auditID": str(n), "verb": "patch", "user": {"username": USER},
                         "objectRef": {"resource": "ephemeralvolumeclaims", "namespace": "a",
                                       "name": "x", "subresource": "status"},
                         "responseStatus": {"code": 200},
                         "requestReceivedTimestamp": f"2026-11-26T10:00:{at}Z",
                         "stageTimestamp": f"2026-11-26T10:00:{done}Z"})
             for n, (at, done) in enumerate([("05.000000", "05.010000"),  # its InUse
                                             ("10.300000", "10.340000"),  # its Idle
                                             ("12.000000", "12.010000")])]  # later
    ended = audit._seconds("2026-11-26T10:00:10Z")
    split = audit.splits(list(audit.requests(lines, USER)), {("a", "x"): ended},
                         {("a", "x"): {"Idle": ended + 0.4}}, {}, {})
    assert {part: [round(value, 3) for value in values]
            for part, values in split["reaction_split_ms"].items()} == {
        "to_write": [0.3], "write_answered": [0.04], "seen_after_answer": [0.06]}
    assert split["deletion_split_ms"]["delete_answered"] == []


def test_report_marks_missed_targets() -> None:
    result = {"reaction_ms": {"p99": 1500.0}, "reaction_ratio_p99": 2.0,
              "api": {"idle_writes_per_minute": 0.0, "writes_per_claim_lifetime": 5.0}}
    verdicts = report.verdicts(result)
    assert verdicts["reaction p99 (ms)"] is False
    assert verdicts["reaction / bare watch, p99"] is True
    assert verdicts["API writes per minute, idle"] is True
    assert verdicts["API writes per claim lifetime"] is True
    assert verdicts["resume all countdowns (s)"] is False  # not measured is not met
    assert "NO" in report.table(result).splitlines()[2]


def test_traced_growth_names_the_site_that_grew(tmp_path: Path) -> None:
    kept: list[bytes] = []
    tracemalloc.start(traced.FRAMES)
    try:
        tracemalloc.take_snapshot().dump(str(tmp_path / "00.snapshot"))
        kept.extend(bytes(1024) for _ in range(2000))  # 2 MB that stay: a "leak"
        tracemalloc.take_snapshot().dump(str(tmp_path / "01.snapshot"))
    finally:
        tracemalloc.stop()
    growth = traced.growth(tmp_path / "00.snapshot", tmp_path / "01.snapshot")
    assert growth[0]["traced_growth_kib"] >= 2000
    top = growth[1]
    assert top["kib"] >= 2000
    assert top["blocks"] >= 2000
    assert top["where"][0].startswith("test_bench.py:")
    table = report.soak_table({"memory_growth_traced": growth})
    assert "test_bench.py:" in table


def _deep_copy(value: dict[str, list[int]]) -> dict[str, list[int]]:
    return copy.deepcopy(value)  # a generic helper of the standard library allocates


def test_traced_breakdown_charges_what_is_held_to_the_line_that_asked_for_it(
        tmp_path: Path) -> None:
    tracemalloc.start(traced.FRAMES)
    try:
        held = [_deep_copy({"numbers": list(range(50))}) for _ in range(3000)]
        tracemalloc.take_snapshot().dump(str(tmp_path / "00.snapshot"))
    finally:
        tracemalloc.stop()
    found = traced.breakdown(tmp_path / "00.snapshot")
    assert held
    top = found["sites"][0]
    # Charged to this file's line, not to copy.py's, which did the allocating.
    assert top["where"].startswith("test_bench.py:")
    assert top["kib"] >= 1000
    assert found["traced_mib"] >= top["kib"] / 1024
    table = report.table({"memory_traced": found, "memory_traced_resumed": found})
    assert table.count(f"blocks  {top['where']}") == 2  # once in each
    assert "held once the restarted operator has resumed, traced (MiB)" in table


BODIES, BODY = 20_000, 4000  # a burst's response bodies, of which every tenth is kept


def _freed_mib(kept: list[bytearray]) -> float:
    """What a burst of BODIES bodies freed, keeping `kept`: this test's input, in MiB."""
    return (BODIES - len(kept)) * BODY / 2**20


def test_the_memory_account_of_this_process_adds_up() -> None:
    held = [bytes(100) for _ in range(20000)]  # about 2.6 MiB of small objects
    # And what a burst leaves in glibc's heap: free pages between live blocks, which the
    # account's own trim gives back (in a long test run the heap holds much of it).
    burst = [bytearray(BODY) for _ in range(BODIES)]
    kept = burst[::10]
    during = accounted.glibc()
    del burst
    account = accounted.account()
    rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    arenas, maps = account["pymalloc_mib"], account["smaps_mib"]
    assert held
    assert kept
    assert arenas["objects"] >= 2.5
    assert arenas["arenas"] >= arenas["objects"] + arenas["free_blocks"] + arenas["free_pools"]
    assert arenas["arenas_highwater"] >= arenas["arenas"]
    assert maps["file"] > 0
    assert maps["anonymous"] + maps["heap"] > arenas["objects"]
    heap = account["glibc_mib"]
    assert heap is not None
    assert during is not None
    assert heap["heap"] >= heap["in_use"]
    # The burst's freed bodies, counted free before the trim (as a fraction of this
    # test's own input: the account's own reading allocates a little in between).
    freed = _freed_mib(kept)
    assert heap["free"] - during["free"] >= 0.9 * freed, (during, heap, freed)
    assert during["in_use"] - heap["in_use"] >= 0.9 * freed, (during, heap, freed)
    trimmed = account["after_trim"]["smaps_mib"]
    # The trim gave the burst's pages back: whole pages of nine freed bodies between two
    # kept ones are well over half of them.
    assert maps["heap"] - trimmed["heap"] > freed / 2, (maps, trimmed, freed)
    # Read after the trim, as the RSS: the mappings' sum is the RSS read then, not the
    # one before the trim.
    assert abs(sum(trimmed.values()) - rss) < abs(sum(maps.values()) - rss), (
        maps, trimmed, rss)
    table = report.table({"memory_account": {"rss_mib": rss, **account},
                          "memory_account_deleted": {"rss_mib": rss, **account}})
    assert table.count("pymalloc's arenas:") == 2
    assert "resident once the restarted operator has deleted every claim: " in table
    assert "glibc's allocator: heap" in table
    assert "after malloc_trim(0) then: resident" in table


def test_an_untrimmed_account_leaves_the_heap_as_it_was() -> None:
    burst = [bytearray(BODY) for _ in range(BODIES)]
    kept = burst[::10]
    del burst
    account = accounted.account(trim=False)
    assert kept
    assert "after_trim" not in account
    heap = accounted.smaps(Path("/proc/self/smaps").read_text())["heap"]
    # Still resident: nothing was given back (a trim gives back over half of what the
    # burst freed, as the test above shows: a threshold from this test's own input).
    assert heap > account["smaps_mib"]["heap"] - _freed_mib(kept) / 2, (
        account["smaps_mib"], heap)
    table = report.table({"memory_account_resumed": {"rss_mib": 1.0, **account}})
    assert "resident once the restarted operator has resumed, before it deletes: " in table
    assert "after malloc_trim(0)" not in table


def test_the_sockets_of_a_process_are_counted() -> None:
    import socket
    before = sockets(os.getpid())
    pair = socket.socketpair()
    try:
        assert sockets(os.getpid()) == before + 2
    finally:
        for end in pair:
            end.close()
    assert sockets(os.getpid()) == before
    assert sockets(2**22 + 7) == 0  # no such process


def test_the_peak_is_charged_to_the_step_it_was_sampled_in() -> None:
    def usage(mib: int) -> Usage:
        return Usage(rss=mib * 2**20, peak_rss=mib * 2**20, cpu=0.0)

    samples = [(5.0, usage(50)), (10.0, usage(90)), (11.0, usage(120)), (20.0, usage(100)),
               (31.0, usage(80))]
    began = [(10.0, "burst"), (20.0, "idle"), (30.0, "restart")]
    found = rss_by_step(samples, began)
    assert found == {"burst": 120.0, "idle": 100.0, "restart": 80.0}  # before any: none
    table = report.table({"footprint": {"rss_by_step_mib": found}})
    assert "burst" in table
    assert "120.0" in table


def test_the_most_sockets_are_charged_to_the_step_they_were_sampled_in() -> None:
    def usage(count: int) -> Usage:
        return Usage(rss=0, peak_rss=0, cpu=0.0, sockets=count)

    samples = [(5.0, usage(300)), (10.0, usage(40)), (11.0, usage(140)), (20.0, usage(0)),
               (31.0, usage(60))]
    found = sockets_by_step(samples, [(10.0, "burst"), (20.0, "idle"), (30.0, "restart")])
    assert found == {"burst": 140, "idle": 0, "restart": 60}
    table = report.table({"footprint": {"sockets_by_step": found}})
    assert "sockets the operator held open" in table
    assert "140" in table


def test_the_timeline_keeps_every_sample_from_the_first_steps_start() -> None:
    samples = [(100.0, Usage(rss=50 * 2**20, peak_rss=0, cpu=0.0, sockets=3)),
               (101.5, Usage(rss=60 * 2**20, peak_rss=0, cpu=0.0, sockets=130))]
    found = by_steps(samples, [(100.0, "start-up"), (101.0, "burst")])
    assert found["timeline"] == [(0.0, 50.0, 3), (1.5, 60.0, 130)]
    assert found["steps_began_s"] == {"start-up": 0.0, "burst": 1.0}
    assert found["rss_by_step_mib"] == {"start-up": 50.0, "burst": 60.0}
    assert found["sockets_by_step"] == {"start-up": 3, "burst": 130}


def test_reaction_is_held_against_the_floors_of_the_same_claims() -> None:
    keys: list[Key] = [("ns", f"claim-{i}") for i in range(100)]
    sent = {key: 100.0 for key in keys}
    idle = {key: 100.5 for key in keys}
    succeeded = {key: 100.25 for key in keys[:99]}  # one pod's Succeeded never seen
    complete = {key: 100.4 for key in keys}
    found = reaction.reaction(sent, idle, succeeded, complete=complete)
    assert found["reaction_ms"]["p99"] == 500.0
    assert found["bare_watch_ms"]["count"] == 99
    assert found["reaction_ratio_p99"] == 2.0
    assert found["reaction_ratio_job_floor_p99"] == 1.25
    assert found["reaction_over_job_floor_ms"]["p50"] == 100.0
    assert "stages" not in found
    plain = reaction.reaction(sent, idle, {})
    assert plain["reaction_ratio_p99"] is None  # no floor: no ratio
    assert "job_floor_ms" not in plain
    staged = reaction.reaction(sent, idle, succeeded, stage_of={key: 50.0 for key in keys})
    assert staged["capacity_per_second"] == 50.0  # 2x the floor: within "at most 2x"
    slower = reaction.reaction(sent, {key: 100.6 for key in keys}, succeeded,
                               stage_of={key: 50.0 for key in keys})
    assert slower["capacity_per_second"] is None  # 2.4x


def test_smaps_are_summed_by_kind_of_mapping() -> None:
    text = "\n".join([
        "55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234 /usr/bin/python3.11", "Rss: 2048 kB",
        "55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0 [heap]", "Rss: 1024 kB",
        "7f0000000000-7f0000100000 rw-p 00000000 00:00 0", "Rss: 512 kB",
        "Pss: 512 kB",
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]", "Rss: 132 kB",
        "7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0 [vdso]", "Rss: 8 kB"])
    assert accounted.smaps(text) == {"file": 2.0, "heap": 1.0, "stack": 0.1,
                                     "anonymous": 0.5, "other": 0.0}


def test_the_account_may_only_be_asked_of_an_untraced_main_run() -> None:
    assert parse(["--account-memory"]).account_memory
    with pytest.raises(SystemExit):
        parse(["--account-memory", "--trace-memory"])


PPROF_TOP = """File: kube-apiserver
Type: cpu
Duration: 20.07s, Total samples = 24.20s (120.58%)
      flat  flat%   sum%        cum   cum%
         0     0%     0%      9.85s 40.70%  k8s.io/apiserver/pkg/endpoints/handlers.finishRequest
     0.13s  0.54% 41.86%      4.58s 18.93%  runtime.mallocgc
     0.92s  3.80%  9.05%      2.44s 10.08%  runtime.tryDeferToSpanScan
     0.01s 0.041%  8.18%      1.91s  7.89%  k8s.io/apiextensions-apiserver/pkg/apiserver.ServeHTTP
"""


def test_the_api_servers_profile_keeps_its_samples_and_kubernetes_own_functions() -> None:
    found = apiprofile.parse_top(PPROF_TOP, top=2)
    assert found["samples_seconds"] == 24.2
    assert found["functions"] == [
        {"function": "k8s.io/apiserver/pkg/endpoints/handlers.finishRequest",
         "self_percent": 0.0, "cumulative_percent": 40.7},
        {"function": "runtime.mallocgc", "self_percent": 0.54, "cumulative_percent": 18.93},
    ]  # the collector's helpers are not kept; the first `top` rows only
    table = report.table({"burst": {"apiserver_profile": found}})
    assert "40.7  k8s.io/apiserver" in table


def test_profiling_is_asked_of_the_api_server_only_when_a_run_profiles_it() -> None:
    assert parse(["--profile-apiserver", "30"]).profile_apiserver == 30
    assert parse([]).profile_apiserver == 0


def test_a_job_user_is_one_pod_not_retried_that_mounts_its_claim() -> None:
    job = workload.user_job("user-00001", "claim-00001")
    spec = job["spec"]
    assert (job["kind"], spec["completions"], spec["backoffLimit"]) == ("Job", 1, 0)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]] == ["claim-00001"]


def test_only_a_job_run_raises_the_controller_managers_client_limits() -> None:
    assert controller_args(parse([])) == []
    assert controller_args(parse(["--jobs"])) == [
        "--kube-api-qps=1000", "--kube-api-burst=2000", "--concurrent-job-syncs=20"]
    assert controller_args(parse(["--jobs", "--controller-qps", "20"]))[:2] == [
        "--kube-api-qps=20", "--kube-api-burst=40"]
    with pytest.raises(SystemExit):
        parse(["--jobs", "--soak", "1"])


def test_api_cost_per_claim_and_while_idle() -> None:
    def request(verb: str, resource: str, at: float, code: int = 200) -> audit.Request:
        return audit.Request(verb=verb, resource=resource, code=code, at=at)
    found = [request("list", "pods", 0), request("create", "persistentvolumeclaims", 1),
             request("create", "persistentvolumeclaims", 2),
             request("patch", "ephemeralvolumeclaims/status", 65, code=409),
             request("watch", "jobs", 70)]
    cost = audit.cost(found, claims=2, idle_start=5, idle_end=65)
    assert cost["requests_per_claim"] == 2.5
    assert cost["writes_per_claim_lifetime"] == 1.5
    assert cost["writes_per_claim_by_kind"] == {"create persistentvolumeclaims": 1.0,
                                                "patch ephemeralvolumeclaims/status": 0.5}
    assert cost["idle_writes_per_minute"] == 0  # the window ends before the patch
    assert cost["failed"] == 1
    assert audit.cost(found, claims=2, idle_start=0, idle_end=60)["idle_writes_per_minute"] == 2


def test_claims_read_back_are_the_gets_of_one_claim_from_the_moment_on() -> None:
    found = [audit.Request(verb=verb, resource=resource, code=200, at=at)
             for verb, resource, at in (("get", "ephemeralvolumeclaims", 5),
                                        ("get", "ephemeralvolumeclaims", 10),
                                        ("get", "ephemeralvolumeclaims", 12),
                                        ("list", "ephemeralvolumeclaims", 12),
                                        ("get", "persistentvolumeclaims", 12),
                                        ("patch", "ephemeralvolumeclaims/status", 13))]
    assert audit.claims_read(found, 10) == 2
    assert audit.claims_read(found, 0) == 3
    assert audit.claims_read(found, 20) == 0


def test_controller_manager_requests_per_job_and_per_second() -> None:
    found = [audit.Request(verb="create", resource="pods", code=201, at=10.1),
             audit.Request(verb="update", resource="jobs/status", code=200, at=10.9),
             audit.Request(verb="patch", resource="pods", code=200, at=12.5),
             audit.Request(verb="update", resource="jobs/status", code=200, at=13.0)]
    cost = audit.per_job(found, jobs=2, busy_start=12, busy_end=14)
    assert cost["requests_per_job"] == 2.0
    assert cost["requests_per_job_by_kind"] == {"update jobs/status": 1.0,
                                                "create pods": 0.5, "patch pods": 0.5}
    assert cost["per_second_while_finishing"] == 1.0
    assert cost["busiest_second"] == 2  # two in the second from 10 s
    assert audit.busiest_second([]) == 0
def test_fairness_ratios_are_of_the_same_run_and_none_without_a_base() -> None:
    alone = {"provisioning_ms": {"p50": 100.0, "p99": 200.0},
             "reaction_ms": {"p50": 50.0, "p99": None}}
    noisy = {"provisioning_ms": {"p50": 150.0, "p99": 700.0},
             "reaction_ms": {"p50": 75.0, "p99": 90.0}}
    assert fairness.ratios(alone, noisy) == {
        "provisioning_p50": 1.5, "provisioning_p99": 3.5, "reaction_p50": 1.5,
        "reaction_p99": None}


def test_fairness_options_name_the_rounds_and_refuse_unknown_noise(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert fairness.parse(["--noise", "flip"]).noise == ("flip",)
    assert fairness.parse([]).noise == ("touch", "flip")
    with pytest.raises(SystemExit):
        fairness.parse(["--noise", "loud"])
    assert "touch and flip" in capsys.readouterr().err


def test_stages_share_the_pods_and_capacity_is_the_last_pace_within_the_ratio() -> None:
    assert capacity.stages(10, [50, 100, 200]) == [(50, 4), (100, 3), (200, 3)]
    assert capacity.finishing_seconds(10, 5, []) == 2
    assert capacity.finishing_seconds(400, 5, [100, 200]) == 3
    keys = {("ns", f"c{n}"): pace for n, pace in enumerate([50, 50, 100, 100, 200, 200])}
    reaction = {key: 0.010 if pace < 200 else 0.050 for key, pace in keys.items()}
    floor = dict.fromkeys(keys, 0.010)
    stages = capacity.by_stage(reaction, floor, keys)
    assert [stage["ratio_p99"] for stage in stages] == [1.0, 1.0, 5.0]
    assert capacity.capacity(stages) == 100
    # A slower pace that missed makes the faster ones not count.
    assert capacity.capacity([{"per_second": 50, "ratio_p99": 3.0},
                              {"per_second": 100, "ratio_p99": 1.0}]) is None


def test_report_holds_the_run_to_the_capacity_and_burst_goals() -> None:
    result = {"capacity_per_second": 100.0, "burst": {"ratio": 2.5},
              "bare_client": {"status_patches": {"per_second": 400.0}}}
    verdicts = report.verdicts(result)
    assert verdicts["capacity / bare status patches/s"] is False  # 0.25, the goal 0.5
    assert verdicts["burst / bare client"] is False


def test_requests_are_summed_by_verb_and_resource_and_only_growth_is_kept() -> None:
    before = cost.requests_by_kind(
        'apiserver_request_total{code="201",component="apiserver",resource="events",'
        'scope="namespace",subresource="",verb="POST",version="v1"} 5\n'
        '# HELP something else\n')
    after = cost.requests_by_kind(
        'apiserver_request_total{code="201",component="apiserver",resource="events",'
        'scope="namespace",subresource="",verb="POST",version="v1"} 25\n'
        'apiserver_request_total{code="409",component="apiserver",resource="events",'
        'scope="namespace",subresource="",verb="POST",version="v1"} 7\n'
        'apiserver_request_total{code="200",component="apiserver",'
        'resource="ephemeralvolumeclaims",scope="namespace",subresource="status",'
        'verb="PATCH",version="v1"} 40\n'
        'apiserver_request_total{code="200",component="apiserver",path="/metrics",'
        'verb="GET"} 3\n')
    assert after == {"POST events": 32.0, "PATCH ephemeralvolumeclaims/status": 40.0,
                     "GET /metrics": 3.0}
    assert cost.difference(before, after, digits=0, least=10) == {
        "PATCH ephemeralvolumeclaims/status": 40.0, "POST events": 27.0}


def test_cpu_is_read_for_the_control_plane_the_operator_and_the_harness(
        tmp_path: Path) -> None:
    def process(pid: int, command: str, user: int, system: int) -> None:
        folder = tmp_path / str(pid)
        folder.mkdir()
        (folder / "comm").write_text(command + "\n")
        fields = ["S"] + ["0"] * 10 + [str(user), str(system)] + ["0"] * 5
        (folder / "stat").write_text(f"{pid} ({command}) " + " ".join(fields))

    process(10, "kube-apiserver", 300, 100)
    process(11, "python3", 50, 50)  # the operator, by its pid
    process(12, "bash", 999, 999)  # anything else is left out
    process(os.getpid(), "python3", 10, 0)
    (tmp_path / "self").mkdir()
    found = cost.cpu_by_process(11, proc=tmp_path)
    assert found == {"kube-apiserver": 400 / TICKS, "operator": 100 / TICKS,
                     "harness": 10 / TICKS}


def test_reseals_count_the_claims_in_use_within_the_seals_spacing_of_pending() -> None:
    spacing = SPACING.total_seconds()
    phases: dict[Key, dict[str, float]] = {
        ("ns", "soon"): {"Pending": 100.0, "InUse": 100.0 + spacing - 0.5},
        ("ns", "later"): {"Pending": 100.0, "InUse": 100.0 + spacing + 0.5},
        ("ns", "unused"): {"Pending": 100.0},
        ("ns", "idle"): {"Pending": 100.0, "InUse": 200.0, "Idle": 201.0},
    }
    assert reseals(phases) == {"within_seconds": spacing, "claims": 1, "per_claim": 0.25}
    assert reseals({})["per_claim"] is None
    row = next(line for line in report.table({"reseals": reseals(phases)}).splitlines()
               if line.startswith("records confirmed (seal), per claim"))
    assert row.split()[-1] == "0.25"


EXPOSITION = """# HELP evc_reaction_seconds From noticing a change to having acted on it.
# TYPE evc_reaction_seconds histogram
evc_reaction_seconds_bucket{le="0.1"} 50.0
evc_reaction_seconds_bucket{le="1.0"} 90.0
evc_reaction_seconds_bucket{le="2.0"} 100.0
evc_reaction_seconds_bucket{le="+Inf"} 100.0
evc_reaction_seconds_count 100.0
evc_reaction_seconds_sum 41.0
evc_reaction_seconds_created 1.7e9
"""


def test_the_operators_own_share_of_the_reaction_is_read_from_its_histogram() -> None:
    before = {0.1: 10.0, 1.0: 10.0, 2.0: 10.0, float("inf"): 10.0}  # before the users ended
    after = buckets(EXPOSITION, "evc_reaction_seconds")
    assert after == {0.1: 50.0, 1.0: 90.0, 2.0: 100.0, float("inf"): 100.0}
    own = reaction.own_share(before, after)
    # 90 observations meanwhile: 40 within 0.1 s, 40 more within 1 s, 10 within 2 s.
    assert own["count"] == 90
    assert own["p50"] == pytest.approx(100 + 900 * (45 - 40) / 40)  # ms, in (0.1, 1]
    assert own["p99"] == pytest.approx(1000 + 1000 * (89.1 - 80) / 10)  # in (1, 2]
    row = next(line for line in report.table({"reaction_operator_ms": own}).splitlines()
               if line.startswith("reaction: operator's own"))
    assert f"{own['p50']} / {own['p99']}" in row


def test_a_percentile_past_the_last_bound_is_that_bound_and_none_without_observations() -> None:
    assert stats.bucket_percentile({1.0: 5.0, float("inf"): 10.0}, 99) == 1.0
    assert stats.bucket_percentile({1.0: 0.0, float("inf"): 0.0}, 50) is None
    assert stats.bucket_percentile({}, 50) is None


def test_the_operators_requests_to_a_resource_are_summed_over_verbs_and_answers() -> None:
    text = ('# TYPE evc_api_requests_total counter\n'
            'evc_api_requests_total{code="201",resource="events",verb="POST"} 7.0\n'
            'evc_api_requests_total{code="500",resource="events",verb="POST"} 1.0\n'
            'evc_api_requests_total{code="201",resource="persistentvolumeclaims",verb="POST"} 3.0\n'
            'evc_api_requests_created{code="201",resource="events",verb="POST"} 1.7e9\n')
    assert requests_to(text, "events") == 8.0
    assert requests_to(text, "persistentvolumeclaims") == 3.0
    assert requests_to(text, "pods") == 0.0


def test_a_change_elsewhere_costs_the_cpu_over_the_still_rounds_for_as_long() -> None:
    still = {"seconds": 30.0, "edits": 0, "operator_cpu_seconds": 0.3}
    busy = {"seconds": 60.0, "edits": 3000, "operator_cpu_seconds": 1.5}
    assert elsewhere.per_change(still, busy) == 300.0  # (1.5 - 0.6) s / 3,000 changes
    assert elsewhere.per_change(still, still) is None
    job = elsewhere.suspended_job("job-1")
    assert job["spec"]["suspend"] is True  # no pods: its only changes are the harness's
    with pytest.raises(SystemExit):
        elsewhere.parse(["--edits", "0"])


def test_the_grace_period_leaves_each_stage_its_slack_and_the_restart_its_headroom() -> None:
    """Users end through the stages (12 pods at 3, 6 and 12 a second: 7/3 s), each
    stage may take `step_slack` more to be seen through, then the restart is timed in
    `headroom`: no deadline before that."""
    tiny = Scale(evcs=12, pods=60, rate=6, steps=(3, 6, 12), step_slack=5, headroom=15)
    assert tiny.grace_period == math.ceil(7 / 3 + 3 * 5 + 15)
    assert Scale(evcs=12, pods=60, rate=6, steps=(3, 6, 12), headroom=15).grace_period == \
        math.ceil(7 / 3 + 3 * 60 + 15)
    assert Scale(evcs=12, pods=60, rate=6, headroom=15).grace_period == 2 + 15
