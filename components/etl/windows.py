"""The evaluation split (EVALUATION.md): two windows cut off the end of the log on day boundaries.

test_start = 00:00 UTC of the calendar day of (last event time - test_days days);
label_start = test_start - label_days days. Fold "train" has cutoff label_start and targets in
[label_start, test_start); fold "test" has cutoff test_start and targets in [test_start, end].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from components import schema as s

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MICROS = 86_400_000_000


def micros_to_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def datetime_to_micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Windows:
    end: datetime  # the last accepted event (UTC)
    test_start: datetime
    label_start: datetime
    test_days: int
    label_days: int

    def cutoff(self, fold: s.Fold) -> datetime:
        return self.label_start if fold == s.TRAIN_FOLD else self.test_start

    def target_window(self, fold: s.Fold) -> tuple[datetime, datetime | None]:
        """[start, stop) of the fold's targets; stop None = to the end of the log, inclusive."""
        if fold == s.TRAIN_FOLD:
            return self.label_start, self.test_start
        return self.test_start, None

    def as_json(self) -> dict[str, object]:
        return {"end": _iso(self.end), "test_start": _iso(self.test_start),
                "label_start": _iso(self.label_start), "test_days": self.test_days,
                "label_days": self.label_days}

    def to_json(self) -> str:
        return json.dumps(self.as_json(), indent=2)


def compute_windows(end: datetime, test_days: int, label_days: int) -> Windows:
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)  # naive = UTC (DATA_CONTRACT.md)
    end = end.astimezone(UTC)
    shifted = end - timedelta(days=test_days)
    test_start = shifted.replace(hour=0, minute=0, second=0, microsecond=0)
    label_start = test_start - timedelta(days=label_days)
    return Windows(end=end, test_start=test_start, label_start=label_start, test_days=test_days,
                   label_days=label_days)


def load_windows(text: str) -> Windows:
    """Read windows.json back (for steps and tests)."""
    raw = json.loads(text)

    def parse(key: str) -> datetime:
        return datetime.fromisoformat(str(raw[key]).replace("Z", "+00:00")).astimezone(UTC)

    return Windows(end=parse("end"), test_start=parse("test_start"), label_start=parse("label_start"),
                   test_days=int(raw["test_days"]), label_days=int(raw["label_days"]))
