"""Open files: the process's soft limit raised to its hard limit at start, as Go does.

Every watch holds a connection, one file descriptor, for minutes: two a namespace with
claims (its pods, its PVCs), and seven kinds of workload for the cluster or, where one
namespace is served, seven more a namespace (watched.py), besides the short
watches of proofs, the requests' pool and Kopf's own. A process's soft limit is often
1,024 while its hard limit is far higher; Go's runtime raises the soft limit to the hard
one by itself (since Go 1.19), Python does not, and past the soft limit every new
connection fails (EMFILE): about the 110th namespace. Raising it up to the hard
limit needs no privilege. With no hard limit at all, the kernel still caps it
(`fs.nr_open`, 1,048,576 by default): that is asked for instead.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

log = logging.getLogger(__name__)
NR_OPEN = 1_048_576  # Linux's default cap on a process's open files (fs.nr_open)

Limits = tuple[int, int]


def raise_soft_limit(get: Callable[[int], Limits] = resource.getrlimit,
                     set_: Callable[[int, Limits], None] = resource.setrlimit) -> int:
    """Raise the soft limit of open files to the hard one; the soft limit in force after."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    wanted = NR_OPEN if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        set_(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as error:
        log.warning("Open files: could not raise the soft limit from %d to %d (%s); each "
                    "namespace with claims holds two to nine watches open.", soft, wanted, error)
        return soft
    log.info("Open files: soft limit raised from %d to %d (each watch holds one).",
             soft, wanted)
    return wanted
