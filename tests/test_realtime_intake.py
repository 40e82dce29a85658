"""POST /events over a real socket: per-event reasons (the ETL's), idempotent retries by event_id, the
durable log on disk in the raw contract's format, the metrics; the embedded SQLite store underneath."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from components import event_rules as v
from components import schema as s
from components.realtime.intake import TIMESTAMP_IN_FUTURE
from components.realtime.log import LOG_COLUMNS, log_folder
from components.realtime.store import SqliteStore
from components.serving import metric_names as mn
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "out", n_users=60, n_items=50, per_user=20)


@pytest.fixture
def served(shop: SyntheticShop, tmp_path: Path) -> Iterator[tuple[httpx.Client, Path, Path]]:
    raw, store = tmp_path / "raw", tmp_path / "store.sqlite"
    settings = ServingSettings(model=str(shop.archive), work_dir=tmp_path / "work", watch_interval_s=0,
                               events_raw_root=raw, store_path=store, max_events_per_request=50)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client, raw, store


def event(user: str = "10001", item: str = "SKU-00003", kind: str = "view", ts: str = "2024-05-01T10:00:00",
          **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "event_type": kind, "timestamp": ts, **extra}


def logged_rows(raw: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(log_folder(raw).rglob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames or ()) == LOG_COLUMNS
            rows += list(reader)
    return rows


def test_each_event_is_accepted_or_rejected_with_the_etls_reason(served: tuple[httpx.Client, Path, Path]) -> None:
    client, raw, _ = served
    batch = [
        event(),
        event(user=" "),
        event(item=""),
        event(ts="yesterday"),
        event(kind="click"),
        event(quantity=0),
        event(quantity="1.5"),
        event(price=-1),
        event(kind=" Purchase ", quantity=2, price="3.5", session_id="s1", ts="2024-05-01 10:05:00+02:00"),
        "not an object",
        event(user="a\nb"),
        event(ts="2024-02-30"),
    ]
    response = client.post("/events", json={"events": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == [0, 8]
    assert body["rejected"] == [
        {"index": 1, "reason": v.MISSING_USER_ID}, {"index": 2, "reason": v.MISSING_ITEM_ID},
        {"index": 3, "reason": v.UNPARSABLE_TIMESTAMP}, {"index": 4, "reason": v.UNKNOWN_EVENT_TYPE},
        {"index": 5, "reason": v.NON_POSITIVE_QUANTITY}, {"index": 6, "reason": v.UNPARSABLE_QUANTITY},
        {"index": 7, "reason": v.NEGATIVE_PRICE}, {"index": 9, "reason": v.MALFORMED_ROW},
        {"index": 10, "reason": v.MALFORMED_ROW}, {"index": 11, "reason": v.UNPARSABLE_TIMESTAMP}]
    assert body["degraded"] is False
    rows = logged_rows(raw)
    # the originals, as sent (the raw contract is never rewritten), only for the accepted events
    assert [(r[s.USER_ID], r[s.EVENT_TYPE], r[s.TIMESTAMP], r[s.QUANTITY], r[s.PRICE]) for r in rows] == [
        ("10001", "view", "2024-05-01T10:00:00", "", ""),
        ("10001", " Purchase ", "2024-05-01 10:05:00+02:00", "2", "3.5")]
    metrics = client.get("/metrics").text
    assert f'{mn.EVENTS_TOTAL}{{outcome="accepted",reason=""}} 2.0' in metrics
    assert f'{mn.EVENTS_TOTAL}{{outcome="rejected",reason="{v.MALFORMED_ROW}"}} 2.0' in metrics


def test_a_retry_with_event_ids_is_acknowledged_but_logged_and_stored_once(
        served: tuple[httpx.Client, Path, Path]) -> None:
    client, raw, store_path = served
    batch = [event(event_id="e-1"), event(kind="purchase", event_id="e-2"), event(kind="add_to_cart")]
    first = client.post("/events", json={"events": batch}).json()
    assert first["accepted"] == [0, 1, 2] and first["already_received"] == []
    again = client.post("/events", json={"events": batch}).json()
    # with an event_id a repeat is a retry: acknowledged again; without one it is the ETL's exact duplicate
    assert again["accepted"] == [0, 1] and again["already_received"] == [0, 1]
    assert again["rejected"] == [{"index": 2, "reason": v.DUPLICATE}]
    # the same id within one batch: the second copy is a retry too
    inner = client.post("/events", json={"events": [event(event_id="e-3"), event(event_id="e-3")]}).json()
    assert inner["accepted"] == [0, 1] and inner["already_received"] == [1]
    assert [r["event_id"] for r in logged_rows(raw)] == ["e-1", "e-2", "", "e-3"]
    stored = SqliteStore(store_path).user_events("10001")
    assert [e.key for e in stored].count("id:e-1") == 1 and len(stored) == 4
    metrics = client.get("/metrics").text
    assert f'{mn.EVENTS_TOTAL}{{outcome="already_received",reason=""}} 3.0' in metrics


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"events": {}}', b'{"events": [], "more": 1}'])
def test_a_body_that_is_not_a_batch_is_refused_naming_the_field(served: tuple[httpx.Client, Path, Path],
                                                               body: bytes) -> None:
    client, raw, _ = served
    response = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["parameter"] in ("body", "events")
    assert not log_folder(raw).exists()


def test_a_batch_over_the_limit_is_refused_whole(served: tuple[httpx.Client, Path, Path]) -> None:
    client, raw, _ = served
    response = client.post("/events", json={"events": [event(event_id=str(i)) for i in range(51)]})
    assert response.status_code == 422 and "at most 50" in response.json()["error"]
    assert not log_folder(raw).exists()


def test_events_are_off_without_a_raw_folder(shop: SyntheticShop, tmp_path: Path) -> None:
    settings = ServingSettings(model=str(shop.archive), work_dir=tmp_path, watch_interval_s=0)
    with serve_in_thread(create_app(settings)) as url:
        response = httpx.post(f"{url}/events", json={"events": [event()]})
    assert response.status_code == 404  # no such route: not a server error


def test_events_send_posts_a_file_in_batches(served: tuple[httpx.Client, Path, Path], tmp_path: Path) -> None:
    """`ecomrec events send` over a real socket: 120 rows in batches of 50 (the server's limit), one bad row,
    one repeated row without an id (the ETL's duplicate); the summary counts what the service answered."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    client, raw, _ = served
    path = tmp_path / "events.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY])
        for i in range(117):
            ts = f"2024-05-01T10:{i // 60:02d}:{i % 60:02d}"
            writer.writerow([f"c{i % 7}", f"SKU-{i % 11:05d}", "purchase", ts, 1])
        writer.writerow(["c1", "SKU-00001", "purchase", "not a time", 1])
        writer.writerow(["c0", "SKU-00000", "purchase", "2024-05-01T10:00:00", 1])  # row 0 again
        writer.writerow(["c2", "SKU-00002", "view", "2024-05-02", ""])
    result = CliRunner().invoke(app, ["events", "send", str(path), "--url", str(client.base_url),
                                      "--batch-size", "50"])
    assert result.exit_code == 0, result.output
    assert "120" in result.output and "rejected: duplicate" in result.output
    assert "rejected: unparsable_timestamp" in result.output
    assert len(logged_rows(raw)) == 118
    assert len(list(log_folder(raw).rglob("*.csv"))) == 1  # one process, one file


def test_events_send_names_an_unreadable_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["events", "send", str(tmp_path / "nope.csv"), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "no such file" in " ".join(result.output.split())


def test_an_event_stamped_far_ahead_of_the_clock_is_refused_and_evicts_nothing(
        served: tuple[httpx.Client, Path, Path]) -> None:
    """One event stamped years ahead (a unit or clock bug) would be the user's newest: the store keeps a user's
    events within ECOMREC_STORE_MAX_DAYS (365) of their newest, so it would evict every real one. Refused
    with its reason, not logged; skew within ECOMREC_EVENTS_MAX_AHEAD_S (one hour) is accepted as stamped."""
    client, raw, store = served

    def at(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%S")

    real = [event(ts=at(timedelta(days=-30)), event_id="real-1"), event(ts=at(timedelta(days=-1)), event_id="real-2")]
    assert client.post("/events", json={"events": real}).json()["accepted"] == [0, 1]
    body = client.post("/events", json={"events": [
        event(ts=at(timedelta(days=3 * 365)), event_id="ahead-years"),
        event(ts=at(timedelta(minutes=70)), event_id="ahead-70-min"),
        event(ts=at(timedelta(minutes=10)), event_id="skewed-10-min")]}).json()
    assert body["accepted"] == [2]
    assert body["rejected"] == [{"index": i, "reason": TIMESTAMP_IN_FUTURE} for i in (0, 1)]
    kept = [e.key for e in SqliteStore(store).user_events("10001")]
    assert kept == ["id:real-1", "id:real-2", "id:skewed-10-min"]
    assert [r["event_id"] for r in logged_rows(raw)] == ["real-1", "real-2", "skewed-10-min"]
