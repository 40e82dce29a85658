"""What a GET costs as a user's stored events grow (issue 14's soak: every read parsed all of them): the store
hands out a per-user version with the events, and a worker holding a user's events of that version reads
the version alone; an event added by another worker (another connection / client) changes the version,
so the next answer sees it. Both stores: the embedded SQLite file and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from components.bundle import load_bundle
from components.realtime.fresh import FreshAnswers, cutoff_us
from components.realtime.intake import StoreGuard
from components.realtime.lru import BoundedLru
from components.realtime.redis_store import RedisStore
from components.realtime.store import DAY_US, OnlineStore, SqliteStore, StoredEvent
from components.serving.engine import Recommendation, ServingModel, build_serving_model
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from tests.redis_server import RedisServer, redis_server

NOW_US = 1_735_725_600_000_000  # 2025-01-01T10:00:00Z: after the synthetic bundle's cutoff (2011-11-09)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "out", n_users=40, n_items=50, per_user=20)


@pytest.fixture(scope="module")
def model(shop: SyntheticShop, tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    return build_serving_model(load_bundle(shop.archive), source="test",
                               feature_dir=tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[OnlineStore, OnlineStore]:
    """Two store clients on one store, as two worker processes hold them."""
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "store.sqlite"), SqliteStore(tmp_path / "store.sqlite")
    server: RedisServer = request.getfixturevalue("redis")
    prefix = f"r{time.monotonic_ns()}:"
    return (RedisStore(server.url, prefix=prefix, timeout_s=0.5),
            RedisStore(server.url, prefix=prefix, timeout_s=0.5))


class Counting:
    """The store, counting reads and the events they returned."""

    def __init__(self, store: OnlineStore) -> None:
        self.store, self.limits = store, store.limits
        self.reads = self.events_parsed = 0

    def read(self, user_id: str, known: int | None = None) -> tuple[int | None, list[StoredEvent] | None]:
        version, events = self.store.read(user_id, known)
        self.reads += 1
        self.events_parsed += len(events or ())
        return version, events

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def same(a: Recommendation, b: Recommendation) -> bool:
    return bool(np.array_equal(a.item_idx, b.item_idx) and np.array_equal(a.scores, b.scores))


def views(user: str, items: list[str], start: int, tag: str, kind: str = "view") -> list[StoredEvent]:
    return [StoredEvent(key=f"id:{tag}-{n}", user_id=user, item_id=item, event_type=kind, timestamp_us=start + n,
                        quantity=1, price=1.0, session_id=None) for n, item in enumerate(items)]


def test_repeated_answers_read_the_version_alone_and_another_workers_event_is_seen(
        model: ServingModel, shop: SyntheticShop, two_workers: tuple[OnlineStore, OnlineStore]) -> None:
    this_worker, other_worker = two_workers
    store = Counting(this_worker)
    fresh = FreshAnswers(StoreGuard(store), clock=lambda: NOW_US)  # type: ignore[arg-type]
    user = next(u for u in shop.user_ids if u not in shop.cold_user_ids)
    other_worker.add(views(user, [shop.item_ids[i % len(shop.item_ids)] for i in range(300)], NOW_US - 10**9, "a"))
    first, _ = fresh.recommend(model, user, 10)
    assert first is not None and store.events_parsed == 300
    for _ in range(20):
        again, _ = fresh.recommend(model, user, 10)
        assert again is not None and same(again, first)
    assert store.reads == 21 and store.events_parsed == 300  # 20 answers: no event parsed again

    # the other worker acknowledges a purchase: this worker's very next answer reflects it
    bought = int(first.item_idx[0])
    other_worker.add(views(user, [model.item_ids[bought]], NOW_US - 1000, "b", kind="purchase"))
    after, _ = fresh.recommend(model, user, 10, exclude_purchased=True)
    assert after is not None and bought not in after.item_idx.tolist()
    assert store.events_parsed == 300 + 301
    changed, _ = fresh.recommend(model, user, 10)
    assert changed is not None and not same(changed, first)  # the purchase moved the user's features


def test_caches_are_bounded_in_entries_and_size() -> None:
    lru: BoundedLru[str, bytes] = BoundedLru(3, 100, len)
    for key in "abc":
        lru.put(key, b"x" * 30)
    assert lru.get("a") is not None  # "a" used: "b" is now the oldest
    lru.put("d", b"x" * 30)
    assert lru.get("b") is None and len(lru) == 3 and lru.total == 90
    lru.put("e", b"x" * 60)  # 150 > 100: the oldest go until it fits
    assert [k for k in "acde" if lru.get(k) is not None] == ["d", "e"] and lru.total == 90
    lru.put("big", b"x" * 101)  # over the whole budget: not kept, nothing else evicted
    assert lru.get("big") is None and len(lru) == 2
    lru.put("e", b"x")  # a replaced value's size is given back
    assert lru.total == 31


def test_a_changing_user_keeps_one_answer_and_one_event_list(tiny_run: Path, tmp_path: Path) -> None:
    """The soak's memory growth: exact answers were cached under the tuple of every event key, so each new
    event left the user's previous answer (and all its keys) in the LRU until 2,048 of them filled it. Now
    one answer and one event list a user, replaced when their version changes. (The tiny shop's bundle
    carries history/: exact answers, the cached kind.)"""
    model = build_serving_model(load_bundle(tiny_run / "bundle" / "model.tar.gz"), source="test",
                                feature_dir=tmp_path / "features")
    assert model.user_history is not None
    store = SqliteStore(tmp_path / "store.sqlite")
    fresh = FreshAnswers(StoreGuard(store))
    users = [u for u in model.user_index if model.candidate_count(model.user_index[u])][:3]
    at = cutoff_us(model) + DAY_US
    for n in range(6):
        for user in users:
            store.add(views(user, [model.item_ids[n]], at + n, f"{user}-{n}"))
            rec, _ = fresh.recommend(model, user, 10)
            assert rec is not None
    assert len(fresh._scored) == 3  # was 18: one per (user, set of events)
    assert len(fresh._events) == 3 and fresh._events.total == 3 * (6 + 1)
