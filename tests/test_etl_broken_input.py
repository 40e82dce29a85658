"""Broken raw input, kind by kind: each ends either with every row accepted or rejected with one reason
(accepted + rejected = input), or with a DataContractError naming the file and the column.

Row-level kinds run the read + check functions the step uses (no full ETL per kind, to keep the suite
quick); the full step runs once on a file mixing them, and for the stop-the-run cases."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema as s
from components.config import EtlConfig
from components.errors import DataContractError
from components.etl import validate as v
from components.etl.read import read_table, resolve_raw_root
from components.etl.step import run_etl

HEADER = [s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID, "note"]
GOOD = ["u1", "i1", "purchase", "2024-01-01T10:00:00", "1", "2.5", "s1"]


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def check_rows(spark: Any, root: Path, rows: list[list[str]], *, catalog: list[str] | None = None,
               ) -> tuple[v.TableReport, dict[str, str | None]]:
    """Run the event checks on CSV rows (each ending in a unique-enough note) -> report, {note: reason}."""
    write_csv(root / s.EVENTS / "part-0.csv", HEADER, rows)
    catalog_ids = None
    if catalog is not None:
        catalog_ids = spark.createDataFrame([(c,) for c in catalog], f"{v.P_ID} string")
    table = read_table(spark, root, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)
    checked = v.check_events(table, catalog_ids)
    report = v.count_outcomes(checked, table.frame.count())
    reasons = {r["note"]: r[s.REASON] for r in checked.frame.select("note", s.REASON).collect()}
    assert report.accepted + sum(report.rejected.values()) == report.input == len(rows)
    return report, reasons


@pytest.mark.parametrize(("value", "reason"), [
    ("2024-13-01 00:00:00", v.UNPARSABLE_TIMESTAMP),
    ("2024-02-30T10:00:00", v.UNPARSABLE_TIMESTAMP),
    ("12/1/2010 8:26", v.UNPARSABLE_TIMESTAMP),
    ("2024", v.UNPARSABLE_TIMESTAMP),
    ("yesterday", v.UNPARSABLE_TIMESTAMP),
    ("", v.MISSING_TIMESTAMP),
    ("2024-01-01 10:00:00", None),
    ("2024-01-01T10:00:00.123456+01:00", None),
    ("2024-01-01", None),
])
def test_timestamps(spark: Any, tmp_path: Path, value: str, reason: str | None) -> None:
    row = [*GOOD[:3], value, *GOOD[4:], "x"]
    report, reasons = check_rows(spark, tmp_path, [row, [*GOOD, "ok"]])
    assert reasons == {"x": reason, "ok": None}
    assert report.accepted == (2 if reason is None else 1)


def test_timestamp_offsets_are_converted_to_utc(spark: Any, tmp_path: Path) -> None:
    rows = [[*GOOD[:3], "2024-01-01T10:00:00+02:00", *GOOD[4:6], "s", "a"],
            [*GOOD[:3], "2024-01-01T08:00:00Z", *GOOD[4:6], "s", "b"],
            [*GOOD[:3], "2024-01-01 08:00:00", *GOOD[4:6], "s", "c"]]
    write_csv(tmp_path / s.EVENTS / "p.csv", HEADER, rows)
    checked = v.check_events(read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS), None)
    from pyspark.sql import functions as sf

    got = {r["note"]: r["us"] for r in checked.frame.select("note", sf.unix_micros(v.P_TS).alias("us")).collect()}
    assert got["a"] == got["b"] == got["c"] == 1704096000 * 1_000_000


def test_unknown_event_type_and_case(spark: Any, tmp_path: Path) -> None:
    rows = [[*GOOD[:2], "click", *GOOD[3:], "x"], [*GOOD[:2], "", *GOOD[3:], "y"],
            [*GOOD[:2], " Purchase ", *GOOD[3:], "ok"]]
    report, reasons = check_rows(spark, tmp_path, rows)
    assert reasons == {"x": v.UNKNOWN_EVENT_TYPE, "y": v.UNKNOWN_EVENT_TYPE, "ok": None}
    assert report.rejected == {v.UNKNOWN_EVENT_TYPE: 2}


@pytest.mark.parametrize(("quantity", "reason"), [
    ("0", v.NON_POSITIVE_QUANTITY), ("-3", v.NON_POSITIVE_QUANTITY), ("1.5", v.UNPARSABLE_QUANTITY),
    ("abc", v.UNPARSABLE_QUANTITY), ("NaN", v.UNPARSABLE_QUANTITY), ("1e12", v.UNPARSABLE_QUANTITY),
    ("", None), ("3.0", None),
])
def test_quantities(spark: Any, tmp_path: Path, quantity: str, reason: str | None) -> None:
    _, reasons = check_rows(spark, tmp_path, [[*GOOD[:4], quantity, *GOOD[5:], "x"]])
    assert reasons == {"x": reason}


def test_prices_ids_and_first_failing_check_wins(spark: Any, tmp_path: Path) -> None:
    rows = [
        [*GOOD[:5], "-1", GOOD[6], "neg"],
        [*GOOD[:5], "cheap", GOOD[6], "bad"],
        [*GOOD[:5], "", GOOD[6], "none"],  # price is optional
        ["", *GOOD[1:], "nouser"],
        [GOOD[0], "  ", *GOOD[2:], "noitem"],
        ["", "", "click", "never", "0", "-1", "", "many"],  # several problems: the first check decides
    ]
    report, reasons = check_rows(spark, tmp_path, rows)
    assert reasons == {"neg": v.NEGATIVE_PRICE, "bad": v.UNPARSABLE_PRICE, "none": None,
                       "nouser": v.MISSING_USER_ID, "noitem": v.MISSING_ITEM_ID, "many": v.MISSING_USER_ID}
    assert report.rejected == {v.MISSING_USER_ID: 2, v.MISSING_ITEM_ID: 1, v.UNPARSABLE_PRICE: 1,
                               v.NEGATIVE_PRICE: 1}


def test_exact_duplicates_keep_the_first(spark: Any, tmp_path: Path) -> None:
    rows = [[*GOOD, "d"], [*GOOD, "d"], [*GOOD, "d"], [*GOOD[:4], "2", *GOOD[5:], "d"],
            # the same event written differently is still the same event
            [GOOD[0], f" {GOOD[1]}", "PURCHASE", "2024-01-01 10:00:00", "1.0", "2.50", GOOD[6], "d"]]
    report, _ = check_rows(spark, tmp_path, rows)
    assert report.accepted == 2  # the first row, and the one with quantity 2
    assert report.rejected == {v.DUPLICATE: 3}


def test_a_value_moved_to_another_empty_column_is_not_a_duplicate(spark: Any, tmp_path: Path) -> None:
    # Spark's row hashes skip NULLs: without the null flags these pairs hashed alike and one of each was lost.
    header = [*HEADER[:6], s.SESSION_ID, "coupon", "channel"]
    rows = [[*GOOD[:6], "", "SPRING", ""], [*GOOD[:6], "", "", "SPRING"],
            [*GOOD[:6], "S7", "", ""], [*GOOD[:6], "", "S7", ""]]
    write_csv(tmp_path / s.EVENTS / "part-0.csv", header, rows)
    table = read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)
    report = v.count_outcomes(v.check_events(table, None), table.frame.count())
    assert (report.input, report.accepted, report.rejected) == (4, 4, {})


def test_malformed_csv_rows(spark: Any, tmp_path: Path) -> None:
    rows = [[*GOOD, "ok"], [*GOOD, "extra", "field"], GOOD[:3]]
    report, _ = check_rows(spark, tmp_path, rows)
    assert report.rejected == {v.MALFORMED_ROW: 2}
    assert report.accepted == 1


def test_unknown_item_in_a_strict_catalog(spark: Any, tmp_path: Path) -> None:
    rows = [[*GOOD, "known"], [GOOD[0], "i9", *GOOD[2:], "unknown"]]
    _, reasons = check_rows(spark, tmp_path, rows, catalog=["i1", "i2"])
    assert reasons == {"known": None, "unknown": v.UNKNOWN_ITEM}
    _, reasons = check_rows(spark, tmp_path / "lenient", rows)  # no catalog check: both accepted
    assert reasons == {"known": None, "unknown": None}


def test_items_and_users_missing_and_duplicate_ids(spark: Any, tmp_path: Path) -> None:
    write_csv(tmp_path / s.ITEMS / "a.csv", [s.ITEM_ID, "category"], [["i1", "mugs"], ["", "bags"]])
    write_csv(tmp_path / s.ITEMS / "b.csv", [s.ITEM_ID, "category"], [["i1", "cards"], ["i2", "cards"]])
    checked = v.check_entities(read_table(spark, tmp_path, s.ITEMS, (s.ITEM_ID,)), s.ITEM_ID)
    report = v.count_outcomes(checked, 4)
    assert report.rejected == {v.MISSING_ID: 1, v.DUPLICATE_ID: 1}
    kept = {r[s.ITEM_ID]: r["category"] for r in checked.frame.filter(f"{s.REASON} is null").collect()}
    assert kept == {"i1": "mugs", "i2": "cards"}  # the first i1 in read order (file a before b)


# ---------------------------------------------------------------- stop-the-run cases (named file/column)
def test_missing_required_column_names_file_and_column(spark: Any, tmp_path: Path) -> None:
    bad = write_csv(tmp_path / s.EVENTS / "part-1.csv", [c for c in HEADER if c != s.TIMESTAMP],
                    [[c for i, c in enumerate(GOOD) if i != 3]])
    with pytest.raises(DataContractError, match=rf"{bad}.*'{s.TIMESTAMP}'"):
        read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)


def test_empty_files_name_the_file(spark: Any, tmp_path: Path) -> None:
    write_csv(tmp_path / "a" / s.EVENTS / "ok.csv", HEADER, [[*GOOD, "x"]])
    (tmp_path / "a" / s.EVENTS / "empty.csv").write_bytes(b"")
    with pytest.raises(DataContractError, match=r"empty\.csv: empty file"):
        read_table(spark, tmp_path / "a", s.EVENTS, s.REQUIRED_EVENT_COLUMNS)
    header_only = write_csv(tmp_path / "b" / s.EVENTS / "head.csv.gz", HEADER, [], gz=True)
    with pytest.raises(DataContractError, match=rf"{header_only}: empty file"):
        read_table(spark, tmp_path / "b", s.EVENTS, s.REQUIRED_EVENT_COLUMNS)
    (tmp_path / "c" / s.EVENTS).mkdir(parents=True)
    with pytest.raises(DataContractError, match="no Parquet or CSV files"):
        read_table(spark, tmp_path / "c", s.EVENTS, s.REQUIRED_EVENT_COLUMNS)


def test_truncated_gzip_names_the_file(spark: Any, tmp_path: Path) -> None:
    rows = [[GOOD[0], f"i{i}", *GOOD[2:], f"n{i}"] for i in range(100_000)]  # past the 1 MiB head
    path = write_csv(tmp_path / s.EVENTS / "cut.csv.gz", HEADER, rows, gz=True)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 7 // 10])
    with pytest.raises(DataContractError, match=r"cut\.csv\.gz: cannot be read"):
        read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)


def test_a_log_shorter_than_its_windows_says_so(spark: Any, tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=40, freq="D").strftime("%Y-%m-%dT10:00:00")
    write_csv(tmp_path / "raw" / s.EVENTS / "p.csv", HEADER,
              [[GOOD[0], GOOD[1], GOOD[2], day, *GOOD[4:], "x"] for day in days])
    with pytest.raises(DataContractError, match=r"2024-01-01 to 2024-02-09.*label window starts 2023-12-1"):
        run_etl(spark, tmp_path / "raw", tmp_path / "out", EtlConfig())


def test_bad_encoding_names_file_and_column(spark: Any, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    path = raw / s.EVENTS / "latin1.csv"
    path.parent.mkdir(parents=True)
    lines = [",".join(HEADER), ",".join([*GOOD, "ok"]), ",".join([*GOOD[:6], "s2", "Caf\xe9"])]
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(DataContractError, match=r"events/latin1\.csv is not valid UTF-8 in column 'note'"):
        run_etl(spark, raw, tmp_path / "out", EtlConfig())
    assert path.read_bytes().endswith(b"Caf\xe9\n")  # raw input is never modified


def test_path_that_does_not_exist_and_missing_events(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="does not exist"):
        resolve_raw_root(tmp_path / "nowhere")
    write_csv(tmp_path / "raw" / s.ITEMS / "p.csv", [s.ITEM_ID], [["i1"]])
    with pytest.raises(DataContractError, match="events/ folder is missing"):
        run_etl(spark, tmp_path / "raw", tmp_path / "out", EtlConfig())


@pytest.mark.parametrize(("column", "values"), [
    (s.USER_ID, pa.array([True])),
    (s.TIMESTAMP, pa.array([1.7e9])),
    (s.QUANTITY, pa.array([[1, 2]], type=pa.list_(pa.int64()))),
])
def test_parquet_with_wrong_types_names_file_and_column(spark: Any, tmp_path: Path, column: str,
                                                        values: pa.Array) -> None:
    good = {c: pa.array([val]) for c, val in zip(HEADER[:7], GOOD, strict=True)}
    good[column] = values
    path = tmp_path / s.EVENTS / "typed.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table(good), path)
    with pytest.raises(DataContractError, match=rf"{path}: column '{column}' has type"):
        read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)


def test_corrupt_parquet_names_the_file(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / s.EVENTS / "broken.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(DataContractError, match=rf"{path}: not a readable Parquet file"):
        read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)


def test_parquet_nanosecond_and_typed_columns_are_read(spark: Any, tmp_path: Path) -> None:
    """pandas writes TIMESTAMP(NANOS), which Spark 3.5 cannot read natively; ints ids and float prices are
    valid contract types."""
    frame = pd.DataFrame({s.USER_ID: [17850, 17851], s.ITEM_ID: ["85123A", "71053"],
                          s.EVENT_TYPE: ["purchase", "purchase"],
                          s.TIMESTAMP: pd.to_datetime(["2010-12-01 08:26:00", "2010-12-01 08:26:00.5"],
                                                      format="ISO8601"),
                          s.QUANTITY: [6, 8], s.PRICE: [2.55, 3.39]})
    (tmp_path / s.EVENTS).mkdir()
    frame.to_parquet(tmp_path / s.EVENTS / "p.parquet")
    checked = v.check_events(read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS), None)
    rows = sorted(checked.frame.select(v.P_USER, v.P_TS, v.P_QTY, s.REASON).collect())
    assert [r[v.P_USER] for r in rows] == ["17850", "17851"]
    assert all(r[s.REASON] is None for r in rows)
    assert str(rows[1][v.P_TS]).startswith("2010-12-01 08:26:00.5")


def test_rejected_share_limit_names_table_reason_and_row(spark: Any, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    rows = [[*GOOD, "ok"]] + [[*GOOD[:3], "soon", *GOOD[4:], f"bad{i}"] for i in range(3)]
    write_csv(raw / s.EVENTS / "p.csv", HEADER, rows)
    with pytest.raises(DataContractError, match=r"table events: 3 of 4 rows rejected.*"
                                                 r"'unparsable_timestamp'.*'soon'"):
        run_etl(spark, raw, tmp_path / "out", EtlConfig(max_rejected_share=0.5))
    # the report and the rejected rows were written before the run stopped, for inspection
    report = json.loads((tmp_path / "out" / s.VALIDATION_REPORT_FILE).read_text())
    assert report[s.EVENTS]["rejected"] == {v.UNPARSABLE_TIMESTAMP: 3}
    assert len(pd.read_parquet(tmp_path / "out" / s.REJECTED_DIR / s.EVENTS)) == 3
