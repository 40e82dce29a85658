"""The online store port, one set of behaviours for both implementations: the embedded SQLite store and
Redis through redis-py against a real redis-server (started per module on a free loopback port).

Redis behaviours relied on, from the Redis command docs: SET ... NX EX sets only a missing key
(https://redis.io/docs/latest/commands/set/), a script runs atomically (https://redis.io/docs/latest/develop/
interactive/programmability/eval-intro/), ZREMRANGEBYRANK / ZREMRANGEBYSCORE with an exclusive "(" bound
(https://redis.io/docs/latest/commands/zremrangebyscore/)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.realtime.redis_store import RedisStore
from components.realtime.store import DAY_US, OnlineStore, SqliteStore, StoredEvent, StoreLimits, StoreUnavailableError
from tests.redis_server import RedisServer, redis_server

T0 = 1_714_557_600_000_000  # 2024-05-01T10:00:00Z in microseconds


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def make_store(kind: str, tmp_path: Path, redis: RedisServer | None, limits: StoreLimits) -> OnlineStore:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "store.sqlite", limits=limits)
    assert redis is not None
    # a prefix per test: the module shares one server
    return RedisStore(redis.url, limits=limits, prefix=f"t{time.monotonic_ns()}:", timeout_s=0.5)


@pytest.fixture(params=["sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> RedisServer | None:
    return request.getfixturevalue("redis") if kind == "redis" else None


def ev(key: str, user: str = "u1", ts: int = T0, item: str = "i1", kind: str = "view", qty: int = 1,
       price: float | None = None, session: str | None = None) -> StoredEvent:
    return StoredEvent(key=key, user_id=user, item_id=item, event_type=kind, timestamp_us=ts, quantity=qty,
                       price=price, session_id=session)


def test_events_come_back_in_time_order_once_per_key(kind: str, server: RedisServer | None, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path, server, StoreLimits())
    first = [ev("a", ts=T0 + 5, item="i2", kind="purchase", qty=3, price=2.5, session="s1"), ev("b", ts=T0)]
    assert store.add(first) == 2
    assert store.add([ev("a", ts=T0 + 5), ev("c", user="u2")]) == 1  # "a" again: not stored twice
    assert store.known([ev("a"), ev("b"), ev("zz")]) == {"a", "b"}
    assert store.user_events("u1") == [first[1], first[0]]  # every field round-trips, oldest first
    assert [e.key for e in store.user_events("u2")] == ["c"]
    assert store.user_events("nobody") == []
    store.clear()
    assert store.user_events("u1") == [] and store.known([ev("a")]) == set()
    store.close()


def test_each_user_keeps_the_newest_n_events_within_d_days(kind: str, server: RedisServer | None,
                                                           tmp_path: Path) -> None:
    store = make_store(kind, tmp_path, server, StoreLimits(max_events=3, max_days=10))
    store.add([ev(f"k{i}", ts=T0 + i) for i in range(5)])
    assert [e.key for e in store.user_events("u1")] == ["k2", "k3", "k4"]
    # an event 11 days later pushes out everything older than 10 days before it
    store.add([ev("late", ts=T0 + 11 * DAY_US)])
    assert [e.key for e in store.user_events("u1")] == ["late"]
    # an old event arriving late is dropped at once (older than the user's newest minus 10 days)
    store.add([ev("stale", ts=T0)])
    assert [e.key for e in store.user_events("u1")] == ["late"]
    store.add([ev("x", user="u2", ts=T0)])
    assert [e.key for e in store.user_events("u2")] == ["x"]  # bounds are per user


def _add_from_process(kind: str, where: str, worker: int) -> int:
    store: OnlineStore = (SqliteStore(Path(where), timeout_s=5.0) if kind == "sqlite"
                          else RedisStore(where.split("|")[0], prefix=where.split("|")[1], timeout_s=5.0))
    added = 0
    for i in range(40):  # every process adds the same 40 keys, interleaved with its own
        added += store.add([ev(f"shared-{i}", ts=T0 + i), ev(f"own-{worker}-{i}", ts=T0 + i)])
    return added


def test_concurrent_workers_store_one_copy_of_a_shared_key(kind: str, server: RedisServer | None,
                                                           tmp_path: Path) -> None:
    """Four processes (as uvicorn workers are) add the same keys at once: each key is stored once."""
    prefix = f"c{time.monotonic_ns()}:"
    where = str(tmp_path / "store.sqlite") if kind == "sqlite" else f"{server.url}|{prefix}"  # type: ignore[union-attr]
    if kind == "sqlite":
        SqliteStore(Path(where))  # schema first
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        added = pool.starmap(_add_from_process, [(kind, where, w) for w in range(4)])
    assert sum(added) == 40 + 4 * 40
    store = (SqliteStore(Path(where)) if kind == "sqlite" else RedisStore(server.url, prefix=prefix))  # type: ignore[union-attr]
    keys = [e.key for e in store.user_events("u1")]
    assert len(keys) == len(set(keys)) == 200


def test_a_dead_or_stopped_redis_fails_fast_as_unavailable(tmp_path: Path) -> None:
    """SIGSTOP (slow: the socket accepts, nothing answers) is bounded by the timeout; a killed server
    refuses at once; both are StoreUnavailableError, never a hang or another exception."""
    with redis_server(tmp_path) as server:
        store = RedisStore(server.url, timeout_s=0.1)
        store.add([ev("a")])
        server.pause()
        try:
            started = time.perf_counter()
            with pytest.raises(StoreUnavailableError):
                store.user_events("u1")
            assert time.perf_counter() - started < 1.0
            with pytest.raises(StoreUnavailableError):
                store.add([ev("b")])
        finally:
            server.resume()
        assert [e.key for e in store.user_events("u1")] == ["a"]  # back once it answers again
        server.kill()
        with pytest.raises(StoreUnavailableError):
            store.known([ev("a")])


def test_a_locked_sqlite_store_fails_within_its_timeout(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteStore(tmp_path / "s.sqlite", timeout_s=0.05)
    blocker = sqlite3.connect(tmp_path / "s.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.perf_counter()
        with pytest.raises(StoreUnavailableError):
            store.add([ev("a")])
        assert time.perf_counter() - started < 1.0
    finally:
        blocker.execute("ROLLBACK")
    assert store.add([ev("a")]) == 1


def test_a_users_version_changes_with_their_events_and_only_then(kind: str, server: RedisServer | None,
                                                                 tmp_path: Path) -> None:
    """A reader holding version V gets (V, None) back, without the events, until an add stores an event of
    that user (in the same transaction / script as the events); a second client sees the same versions;
    a version is not reused after a clear (SQLite: AUTOINCREMENT; Redis: random tokens)."""
    limits = StoreLimits(max_events=3)
    store = make_store(kind, tmp_path, server, limits)
    other = (SqliteStore(tmp_path / "store.sqlite", limits=limits) if kind == "sqlite"
             else RedisStore(server.url, limits=limits, prefix=store.prefix, timeout_s=0.5))  # type: ignore[union-attr,attr-defined]
    assert store.read("u1") == (None, [])
    store.add([ev("a"), ev("b", ts=T0 + 1)])
    v1, events = store.read("u1")
    assert v1 is not None and [e.key for e in events or ()] == ["a", "b"]
    assert store.read("u1", v1) == (v1, None) == other.read("u1", v1)
    other.add([ev("a"), ev("x", user="u2")])  # a repeat for u1 and another user's event: u1 unchanged
    assert store.read("u1", v1) == (v1, None)
    other.add([ev("c", ts=T0 + 2), ev("d", ts=T0 + 3)])  # trimmed to the newest 3
    v2, events = store.read("u1", v1)
    assert v2 not in (None, v1) and [e.key for e in events or ()] == ["b", "c", "d"]
    store.clear()
    assert store.read("u1", v2) == (None, [])
    store.add([ev("a")])
    v3, events = store.read("u1")
    assert v3 not in (None, v1, v2) and [e.key for e in events or ()] == ["a"]


def test_each_sqlite_connection_has_a_small_page_cache(tmp_path: Path) -> None:
    """A worker holds one connection per thread (anyio's pool: up to 40); SQLite's default page cache of
    2,000 KiB each grew a process by 65 MB when 30 threads read a 33 MB store (the soak's RSS growth)."""
    import threading

    from components.realtime.store import PAGE_CACHE_KIB

    store = SqliteStore(tmp_path / "store.sqlite")
    sizes: list[int] = []
    thread = threading.Thread(target=lambda: sizes.append(store._conn().execute("PRAGMA cache_size").fetchone()[0]))
    thread.start()
    thread.join()
    assert sizes == [-PAGE_CACHE_KIB] and PAGE_CACHE_KIB <= 512
