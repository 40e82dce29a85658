"""Windows per EVALUATION.md, on hand-built timestamps (no Spark)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from components import schema as s
from components.etl.windows import compute_windows, datetime_to_micros, load_windows, micros_to_datetime


def test_test_start_is_midnight_of_end_minus_test_days() -> None:
    end = datetime(2011, 12, 9, 12, 50, tzinfo=UTC)  # Online Retail's last invoice
    w = compute_windows(end, test_days=28, label_days=28)
    assert w.test_start == datetime(2011, 11, 11, tzinfo=UTC)  # 12-09 12:50 - 28 d = 11-11 12:50 -> 00:00
    assert w.label_start == datetime(2011, 10, 14, tzinfo=UTC)
    assert w.cutoff(s.TRAIN_FOLD) == w.label_start
    assert w.cutoff(s.TEST_FOLD) == w.test_start
    assert w.target_window(s.TRAIN_FOLD) == (w.label_start, w.test_start)
    assert w.target_window(s.TEST_FOLD) == (w.test_start, None)


def test_end_exactly_at_midnight_and_naive_and_offset_ends() -> None:
    at_midnight = compute_windows(datetime(2024, 3, 10), test_days=2, label_days=3)  # naive = UTC
    assert at_midnight.test_start == datetime(2024, 3, 8, tzinfo=UTC)
    assert at_midnight.label_start == datetime(2024, 3, 5, tzinfo=UTC)
    # 2024-03-10 01:00 at +02:00 is 2024-03-09 23:00 UTC: the UTC calendar day decides
    offset = compute_windows(datetime(2024, 3, 10, 1, tzinfo=timezone(timedelta(hours=2))), 1, 1)
    assert offset.test_start == datetime(2024, 3, 8, tzinfo=UTC)
    assert offset.end == datetime(2024, 3, 9, 23, tzinfo=UTC)


def test_windows_json_round_trip_and_format() -> None:
    w = compute_windows(datetime(2024, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC), 7, 14)
    doc = w.as_json()
    assert doc == {"end": "2024-01-31T23:59:59.999999Z", "test_start": "2024-01-24T00:00:00Z",
                   "label_start": "2024-01-10T00:00:00Z", "test_days": 7, "label_days": 14}
    assert load_windows(w.to_json()) == w


def test_micros_round_trip() -> None:
    moment = datetime(2011, 12, 9, 12, 50, 0, 123_456, tzinfo=UTC)
    assert micros_to_datetime(datetime_to_micros(moment)) == moment
    assert datetime_to_micros(datetime(1970, 1, 2, tzinfo=UTC)) == 86_400_000_000
