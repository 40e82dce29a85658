"""Send a file of events to a running service's ``POST /events`` in batches (``ecomrec events send``).

The file is one table of the raw contract: CSV (optionally .gz) with a header, Parquet, or JSON lines.
Values go as text, exactly as the file holds them: the service checks them with the ETL's rules. A batch
that fails in transit (connection error, 5xx) is sent again, up to ``retries`` times; rows with an
``event_id`` make that retry exact, rows without one may come back as ``duplicate`` (already logged).
"""

from __future__ import annotations

import csv
import gzip
import io
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from components.errors import EcomrecError
from components.realtime.log import LOG_COLUMNS


class SendError(EcomrecError):
    """The file cannot be read or the service refused a batch for good."""


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The file's rows as {column: value} (empty CSV cells left out)."""
    name = path.name.lower()
    if not path.is_file():
        raise SendError(f"{path}: no such file")
    if name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                yield {k: (str(v) if v is not None and k in LOG_COLUMNS else v) for k, v in row.items()
                       if v is not None}
    elif name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as error:
                        raise SendError(f"{path}: line {number} is not JSON ({error})") from error
    elif name.endswith((".csv", ".csv.gz")):
        with (gzip.open(path, "rb") if name.endswith(".gz") else path.open("rb")) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                yield {k: v for k, v in row.items() if v not in ("", None)}
    else:
        raise SendError(f"{path}: expected .csv, .csv.gz, .parquet or .jsonl")


@dataclass
class SendReport:
    sent: int = 0
    accepted: int = 0
    already_received: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    degraded_batches: int = 0
    retries: int = 0
    seconds: float = 0.0


def _post(client: httpx.Client, url: str, batch: list[dict[str, Any]], retries: int,
          report: SendReport) -> dict[str, Any]:
    body = orjson.dumps({"events": batch})
    for attempt in range(retries + 1):
        try:
            response = client.post(url, content=body, headers={"content-type": "application/json"})
        except httpx.TransportError as error:
            if attempt == retries:
                raise SendError(f"{url}: {error}") from error
        else:
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
            if response.status_code < 500 or attempt == retries:
                raise SendError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
        report.retries += 1
        time.sleep(min(2.0, 0.1 * 2 ** attempt))
    raise AssertionError("unreachable")


def send_events(path: Path, url: str, *, batch_size: int = 100, retries: int = 3, timeout_s: float = 30.0,
                token: str | None = None, progress: Callable[[int], None] = lambda n: None) -> SendReport:
    """Post every row of ``path`` to ``url`` (the service's base URL or its /events URL), with
    ``Authorization: Bearer <token>`` when a token is given."""
    target = url.rstrip("/")
    if not target.endswith("/events"):
        target += "/events"
    report = SendReport()
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=timeout_s, headers=headers) as client:
        batch: list[dict[str, Any]] = []
        rows = iter_rows(path)
        while True:
            row = next(rows, None)
            if row is not None:
                batch.append(row)
            if batch and (row is None or len(batch) >= batch_size):
                answer = _post(client, target, batch, retries, report)
                report.sent += len(batch)
                report.accepted += len(answer["accepted"]) - len(answer["already_received"])
                report.already_received += len(answer["already_received"])
                report.rejected.update(str(r["reason"]) for r in answer["rejected"])
                report.degraded_batches += bool(answer.get("degraded"))
                progress(len(batch))
                batch = []
            if row is None:
                break
    report.seconds = time.perf_counter() - started
    return report
