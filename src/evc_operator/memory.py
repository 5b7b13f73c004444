"""Give memory freed after a burst of work back to the system.

A burst (thousands of claims provisioned, deleted or resumed at once) allocates and frees
many response bodies. glibc keeps the freed pages in its heap, and the operator's resident
memory stays at the burst's high-water mark. `malloc_trim(0)` returns every free page to
the system, in milliseconds. Elsewhere (another C library) this does nothing.

Large blocks are a second case (`map_large_blocks`): glibc maps a block of 128 KiB or
more on its own, but raises that threshold to the size of the first such block freed, so
later ones come from the heap, between small blocks that live on. Each TLS connection
holds a 256 KiB read buffer (asyncio's): after a burst had opened about 300 connections,
the heap kept their buffers when the connections closed. With the threshold fixed, each
goes back to the system when its connection closes.

Those buffers are the third (`small_tls_buffers`): asyncio gives every TLS connection a
256 KiB buffer to read into, filled with zeros when the connection opens and so resident
all its life. A TLS record carries at most 16 KiB, so 16 KiB reads about a record per call:
a list page of 400 KiB takes twice the calls it took through 32 KiB, a tenth of a
millisecond more (measured), and each of the 200 to 250 connections a burst holds open
(the watches, and up to 128 requests in flight) costs 16 KiB instead of 32 KiB, or 256 KiB.
`SSLProtocol.max_size` is the class attribute asyncio reads when it makes a connection;
there is no other way to set it.
"""

from __future__ import annotations

import asyncio.sslproto
import ctypes
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_Trim = Callable[[int], int]


def _libc() -> ctypes.CDLL | None:
    """glibc, by its soname (elsewhere, e.g. musl: None, and nothing is trimmed). Not
    ctypes.util.find_library: that runs ldconfig in a subprocess, at every import."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


LIBC = _libc()  # loaded once; bench/accounted.py reads mallinfo2 through it too


def _malloc_trim() -> _Trim | None:
    trim = getattr(LIBC, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim()
M_MMAP_THRESHOLD = -3  # mallopt's parameter, from glibc's malloc.h
LARGE_BLOCK = 128 * 1024  # glibc's initial threshold


def map_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Keep glibc mapping blocks of `threshold` bytes or more on their own (returned to
    the system when freed); False where that is not possible."""
    mallopt = getattr(LIBC, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


TLS_READ_BUFFER = 16 * 1024


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Connections made from now on read TLS through a buffer of `size` bytes, not 256 KiB."""
    asyncio.sslproto.SSLProtocol.max_size = size


def release() -> bool:
    """Return the heap's free pages to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


# After a burst of at least this many reconciliations, once all is quiet, the heap's free
# pages go back to the system: at once if the last release was RELEASE_EVERY seconds ago or
# more, and again once the quiet has lasted QUIET_SECONDS. A burst's work drains the queue
# for moments all along; its true end is the first quiet that lasts. And the burst is not
# all freed when its work ends: the request pool's connections (up to 128, each with
# OpenSSL's state and a read buffer in the heap) close once idle for aiohttp's keep-alive
# of 15 s, at its cleanup, which runs every 15 s: by 30 s of quiet they are closed.
RELEASE_AFTER = 100
RELEASE_EVERY = 30.0
QUIET_SECONDS = 35.0
SLOW_RELEASE = 0.1  # seconds: a release that takes longer is logged at INFO


class AfterBursts:
    """Releases memory once all is quiet after a burst of work.

    The scheduler tells it of each unit of work (`worked`) and, at each turn of its loop,
    whether all is quiet (`when_quiet`), which answers how soon it wants to be asked again.
    A release that waited only for a quiet turn came in a moment's lull early in a burst,
    and the 30 s between releases then passed over the burst's end: with nothing more to
    wake the loop, what the rest of the burst left stayed resident (at 10,000 claims,
    22 MiB of glibc's heap, free but never given back: docs/benchmarks.md).
    A burst's idle connections close later still (QUIET_SECONDS): a release right after
    its last reconciliation would leave their memory resident. So a release in a lull
    leaves the end of that quiet owed one more, however little work follows it.
    """

    def __init__(self, release: Callable[[], bool] = release,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._release = release
        self._clock = clock
        self.since = 0  # units of work since memory was last released
        self._released_at = -RELEASE_EVERY
        self._quiet_since: float | None = None
        self._owed = False  # released in a lull: the end of the quiet is owed a release

    def worked(self) -> None:
        self.since += 1
        self._quiet_since = None

    def when_quiet(self, quiet: bool) -> float | None:
        """Release if it is time; the seconds after which to be asked again (None: once
        there is work again)."""
        if not quiet:
            self._quiet_since = None
            return None
        if self.since < RELEASE_AFTER and not self._owed:
            return None
        now = self._clock()
        if self._quiet_since is None:
            self._quiet_since = now
        quiet_for = now - self._quiet_since
        lull = self.since >= RELEASE_AFTER and now - self._released_at >= RELEASE_EVERY
        if not (lull or quiet_for >= QUIET_SECONDS):
            return self._quiet_since + QUIET_SECONDS - now
        began = time.perf_counter()
        self._release()
        took = time.perf_counter() - began
        log.log(logging.INFO if took >= SLOW_RELEASE else logging.DEBUG,
                "Gave the memory freed after %s reconciliations back in %.0f ms.",
                self.since, took * 1000)
        self.since, self._released_at = 0, now
        self._owed = quiet_for < QUIET_SECONDS
        if self._owed:  # the quiet's end, when the burst's connections have closed
            return self._quiet_since + QUIET_SECONDS - now
        self._quiet_since = None
        return None
