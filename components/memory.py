"""Give freed heap back to the operating system; how much memory this process may still take.

CPython frees large objects to the C allocator, and glibc keeps much of that heap mapped: the process's
resident size then only grows. Call this after dropping big tables and before the next memory-hungry phase
(spawning workers, loading another model)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from pathlib import Path


def release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def available_memory_bytes(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the process can still allocate before the kernel reclaims or kills: the smaller of the
    machine's MemAvailable and the room left in the container's cgroup (v2 memory.max - memory.current,
    v1 memory.limit_in_bytes - memory.usage_in_bytes). None when neither can be read."""
    room: list[int] = []
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = _read_int(cgroup / limit_name), _read_int(cgroup / usage_name)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 "no limit" is ~2^63
            room.append(max(limit - usage, 0))
    return min(room) if room else None
