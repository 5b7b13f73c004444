"""Memory freed after a burst goes back to the system (glibc, as in CI and the image)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from evc_operator import memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_release_gives_back_what_a_burst_left_behind() -> None:
    # Bodies of a burst: most freed, every tenth kept, so the free pages lie between
    # live ones, where the heap cannot shrink by itself.
    burst = [bytearray(4000) for _ in range(50_000)]
    kept = burst[::10]
    del burst
    before = _rss_mib()
    assert memory.release()
    after = _rss_mib()
    assert before - after > 50, (before, after)
    assert len(kept) == 5_000


def test_memory_is_released_once_quiet_after_a_burst() -> None:
    released: list[bool] = []

    def release() -> bool:
        released.append(True)
        return True

    trim = memory.AfterBursts(release, clock=lambda: 1000.0)
    for _ in range(memory.RELEASE_AFTER - 1):
        trim.worked()
    trim.when_quiet(True)
    assert released == []  # not after a burst yet
    trim.worked()
    trim.when_quiet(False)
    assert released == []  # not while work is under way
    trim.when_quiet(True)
    assert released == [True]
    for _ in range(memory.RELEASE_AFTER):
        trim.worked()
    trim.when_quiet(True)
    assert released == [True]  # not again within RELEASE_EVERY


def _after_a_burst() -> tuple[memory.AfterBursts, list[float], list[float]]:
    """An AfterBursts on a clock the test moves (`now[0]`, from 1000 s), that records when
    it released, told of a burst's work."""
    released: list[float] = []
    now = [1000.0]

    def release() -> bool:
        released.append(now[0])
        return True

    trim = memory.AfterBursts(release, clock=lambda: now[0])
    for _ in range(memory.RELEASE_AFTER):
        trim.worked()
    return trim, released, now


def test_the_end_of_a_burst_is_released_even_soon_after_a_lulls_release() -> None:
    """A lull early in a burst releases; the burst's end, less than RELEASE_EVERY later,
    must be released too, once the quiet has lasted, and the scheduler is told when to
    ask again: nothing else would wake it."""
    trim, released, now = _after_a_burst()
    assert trim.when_quiet(True) == memory.QUIET_SECONDS  # the quiet's end is owed
    assert released == [1000.0]  # the lull
    now[0] += 5
    for _ in range(memory.RELEASE_AFTER):  # the rest of the burst
        trim.worked()
    assert trim.when_quiet(False) is None  # work under way: asked again when it ends
    now[0] += 5
    again = trim.when_quiet(True)  # the burst's end, 10 s after the last release
    assert again == memory.QUIET_SECONDS
    assert released == [1000.0]
    now[0] += 1
    trim.worked()  # not quiet after all
    assert trim.when_quiet(True) == memory.QUIET_SECONDS
    now[0] += memory.QUIET_SECONDS
    assert trim.when_quiet(True) is None
    ended = 1011.0 + memory.QUIET_SECONDS
    assert released == [1000.0, ended]
    assert trim.when_quiet(True) is None  # nothing more to release
    assert released == [1000.0, ended]


@pytest.mark.parametrize("after_the_lull", [0, memory.RELEASE_AFTER - 1])
def test_a_lulls_release_leaves_the_end_of_the_quiet_owed_however_little_follows(
        after_the_lull: int) -> None:
    """A release in a lull, then less work than a burst (or none) before all is quiet: the
    connections that work used close up to 30 s later, so the end of the quiet is still
    released, once, and the scheduler is told when."""
    trim, released, now = _after_a_burst()
    trim.when_quiet(True)
    assert released == [1000.0]  # the lull
    now[0] += 2
    for _ in range(after_the_lull):
        trim.worked()
    began = now[0] if after_the_lull else 1000.0  # the quiet begins again after work
    assert trim.when_quiet(True) == pytest.approx(began + memory.QUIET_SECONDS - now[0])
    now[0] = began + memory.QUIET_SECONDS
    assert trim.when_quiet(True) is None
    assert released == [1000.0, began + memory.QUIET_SECONDS]
    now[0] += memory.QUIET_SECONDS
    assert trim.when_quiet(True) is None
    assert released == [1000.0, began + memory.QUIET_SECONDS]  # owed once, not forever


