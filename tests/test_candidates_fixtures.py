"""Deterministic data for the candidate tests (helpers, plus checks that the helpers do what they say).

* ``block_events``: users and items in planted blocks; each user buys part of their own block only, so a
  working ALS must rank the rest of the user's block above every other block.
* ``shop_events`` + ``fold_tables`` / ``write_etl``: a small dated shop turned into fold tables the way the
  ETL contract defines them (only events strictly before the cutoff), written as an ETL-like directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components import schema as s
from components.candidates.base import FoldTables

TS = "ts"
START = pd.Timestamp("2024-01-01")


def block_events(*, blocks: int = 4, users_per_block: int = 12, items_per_block: int = 10,
                 bought_per_user: int = 6, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(interactions, user_block, item_block): user u buys ``bought_per_user`` items of block u % blocks."""
    rng = np.random.default_rng(seed)
    n_users, n_items = blocks * users_per_block, blocks * items_per_block
    user_block, item_block = np.arange(n_users) % blocks, np.arange(n_items) % blocks
    rows = []
    for u in range(n_users):
        own = np.flatnonzero(item_block == user_block[u])
        for i in rng.choice(own, size=bought_per_user, replace=False):
            rows.append((u, int(i), float(rng.integers(1, 20))))
    frame = pd.DataFrame(rows, columns=[s.USER_IDX, s.ITEM_IDX, s.WEIGHT])
    return frame.astype({s.USER_IDX: np.int32, s.ITEM_IDX: np.int32}), user_block, item_block


def block_tables(interactions: pd.DataFrame, n_items: int) -> FoldTables:
    user_items = interactions[[s.USER_IDX, s.ITEM_IDX]].assign(
        **{s.UI_PURCHASE_DAYS: 1, s.UI_DAYS_SINCE_LAST: 10.0})
    items = pd.DataFrame({s.ITEM_IDX: np.arange(n_items, dtype=np.int32)})
    items[s.ITEM_BUYERS_28D] = items[s.ITEM_IDX].map(
        interactions.groupby(s.ITEM_IDX)[s.USER_IDX].nunique()).fillna(0).astype(np.int64)
    return FoldTables(interactions, user_items, items)


def shop_events(*, n_users: int = 40, n_items: int = 30, days: int = 120, seed: int = 11) -> pd.DataFrame:
    """Dated purchases: favourites re-bought, a popular head, and items launched late (ids >= n_items - 3
    only sell in the last 20 days, users >= n_users - 3 only arrive then) to catch leakage."""
    rng = np.random.default_rng(seed)
    early_pop = 1.0 / np.arange(1, n_items + 1) ** 0.7
    late_items, late_users = np.arange(n_items - 3, n_items), np.arange(n_users - 3, n_users)
    early_pop[late_items] = 0
    rows = []
    for u in range(n_users):
        favourites = rng.choice(n_items, size=3, replace=False, p=early_pop / early_pop.sum())
        first_day = days - 20 if u in late_users else 0
        for _ in range(int(rng.integers(5, 30))):
            day = int(rng.integers(first_day, days))
            if day >= days - 20 and rng.random() < 0.3:  # the new items sell well once launched
                item = int(rng.choice(late_items))
            elif rng.random() < 0.5:
                item = int(rng.choice(favourites))
            else:
                item = int(rng.choice(n_items, p=early_pop / early_pop.sum()))
            rows.append((u, item, START + pd.Timedelta(days=day, minutes=int(rng.integers(0, 1440))),
                         int(rng.integers(1, 6))))
    frame = pd.DataFrame(rows, columns=[s.USER_IDX, s.ITEM_IDX, TS, s.QUANTITY])
    return frame.sort_values(TS, kind="stable").reset_index(drop=True)


