"""Keep freed CPU memory in the process for the next step instead of handing it back to the kernel.

glibc's malloc serves blocks over its mmap threshold (32 MiB at most) with fresh mmaps and trims the heap's free
top, so on CPU every step page-faults its large activations back in: about 250k minor faults and 0.6 s of system
time per `small` step, 12-15% of the step time (docs/performance.md). Two mallopt settings stop that once the heap
has grown to the step's peak, which the peak memory is anyway. This is what the jemalloc / tcmalloc LD_PRELOAD
advice for PyTorch on CPU achieves, without a preload.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve every block from the heap and never trim it; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
