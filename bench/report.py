"""The table a run prints, and the targets it is held to. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (what, how to read it from the results, target, whether the value meets it)
Row = tuple[str, Callable[[dict[str, Any]], Any], str, Callable[[Any], bool] | None]


def _get(*path: str) -> Callable[[dict[str, Any]], Any]:
    def read(result: dict[str, Any]) -> Any:
        value: Any = result
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return read


def _pair(*path: str) -> Callable[[dict[str, Any]], Any]:
    """"p50 / p99" of a summary, or None."""
    def read(result: dict[str, Any]) -> Any:
        found = _get(*path)(result)
        return f"{found['p50']} / {found['p99']}" if found and found.get("count") else None
    return read


def _within(limit: float) -> Callable[[Any], bool]:
    return lambda value: value is not None and value <= limit


def _at_least(limit: float) -> Callable[[Any], bool]:
    return lambda value: value is not None and value >= limit


def _capacity_share(result: dict[str, Any]) -> float | None:
    """The operator's capacity over the pace a bare client writes status at."""
    found = _get("capacity_per_second")(result)
    bare = _get("bare_client", "status_patches", "per_second")(result)
    return round(found / bare, 2) if found and bare else None


ROWS: list[Row] = [
    ("reaction p50 (ms)", _get("reaction_ms", "p50"), "", None),
    ("reaction p99 (ms)", _get("reaction_ms", "p99"), "<= 1000", _within(1000)),
    ("bare watch p50 (ms)", _get("bare_watch_ms", "p50"), "", None),
    ("bare watch p99 (ms)", _get("bare_watch_ms", "p99"), "", None),
    ("reaction / bare watch, p99", _get("reaction_ratio_p99"), "<= 2", _within(2)),
    *((f"reaction: {label} p50 / p99 (ms)", _pair("reaction_split_ms", key), "", None)
      for key, label in (("to_write", "user ended to status write"),
                         ("write_answered", "status write answered"),
                         ("seen_after_answer", "answer to harness"))),
    ("reaction: operator's own, queued to written p50 / p99 (ms)",
     _pair("reaction_operator_ms"), "", None),
    ("capacity, --steps (pods/s)", _get("capacity_per_second"), "", None),
    ("capacity / bare status patches/s", _capacity_share, ">= 0.5", _at_least(0.5)),
    ("Job floor p50 (ms), --jobs", _get("job_floor_ms", "p50"), "", None),
    ("Job floor p99 (ms), --jobs", _get("job_floor_ms", "p99"), "", None),
    ("reaction - Job floor p50 (ms)", _get("reaction_over_job_floor_ms", "p50"), "", None),
    ("reaction - Job floor p99 (ms)", _get("reaction_over_job_floor_ms", "p99"), "", None),
    ("reaction / Job floor, p99", _get("reaction_ratio_job_floor_p99"), "", None),
    ("Job controller: pods per second", _get("job_pods_created", "per_second"), "", None),
    ("controller-manager requests per Job", _get("controller_manager", "requests_per_job"),
     "", None),
    ("controller-manager req/s, finishing", _get("controller_manager",
                                                 "per_second_while_finishing"), "", None),
    ("controller-manager busiest second", _get("controller_manager", "busiest_second"),
     "", None),
    ("deletion lateness p50 (ms)", _get("deletion_lateness_ms", "p50"), "", None),
    ("deletion lateness p99 (ms)", _get("deletion_lateness_ms", "p99"), "<= 1000",
     _within(1000)),
    ("deletion lateness max (ms)", _get("deletion_lateness_ms", "max"), "", None),
    *((f"lateness: {label} p50 / p99 (ms)", _pair("deletion_split_ms", key), "", None)
      for key, label in (("proof_began", "deadline to proof's read"),
                         ("proof_to_delete", "proof's read to delete"),
                         ("delete_answered", "delete answered"),
                         ("seen_after_answer", "answer to harness"))),
    *((f"lateness: operator's {label} p50 / p99 (ms)", _pair("deletion_operator_ms", key),
       "", None) for key, label in (("proof", "proof"), ("slot_wait", "slot after proof"))),
    ("claims deleted before Idle", _get("deleted_before_idle"), "0", _within(0)),
    ("RSS peak (MiB)", _get("footprint", "peak_rss_mib"), "<= 120", _within(120)),
    ("RSS idle (MiB)", _get("footprint", "idle", "rss_mib"), "<= 120", _within(120)),
    ("CPU idle (%)", _get("footprint", "idle", "cpu_percent"), "", None),
    ("RSS busy (MiB)", _get("footprint", "busy", "rss_mib"), "<= 120", _within(120)),
    ("CPU busy (%)", _get("footprint", "busy", "cpu_percent"), "", None),
    ("API writes per minute, idle", _get("api", "idle_writes_per_minute"), "0", _within(0)),
    ("API writes per claim lifetime", _get("api", "writes_per_claim_lifetime"), "<= 10",
     _within(10)),
    ("records confirmed (seal), per claim", _get("reseals", "per_claim"), "", None),
    ("API requests per claim (all)", _get("api", "requests_per_claim"), "", None),
    ("resume all countdowns (s)", _get("resume", "seconds"), "<= 30", _within(30)),
    ("records read back after the restart", _get("resume", "records_read_back"), "", None),
    ("start-up, before any claim (s)", _get("startup", "seconds"), "", None),
    ("provisioning p99 (ms)", _get("provisioning_ms", "p99"), "", None),
    ("burst: claims Pending (s)", _get("burst", "seconds"), "", None),
    ("burst: bare client's PVCs (s)", _get("burst", "bare_seconds"), "", None),
    ("burst / bare client", _get("burst", "ratio"), "<= 2", _within(2)),
    ("burst: API server CPU (s)", _get("burst", "cost", "cpu_seconds", "kube-apiserver"),
     "", None),
    ("burst: operator CPU (s)", _get("burst", "cost", "cpu_seconds", "operator"), "", None),
    ("bare client's PVCs: API server CPU (s)",
     _get("bare_client", "pvc_creates", "cost", "cpu_seconds", "kube-apiserver"), "", None),
    ("bare client status patches/s", _get("bare_client", "status_patches", "per_second"),
     "", None),
]


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    return {name: check(read(result)) for name, read, _, check in ROWS if check is not None}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'measure':34} {'value':>12}  {'target':>8}  ok"]
    for name, read, target, check in ROWS:
        value = read(result)
        mark = "" if check is None else ("yes" if check(value) else "NO")
        shown = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(f"{name:34} {shown:>12}  {target:>8}  {mark}")
    by_step = (result.get("footprint") or {}).get("rss_by_step_mib") or {}
    if by_step:
        lines.append("RSS, highest sampled in each step (MiB):")
        lines += [f"  {step[:60]:60} {mib}" for step, mib in by_step.items()]
    sockets = (result.get("footprint") or {}).get("sockets_by_step") or {}
    if sockets:
        lines.append("sockets the operator held open, most sampled in each step:")
        lines += [f"  {step[:60]:60} {count}" for step, count in sockets.items()]
    api = result.get("api") or {}
    if api.get("writes_per_claim_by_kind"):
        lines.append("writes per claim lifetime, by kind:")
        lines += [f"  {label:40} {count:g}"
                  for label, count in api["writes_per_claim_by_kind"].items()]
    if api.get("requests_by_verb"):
        lines.append("all operator requests in the run:")
        lines += [f"  {label:40} {count}" for label, count in api["requests_by_verb"].items()]
    profile = (result.get("burst") or {}).get("apiserver_profile") or {}
    if profile.get("functions"):
        lines.append(f"kube-apiserver in the burst: {profile['samples_seconds']} s of CPU "
                     f"sampled; by share, below each function (%):")
        lines += [f"  {row['cumulative_percent']:>6}  {row['function'][:90]}"
                  for row in profile["functions"][:15]]
    lines += traced_lines(result.get("memory_traced"))
    lines += traced_lines(result.get("memory_traced_resumed"),
                          when="once the restarted operator has resumed")
    lines += account_lines(result.get("memory_account"))
    lines += account_lines(result.get("memory_account_resumed"),
                           when="once the restarted operator has resumed, before it deletes")
    lines += account_lines(result.get("memory_account_deleted"),
                           when="once the restarted operator has deleted every claim")
    return "\n".join(lines)


