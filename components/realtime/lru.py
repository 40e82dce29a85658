"""A thread-safe LRU map bounded in entries and in the total size of its values (the real-time caches)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """A thread-safe LRU map bounded in entries and in total ``size`` (bytes, events...) of its values."""

    def __init__(self, max_entries: int, max_size: int, size: Callable[[V], int]) -> None:
        self.max_entries, self.max_size, self._size = max_entries, max_size, size
        self.total = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V) -> None:
        size = self._size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.total -= old[1]
            if size > self.max_size:
                return  # one value over the whole budget is not kept
            self._items[key] = (value, size)
            self.total += size
            while len(self._items) > self.max_entries or self.total > self.max_size:
                self.total -= self._items.popitem(last=False)[1][1]
