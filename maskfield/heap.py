"""How glibc's malloc serves this process's large allocations: one setting for speed, one for
measuring memory.

By default glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
`mmap` and returns it to the system when freed, and it hands freed memory at the top of its heap
back to the system once more than the trim threshold is free. A CPU training step allocates and
frees the same large tensors every step (the per-pixel field's [4096, 512] targets and
gradients, a 3DGS feature gradient of [Gaussians, D]), so each step page-faults all of them in
afresh: a 3DGS per-pixel step on the synthetic room (20000 Gaussians, one thread) took 108-135 ms
that way and 55-76 ms with the heap kept (`keep_freed_memory`), with bit-identical results (only
where the memory comes from changes; docs/architecture.md has the measurements and the memory it
costs). Torch ships no caching allocator for the CPU that would do this.

The per-pixel training and the efficiency comparison (`maskfield.cli.KEEP_HEAP_COMMANDS`) call
`keep_freed_memory()` at start; the other commands keep glibc's default, under which their large
blocks go back to the system when freed. A process that measures memory calls
`heap_for_measuring()` (`PeakMemory` in `maskfield.evaluate.cost` does), which undoes it. Both
are glibc's `mallopt`; elsewhere (macOS, musl) they do nothing and return False.
"""

from __future__ import annotations

import ctypes
import functools

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_MAX_DEFAULT = 65536  # glibc's default count of mmapped chunks
NEVER_TRIM = -1
"""M_TRIM_THRESHOLD's "never hand the top of the heap back" (mallopt(3)): any finite threshold
is a size of temporaries that would be page-faulted in again every step (a 3DGS per-pixel
gradient at 1M Gaussians is 2 GB). A job's memory goes back to the system when it exits."""
MEASURING_MMAP_THRESHOLD = 128 * 1024
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both are glibc's)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep all freed heap for reuse, so that a training
    loop's large temporaries are not page-faulted in again every step. The process's peak memory
    is what it was (what is live at once, plus the heap's fragmentation); what it frees after the
    peak stays resident until it exits. False where this is not glibc (nothing changed)."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def heap_for_measuring() -> bool:
    """Return glibc's free heap to the system, serve every allocation of 128 KiB or more by mmap
    (returned to the system when freed) and trim the heap's top again at glibc's default, so that
    the resident set's high-water mark counts what is live at once. False where this is not glibc.

    This slows work down (a mask field's training 2.3x): time nothing after it in the same process.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return (bool(libc.mallopt(M_MMAP_MAX, MMAP_MAX_DEFAULT)) and bool(libc.mallopt(M_MMAP_THRESHOLD, MEASURING_MMAP_THRESHOLD))
            and bool(libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)))
