"""Reading the ETL and ALS step outputs (Parquet folders written by Spark, JSON side files) with pandas.

Only file contracts are read here (brief: etl/, als/), never another step's code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from components import schema as s
from components.errors import DataContractError

USER_CATEGORY = s.USER_CATEGORY  # optional folds/<fold>/user_category/, used when present


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet folder (Spark output: part files, _SUCCESS ignored) or file as one DataFrame."""
    if not path.exists():
        raise DataContractError(f"table not found: {path}")
    try:
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError) as error:
        raise DataContractError(f"cannot read Parquet table {path}: {error}") from error


def read_json(path: Path) -> Any:
    if not path.exists():
        raise DataContractError(f"file not found: {path}")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class FoldTables:
    """One fold's inputs to the ranker."""

    candidates: pd.DataFrame
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    user_item_features: pd.DataFrame
    targets: pd.DataFrame
    target_users: pd.DataFrame
    user_category: pd.DataFrame | None


def load_fold(etl: Path, als: Path, fold: s.Fold) -> FoldTables:
    etl_fold = etl / s.FOLDS_DIR / fold
    user_category_dir = etl_fold / USER_CATEGORY
    return FoldTables(
        candidates=read_table(als / s.FOLDS_DIR / fold / s.CANDIDATES),
        user_features=read_table(etl_fold / s.USER_FEATURES),
        item_features=read_table(etl_fold / s.ITEM_FEATURES),
        user_item_features=read_table(etl_fold / s.USER_ITEM_FEATURES),
        targets=read_table(etl_fold / s.TARGETS, [s.USER_IDX, s.ITEM_IDX]),
        target_users=read_table(etl_fold / s.TARGET_USERS, [s.USER_IDX, s.SEGMENT]),
        user_category=read_table(user_category_dir) if user_category_dir.exists() else None,
    )


def feature_lists(etl: Path) -> dict[str, list[str]]:
    data = read_json(etl / s.FEATURES_FILE)
    missing = [key for key in ("user", "item", "user_item") if key not in data]
    if missing:
        raise DataContractError(f"{etl / s.FEATURES_FILE} lacks keys {missing}")
    return {key: list(data.get(key, [])) for key in ("user", "item", "user_item", "categorical")}


def horizon_days(etl: Path, fold: s.Fold) -> float:
    """Length in days of the window a fold's ranker predicts: label_days (train) or test_days (test)."""
    windows = read_json(etl / s.WINDOWS_FILE)
    key = "label_days" if fold == s.TRAIN_FOLD else "test_days"
    if key not in windows:
        raise DataContractError(f"{etl / s.WINDOWS_FILE} lacks {key!r}")
    return float(windows[key])
