"""Fresh answers: a user with events since the bundle's cutoff is scored per request by the bundle's
CatBoost model. With a bundle that carries the fold's history and the co-occurrence neighbours, the
candidates are the user's bundle rows plus those of their fresh events (the items, their neighbours, ALS
fold-in for a user the bundle does not know), and every feature of every row is computed as of the user's
newest event by one mechanism (components/realtime/candidates.py, columns_as_of), so a new user's first event
already gives a personal list (``fallback: false``). Older bundles: the bundle rows with the user-event
features recomputed (components/realtime/features.py says which). Users without fresh events keep the
load-time scores, which are their per-request scores (tests/test_realtime_parity.py).

The exact rebuild costs one ``build_features`` call over the user's ~250 rows (~5 ms of CPU on Online
Retail at a few events, ~14 ms at 500: numpy columns, no frame), once per new event of the user. A worker
makes at most ``exact_per_s`` of them a second and spends at most ``share`` CPU seconds a second in them
(token buckets; the service's ECOMREC_FRESH_EXACT_PER_S, default 100, and ECOMREC_FRESH_EXACT_SHARE,
default 0.5: half a core); beyond, until tokens come back, an answer is the fast one (the bundle rows with
the 16 counts and durations moved to the request: ~1 ms, ~4 ms right after a new event at 500 events; a
user the bundle does not know gets the popular list), so an event storm slows nobody's answers. The replay
evaluation has no budget: it measures the exact answers.

Per-read cost does not grow with a user's stored events while they do not change: the store hands out a
per-user version with the events (store.py), the worker keeps each user's parsed events under it and its
exact answers under (model version, user, store version), so a repeated GET costs one version lookup. The
caches are LRUs bounded in entries and bytes (``*_CACHE_*`` below: ~90 MB a worker at most).

Every path that answers users goes through :meth:`FreshAnswers.recommend` (the HTTP routes through
ServiceState.answer, the replay evaluation in process). A store that fails or times out makes the answer
the bundle's alone, marked degraded; never an error.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.model import PreparedFeatures
from components.realtime.features import AS_OF_FEATURES, apply_as_of, as_of_us, recompute
from components.realtime.intake import StoreGuard
from components.realtime.lru import BoundedLru
from components.realtime.store import StoredEvent, StoreUnavailableError
from components.serving.engine import Recommendation, ServingModel

PREPARED_CACHE_USERS = 2048
# the bundle rows in the ranker's layout of ~800 users of Online Retail (200 rows: ~81 KB each); was 2,048
# users whatever their size
PREPARED_CACHE_BYTES: Final = 64 << 20
SCORED_CACHE_BYTES: Final = 16 << 20  # exact answers: items and scores, 16 bytes a candidate
EVENTS_CACHE_USERS: Final = 4096
# parsed events held: ~11 MB (~360 bytes each, tracemalloc; the soak's 500 users reach ~115k events, so
# there a read after an eviction re-parses the user's events: memory is the bound that matters)
EVENTS_CACHE_EVENTS: Final = 32_000

@dataclass(frozen=True)
class HeldEvents:
    """A user's events since a cutoff, as the store had them at ``version``."""

    version: int
    cutoff_us: int
    events: tuple[StoredEvent, ...]


def _answer_bytes(value: tuple[Hashable, np.ndarray, np.ndarray]) -> int:
    held = value[0]  # the events' keys when no store version names them (~80 bytes each)
    return int(value[1].nbytes + value[2].nbytes) + 200 + (80 * len(held) if isinstance(held, tuple) else 0)


def _prepared_bytes(value: tuple[np.ndarray, PreparedFeatures, dict[str, int]]) -> int:
    items, prepared, _ = value  # categorical: an object array of short str (~64 bytes with the pointer)
    return int(items.nbytes + prepared.numeric.nbytes) + 64 * int(prepared.categorical.size) + 500


def cutoff_us(model: ServingModel) -> int:
    """The bundle's cutoff (window.test_start: every model in it was fit on events before it)."""
    window = model.manifest.get("window") or {}
    text = window.get("test_start")
    if not text:
        return 0
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


