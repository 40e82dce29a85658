"""Reading the ETL and ALS step outputs (Parquet folders written by Spark, JSON side files) with pandas.

Only file contracts are read here (brief: etl/, als/), never another step's code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components import schema as s
from components.errors import DataContractError

USER_CATEGORY = s.USER_CATEGORY  # optional folds/<fold>/user_category/, used when present


def read_table(path: Path, columns: list[str] | None = None, *,
               filters: list[tuple[str, str, Any]] | None = None) -> pd.DataFrame:
    """A Parquet folder (Spark output: part files, _SUCCESS ignored) or file as one DataFrame; only the
    rows matching ``filters`` (pyarrow's form) when given, filtered while reading so the rest never loads."""
    if not path.exists():
        raise DataContractError(f"table not found: {path}")
    try:
        return pd.read_parquet(path, columns=columns, filters=filters)
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


def _by_user(frame: pd.DataFrame) -> pd.DataFrame:
    if frame[s.USER_IDX].is_monotonic_increasing:
        return frame
    return frame.sort_values(s.USER_IDX, kind="mergesort").reset_index(drop=True)


def _user_rows(frame: pd.DataFrame, first: int, stop: int) -> pd.DataFrame:
    """Rows of users first <= user_idx < stop of a user_idx-sorted frame (a view, no copy)."""
    start, end = frame[s.USER_IDX].searchsorted([first, stop])
    return frame.iloc[start:end]


def user_chunks(fold: FoldTables, rows_per_chunk: int) -> Iterator[FoldTables]:
    """The fold in chunks of whole users (ascending user_idx ranges) of about ``rows_per_chunk``
    candidate rows: per-user tables sliced, item tables whole. At least one chunk, even when empty."""
    candidates, user_features, user_item = (_by_user(fold.candidates), _by_user(fold.user_features),
                                            _by_user(fold.user_item_features))
    user_category = _by_user(fold.user_category) if fold.user_category is not None else None
    users = candidates[s.USER_IDX].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([0])
    # A chunk starts at the first user whose first row is at or past the next multiple of rows_per_chunk.
    positions = np.searchsorted(starts, np.arange(0, max(len(users), 1), rows_per_chunk))
    bounds = np.unique(starts[positions[positions < len(starts)]])
    firsts = [int(users[b]) for b in bounds] if len(users) else [0]
    for first, stop in zip(firsts, [*firsts[1:], np.iinfo(np.int64).max], strict=True):
        yield FoldTables(
            candidates=_user_rows(candidates, first, stop),
            user_features=_user_rows(user_features, first, stop),
            item_features=fold.item_features,
            user_item_features=_user_rows(user_item, first, stop),
            targets=fold.targets,
            target_users=fold.target_users,
            user_category=_user_rows(user_category, first, stop) if user_category is not None else None,
        )


def load_fold(etl: Path, als: Path, fold: s.Fold, *, users: tuple[int, int] | None = None) -> FoldTables:
    """One fold's tables; with ``users`` = (first, stop), only the per-user rows of first <= user_idx <
    stop (a shard of the fold; item tables, targets and target users stay whole)."""
    etl_fold = etl / s.FOLDS_DIR / fold
    user_category_dir = etl_fold / USER_CATEGORY
    shard = [(s.USER_IDX, ">=", users[0]), (s.USER_IDX, "<", users[1])] if users else None

    def per_user(path: Path) -> pd.DataFrame:
        return read_table(path, filters=shard)

    return FoldTables(
        candidates=per_user(als / s.FOLDS_DIR / fold / s.CANDIDATES),
        user_features=per_user(etl_fold / s.USER_FEATURES),
        item_features=read_table(etl_fold / s.ITEM_FEATURES),
        user_item_features=per_user(etl_fold / s.USER_ITEM_FEATURES),
        targets=read_table(etl_fold / s.TARGETS, [s.USER_IDX, s.ITEM_IDX]),
        target_users=read_table(etl_fold / s.TARGET_USERS, [s.USER_IDX, s.SEGMENT]),
        user_category=per_user(user_category_dir) if user_category_dir.exists() else None,
    )


def user_row_counts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(users ascending, rows of each) of a table with a user_idx column, reading that column only."""
    users = read_table(path, [s.USER_IDX])[s.USER_IDX].to_numpy()
    return np.unique(users, return_counts=True)


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
