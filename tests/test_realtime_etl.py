"""The intake and the ETL agree, on a real Spark session:
- the pure-Python rules (components/event_rules.py) give every row the reason and the parsed values
  that validate.check_events gives it;
- events acknowledged by POST /events are raw events for the next ETL run, each counted once, even when a
  retry was logged twice (the store down) or sent again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import pytest

from components import event_rules as v
from components import schema as s
from components.config import EtlConfig
from components.etl.read import ROW_ID, read_table
from components.event_rules import check_event
from components.realtime.intake import EventIntake, StoreGuard
from components.realtime.log import EventLog
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import make_synthetic_bundle
from components.serving.testing import serve_in_thread
from tests.conftest import make_tiny_raw

pytestmark = pytest.mark.spark

# (user_id, item_id, event_type, timestamp, quantity, price, session_id): each line a rule's edge
TRICKY = [
    ("u1", "i1", "view", "2024-05-01T10:00:00", "", "", ""),
    ("  u1 ", " i1", " VIEW ", "2024-05-01 10:00", "2", "1.5", " s "),
    ("u1", "i1", "purchase", "2024-05-01T10:00:00.123456789Z", "2.0", "0", "s"),
    ("u1", "i1", "purchase", "2024-05-01T10:00:00+02:00", "2d", "1e2", ""),
    ("u1", "i1", "purchase", "2024-05-01T10:00:00-0530", "0x1p1", "3f", ""),
    ("u1", "i1", "purchase", "2024-05-01T10:00:00+02", "1", "", ""),
    ("u1", "i1", "purchase", "2024-05-01", "+3", ".5", ""),
    ("u1", "i1", "purchase", "2024-05-01 23:59:59.5 Z", "1", "", ""),
    ("u1", "i1", "purchase", "2024-02-30T10:00:00", "1", "", ""),
    ("u1", "i1", "purchase", "2024-05-01T25:00:00", "1", "", ""),
    ("u1", "i1", "purchase", "2024", "1", "", ""),
    ("u1", "i1", "purchase", "2024-05-01T10:00:00+19:00", "1", "", ""),
    ("u1", "i1", "purchase", "01/05/2024", "1", "", ""),
    ("u1", "i1", "purchase", "\uff12\uff10\uff12\uff14-05-01", "1", "", ""),
    ("u1", "i1", "purchase", "", "1", "", ""),
    ("", "i1", "view", "2024-05-01", "1", "", ""),
    ("u1", "   ", "view", "2024-05-01", "1", "", ""),
    ("u1", "i1", "click", "2024-05-01", "1", "", ""),
    ("u1", "i1", "", "2024-05-01", "1", "", ""),
    ("u1", "i1", "view", "2024-05-01", "0", "", ""),
    ("u1", "i1", "view", "2024-05-01", "-2", "", ""),
    ("u1", "i1", "view", "2024-05-01", "1.5", "", ""),
    ("u1", "i1", "view", "2024-05-01", "1_000", "", ""),
    ("u1", "i1", "view", "2024-05-01", "NaN", "", ""),
    ("u1", "i1", "view", "2024-05-01", "Infinity", "", ""),
    ("u1", "i1", "view", "2024-05-01", "3000000000", "", ""),
    ("u1", "i1", "view", "2024-05-01", "2147483647", "", ""),
    ("u1", "i1", "view", "2024-05-01", "1", "abc", ""),
    ("u1", "i1", "view", "2024-05-01", "1", "-0.01", ""),
    ("u1", "i1", "view", "2024-05-01", "1", "inf", ""),
    ("u1", "i1", "view", "2024-05-01", "1", "-0.0", ""),
    ("u1", "i1", "view", "2024-05-01", "1", "1,5", ""),
    ("u1", "i1", "view", "2024-05-01", "\t2", "", ""),
    ("u1", "i1", "view", "2024-05-01", "\u0663", "", ""),
]
COLUMNS = (s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID)


def test_python_rules_equal_the_spark_checks_row_by_row(spark: object, tmp_path: Path) -> None:
    """Every row's reason, and for accepted rows the parsed user, item, type, time (us), quantity, price
    and session, are those of validate.check_events (the ETL's Spark SQL), unknown_item and duplicate
    aside (not row rules: see event_rules.py)."""
    from pyspark.sql import functions as sf

    from components.etl.validate import P_ITEM, P_PRICE, P_QTY, P_SESSION, P_TS, P_TYPE, P_USER, check_events

    folder = tmp_path / s.EVENTS
    folder.mkdir()
    with (folder / "part.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        # a distinct session per row: no row is an exact duplicate of another
        writer.writerows([(*row[:6], row[6] or f"row{i}") if i > 2 else row for i, row in enumerate(TRICKY)])
    table = read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)  # type: ignore[arg-type]
    checked = check_events(table, None)
    # the Spark checks run in the shared order (no catalog given: no unknown_item check)
    assert checked.checks == tuple(c for c in v.EVENT_CHECKS if c != v.UNKNOWN_ITEM)
    spark_rows = checked.frame.orderBy(ROW_ID).select(
        s.REASON, P_USER, P_ITEM, P_TYPE, sf.unix_micros(P_TS).alias("ts"), P_QTY, P_PRICE, P_SESSION).collect()
    with (folder / "part.csv").open(newline="", encoding="utf-8") as handle:
        python_rows = list(csv.DictReader(handle))
    assert len(spark_rows) == len(python_rows) == len(TRICKY)
    accepted = 0
    for raw, got in zip(python_rows, spark_rows, strict=True):
        reason, parsed = check_event({k: (val if val != "" else None) for k, val in raw.items()})
        assert reason == got[s.REASON], raw
        if reason is None:
            accepted += 1
            assert parsed is not None
            assert (parsed.user_id, parsed.item_id, parsed.event_type, parsed.timestamp_us, parsed.quantity,
                    parsed.price, parsed.session_id) == tuple(got[1:]), raw
    assert 8 <= accepted < len(TRICKY)  # both outcomes are exercised


def test_the_etl_reads_acknowledged_events_once_each(spark: object, tmp_path: Path) -> None:
    """Events posted over HTTP (with a retry) and the same events logged again by an intake whose store is
    down (the worst case: the retry cannot be recognised): the ETL's clean events hold each posted event
    exactly once, the extra copies are its rejected duplicates, the invalid ones never reached the log."""
    from components.etl.step import run_etl

    raw = make_tiny_raw(tmp_path / "raw")
    shop = make_synthetic_bundle(tmp_path / "bundle", n_users=30, n_items=20, per_user=10)
    posted = [{"user_id": "rt-1", "item_id": "sku-001", "event_type": "view", "timestamp": "2024-04-01T09:00:00",
               "event_id": "a"},
              {"user_id": "rt-1", "item_id": "sku-001", "event_type": "purchase", "quantity": 2, "price": 3.5,
               "timestamp": "2024-04-01T09:01:00", "event_id": "b"},
              {"user_id": "rt-2", "item_id": "sku-002", "event_type": "add_to_cart",
               "timestamp": "2024-04-02T12:00:00"},
              {"user_id": "rt-2", "item_id": "sku-002", "event_type": "click", "timestamp": "2024-04-02"}]
    settings = ServingSettings(model=str(shop.archive), work_dir=tmp_path / "work", watch_interval_s=0,
                               events_raw_root=raw)
    with serve_in_thread(create_app(settings)) as url:
        for _ in range(2):  # the client retries the whole batch
            answer = httpx.post(f"{url}/events", json={"events": posted}).json()
            assert answer["rejected"][-1] == {"index": 3, "reason": v.UNKNOWN_EVENT_TYPE}
    blind = EventIntake(EventLog(raw), StoreGuard(None))
    assert blind.ingest(posted[:3]).degraded is True
    result = run_etl(spark, raw, tmp_path / "etl", EtlConfig())  # type: ignore[arg-type]
    clean = spark.read.parquet(str(tmp_path / "etl" / s.CLEAN_DIR / s.EVENTS))  # type: ignore[attr-defined]
    mine = clean.filter(clean[s.USER_ID].startswith("rt-")).orderBy(s.TIMESTAMP).collect()
    assert [(r[s.USER_ID], r[s.EVENT_TYPE], r[s.QUANTITY]) for r in mine] == [
        ("rt-1", "view", 1), ("rt-1", "purchase", 2), ("rt-2", "add_to_cart", 1)]
    # copies logged: 3 by the first post, 0 by its retry (rt-2's repeat is answered "duplicate"), 3 blind
    assert result.reports[s.EVENTS].rejected.get(v.DUPLICATE, 0) == 3
    report = json.loads((tmp_path / "etl" / s.VALIDATION_REPORT_FILE).read_text())
    assert any("realtime" in f for f in report[s.EVENTS]["files"])
