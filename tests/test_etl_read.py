"""How the events are read for speed must not change what is read: the source_file of each row whether it
comes from a per-file literal or from decoding input_file_name(), the footer row count, and the shuffle
partitions the step picks from the input size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components import schema as s
from components.etl import read
from components.etl.step import RAW_BYTES_PER_PARTITION, shuffle_partitions

COLUMNS = [s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE]


def _raw(root: Path) -> dict[str, int]:
    """Two CSV files (one with a space, a plus and a percent sign in its name) and a Parquet file."""
    rows = {"events/a b+c%25.csv": 2, "events/sub dir/x.csv.gz": 3, "events/p+q.parquet": 4}
    for name, n in rows.items():
        frame = pd.DataFrame({c: [f"{c}{i}" for i in range(n)] for c in COLUMNS})
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            frame.to_parquet(path)
        else:
            frame.to_csv(path, index=False, compression="gzip" if name.endswith(".gz") else None)
    return rows


@pytest.mark.parametrize("per_file", [True, False])
def test_source_file_is_the_relative_path_either_way(spark: Any, tmp_path: Path, per_file: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _raw(tmp_path)
    if not per_file:  # the path taken past PER_FILE_READS files: one scan, decoded per row
        monkeypatch.setattr(read, "PER_FILE_READS", 0)
    table = read.read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)
    counts = {r[s.SOURCE_FILE]: r["count"] for r in table.frame.groupBy(s.SOURCE_FILE).count().collect()}
    assert counts == expected
    assert table.frame.schema[s.SOURCE_FILE].nullable  # rejected/ keeps the schema it always had
    assert table.rows is None  # CSV files: the step counts the rows with Spark


def test_footer_row_count_of_parquet_tables(spark: Any, tmp_path: Path) -> None:
    frame = pd.DataFrame({c: [f"{c}{i}" for i in range(5)] for c in COLUMNS})
    (tmp_path / s.EVENTS).mkdir()
    frame.to_parquet(tmp_path / s.EVENTS / "a.parquet")
    frame.head(2).to_parquet(tmp_path / s.EVENTS / "b.parquet")
    table = read.read_table(spark, tmp_path, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)
    assert table.rows == table.frame.count() == 7


def test_shuffle_partitions_follow_cores_then_input_size() -> None:
    assert shuffle_partitions(2, 3_000_000) == 2
    assert shuffle_partitions(8, 3_000_000) == 8
    assert shuffle_partitions(2, 10 * RAW_BYTES_PER_PARTITION + 1) == 11