class ExactBudget:
    """At most ``per_second`` exact rebuilds a second on average (bursts of up to ``max(1, per_second)``)
    and at most ``share`` CPU seconds in them per second of the clock, a share of one core (the worker's
    thread; bursts of up to ``share`` seconds):
    two token buckets; ``math.inf``: no limit, 0: never. A rebuild's cost grows with the user's stored
    events (~5 ms at a few, ~14 ms at 500 on Online Retail), so a count alone let them take whole cores;
    the callers :meth:`charge` what each one cost."""

    def __init__(self, per_second: float, *, share: float = math.inf,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second, self.share = per_second, share
        self.capacity = max(1.0, per_second) if per_second > 0 else 0.0
        self.tokens = self.capacity
        self.seconds = share  # CPU seconds left
        self.clock = clock
        self.last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        if math.isinf(self.per_second) and math.isinf(self.share):
            return True
        with self._lock:
            now = self.clock()
            elapsed, self.last = now - self.last, now
            if not math.isinf(self.per_second):
                self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
            if not math.isinf(self.share):
                self.seconds = min(self.share, self.seconds + elapsed * self.share)
            if self.tokens >= 1.0 and self.seconds > 0.0:
                self.tokens -= 1.0
                return True
            return False

    def charge(self, cpu_s: float) -> None:
        """What one exact rebuild cost (this thread's CPU time)."""
        if not math.isinf(self.share):
            with self._lock:
                self.seconds -= cpu_s


class FreshAnswers:
    def __init__(self, guard: StoreGuard, *, clock: Callable[[], int] = now_us,
                 exact_per_s: float = math.inf, exact_share: float = math.inf,
                 on_fast: Callable[[], None] | None = None) -> None:
        self.guard = guard
        self.clock = clock
        self.budget = ExactBudget(exact_per_s, share=exact_share)
        self.fast_answers = 0  # answers made by the fast path because the budget was spent
        self._on_fast = on_fast
        # (model version, user) -> prepared rows; a swapped-out model's entries age out of the LRU
        self._cache: BoundedLru[tuple[str, int], tuple[np.ndarray, PreparedFeatures, dict[str, int]]] = BoundedLru(
            PREPARED_CACHE_USERS, PREPARED_CACHE_BYTES, _prepared_bytes)
        # (model version, user) -> (store version or the events' keys, exact answer: candidates, scores); one
        # entry a user, replaced when their events change (stale answers would fill the LRU up to its bound)
        self._scored: BoundedLru[tuple[str, int | str], tuple[Hashable, np.ndarray, np.ndarray]] = BoundedLru(
            PREPARED_CACHE_USERS, SCORED_CACHE_BYTES, _answer_bytes)
        # user -> their parsed events since the cutoff at a store version
        self._events: BoundedLru[str, HeldEvents] = BoundedLru(
            EVENTS_CACHE_USERS, EVENTS_CACHE_EVENTS, lambda held: len(held.events) + 1)

    def _prepared(self, model: ServingModel, user_idx: int, rows: pd.DataFrame
                  ) -> tuple[np.ndarray, PreparedFeatures, dict[str, int]]:
        """The user's rows in the ranker's layout, with where each as-of feature sits in it (cached: the
        frame-to-matrix step costs more than the scoring)."""
        key = (model.version, user_idx)  # a version is one content: its rows and its model
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        assert model.ranker is not None and model.ranker.spec is not None
        numeric_names = list(model.ranker.spec.numeric)
        moved = model.user_history.recomputed if model.user_history is not None else AS_OF_FEATURES
        positions: dict[str, int] = {n: numeric_names.index(n) for n in moved if n in numeric_names}
        value = (rows[s.ITEM_IDX].to_numpy(np.int64), model.ranker.prepare(rows), positions)
        self._cache.put(key, value)
        return value

    def score(self, model: ServingModel, user_idx: int | None, rows: pd.DataFrame, events: Sequence[StoredEvent],
              at_us: int | None = None, *, user_id: str = "", version: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """The user's candidate items and their per-request scores. With history, features as of the user's
        newest event (features.as_of_us) on the bundle rows plus fresh candidates when the bundle carries
        them (``user_idx`` None: a user the bundle does not know, ``user_id``); without, the bundle rows
        with the subset as of ``at_us`` (default: now). ``version``: the store's version of exactly these
        events (then the answer is cached under it, not under every event's key)."""
        assert model.ranker is not None
        # With history the answer is a function of the user's events alone: computed once per new event
        # (a build_features call), then read from here.
        key = (model.version, user_idx if user_idx is not None else user_id)
        held: Hashable = version if version is not None else tuple(e.key for e in events)
        if model.user_history is not None:
            hit = self._scored.get(key)
            if hit is not None and hit[0] == held:
                return hit[1], hit[2]
        cut = cutoff_us(model)
        exact = model.user_history is not None and self.budget.take()
        started = time.thread_time()
        if model.user_history is not None and not exact:
            self.fast_answers += 1
            if self._on_fast is not None:
                self._on_fast()
        try:
            built = None
            if exact and model.fresh_sources is not None:  # one mechanism: every row's every feature as of t
                built = model.fresh_sources.columns_as_of(user_idx, rows, events, model.item_index, cut,
                                                          as_of_us(cut, events))
            if built is not None:
                items = built.items.astype(np.int64)
                scores = model.ranker.score_prepared(model.ranker.prepare_columns(built.columns))
            elif user_idx is None or rows.empty:
                items, scores = np.zeros(0, dtype=np.int64), np.zeros(0)
            else:
                items, prepared, positions = self._prepared(model, user_idx, rows)
                numeric = prepared.numeric.copy()
                if exact:
                    columns = recompute(rows, events, model.user_history, user_idx=user_idx,
                                        item_index=model.item_index, cutoff_us=cut, at_us=as_of_us(cut, events))
                else:
                    # as of the request; an event stamped ahead of this clock counts as just before it
                    newest = max((e.timestamp_us + 1 for e in events), default=cut)
                    at = at_us if at_us is not None else max(self.clock(), newest)
                    start, stop = model.purchased_offsets[user_idx], model.purchased_offsets[user_idx + 1]
                    bought = set(model.purchased_items[start:stop].tolist())
                    columns = {name: numeric[:, j].astype(np.float64) for name, j in positions.items()}
                    apply_as_of(columns, items, events, item_index=model.item_index, bought_before=bought,
                                cutoff_us=cut, at_us=at)
                for name, values in columns.items():
                    numeric[:, positions[name]] = values
                scores = model.ranker.score_prepared(PreparedFeatures(numeric=numeric,
                                                                      categorical=prepared.categorical))
        finally:  # what an exact rebuild cost, raised or not
            if exact:
                self.budget.charge(time.thread_time() - started)
        if exact and len(items):  # a fast answer is not cached: the next request with budget makes the exact one
            self._scored.put(key, (held, items, scores))
        return items, scores

    def fresh_events(self, model: ServingModel, user_id: str, at_us: int | None = None
                     ) -> tuple[int | None, Sequence[StoredEvent]]:
        """(the user's store version, their stored events since the cutoff and before ``at_us``; default:
        all of them, events stamped ahead of this machine's clock included). Asks the store every time
        (another worker may have added events: read-your-writes), but re-reads the events only when their
        version changed. Raises StoreUnavailableError."""
        cut = cutoff_us(model)
        held = self._events.get(user_id)
        known = held.version if held is not None and held.cutoff_us == cut else None
        version, events = self.guard.call("read", lambda store: store.read(user_id, known))
        if events is None:  # unchanged since the events we hold (``known`` was their version)
            assert held is not None
            since: Sequence[StoredEvent] = held.events
        else:
            since = tuple(e for e in events if e.timestamp_us >= cut)
            if version is not None:
                self._events.put(user_id, HeldEvents(version, cut, since))
        if at_us is not None:
            since = [e for e in since if e.timestamp_us < at_us]
        return version, since

    def recommend(self, model: ServingModel, user_id: str, k: int, *, exclude_purchased: bool = False,
                  exclude: Sequence[str] = (), category: str | None = None,
                  at_us: int | None = None) -> tuple[Recommendation | None, bool]:
        """(the fresh answer, degraded). None: answer from the load-time scores (no fresh events, a user
        without candidate rows, or a model kept without its feature rows)."""
        if model.ranker is None or model.feature_rows is None:
            return None, False
        try:
            version, events = self.fresh_events(model, user_id, at_us)
        except StoreUnavailableError:
            return None, True
        user_idx = model.user_index.get(user_id)
        sources = model.fresh_sources
        if not events or (user_idx is None and sources is None):
            return None, False
        if ((user_idx is None or model.candidate_count(user_idx) == 0)
                and not any(e.item_id in model.item_index for e in events)):
            return None, False  # no history, no event on an item the bundle knows: nothing personal, the fallback
        try:
            rows = model.feature_rows.user_rows(user_idx) if user_idx is not None else pd.DataFrame()
        except OSError:  # the rows' folder went with a model swapped out mid-request: its own scores answer
            return None, False
        if rows.empty and sources is None:
            return None, False
        try:
            items, scores = self.score(model, user_idx, rows, events, at_us, user_id=user_id,
                                       version=version if at_us is None else None)
        except OSError:  # a swapped-out model's memory-mapped factors went with its folder
            return None, False
        if not len(items):
            return None, False
        blocked = model._blocked(user_idx, exclude_purchased, exclude, category)
        if exclude_purchased:
            fresh_bought = [model.item_index[e.item_id] for e in events
                            if e.event_type == s.PURCHASE and e.item_id in model.item_index]
            if fresh_bought:
                extra = np.asarray(fresh_bought, dtype=np.int64)
                blocked = extra if blocked is None else np.concatenate([blocked, extra])
        top_items, top_scores = model.top_k(items, scores, k, blocked)
        return model._done(Recommendation(user_id, top_items, top_scores, None, len(items))), False
