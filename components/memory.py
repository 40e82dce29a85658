"""Give freed heap back to the operating system.

CPython frees large objects to the C allocator, and glibc keeps much of that heap mapped: the process's
resident size then only grows. Call this after dropping big tables and before the next memory-hungry phase
(spawning workers, loading another model)."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
