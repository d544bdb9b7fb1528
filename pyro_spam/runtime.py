"""Process-wide settings for long runs: give freed memory back to the operating system.

glibc's allocator raises its mmap threshold each time a large block is freed (up to 32 MB), so
later draws × messages matrices (8–36 MB) come from the heap, whose freed space stays resident.
Over a default run that keeps about 150 MB more RSS than is in use. Fixing the threshold at
256 kB (and trimming the heap above 1 MB of free space) returns such blocks as soon as they are
freed; it changes no number. Other C libraries: nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024

__all__ = ["return_freed_memory"]


@functools.cache
def return_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True when they were set."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