def traced_lines(traced: dict[str, Any] | None,
                 when: str = "at the end of the idle window") -> list[str]:
    """Which Python objects are held, `when` (--trace-memory)."""
    if not traced:
        return []
    return [f"held {when}, traced (MiB): {traced['traced_mib']}"
            " (--trace-memory: timings and RSS of this run are not the operator's)",
            *(f"  {name:40} {mib}" for name, mib in traced["by_package_mib"].items()),
            *(f"  {site['kib']:>9} KiB {site['blocks']:>8} blocks  {site['where']}"
              for site in traced["sites"][:15])]


def account_lines(account: dict[str, Any] | None,
                  when: str = "at the end of the idle window") -> list[str]:
    """Where the resident memory is held, `when` (--account-memory)."""
    if not account:
        return []
    maps, arenas = account["smaps_mib"], account["pymalloc_mib"]
    lines = [f"resident {when}: {account['rss_mib']} MiB "
             "(--account-memory), by kind of mapping (MiB):",
             *(f"  {kind:40} {mib}" for kind, mib in maps.items()),
             f"pymalloc's arenas: {arenas['arenas']} MiB (at most "
             f"{arenas.get('arenas_highwater')}): objects {arenas['objects']}, "
             f"free in pools in use {arenas['free_blocks']}, empty pools "
             f"{arenas['free_pools']}, overhead {arenas['overhead']}"]
    heap = account.get("glibc_mib")
    if heap:
        lines.append(f"glibc's allocator: heap {heap['heap']} MiB (in use {heap['in_use']}, "
                     f"free {heap['free']}), blocks mapped on their own {heap['mapped']}")
    trimmed = account.get("after_trim")
    if trimmed:
        maps = trimmed["smaps_mib"]
        lines.append(f"after malloc_trim(0) then: resident {round(sum(maps.values()), 1)} MiB "
                     f"(heap {maps['heap']}, anonymous {maps['anonymous']})")
    return lines


