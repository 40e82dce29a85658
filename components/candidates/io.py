"""Reading the ETL fold tables the generators need and writing OUTPUT/als/ (the brief's file contract).

Reads go through Spark when a session is given (the step is a PySpark step) and through pyarrow
otherwise (tuning scripts, benchmarks). Only the few columns the generators use are read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from components import schema as s
from components.candidates.base import FoldTables
from components.errors import DataContractError
from components.spark import local_uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from components.candidates.generate import SparkFoldTables

INTERACTION_COLUMNS: Final = (s.USER_IDX, s.ITEM_IDX, s.WEIGHT)
USER_ITEM_COLUMNS: Final = (s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST)
ITEM_COLUMNS: Final = (s.ITEM_IDX, s.ITEM_BUYERS_28D)
TARGET_USER_COLUMNS: Final = (s.USER_IDX, s.SEGMENT)
PART_FILE: Final = "part-00000.parquet"


def fold_path(root: Path, fold: s.Fold, table: str) -> Path:
    return root / s.FOLDS_DIR / fold / table


def _table_path(etl: Path, fold: s.Fold, table: str) -> Path:
    path = fold_path(etl, fold, table)
    if not path.exists():
        raise DataContractError(f"ETL table missing: {path} (run the etl step first)")
    return path


def _check_columns(path: Path, present: list[str], wanted: tuple[str, ...]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataContractError(f"{path}: column {missing[0]!r} missing (has {', '.join(present)})")


def _read_arrow(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    dataset = pads.dataset(path, format="parquet")
    _check_columns(path, dataset.schema.names, columns)
    return dataset.to_table(columns=list(columns)).to_pandas()


def _read_spark(spark: SparkSession, path: Path, columns: tuple[str, ...]) -> DataFrame:
    frame = spark.read.parquet(local_uri(path))
    _check_columns(path, frame.columns, columns)
    return frame.select(*columns)


def table_rows(etl: Path, fold: s.Fold, table: str) -> int:
    """Row count from the Parquet footers: no Spark job, no data read (picks the ALS backend)."""
    return int(pads.dataset(_table_path(etl, fold, table), format="parquet").count_rows())


def read_fold_tables(etl: Path, fold: s.Fold, spark: SparkSession | None = None) -> FoldTables:
    """The fold's generator inputs as pandas (the single-machine path)."""
    def read(table: str, columns: tuple[str, ...]) -> pd.DataFrame:
        path = _table_path(etl, fold, table)
        if spark is None:
            return _read_arrow(path, columns)
        return _read_spark(spark, path, columns).toPandas()

    return FoldTables(interactions=read(s.INTERACTIONS, INTERACTION_COLUMNS),
                      user_items=read(s.USER_ITEM_FEATURES, USER_ITEM_COLUMNS),
                      items=read(s.ITEM_FEATURES, ITEM_COLUMNS))


def read_fold_tables_spark(spark: SparkSession, etl: Path, fold: s.Fold) -> SparkFoldTables:
    from components.candidates.generate import SparkFoldTables

    return SparkFoldTables(
        interactions=_read_spark(spark, _table_path(etl, fold, s.INTERACTIONS), INTERACTION_COLUMNS),
        user_items=_read_spark(spark, _table_path(etl, fold, s.USER_ITEM_FEATURES), USER_ITEM_COLUMNS),
        items=_read_spark(spark, _table_path(etl, fold, s.ITEM_FEATURES), ITEM_COLUMNS))


def read_warm_target_users(etl: Path, fold: s.Fold, spark: SparkSession | None = None) -> np.ndarray:
    """user_idx of the fold's warm target users (who get candidates in the train fold)."""
    path = _table_path(etl, fold, s.TARGET_USERS)
    if spark is None:
        frame = _read_arrow(path, TARGET_USER_COLUMNS)
    else:
        frame = _read_spark(spark, path, TARGET_USER_COLUMNS).where(f"{s.SEGMENT} = '{s.WARM}'").toPandas()
    return np.unique(frame.loc[frame[s.SEGMENT] == s.WARM, s.USER_IDX].to_numpy(np.int64))


def read_targets(etl: Path, fold: s.Fold) -> pd.DataFrame:
    """user_idx, item_idx of the fold's target window (for measuring candidate recall; never for fitting)."""
    return _read_arrow(_table_path(etl, fold, s.TARGETS), (s.USER_IDX, s.ITEM_IDX))


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_arrow(table: pa.Table, path: Path) -> None:
    """One Parquet part file in a table folder, like a one-partition Spark write (Spark reads it back)."""
    pq.write_table(table, _fresh_dir(path) / PART_FILE, compression="snappy")
    (path / "_SUCCESS").touch()


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    write_arrow(pa.Table.from_pandas(frame, preserve_index=False), path)
