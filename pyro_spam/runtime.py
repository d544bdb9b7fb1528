"""Process-wide settings for long runs: give freed memory back to the operating system, and keep
the garbage collector off the objects that imports created.

glibc's allocator raises its mmap threshold each time a large block is freed (up to 32 MB), so
later draws × messages matrices (8–36 MB) come from the heap, whose freed space stays resident:
over a default run about 150 MB more RSS than is in use. Trimming the heap between stages gives
it back. (A fixed low mmap threshold would too, but it makes every SVI step's 2 MB tensors page
in afresh: the fits ran 2x slower.) It changes no number; other C libraries: nothing is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
from collections.abc import Iterator
from typing import Any

__all__ = ["imports_frozen", "release_freed_memory"]


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (other C libraries)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc is loaded
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_freed_memory() -> bool:
    """Free unreachable reference cycles (a full ``gc.collect``: closed matplotlib figures, Pyro
    traces and xarray objects hold cycles that otherwise wait for a rare oldest-generation pass,
    about 30 MB at the default run's peak) and give the heap's free pages back to the operating
    system (glibc ``malloc_trim(0)``, ~1 ms); True when the heap shrank."""
    gc.collect()
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


@contextlib.contextmanager
def imports_frozen() -> Iterator[None]:
    """Exclude every object alive on entry (mostly torch, SciPy and ArviZ's module state: about a
    million) from garbage collection until exit (``gc.freeze``). A default run otherwise spends
    ~0.6 s in full collections that traverse them; objects created inside are collected as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
