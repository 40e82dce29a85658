"""The online store port: each user's events since the bundle's cutoff, plus the idempotency keys of the
events the service acknowledged. Two implementations: :class:`SqliteStore` (the embedded default, below)
and :class:`components.realtime.redis_store.RedisStore` (Redis / Valkey; ElastiCache on AWS).

The store is a cache of the durable event log (components/realtime/log.py), not the record: losing it
loses freshness, never an event. Every failure surfaces as :class:`StoreUnavailableError`, which the
callers turn into a degraded answer (the bundle alone), never a 5xx.

Bounds per user (:class:`StoreLimits`, settings ``ECOMREC_STORE_MAX_EVENTS`` and ``ECOMREC_STORE_MAX_DAYS``):
the newest ``max_events`` events, and only those within ``max_days`` of the user's newest event (event
time, not wall-clock time, so a replay of old events keeps what a live run would; the intake refuses events
stamped further ahead of the server's clock than ``ECOMREC_EVENTS_MAX_AHEAD_S``, so one mis-stamped event
cannot age the user's real ones out). Idempotency keys live
``key_ttl_days`` from receipt: a retry later than that is taken as a new event (the ETL still drops it as
an exact duplicate of the first copy in the log).

Versions: every add that stores events for a user gives that user a new version, written atomically with
the events. A reader that holds a user's events of version V asks :meth:`OnlineStore.read` with V and gets
``(V, None)`` back at the cost of one key lookup, whatever the number of events: a GET whose user did not
change since the last answer costs O(1) in their events. A version names one set of events for the life of
the store: it is never reused (SQLite: the newest AUTOINCREMENT sequence number; Redis: a random 63-bit
token, as a counter would restart after a flush). A user without a version (no event, or events written by
an older release) is read in full every time.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

DAY_US: Final = 86_400 * 1_000_000


class StoreUnavailableError(RuntimeError):
    """The store did not answer in time or at all."""


@dataclass(frozen=True, slots=True)  # slots: a cached user of 500 events is ~0.2 MB, not ~0.4
class StoredEvent:
    key: str  # idempotency key: "id:<event_id>" or "h:<hash of the parsed values>"
    user_id: str
    item_id: str
    event_type: str
    timestamp_us: int
    quantity: int
    price: float | None
    session_id: str | None


@dataclass(frozen=True)
class StoreLimits:
    max_events: int = 500
    max_days: float = 365.0
    key_ttl_days: float = 7.0

    @property
    def max_age_us(self) -> int:
        return int(self.max_days * DAY_US)


class OnlineStore(Protocol):
    limits: StoreLimits

    def known(self, events: Sequence[StoredEvent]) -> set[str]:
        """The keys among ``events`` already stored."""

    def add(self, events: Sequence[StoredEvent]) -> int:
        """Store the events whose key is new (atomically per key: concurrent adds store one copy); trim
        each touched user to the limits. Returns how many were new."""

    def read(self, user_id: str, known: int | None = None) -> tuple[int | None, list[StoredEvent] | None]:
        """(the user's version, their stored events oldest first, ties in arrival order), both of one
        moment; the events are None when the version is ``known`` (not None): the caller holds them."""

    def user_events(self, user_id: str) -> list[StoredEvent]:
        """The user's stored events, oldest first (ties: in arrival order)."""

    def clear(self) -> None:
        """Forget everything (replay evaluation starts from an empty store)."""

    def close(self) -> None: ...


def by_user(events: Iterable[StoredEvent]) -> dict[str, list[StoredEvent]]:
    out: dict[str, list[StoredEvent]] = {}
    for event in events:
        out.setdefault(event.user_id, []).append(event)
    return out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, ts_us INTEGER NOT NULL, key TEXT NOT NULL,
    item_id TEXT NOT NULL, event_type TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL, session_id TEXT);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, ts_us, seq);
CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, received_s REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_received ON keys (received_s);
CREATE TABLE IF NOT EXISTS versions (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID;
"""
_COLUMNS = "key, user_id, item_id, event_type, ts_us, quantity, price, session_id"
# SQLite's page cache is per connection, and a worker has one connection per thread (up to 40: anyio's
# pool): at SQLite's default 2,000 KiB, 30 threads reading a 33 MB store grew a process by 65 MB; at 512
# KiB the bound is ~20 MB a worker. The pages stay in the OS page cache; reads of unchanged users touch
# one index page (the versions table), full reads are ~20 % slower.
PAGE_CACHE_KIB: Final = 512
PURGE_EVERY_S: Final = 60.0  # expired idempotency keys are deleted at most this often per process


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, shared by every worker process of the machine.

    Why SQLite/WAL: it needs no server (the default must run with nothing installed); WAL lets readers
    run while one writer commits, so GET /recommendations never waits on POST /events; and a committed
    transaction is visible to the next transaction of every connection on the machine, which is the
    read-your-writes across workers that freshness needs (shared memory or a per-process cache would need
    their own locking and persistence). ``synchronous=NORMAL`` skips the fsync per commit: durability is
    the event log's job. Lock waits are bounded by ``timeout_s`` (then StoreUnavailableError)."""

    def __init__(self, path: Path, *, limits: StoreLimits | None = None, timeout_s: float = 0.05) -> None:
        self.path = Path(path)
        self.limits = limits or StoreLimits()
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._last_purge = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        try:
            conn.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"online store {self.path}: {error}") from error

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # A start-up schema creation may wait for another worker's; later calls use timeout_s.
            conn = sqlite3.connect(self.path, timeout=max(self.timeout_s, 5.0), isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            self._local.conn = conn
        return conn

    def known(self, events: Sequence[StoredEvent]) -> set[str]:
        keys = list({e.key for e in events})
        if not keys:
            return set()
        try:
            found: set[str] = set()
            conn = self._conn()
            for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in conn.execute(f"SELECT key FROM keys WHERE key IN ({marks})", chunk))
            return found
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"online store {self.path}: {error}") from error

    def add(self, events: Sequence[StoredEvent]) -> int:
        if not events:
            return 0
        now = time.time()
        limits = self.limits
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                added = 0
                touched: dict[str, int] = {}  # user -> the sequence number of their newest insert: their version
                for e in events:
                    cur = conn.execute("INSERT OR IGNORE INTO keys (key, received_s) VALUES (?, ?)", (e.key, now))
                    if cur.rowcount == 1:
                        cur = conn.execute(f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                           (e.key, e.user_id, e.item_id, e.event_type, e.timestamp_us, e.quantity,
                                            e.price, e.session_id))
                        added += 1
                        touched[e.user_id] = int(cur.lastrowid or 0)
                conn.executemany("INSERT INTO versions (user_id, version) VALUES (?, ?) ON CONFLICT (user_id) "
                                 "DO UPDATE SET version = excluded.version", touched.items())
                for user in touched:
                    conn.execute(
                        "DELETE FROM events WHERE user_id = ?1 AND (ts_us < (SELECT MAX(ts_us) FROM events "
                        "WHERE user_id = ?1) - ?2 OR seq NOT IN (SELECT seq FROM events WHERE user_id = ?1 "
                        "ORDER BY ts_us DESC, seq DESC LIMIT ?3))", (user, limits.max_age_us, limits.max_events))
                if now - self._last_purge > PURGE_EVERY_S:
                    conn.execute("DELETE FROM keys WHERE received_s < ?", (now - limits.key_ttl_days * 86_400,))
                    self._last_purge = now
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return added
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"online store {self.path}: {error}") from error

    def read(self, user_id: str, known: int | None = None) -> tuple[int | None, list[StoredEvent] | None]:
        try:
            conn = self._conn()
            conn.execute("BEGIN")  # one snapshot for the version and the events (WAL: readers never wait)
            try:
                row = conn.execute("SELECT version FROM versions WHERE user_id = ?", (user_id,)).fetchone()
                version = None if row is None else int(row[0])
                if version is not None and version == known:
                    return version, None
                rows = conn.execute("SELECT key, item_id, event_type, ts_us, quantity, price, session_id FROM events "
                                    "WHERE user_id = ? ORDER BY ts_us, seq", (user_id,)).fetchall()
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"online store {self.path}: {error}") from error
        # one user_id object and interned types: a parsed event is ~360 bytes, not ~470 (workers cache them)
        return version, [StoredEvent(key, user_id, item, sys.intern(kind), ts, qty, price, session)
                         for key, item, kind, ts, qty, price, session in rows]

    def user_events(self, user_id: str) -> list[StoredEvent]:
        return self.read(user_id)[1] or []

    def clear(self) -> None:
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM events")
            conn.execute("DELETE FROM keys")
            conn.execute("DELETE FROM versions")
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"online store {self.path}: {error}") from error

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
