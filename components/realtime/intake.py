"""``POST /events``: check a batch with the contract's rules, log what passes durably, then feed the store.

Per event, in order:
1. the contract's row checks (components/event_rules.py: the ETL's reasons in the ETL's order), then the
   intake's own: an ``event_id`` over 256 characters is ``malformed_row``; a timestamp more than
   ``max_ahead_s`` (ECOMREC_EVENTS_MAX_AHEAD_S, default one hour) ahead of the server's clock is
   ``timestamp_in_future``. Such an event is a unit or clock bug (milliseconds sent as seconds, a local time
   sent as UTC); kept, it would be the user's newest event, and the store bounds a user to ``max_days``
   before their newest event: it would evict their real events and set their features' "now" years ahead.
   Mixpanel's /import refuses the same window ("more than one hour in the future, measured on Mixpanel's
   servers", https://docs.mixpanel.com/troubleshooting/errors/400-bad-request). Skew under the tolerance is
   accepted as stamped;
2. its idempotency key: ``id:<event_id>`` when the client gave one, else a hash of the parsed values. A key
   the store already holds (or an earlier event of the batch) is a repeat: with an event_id it is a retry
   and is acknowledged again without being written twice (``already_received``); without one it is the
   exact duplicate the ETL would reject, and is rejected with the ETL's reason ``duplicate``;
3. the new events are appended to the durable log and fsync'ed: only then is the batch acknowledged;
4. they are added to the store (atomically per key, so a retry racing its original stores one copy).

The store going down does not stop the intake: the log is the record. Steps 2 and 4 are then skipped, the
answer says ``degraded``, and a retry may be logged twice; the ETL's exact-duplicate check (event_id is a
column of the log) counts it once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import orjson

from components.event_rules import DUPLICATE, MALFORMED_ROW, ParsedEvent, check_event, raw_text
from components.realtime.log import EVENT_ID, LOG_COLUMNS, DurableLog
from components.realtime.store import OnlineStore, StoredEvent, StoreUnavailableError

log = logging.getLogger(__name__)

EVENT_ID_MAX_CHARS: Final = 256
TIMESTAMP_IN_FUTURE: Final = "timestamp_in_future"  # the intake's rule, not the ETL's (see the docstring)
MAX_AHEAD_S: Final = 3600.0
T = TypeVar("T")


def event_key(event_id: str | None, parsed: ParsedEvent) -> str:
    if event_id is not None:
        return f"id:{event_id}"
    values = [parsed.user_id, parsed.item_id, parsed.event_type, parsed.timestamp_us, parsed.quantity,
              parsed.price, parsed.session_id]
    return "h:" + hashlib.blake2b(orjson.dumps(values), digest_size=16).hexdigest()


class StoreGuard:
    """Calls the store with a short memory of failure: after one, the store is skipped for
    ``retry_after_s`` (every request would otherwise wait out the timeout while it is down)."""

    def __init__(self, store: OnlineStore | None, *, retry_after_s: float = 1.0,
                 on_result: Callable[[str, float], None] | None = None) -> None:
        self.store = store
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._on_result = on_result or (lambda outcome, seconds: None)

    @property
    def available(self) -> bool:
        return self.store is not None and time.monotonic() >= self._down_until

    def call(self, operation: str, fn: Callable[[OnlineStore], T]) -> T:
        """``fn(store)``; StoreUnavailableError when the store is absent, resting, or fails now."""
        if self.store is None:
            raise StoreUnavailableError("no online store configured")
        if not self.available:
            raise StoreUnavailableError("online store resting after a failure")
        started = time.perf_counter()
        try:
            result = fn(self.store)
        except StoreUnavailableError as error:
            with self._lock:
                self._down_until = time.monotonic() + self.retry_after_s
            self._on_result(f"{operation}_error", time.perf_counter() - started)
            log.warning("online store unavailable (%s); answering without it for %.1f s", error,
                        self.retry_after_s)
            raise
        self._on_result(operation, time.perf_counter() - started)
        return result


@dataclass
class IntakeResult:
    accepted: list[int] = field(default_factory=list)
    rejected: list[dict[str, object]] = field(default_factory=list)
    already_received: list[int] = field(default_factory=list)
    degraded: bool = False

    def as_json(self) -> dict[str, object]:
        return {"accepted": self.accepted, "rejected": self.rejected, "already_received": self.already_received,
                "degraded": self.degraded}


class EventIntake:
    def __init__(self, event_log: DurableLog, guard: StoreGuard, *, max_ahead_s: float = MAX_AHEAD_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = event_log
        self.guard = guard
        self.max_ahead_s = max_ahead_s
        self.clock = clock

    def ingest(self, events: Sequence[object]) -> IntakeResult:
        result = IntakeResult()
        latest_us = int((self.clock() + self.max_ahead_s) * 1_000_000)
        fresh: list[tuple[int, StoredEvent, dict[str, object]]] = []
        for index, raw in enumerate(events):
            if not isinstance(raw, dict):
                result.rejected.append({"index": index, "reason": MALFORMED_ROW})
                continue
            reason, parsed = check_event(raw)
            event_id = raw_text(raw.get(EVENT_ID))
            if event_id is not None:
                event_id = event_id.strip(" ") or None
            if reason is None and event_id is not None and len(event_id) > EVENT_ID_MAX_CHARS:
                reason = MALFORMED_ROW
            if reason is None and parsed is not None and parsed.timestamp_us > latest_us:
                reason = TIMESTAMP_IN_FUTURE
            if reason is not None or parsed is None:
                result.rejected.append({"index": index, "reason": reason})
                continue
            stored = StoredEvent(key=event_key(event_id, parsed), user_id=parsed.user_id, item_id=parsed.item_id,
                                 event_type=parsed.event_type, timestamp_us=parsed.timestamp_us,
                                 quantity=parsed.quantity, price=parsed.price, session_id=parsed.session_id)
            row: dict[str, object] = {c: raw_text(raw.get(c)) for c in LOG_COLUMNS}
            fresh.append((index, stored, row))
        try:
            known = self.guard.call("known", lambda store: store.known([e for _, e, _ in fresh]))
        except StoreUnavailableError:
            known, result.degraded = set(), True
        seen: set[str] = set(known)
        to_log: list[tuple[int, StoredEvent, dict[str, object]]] = []
        for index, stored, row in fresh:
            if stored.key in seen:
                if stored.key.startswith("id:"):
                    result.already_received.append(index)
                    result.accepted.append(index)
                else:
                    result.rejected.append({"index": index, "reason": DUPLICATE})
                continue
            seen.add(stored.key)
            to_log.append((index, stored, row))
        self.log.append([row for _, _, row in to_log])  # raises OSError: nothing of the batch is acknowledged
        result.accepted += [index for index, _, _ in to_log]
        result.accepted.sort()
        result.rejected.sort(key=lambda r: int(str(r["index"])))
        if to_log and not result.degraded:
            try:
                self.guard.call("add", lambda store: store.add([e for _, e, _ in to_log]))
            except StoreUnavailableError:
                result.degraded = True
        return result