def fold_tables(events: pd.DataFrame, cutoff: pd.Timestamp, n_items: int) -> FoldTables:
    """Fold inputs from the events strictly before ``cutoff`` (the ETL contract's definitions)."""
    before = events[events[TS] < cutoff]
    day = before[TS].dt.normalize()
    pairs = before.assign(_day=day).groupby([s.USER_IDX, s.ITEM_IDX], as_index=False).agg(
        **{s.WEIGHT: (s.QUANTITY, lambda q: float((5 * np.log2(1 + q)).sum())),
           s.UI_PURCHASE_DAYS: ("_day", "nunique"), "_last": (TS, "max")})
    pairs[s.UI_DAYS_SINCE_LAST] = (cutoff - pairs["_last"]).dt.total_seconds() / 86400
    pairs = pairs.astype({s.USER_IDX: np.int32, s.ITEM_IDX: np.int32})
    recent = before[before[TS] >= cutoff - pd.Timedelta(days=28)]
    items = pd.DataFrame({s.ITEM_IDX: np.arange(n_items, dtype=np.int32)})
    items[s.ITEM_BUYERS_28D] = items[s.ITEM_IDX].map(
        recent.groupby(s.ITEM_IDX)[s.USER_IDX].nunique()).fillna(0).astype(np.int64)
    return FoldTables(pairs[[s.USER_IDX, s.ITEM_IDX, s.WEIGHT]],
                      pairs[[s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST]], items)


def windows(events: pd.DataFrame, *, test_days: int = 14, label_days: int = 14) -> dict[str, pd.Timestamp]:
    end = events[TS].max()
    test_start = (end - pd.Timedelta(days=test_days)).normalize()
    return {"end": end, "test_start": test_start, "label_start": test_start - pd.Timedelta(days=label_days)}


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "part-00000.parquet")


def write_etl(root: Path, events: pd.DataFrame, n_items: int) -> Path:
    """An ETL-like output directory (the fold tables the als step reads, plus windows.json)."""
    w = windows(events)
    for fold, cutoff, stop in ((s.TRAIN_FOLD, w["label_start"], w["test_start"]),
                               (s.TEST_FOLD, w["test_start"], w["end"] + pd.Timedelta(seconds=1))):
        tables = fold_tables(events, cutoff, n_items)
        base = root / s.FOLDS_DIR / fold
        _write(tables.interactions, base / s.INTERACTIONS)
        _write(tables.user_items, base / s.USER_ITEM_FEATURES)
        _write(tables.items, base / s.ITEM_FEATURES)
        window = events[(events[TS] >= cutoff) & (events[TS] < stop)]
        targets = window[[s.USER_IDX, s.ITEM_IDX]].drop_duplicates().astype(np.int32)
        _write(targets, base / s.TARGETS)
        warm = set(events.loc[events[TS] < cutoff, s.USER_IDX])
        target_users = pd.DataFrame({s.USER_IDX: np.sort(targets[s.USER_IDX].unique()).astype(np.int32)})
        target_users[s.SEGMENT] = np.where(target_users[s.USER_IDX].isin(warm), s.WARM, s.COLD)
        _write(target_users, base / s.TARGET_USERS)
    (root / s.WINDOWS_FILE).write_text(json.dumps(
        {**{k: v.strftime("%Y-%m-%dT%H:%M:%SZ") for k, v in w.items()}, "test_days": 14, "label_days": 14}))
    return root


def test_block_events_stay_in_their_block() -> None:
    interactions, user_block, item_block = block_events()
    assert (user_block[interactions[s.USER_IDX]] == item_block[interactions[s.ITEM_IDX]]).all()


def test_fold_tables_only_see_events_before_the_cutoff() -> None:
    events = shop_events()
    cutoff = windows(events)["label_start"]
    tables = fold_tables(events, cutoff, 30)
    late_items = {27, 28, 29}
    assert not late_items & set(tables.interactions[s.ITEM_IDX])
    assert late_items <= set(events[s.ITEM_IDX])  # they do sell, later
    assert (tables.user_items[s.UI_DAYS_SINCE_LAST] > 0).all()
