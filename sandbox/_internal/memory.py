"""Keep the long-lived processes (``par run``, ``par proxy``) inside their resident-memory budgets.

glibc gives every thread that allocates its own malloc arena (up to 8 per core), and memory freed in
one arena is not reused by another. The proxy serves each connection on a thread; under 50 concurrent
compose connections the extra arenas cost ~3 MB resident that is never returned (bench/bench_proxy.py).
Python threads run one at a time under the GIL, so sharing a couple of arenas costs no throughput.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc <malloc.h>
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arena count for threads started after this call; False where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)  # the process itself: glibc symbols resolve through it
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False


def release_free_memory() -> None:
    """Hand memory freed during start-up (policy compile checks, config parsing) back to the kernel."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
