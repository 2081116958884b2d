"""The work an archetype request does: CPU time and resident memory.

Kept apart from the task servers so the pre-forking server (``prefork.py``) can use it without
importing aiohttp: every module its master imports is memory each worker starts with.
"""

from __future__ import annotations

import ctypes
import mmap
import time

MIB = 1024 * 1024
PAGE = mmap.PAGESIZE
HUGE_PAGE = 2 * MIB


def burn_cpu(ms: float) -> None:
    """Spend ``ms`` of this thread's CPU time. Thread CPU time, not wall time, so a throttled
    task does the same work per request and takes longer, as a real one would."""
    end = time.thread_time() + ms / 1000.0
    spin = 0
    while time.thread_time() < end:
        for _ in range(200):
            spin += 1


def touched_block(size_bytes: int) -> mmap.mmap:
    """Private anonymous memory written page by page so it is resident, returned to the OS on close.

    The block is aligned to and advised for transparent huge pages where the kernel offers them:
    faulting in 4 KiB pages one by one costs several times more CPU than the request's own work.
    """
    block = mmap.mmap(-1, size_bytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = ctypes.addressof(ctypes.c_char.from_buffer(block))
    start = (-address) % HUGE_PAGE
    try:
        block.madvise(mmap.MADV_HUGEPAGE, start, size_bytes)
    except (AttributeError, OSError):
        pass
    for offset in range(start, start + size_bytes, PAGE):
        block[offset] = 1
    return block
