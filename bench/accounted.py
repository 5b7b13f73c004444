"""`python -m bench.accounted [evc-operator options]`: the operator, accountable for its
resident memory.

tracemalloc (bench/traced.py) says which Python objects are alive, but not why the
resident set is larger than they are: at 10,000 claims it traced 71 MiB of objects in a
process of 155 MiB. The rest is in three places no Python object names:
- file-backed pages: the interpreter, its libraries and extension modules, as mapped;
- pymalloc's arenas (1 MiB each; objects of up to 512 bytes): an arena goes back to the
  system only once every object in it is freed, so a few long-lived objects made during
  a burst keep the memory of many short-lived ones;
- glibc's heap (larger blocks, and every C library's allocations: OpenSSL, orjson):
  what was freed stays in it until `malloc_trim` (src/evc_operator/memory.py).

On SIGUSR1 the operator writes an account of all three into the next numbered
`NN.account.json` in $BENCH_ACCOUNTS (on SIGUSR2 the same, without the trim that shows
what a release would give back: the account of a moment before a measured step must not
change what that step measures): the kernel's (`/proc/self/smaps`, by kind of
mapping), pymalloc's (`sys._debugmallocstats`) and glibc's (`mallinfo2`). Unlike tracing
it costs nothing until asked, so the run's timings and RSS stay the operator's own.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench.observe import until
from evc_operator import memory

if TYPE_CHECKING:
    from bench.operator import Operator

MIB = 2**20
_STAT = re.compile(r"^(?P<name>[#\w][^=]*?)\s*=\s*(?P<value>[\d,]+)\s*$")


def smaps(text: str) -> dict[str, float]:
    """Resident MiB of a `/proc/PID/smaps` by kind of mapping: `file` (a path), `heap`
    (glibc's main heap), `stack`, `anonymous` (no name: pymalloc's arenas, glibc's other
    arenas and large blocks, thread stacks) and `other` ([vdso] and the like)."""
    resident = {"file": 0, "heap": 0, "stack": 0, "anonymous": 0, "other": 0}
    kind = "other"
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ""
            kind = ("file" if name.startswith("/") else "heap" if name == "[heap]"
                    else "stack" if name == "[stack]" else "anonymous" if not name
                    else "other")
        elif fields[0] == "Rss:":
            resident[kind] += int(fields[1])
    return {kind: round(kib / 1024, 1) for kind, kib in resident.items()}


def pymalloc(text: str) -> dict[str, float]:
    """pymalloc's arenas, in MiB, from `sys._debugmallocstats()`'s report: `arenas` (all
    allocated), `arenas_highwater` (the most ever allocated at once), `objects` (in
    allocated blocks), `free_blocks` (free in pools in use),
    `free_pools` (pools with nothing in them) and `overhead` (headers, rounding, alignment)."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        match = _STAT.match(line.strip())
        if match and match["name"] not in stats:  # the first "Total" is the arenas'
            stats[match["name"]] = int(match["value"].replace(",", ""))
    pools = next((value for name, value in stats.items() if "unused pools" in name), 0)
    overhead = sum(value for name, value in stats.items() if name.startswith("# bytes lost"))
    arena = next((value // count for name, value in stats.items()
                  if name.endswith("bytes/arena") and (count := int(name.split()[0]))), 0)
    return {
        "arenas": round(stats.get("Total", 0) / MIB, 1),
        "arenas_highwater": round(stats.get("# arenas highwater mark", 0) * arena / MIB, 1),
        "objects": round(stats.get("# bytes in allocated blocks", 0) / MIB, 1),
        "free_blocks": round(stats.get("# bytes in available blocks", 0) / MIB, 1),
        "free_pools": round(pools / MIB, 1),
        "overhead": round(overhead / MIB, 1),
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def glibc() -> dict[str, float] | None:
    """glibc's allocator, in MiB (`mallinfo2`, every arena): `heap` (taken from the system
    for small and medium blocks), `in_use` and `free` of it, and `mapped` (blocks mapped
    on their own); None under another C library."""
    mallinfo2 = getattr(memory.LIBC, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"heap": round(info.arena / MIB, 1), "in_use": round(info.uordblks / MIB, 1),
            "free": round(info.fordblks / MIB, 1), "mapped": round(info.hblkhd / MIB, 1)}


def _debugmallocstats() -> str:
    """What `sys._debugmallocstats()` writes to the C-level stderr, captured."""
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode(errors="replace")


def account(trim: bool = True) -> dict[str, Any]:
    """This process's resident memory, by where it is held (see the module's docstring);
    with `trim`, also after the operator's own release after a burst (`memory.release`,
    a `malloc_trim(0)`): what it would give back at this moment."""
    held: dict[str, Any] = {"smaps_mib": smaps(Path("/proc/self/smaps").read_text()),
                            "pymalloc_mib": pymalloc(_debugmallocstats()),
                            "glibc_mib": glibc()}
    if trim and memory.release():
        held["after_trim"] = {"smaps_mib": smaps(Path("/proc/self/smaps").read_text()),
                              "glibc_mib": glibc()}
    return held


def _write(signal_number: int, _frame: FrameType | None) -> None:
    folder = Path(os.environ["BENCH_ACCOUNTS"])
    number = len(taken(folder))
    partial = folder / f"{number:02d}.account.part"
    partial.write_text(json.dumps(account(trim=signal_number == signal.SIGUSR1)))
    partial.rename(folder / f"{number:02d}.account.json")  # whole, or not there


def taken(folder: Path) -> list[Path]:
    """The accounts written into `folder` so far, oldest first."""
    return sorted(folder.glob("*.account.json"))


async def take(operator: Operator, folder: Path, trim: bool = True) -> dict[str, Any]:
    """Have the operator write an account into `folder` (with `trim`, also what a release
    would give back, which it then has given back); return it once written."""
    count = len(taken(folder))
    os.kill(operator.pid, signal.SIGUSR1 if trim else signal.SIGUSR2)
    await until(lambda: len(taken(folder)), count + 1, "memory account written", limit=60)
    written: dict[str, Any] = json.loads(taken(folder)[-1].read_text())
    return written


def main() -> None:
    signal.signal(signal.SIGUSR1, _write)
    signal.signal(signal.SIGUSR2, _write)
    from evc_operator.__main__ import main as operator_main
    operator_main()


if __name__ == "__main__":
    main()
