"""The group's versions, read through the registry port once, then kept up to date.

Reading is the pages' main cost at scale: the local registry parses one record (with its whole
evaluation.json) per version, and SageMaker answers one DescribeModelPackage call per version. A registry
that can say which versions changed (``LocalRegistry.changes_since``: its event log) has only those
described again; any other (SageMaker) is listed again after ``ttl_s`` seconds, or at once after the
console's own status change or a page's "re-read"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from components.registry.base import ModelRegistry, ModelVersion

ChangesSince = Callable[[str, int], tuple[int, set[int]] | None]


class VersionList:
    def __init__(self, registry: ModelRegistry, group: str, *, ttl_s: float = 30.0) -> None:
        self.registry = registry
        self.group = group
        self.ttl_s = ttl_s
        self._changes: ChangesSince | None = getattr(registry, "changes_since", None)
        self._lock = threading.Lock()
        self._versions: dict[int, ModelVersion] = {}
        self._offset = 0
        self._read_at: float | None = None  # None: read everything on the next get

    def invalidate(self) -> None:
        """Make the next ``get`` see every change (a registry with a change log always does)."""
        with self._lock:
            if self._changes is None:
                self._read_at = None

    def get(self) -> list[ModelVersion]:
        """Every version, oldest first (as the port lists them)."""
        with self._lock:
            if self._read_at is not None and self._changes is not None:
                changed = self._changes(self.group, self._offset)
                if changed is not None:
                    self._offset, numbers = changed
                    for number in sorted(numbers):
                        self._versions[number] = self.registry.describe(self.group, number)
                    return [self._versions[n] for n in sorted(self._versions)]
            elif self._read_at is not None and time.monotonic() - self._read_at < self.ttl_s:
                return [self._versions[n] for n in sorted(self._versions)]
            # everything: the first time, after invalidate(), a replaced log, or the TTL
            if self._changes is not None:
                # the log's end before listing: what changes while we list is described again next time
                self._offset = (self._changes(self.group, 0) or (0, set()))[0]
            listed = self.registry.list_versions(self.group)
            self._versions = {v.version: v for v in listed}
            self._read_at = time.monotonic()
            return listed