def soak_table(result: dict[str, Any]) -> str:
    rss = result.get("rss_mib") or {}
    rows = [
        ("minutes of churn", result.get("minutes")),
        ("claims created / deleted", f"{result.get('claims_created')} / "
                                     f"{result.get('claims_deleted')}"),
        ("pods created (and removed)", result.get("pods_created")),
        ("RSS first / last (MiB)", f"{rss.get('first')} / {rss.get('last')}"),
        ("RSS min / max (MiB)", f"{rss.get('min')} / {rss.get('max')}"),
        ("RSS slope (MiB/hour)", result.get("slope_mib_per_hour")),
        ("RSS slope after warm-up (MiB/hour)", result.get("slope_after_warmup_mib_per_hour")),
        ("CPU seconds", result.get("cpu_seconds")),
        ("harness request failures", len(result.get("harness_failures") or [])),
    ]
    lines = [f"{name:36} {value}" for name, value in rows]
    growth = result.get("memory_growth_traced")
    if growth:
        lines.append(f"traced growth after warm-up (KiB)   {growth[0]['traced_growth_kib']}")
        lines += [f"  {site['kib']:>9} KiB {site['blocks']:>7} blocks  {site['where'][0]}"
                  for site in growth[1:6]]
    return "\n".join(lines)