def test_the_release_waits_until_the_bursts_idle_connections_are_closed() -> None:
    """aiohttp closes a pooled connection idle for its keep-alive at a cleanup that runs
    that often: a burst's connections are all closed after twice the keep-alive."""
    loop = asyncio.new_event_loop()
    try:
        keepalive = aiohttp.TCPConnector(loop=loop)._keepalive_timeout
    finally:
        loop.close()
    assert keepalive is not None
    assert 2 * keepalive < memory.QUIET_SECONDS


_LARGE_BLOCKS = """
import sys
from evc_operator import memory
from tests.unit.test_memory import _rss_mib as rss_mib

if sys.argv[1] == "mapped":
    assert memory.map_large_blocks()
first = bytearray(256 * 1024)  # a first connection opens and closes
del first
# A burst of connections: a 256 KiB read buffer each, and small blocks of the C library's
# heap (above pymalloc's 512 bytes) that live on between them.
buffers, kept = [], []
for _ in range(400):
    buffers.append(bytearray(256 * 1024))
    kept.append(bytes(600))
before = rss_mib()
del buffers  # the connections close
print(before - rss_mib())
"""


def _given_back_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _LARGE_BLOCKS, mode], check=True,
                         capture_output=True, text=True,
                         cwd=Path(__file__).parents[2]).stdout  # where `tests` imports
    return float(out)


def test_large_blocks_go_back_to_the_system_when_freed() -> None:
    # 400 buffers of 256 KiB are 100 MiB: with the threshold fixed, nearly all of it
    # goes back as they are freed; with glibc's moving threshold, the heap keeps it.
    assert _given_back_mib("mapped") > 90
    assert _given_back_mib("default") < 10


_TLS_CONNECTIONS = """
import asyncio, socket, ssl, sys, tempfile
from pathlib import Path
import aiohttp
import pytest
from aiohttp import web
from controlplane import pki
from evc_operator import memory
from tests.unit.test_memory import _rss_mib as rss_mib

if sys.argv[1] == "small":
    memory.small_tls_buffers()
BODY = bytes(range(256)) * 4096  # 1 MiB, read through whatever buffer is set

async def main() -> None:
    held, release = asyncio.Event(), asyncio.Event()
    waiting = 0

    async def hold(_: web.Request) -> web.Response:
        nonlocal waiting
        waiting += 1
        if waiting == 100:
            held.set()
        await release.wait()
        return web.Response(body=BODY)

    cert = pki.write_serving_certificate(Path(tempfile.mkdtemp()), ["127.0.0.1"])
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, cert.with_suffix(".key"))
    client_side = ssl.create_default_context(cafile=cert)
    app = web.Application()
    app.router.add_get("/", hold)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, listener, ssl_context=server_side).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/"
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=client_side)) as session:
        async def get() -> bytes:
            async with session.get(url) as response:
                return await response.read()

        before = rss_mib()
        gets = [asyncio.create_task(get()) for _ in range(100)]
        await held.wait()
        grown = rss_mib() - before
        release.set()
        assert all(body == BODY for body in await asyncio.gather(*gets))
    await runner.cleanup()
    print(grown)

asyncio.run(main())
"""


def _grown_by_100_tls_connections_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _TLS_CONNECTIONS, mode], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[2]).stdout
    return float(out)


def test_open_tls_connections_hold_small_read_buffers() -> None:
    # 100 connections, both ends in one process: 200 read buffers, 50 MiB of them at
    # asyncio's 256 KiB, 3 MiB at 16 KiB. Every body still arrives whole.
    default = _grown_by_100_tls_connections_mib("default")
    small = _grown_by_100_tls_connections_mib("small")
    assert default - small > 30, (default, small)
    # 200 buffers of 256 KiB less 200 of TLS_READ_BUFFER: measured 47.7 MiB at 16 KiB,
    # 44.5 at 32 KiB (the rest of each connection, OpenSSL's and aiohttp's, is the same).
    assert default - small > 0.9 * 200 * (256 * 1024 - memory.TLS_READ_BUFFER) / 2**20, (
        default, small)
