"""The ETL step's output contract on the shared tiny shop (plus a gzipped file of broken rows), run through
``main(argv)`` exactly as the local runner and SageMaker call it; expectations are recomputed with pandas
from the raw files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components import schema as s
from components.etl import validate as v
from components.etl.features import ITEM_FEATURES, USER_FEATURES, USER_ITEM_FEATURES
from components.etl.ids import build_id_map
from components.etl.read import resolve_raw_root
from components.etl.step import INPUTS, main
from pipelines.graph import get_step
from tests.conftest import make_tiny_raw

BROKEN = (
    "user_id,item_id,event_type,timestamp,quantity,price,session_id\n"
    ",sku-001,purchase,2024-02-01T10:00:00,1,3.5,s\n"
    "u001,sku-001,purchase,not a time,1,3.5,s\n"
    "u001,sku-999,purchase,2024-02-01T10:00:00,1,3.5,s\n"
    "u001,sku-001,wishlist,2024-02-01T10:00:00,1,3.5,s\n"
)


@pytest.fixture(scope="module")
def etl(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("contract")
    raw = make_tiny_raw(root / "raw")
    (raw / s.EVENTS / "broken.csv.gz").write_bytes(gzip.compress(BROKEN.encode()))
    out = root / "out" / "etl"
    main(["--raw", str(raw), "--output", str(out), "--config", '{"etl": {"test_days": 21, "label_days": 14}}'])
    return raw, out


def parquet(out: Path, *parts: str) -> pd.DataFrame:
    return pd.read_parquet(out.joinpath(*parts))


def test_inputs_match_the_step_graph() -> None:
    assert get_step("etl").inputs == INPUTS == ("raw",)


def test_every_table_and_column(etl: tuple[Path, Path]) -> None:
    _, out = etl
    spec = json.loads((out / s.FEATURES_FILE).read_text())
    assert list(parquet(out, s.CLEAN_DIR, s.EVENTS).columns) == [
        s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID, s.USER_IDX, s.ITEM_IDX]
    assert list(parquet(out, s.CLEAN_DIR, s.ITEMS).columns) == [s.ITEM_ID, s.ITEM_IDX, "category", "price"]
    assert list(parquet(out, s.CLEAN_DIR, s.USERS).columns) == [s.USER_ID, s.USER_IDX, "country"]
    assert list(parquet(out, s.ID_MAPS_DIR, s.USERS).columns) == [s.USER_ID, s.USER_IDX]
    assert list(parquet(out, s.ID_MAPS_DIR, s.ITEMS).columns) == [s.ITEM_ID, s.ITEM_IDX]
    for table in s.RAW_TABLES:
        assert list(parquet(out, s.REJECTED_DIR, table).columns)[-2:] == [s.REASON, s.SOURCE_FILE]
    expected = {
        s.INTERACTIONS: [s.USER_IDX, s.ITEM_IDX, s.WEIGHT],
        s.USER_FEATURES: [s.USER_IDX, *USER_FEATURES, s.USER_ATTR_PREFIX + "country"],
        s.ITEM_FEATURES: [s.ITEM_IDX, *ITEM_FEATURES, s.ITEM_ATTR_PREFIX + "price",
                          s.ITEM_ATTR_PREFIX + "category"],
        s.USER_ITEM_FEATURES: [s.USER_IDX, s.ITEM_IDX, *USER_ITEM_FEATURES],
        s.TARGETS: [s.USER_IDX, s.ITEM_IDX],
        s.TARGET_USERS: [s.USER_IDX, s.SEGMENT],
        s.USER_CATEGORY: [s.USER_IDX, s.ITEM_CATEGORY, s.UC_SHARE],
    }
    for fold in s.FOLDS:
        for table, columns in expected.items():
            frame = parquet(out, s.FOLDS_DIR, fold, table)
            assert list(frame.columns) == columns, (fold, table)
            assert len(frame) > 0, (fold, table)
            assert str(frame[columns[0]].dtype) == "int32"
    assert spec["user"] == expected[s.USER_FEATURES][1:]
    assert spec["item"] == expected[s.ITEM_FEATURES][1:]
    assert spec["user_item"] == expected[s.USER_ITEM_FEATURES][2:]
    assert spec["categorical"] == [s.USER_ATTR_PREFIX + "country", s.ITEM_ATTR_PREFIX + "category"]


def test_counts_add_up_and_rejected_rows_keep_originals(etl: tuple[Path, Path]) -> None:
    raw, out = etl
    report = json.loads((out / s.VALIDATION_REPORT_FILE).read_text())
    n_raw = len(pd.read_csv(raw / s.EVENTS / "part-0.csv")) + BROKEN.count("\n") - 1
    events = report[s.EVENTS]
    assert events["input"] == n_raw
    assert events["accepted"] + sum(events["rejected"].values()) == n_raw
    assert events["rejected"] == {v.MISSING_USER_ID: 1, v.UNPARSABLE_TIMESTAMP: 1, v.UNKNOWN_EVENT_TYPE: 1,
                                  v.UNKNOWN_ITEM: 1}
    assert len(parquet(out, s.CLEAN_DIR, s.EVENTS)) == events["accepted"]
    rejected = parquet(out, s.REJECTED_DIR, s.EVENTS)
    assert len(rejected) == 4
    assert set(rejected[s.SOURCE_FILE]) == {"events/broken.csv.gz"}
    assert rejected[rejected[s.REASON] == v.UNPARSABLE_TIMESTAMP][s.TIMESTAMP].tolist() == ["not a time"]
    assert all(str(t) == "object" for t in rejected.dtypes)  # original values as strings
    for table in (s.ITEMS, s.USERS):
        assert report[table]["input"] == report[table]["accepted"] == len(pd.read_csv(raw / table / "part-0.csv"))


def test_id_maps_dense_sorted_and_complete(etl: tuple[Path, Path]) -> None:
    raw, out = etl
    clean = parquet(out, s.CLEAN_DIR, s.EVENTS)
    for table, id_col, idx_col in ((s.USERS, s.USER_ID, s.USER_IDX), (s.ITEMS, s.ITEM_ID, s.ITEM_IDX)):
        id_map = parquet(out, s.ID_MAPS_DIR, table).sort_values(idx_col)
        expected_ids = sorted(set(clean[id_col]) | set(pd.read_csv(raw / table / "part-0.csv")[id_col]))
        assert id_map[id_col].tolist() == expected_ids
        assert id_map[idx_col].tolist() == list(range(len(expected_ids)))
        assert str(id_map[idx_col].dtype) == "int32"
        joined = clean.merge(id_map, on=id_col, suffixes=("", "_map"))
        assert (joined[idx_col] == joined[f"{idx_col}_map"]).all()


def test_id_map_is_deterministic_whatever_the_partitioning(spark: Any) -> None:
    ids = [f"id{i % 37:03d}" for i in range(500)] + ["Z", "a", "é", "10", "9"]
    maps = []
    for partitions in (1, 7):
        frame = spark.createDataFrame([(i,) for i in ids], "x string").repartition(partitions)
        maps.append(sorted(tuple(r) for r in build_id_map([frame], s.ITEM_ID, s.ITEM_IDX).collect()))
    assert maps[0] == maps[1]
    assert [r[0] for r in sorted(maps[0], key=lambda r: r[1])] == sorted(set(ids))


def test_windows_targets_and_segments_match_pandas(etl: tuple[Path, Path]) -> None:
    _, out = etl
    windows = json.loads((out / s.WINDOWS_FILE).read_text())
    clean = parquet(out, s.CLEAN_DIR, s.EVENTS)
    ts = pd.to_datetime(clean[s.TIMESTAMP], utc=True)
    end = ts.max()
    test_start = (end - pd.Timedelta(days=21)).floor("D")
    label_start = test_start - pd.Timedelta(days=14)
    assert pd.Timestamp(windows["end"]) == end
    assert pd.Timestamp(windows["test_start"]) == test_start
    assert pd.Timestamp(windows["label_start"]) == label_start
    buys = clean[clean[s.EVENT_TYPE] == s.PURCHASE]
    buy_ts = pd.to_datetime(buys[s.TIMESTAMP], utc=True)
    for fold, cutoff, window in ((s.TRAIN_FOLD, label_start, (buy_ts >= label_start) & (buy_ts < test_start)),
                                 (s.TEST_FOLD, test_start, buy_ts >= test_start)):
        targets = parquet(out, s.FOLDS_DIR, fold, s.TARGETS)
        expected = set(zip(buys[window][s.USER_IDX], buys[window][s.ITEM_IDX], strict=True))
        assert set(zip(targets[s.USER_IDX], targets[s.ITEM_IDX], strict=True)) == expected
        assert len(targets) == len(expected)  # distinct
        warm_users = set(clean[ts < cutoff][s.USER_IDX])
        segments = parquet(out, s.FOLDS_DIR, fold, s.TARGET_USERS)
        assert set(segments[s.USER_IDX]) == {u for u, _ in expected}
        for user, segment in zip(segments[s.USER_IDX], segments[s.SEGMENT], strict=True):
            assert segment == (s.WARM if user in warm_users else s.COLD)
        interactions = parquet(out, s.FOLDS_DIR, fold, s.INTERACTIONS)
        assert (interactions[s.WEIGHT] > 0).all()
        history_pairs = set(zip(clean[ts < cutoff][s.USER_IDX], clean[ts < cutoff][s.ITEM_IDX], strict=True))
        ui = parquet(out, s.FOLDS_DIR, fold, s.USER_ITEM_FEATURES)
        assert set(zip(ui[s.USER_IDX], ui[s.ITEM_IDX], strict=True)) == history_pairs
        assert set(zip(interactions[s.USER_IDX], interactions[s.ITEM_IDX], strict=True)) <= history_pairs
        assert not interactions.duplicated([s.USER_IDX, s.ITEM_IDX]).any()


def test_s3_input_is_materialised_through_the_injected_client(tmp_path: Path) -> None:
    """Uses moto's in-memory S3 (a fake), not AWS."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="shop")
        client.put_object(Bucket="shop", Key="raw/events/part-0.csv", Body=b"user_id,item_id\n")
        client.put_object(Bucket="shop", Key="raw/items/part-0.csv", Body=b"item_id\n")
        root = resolve_raw_root("s3:/shop/raw", s3_client=client)  # as argparse's Path() leaves it
    assert (root / s.EVENTS / "part-0.csv").read_bytes() == b"user_id,item_id\n"
    assert (root / s.ITEMS / "part-0.csv").exists()
