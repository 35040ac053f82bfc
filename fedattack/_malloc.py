"""A fixed mmap threshold for glibc's malloc, set once when fedattack is imported.

glibc serves large allocations with ``mmap`` at first, but every time such a block is freed it
raises its threshold to that block's size (up to 32 MiB), after which blocks of that size come
from the heap. The attack network's batches allocate and free tensors of tens of MiB (a gradient
component's convolution output is batch x kernels x rows floats: 25 MiB for the Purchase model's
last layer at 1,000 kernels); served from the heap, their freed blocks were not reused, and
scoring 20,000 records made the resident memory grow by about that much per batch, to 7 GiB in
some runs and 0.9 GiB in others (``benchmarks/per_example_grads.py``, "attack"). With the
threshold fixed at :data:`MMAP_THRESHOLD`, blocks at least that large are always mapped and
unmapped, and the peak stays the same from run to run. A threshold set by the user in
``MALLOC_MMAP_THRESHOLD_`` is left alone; on other C libraries this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 16 * 2**20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Sets glibc's mmap threshold to ``threshold`` bytes; whether it was set."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # another C library: its own parameters
        return False
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
