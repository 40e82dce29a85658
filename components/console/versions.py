"""The group's versions, read through the registry port once per change rather than once per page.

Reading is the pages' main cost at scale: the local registry parses one record (with its whole
evaluation.json) per version, ~1 ms each, and SageMaker answers one DescribeModelPackage call per version.
A registry that can say cheaply whether anything changed (``LocalRegistry.change_token``) is re-read only
then; any other (SageMaker) is re-read after ``ttl_s`` seconds, or at once after the console's own status
change or a page's "refresh"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from components.registry.base import ModelRegistry, ModelVersion


class VersionList:
    def __init__(self, registry: ModelRegistry, group: str, *, ttl_s: float = 30.0) -> None:
        self.registry = registry
        self.group = group
        self.ttl_s = ttl_s
        token: Callable[[str], object] | None = getattr(registry, "change_token", None)
        self._token = token
        self._lock = threading.Lock()
        self._versions: list[ModelVersion] = []
        self._seen: object = None
        self._read_at = float("-inf")

    def invalidate(self) -> None:
        with self._lock:
            self._read_at, self._seen = float("-inf"), None

    def get(self) -> list[ModelVersion]:
        """Every version, oldest first (as the port lists them)."""
        with self._lock:
            current = self._token(self.group) if self._token is not None else None
            fresh = (current == self._seen if self._token is not None
                     else time.monotonic() - self._read_at < self.ttl_s)
            if not fresh or self._read_at == float("-inf"):
                self._versions = self.registry.list_versions(self.group)
                self._seen, self._read_at = current, time.monotonic()
            return self._versions
