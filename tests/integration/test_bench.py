"""The benchmark harness, end to end at a tiny scale: it must keep working, and what it
measures about the operator's API use is exact at any scale."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main


def test_a_small_benchmark_run_measures_everything(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    evcs = 12
    assert main(["--evcs", str(evcs), "--pods", "60", "--namespaces", "3", "--rate", "6",
                 "--idle", "5", "--headroom", "15", "--workdir", str(tmp_path / "run"),
                 "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    result = document["result"]

    for measure in ("reaction_ms", "bare_watch_ms", "deletion_lateness_ms", "provisioning_ms"):
        assert result[measure]["count"] == evcs, measure
        assert result[measure]["p50"] is not None, measure
    assert result["deleted_before_idle"] == 0
    # Lateness is never negative: a claim is never deleted before its deadline.
    assert result["deletion_lateness_ms"]["p50"] >= 0
    assert result["resume"]["countdowns"] == evcs
    assert result["footprint"]["peak_rss_mib"] > 0

    api = result["api"]
    by_kind = api["writes_per_claim_by_kind"]
    assert by_kind["create persistentvolumeclaims"] == 1.0  # one PVC per claim, no retries
    assert by_kind["delete ephemeralvolumeclaims"] == 1.0  # each deleted exactly once
    assert api["idle_writes_per_minute"] == 0  # nothing changes: nothing is written
    assert api["failed"] == 0
    assert "watch pods" in api["requests_by_verb"]
    assert set(document["meets_targets"]) >= {"API writes per minute, idle"}


def test_a_small_fairness_run_measures_every_round(tmp_path: Path) -> None:
    from bench import fairness
    out = tmp_path / "fairness.json"
    assert fairness.main(["--quiet", "3", "--pace", "5", "--noisy", "8", "--noisy-pods", "4",
                          "--edits", "4", "--settle", "1", "--workdir", str(tmp_path / "run"),
                          "--out", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert list(result["rounds"]) == ["alone", "touch", "flip", "alone-after"]
    for name, measured in result["rounds"].items():
        for measure in ("provisioning_ms", "reaction_ms", "bare_watch_ms"):
            assert measured[measure]["count"] == 3, (name, measure)
    assert result["rounds"]["touch"]["noisy_edits_per_second"] > 0
    # Edits of a label no selector reads change no claim's users: nothing to reconcile
    # in the noisy namespace, only the quiet claims' own work.
    assert result["rounds"]["touch"]["reconciliations"] <= result["rounds"]["alone"][
        "reconciliations"] + 15
    assert result["rounds"]["flip"]["reconciliations"] > result["rounds"]["alone"][
        "reconciliations"]
    assert set(result["ratios"]) == {"touch", "flip", "alone-after"}
