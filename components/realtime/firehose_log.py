"""The durable event log on AWS: Amazon Data Firehose (``PutRecordBatch``) delivering to the raw bucket, where
the next pipeline run reads the objects as raw events (selected by ``ECOMREC_EVENTS_FIREHOSE_STREAM``).

One record per accepted event: its CSV line (schema.EVENT_LOG_COLUMNS, newline-terminated, no header; the
same values the local log writes). Firehose concatenates records into objects named
``<raw prefix>events/realtime/date=YYYY-MM-DD/<stream>-...headerless.csv`` (the delivery stream's Prefix and
FileExtension below, set by cdk/stacks/realtime.py), which the ETL reads as header-less CSV
(components/etl/read.py). The day is Firehose's arrival time of the object's oldest record, in UTC.

Acknowledged means accepted: :meth:`FirehoseEventLog.append` returns only after Firehose accepted every
record. A ``PutRecordBatch`` answer may reject some records (``FailedPutCount``; throttling or an internal
error per record); those, and only those, are sent again with backoff. Records still rejected after the
last attempt, or a call that fails outright (botocore has already retried it), raise
:class:`EventLogUnavailableError` (an OSError: POST /events answers 503 and acknowledges nothing). Records of
the batch that were accepted stay in the log; the client's retry writes them again and the ETL's
exact-duplicate check (event_id is a column) counts them once.

Limits of one call (https://docs.aws.amazon.com/firehose/latest/APIReference/API_PutRecordBatch.html): "up to
500 records. Each record in the request can be as large as 1,000 KB (before base64 encoding), up to a limit
of 4 MB for the entire request". Batches are cut to stay within them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from components import schema as s
from components.realtime.log import REALTIME_DIR, csv_line

MAX_RECORDS_PER_CALL: Final = 500
MAX_BYTES_PER_CALL: Final = 4 * 1024 * 1024
MAX_RECORD_BYTES: Final = 1000 * 1024
ATTEMPTS: Final = 5  # calls per batch while some records are rejected
BACKOFF_S: Final = 0.05  # doubled after each partly rejected call

# The delivery stream's S3 destination (the CDK stack and the tests build it from these). Firehose evaluates
# !{timestamp:...} with the arrival time of the object's oldest record, UTC unless CustomTimeZone says
# otherwise; the error prefix must name !{firehose:error-output-type} and sits outside the raw contract's
# folders, so failed deliveries never reach the ETL (https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html).
DAY_EXPRESSION: Final = "!{timestamp:yyyy-MM-dd}"
FILE_EXTENSION: Final = s.HEADERLESS_CSV_SUFFIX
ERROR_PREFIX: Final = "firehose-errors/events/!{firehose:error-output-type}/date=" + DAY_EXPRESSION + "/"


def delivery_prefix(raw_prefix: str) -> str:
    """The Prefix of the stream's S3 destination: the raw contract's events/realtime/date=<day>/ under
    ``raw_prefix`` (the raw folder's key prefix in the bucket, e.g. ``raw/``)."""
    base = raw_prefix.strip("/")
    return (f"{base}/" if base else "") + f"{s.EVENTS}/{REALTIME_DIR}/date={DAY_EXPRESSION}/"


def s3_destination(raw_prefix: str) -> dict[str, Any]:
    """The stream's S3 destination settings, named as in the Firehose API and CloudFormation's
    ExtendedS3DestinationConfiguration (bucket and role ARNs aside). Uncompressed, so the objects are the
    ``.headerless.csv`` files their extension says; UTC days like the local log's; an object at least every
    5 minutes (a retraining run sees events up to then), at most 64 MiB."""
    return {
        "Prefix": delivery_prefix(raw_prefix),
        "ErrorOutputPrefix": ERROR_PREFIX,
        "FileExtension": FILE_EXTENSION,
        "CompressionFormat": "UNCOMPRESSED",
        "CustomTimeZone": "UTC",
        "BufferingHints": {"IntervalInSeconds": 300, "SizeInMBs": 64},
    }


class EventLogUnavailableError(OSError):
    """The log did not take the records: nothing of the batch may be acknowledged."""


def batches(records: Sequence[bytes]) -> Iterator[list[bytes]]:
    """``records`` cut into PutRecordBatch calls within the documented limits (in order)."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if len(record) > MAX_RECORD_BYTES:
            raise EventLogUnavailableError(
                f"event log record of {len(record):,} bytes: over Firehose's {MAX_RECORD_BYTES:,}-byte limit")
        if batch and (len(batch) == MAX_RECORDS_PER_CALL or size + len(record) > MAX_BYTES_PER_CALL):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield batch


def _default_client() -> Any:
    import boto3
    from botocore.config import Config

    # botocore retries throttling, 5xx and connection errors of the whole call ("standard" mode); the
    # per-record rejections of a successful call are ours to retry (append below).
    return boto3.client("firehose", config=Config(retries={"mode": "standard", "max_attempts": 3},
                                                  connect_timeout=2, read_timeout=5))


class FirehoseEventLog:
    """Append-only log through one Firehose delivery stream. Thread-safe (a boto3 client is); a forked worker
    makes its own client."""

    def __init__(self, stream: str, *, client_factory: Callable[[], Any] = _default_client,
                 attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, not {attempts}")
        self.stream = stream
        self._factory = client_factory
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid: int | None = None

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self._factory(), os.getpid()
            return self._client

    def append(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Send ``rows`` (raw values by column name; missing = empty); return once all are accepted."""
        for batch in batches([csv_line(row).encode("utf-8") for row in rows]):
            self._put(batch)

    def _put(self, batch: list[bytes]) -> None:
        pending = batch
        errors: dict[str, int] = {}
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                answer = self.client.put_record_batch(DeliveryStreamName=self.stream,
                                                      Records=[{"Data": record} for record in pending])
            except (BotoCoreError, ClientError) as error:  # after botocore's own retries of the call
                raise EventLogUnavailableError(
                    f"Firehose stream {self.stream}: PutRecordBatch failed ({type(error).__name__}: {error}); "
                    f"{len(pending)} record(s) not acknowledged") from error
            responses = answer["RequestResponses"]
            if len(responses) != len(pending):
                raise EventLogUnavailableError(
                    f"Firehose stream {self.stream}: {len(responses)} answers for {len(pending)} records")
            failed = [(record, r) for record, r in zip(pending, responses, strict=True) if r.get("ErrorCode")]
            if not failed:
                return
            errors = {}
            for _, response in failed:
                errors[response["ErrorCode"]] = errors.get(response["ErrorCode"], 0) + 1
            pending = [record for record, _ in failed]
        raise EventLogUnavailableError(
            f"Firehose stream {self.stream}: {len(pending)} of {len(batch)} record(s) still rejected after "
            f"{self.attempts} attempts ({', '.join(f'{code} x{n}' for code, n in sorted(errors.items()))})")

    def close(self) -> None:
        self._client = None
