"""Process-level settings that make CPU training fast without changing any result."""

from __future__ import annotations

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks instead of returning them to the OS.

    Batched training allocates and frees the same multi-MB activation buffers every step;
    by default glibc serves each from a fresh ``mmap`` whose pages fault in one by one.
    Keeping them cuts a step's time by about a third at 64 members (measured in
    ``benchmarks/ensemble_speed.py``). Values are untouched: only where memory comes from.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # 32 MiB is glibc's largest allowed mmap threshold on 64-bit systems.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    )
