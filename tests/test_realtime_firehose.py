"""The durable event log on AWS (components/realtime/firehose_log.py): Amazon Data Firehose to the raw bucket.

moto (5.2.5) stands in for Firehose and S3: real boto3 calls, PutRecordBatch delivering each call's records
to the S3 destination's bucket. moto names the objects its own way (moto/firehose/models.py,
``_format_s3_object_path``: the Prefix taken literally, then ``YYYY/MM/DD/HH/``, no file extension), which
is not what Firehose does, so ``documented_keys`` below replaces that one function with the naming the
documentation gives:
- https://docs.aws.amazon.com/firehose/latest/dev/s3-object-name.html: "<evaluated prefix><suffix>, where
  the suffix has the format <Firehose stream name>-<Firehose stream version>-<year>-<month>-<day>-<hour>-
  <minute>-<second>-<uuid><file extension>";
- https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html: "Custom prefix you specify will override
  the default prefix of yyyy/MM/dd/HH"; ``!{timestamp:...}`` is a Java DateTimeFormatter pattern evaluated
  with "the approximate arrival timestamp of the oldest record", in UTC by default.
Per-record rejections (which moto never answers) follow the PutRecordBatch response syntax
(https://docs.aws.amazon.com/firehose/latest/APIReference/API_PutRecordBatch.html): ``FailedPutCount`` and,
per record in request order, either ``RecordId`` or ``ErrorCode`` + ``ErrorMessage``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from components import schema as s
from components.realtime import firehose_log as fl
from components.realtime.firehose_log import EventLogUnavailableError, FirehoseEventLog

moto = pytest.importorskip("moto")

STREAM, BUCKET, RAW_PREFIX = "ecomrec-events", "ecomrec-raw-123456789012-eu-west-1", "raw/"
JAVA_TO_STRFTIME = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}


def evaluate_prefix(prefix: str, arrival: datetime) -> str:
    """A Prefix with !{timestamp:...} expressions as Firehose evaluates it (s3-prefixes.html); the patterns
    this project uses only (letters yyyy MM dd HH mm ss and literal separators)."""
    def timestamp(match: re.Match[str]) -> str:
        pattern = re.sub("yyyy|MM|dd|HH|mm|ss", lambda m: JAVA_TO_STRFTIME[m.group(0)], match.group(1))
        assert not re.search("[A-Za-z]", pattern.replace("%", "").translate(str.maketrans("", "", "YmdHMS"))), \
            f"pattern {match.group(1)!r} is not emulated"
        return arrival.strftime(pattern)

    evaluated = re.sub(r"!\{timestamp:([^}]*)\}", timestamp, prefix)
    assert "!{" not in evaluated, f"expression not emulated in {prefix!r}"
    return evaluated


def documented_key(destination: dict[str, Any], stream: str, version: str, arrival: datetime) -> str:
    """The key Firehose gives an object (s3-object-name.html), for a Prefix with expressions."""
    prefix = destination.get("Prefix", "")
    assert "!{timestamp:" in prefix, "a Prefix without a timestamp expression is not emulated"
    suffix = f"{stream}-{version}-{arrival:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}{destination.get('FileExtension', '')}"
    return evaluate_prefix(prefix, arrival) + suffix


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's Firehose and S3 with the stream configured as the CDK stack configures it, delivering under
    the documented object names."""
    import boto3
    from moto.firehose.models import FirehoseBackend
    from moto.s3.models import s3_backends

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)

    def put_s3_records(self: Any, delivery_stream_name: str, version_id: str, s3_destination: dict[str, Any],
                       records: list[dict[str, bytes]]) -> list[dict[str, str]]:
        key = documented_key(s3_destination, delivery_stream_name, version_id, datetime.now(UTC))
        s3_backends[self.account_id][self.partition].put_object(
            s3_destination["BucketARN"].split(":")[-1], key, b"".join(r["Data"] for r in records))
        return [{"RecordId": str(uuid.uuid4())} for _ in records]

    monkeypatch.setattr(FirehoseBackend, "put_s3_records", put_s3_records)
    with moto.mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        boto3.client("firehose").create_delivery_stream(
            DeliveryStreamName=STREAM, DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "BucketARN": f"arn:aws:s3:::{BUCKET}", "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                **fl.s3_destination(RAW_PREFIX)})
        yield s3


def objects(s3: Any, prefix: str = "") -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def row(i: int, **extra: object) -> dict[str, object]:
    return {s.USER_ID: f"rt-{i}", s.ITEM_ID: "sku,1", s.EVENT_TYPE: "view", s.TIMESTAMP: "2024-04-01T09:00:00",
            s.EVENT_ID: f"e{i}", **extra}


# ------------------------------------------------------------------ batching (pure)


def test_batches_stay_within_put_record_batch_limits() -> None:
    """API_PutRecordBatch.html: at most 500 records and 4 MiB per call, 1,000 KiB per record."""
    small = [b"x" * 10] * 1201
    assert [len(b) for b in fl.batches(small)] == [500, 500, 201]
    big = [b"y" * (900 * 1024)] * 10  # 4 fit in 4 MiB (3.5 MiB), a 5th would not
    cut = list(fl.batches(big))
    assert [len(b) for b in cut] == [4, 4, 2]
    assert all(sum(map(len, b)) <= fl.MAX_BYTES_PER_CALL for b in cut)
    assert [r for b in cut for r in b] == big  # order kept, nothing lost
    assert list(fl.batches([b"z" * fl.MAX_RECORD_BYTES])) == [[b"z" * fl.MAX_RECORD_BYTES]]
    with pytest.raises(EventLogUnavailableError, match="over Firehose's 1,024,000-byte limit"):
        list(fl.batches([b"z" * (fl.MAX_RECORD_BYTES + 1)]))


# ------------------------------------------------------------------ on moto


class Rejecting:
    """The moto client, except that the first ``rounds`` calls reject every record whose index is odd (every
    record with ``all``), the way a PutRecordBatch answer reports per-record failures."""

    def __init__(self, client: Any, rounds: int, *, every: bool = False) -> None:
        self.client, self.rounds, self.every = client, rounds, every
        self.calls: list[list[bytes]] = []

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
        records = kwargs["Records"]
        self.calls.append([r["Data"] for r in records])
        if len(self.calls) > self.rounds:
            return dict(self.client.put_record_batch(**kwargs))
        kept = [i for i in range(len(records)) if i % 2 == 0 and not self.every]
        accepted = iter(self.client.put_record_batch(**{**kwargs, "Records": [records[i] for i in kept]})
                        ["RequestResponses"] if kept else [])
        responses = [next(accepted) if i in kept else
                     {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}
                     for i in range(len(records))]
        return {"FailedPutCount": len(records) - len(kept), "Encrypted": False, "RequestResponses": responses}


def test_rejected_records_alone_are_sent_again_until_all_are_accepted(aws: Any) -> None:
    import boto3

    client = Rejecting(boto3.client("firehose"), rounds=2)
    waits: list[float] = []
    log = FirehoseEventLog(STREAM, client_factory=lambda: client, sleep=waits.append)
    log.append([row(i) for i in range(8)])
    sent = client.calls
    assert [len(c) for c in sent] == [8, 4, 2]  # each retry carries only what the previous call rejected
    assert sent[1] == sent[0][1::2] and sent[2] == sent[1][1::2]
    assert waits == [fl.BACKOFF_S, 2 * fl.BACKOFF_S]
    delivered = b"".join(objects(aws).values()).decode()
    lines = sorted(delivered.splitlines())
    assert lines == sorted(f"rt-{i},\"sku,1\",view,2024-04-01T09:00:00,,,,e{i}" for i in range(8))  # once each


def test_records_rejected_on_every_attempt_are_a_clear_error_never_an_acknowledgement(aws: Any) -> None:
    import boto3

    client = Rejecting(boto3.client("firehose"), rounds=99, every=True)
    log = FirehoseEventLog(STREAM, client_factory=lambda: client, attempts=3, sleep=lambda _: None)
    with pytest.raises(EventLogUnavailableError,
                       match=r"ecomrec-events: 4 of 4 record\(s\) still rejected after 3 attempts "
                             r"\(ServiceUnavailableException x4\)"):
        log.append([row(i) for i in range(4)])
    assert [len(c) for c in client.calls] == [4, 4, 4]
    assert objects(aws) == {}
    assert isinstance(EventLogUnavailableError("x"), OSError)  # what POST /events turns into a 503


def test_post_events_answers_503_when_firehose_refuses_the_batch(aws: Any, tmp_path: Path) -> None:
    """Over HTTP, with the service's own wiring (ECOMREC_EVENTS_FIREHOSE_STREAM): a stream that does not
    exist (ResourceNotFoundException) acknowledges nothing; the configured one takes the batch."""
    from components.serving.app import create_app
    from components.serving.settings import ServingSettings
    from components.serving.synthetic import make_synthetic_bundle
    from components.serving.testing import serve_in_thread

    shop = make_synthetic_bundle(tmp_path / "bundle", n_users=20, n_items=10, per_user=5)
    batch = {"events": [{"user_id": "u1", "item_id": "sku-001", "event_type": "view",
                         "timestamp": "2024-04-01T09:00:00", "event_id": "a"}]}
    for stream, status in (("no-such-stream", 503), (STREAM, 200)):
        settings = ServingSettings(model=str(shop.archive), work_dir=tmp_path / stream, watch_interval_s=0,
                                   events_firehose_stream=stream)
        with serve_in_thread(create_app(settings)) as url:
            answer = httpx.post(f"{url}/events", json=batch)
        assert answer.status_code == status, answer.text
        if status == 503:
            assert "event log unavailable, nothing acknowledged" in answer.text
            assert "ResourceNotFoundException" in answer.text
            assert objects(aws) == {}
        else:
            assert answer.json()["accepted"] == [0]
    [key] = objects(aws)
    assert re.fullmatch(rf"raw/events/realtime/date=\d{{4}}-\d\d-\d\d/{STREAM}-1-[-0-9a-f]+\.headerless\.csv", key)


def test_settings_take_one_event_log() -> None:
    from components.serving.settings import ServingSettings

    with pytest.raises(ValueError, match="both set"):
        ServingSettings(model="s3://b/k", events_raw_root=Path("/tmp"), events_firehose_stream="s")
    assert ServingSettings(model="s3://b/k", events_firehose_stream="s").events_on


@pytest.mark.spark
def test_firehose_objects_are_raw_events_the_etl_reads(spark: object, aws: Any, tmp_path: Path) -> None:
    """Events accepted through the Firehose log land under the raw prefix's events/ (the day partition, the
    .headerless.csv extension) and the next ETL run, reading the raw bucket's prefix the way the pipeline
    does (components.storage.materialize), takes them as raw events: header-less lines, commas and quotes in
    values, empty optional columns."""
    from components.config import EtlConfig
    from components.etl.step import run_etl
    from components.storage import materialize, upload
    from tests.conftest import make_tiny_raw

    upload(make_tiny_raw(tmp_path / "shop"), f"s3://{BUCKET}/{RAW_PREFIX}", s3_client=aws)
    log = FirehoseEventLog(STREAM)
    log.append([row(1, **{s.ITEM_ID: "sku-001", s.EVENT_TYPE: "purchase", s.QUANTITY: "2", s.PRICE: "3.5",
                          s.SESSION_ID: 'say "hi", ok'})])
    log.append([row(2, **{s.ITEM_ID: "sku-002"}), row(2, **{s.ITEM_ID: "sku-002"})])  # a retry logged twice
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    keys = list(objects(aws, f"{RAW_PREFIX}events/realtime/"))
    assert len(keys) == 2 and all(k.startswith(f"raw/events/realtime/date={day}/{STREAM}-") for k in keys)
    assert all(k.endswith(s.HEADERLESS_CSV_SUFFIX) for k in keys)

    raw = materialize(f"s3://{BUCKET}/{RAW_PREFIX}", s3_client=aws, workdir=tmp_path / "raw")
    result = run_etl(spark, raw, tmp_path / "etl", EtlConfig())  # type: ignore[arg-type]
    clean = spark.read.parquet(str(tmp_path / "etl" / s.CLEAN_DIR / s.EVENTS))  # type: ignore[attr-defined]
    mine = clean.filter(clean[s.USER_ID].isin("rt-1", "rt-2")).orderBy(s.USER_ID).collect()
    assert [(r[s.USER_ID], r[s.ITEM_ID], r[s.EVENT_TYPE], r[s.QUANTITY], r[s.SESSION_ID]) for r in mine] == [
        ("rt-1", "sku-001", "purchase", 2, 'say "hi", ok'), ("rt-2", "sku-002", "view", 1, None)]
    assert result.reports[s.EVENTS].rejected.get("duplicate", 0) == 1


def test_headerless_files_are_refused_outside_events_and_when_empty(tmp_path: Path) -> None:
    """The header-less form is the event log's only: elsewhere, or empty, it is a clear error naming the file
    (raised while listing, before Spark reads anything)."""
    from components.errors import DataContractError
    from components.etl.read import read_table

    (tmp_path / s.ITEMS).mkdir()
    (tmp_path / s.ITEMS / f"x{s.HEADERLESS_CSV_SUFFIX}").write_text("i1,mugs\n")
    with pytest.raises(DataContractError, match=r"x\.headerless\.csv: a \.headerless\.csv file holds the event log"):
        read_table(None, tmp_path, s.ITEMS, [s.ITEM_ID])  # type: ignore[arg-type]
    (tmp_path / s.EVENTS).mkdir()
    (tmp_path / s.EVENTS / f"e{s.HEADERLESS_CSV_SUFFIX}").write_text("\n")
    with pytest.raises(DataContractError, match=r"e\.headerless\.csv: empty file \(no rows\)"):
        read_table(None, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)  # type: ignore[arg-type]
