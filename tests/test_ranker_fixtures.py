"""A fake of the etl/ and als/ step outputs, shaped like the brief's file contracts, for the ranker and
evaluation tests (the real steps are tested by their owners; a pipeline-slice test runs them for real).

The simulated shop has a repurchase rhythm per (user, favourite item), a popular head and a few cold
users, so a ranker can learn something and every recommender has work to do. Features are computed from
events strictly before each fold's cutoff, like the ETL contract requires."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components import schema as s

DAYS = 150
TEST_DAYS = 28
LABEL_DAYS = 28
START = pd.Timestamp("2024-01-01", tz="UTC")
FEATURES = {
    "user": ["u_purchase_days", "u_items", "u_days_since_last", "country"],
    "item": [s.ITEM_BUYERS_28D, "i_buyers", "price", "category"],
    "user_item": [s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST, "ui_days_since_first", "ui_quantity"],
    "categorical": ["country", "category"],
}


def simulate_purchases(n_users: int, n_items: int, seed: int) -> pd.DataFrame:
    """(user_idx, item_idx, day, quantity) purchases; the first n_users // 10 users only buy in the test
    window (cold users)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    rows: list[tuple[int, int, int, int]] = []
    n_cold = max(1, n_users // 10)
    for user in range(n_users):
        first_day = DAYS - TEST_DAYS + 1 if user < n_cold else int(rng.integers(0, 60))
        favourites = rng.choice(n_items, size=3, replace=False, p=popularity)
        for item in favourites:
            period = int(rng.integers(6, 30))
            day = first_day + int(rng.integers(0, period))
            while day < DAYS:
                rows.append((user, int(item), day, int(rng.integers(1, 5))))
                day += period + int(rng.integers(-2, 3))
        for _ in range(int(rng.integers(2, 12))):
            day = int(rng.integers(first_day, DAYS))
            rows.append((user, int(rng.choice(n_items, p=popularity)), day, 1))
    return pd.DataFrame(rows, columns=[s.USER_IDX, s.ITEM_IDX, "day", s.QUANTITY])


def _write(frame: pd.DataFrame, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / "part-00000.parquet", index=False)
    (directory / "_SUCCESS").write_text("")


def fold_tables(purchases: pd.DataFrame, n_users: int, n_items: int, cutoff: int, end: int,
                seed: int) -> dict[str, pd.DataFrame]:
    before = purchases.loc[purchases["day"] < cutoff]
    window = purchases.loc[(purchases["day"] >= cutoff) & (purchases["day"] < end)]
    rng = np.random.default_rng(seed + cutoff)
    ui = before.groupby([s.USER_IDX, s.ITEM_IDX]).agg(
        ui_purchase_days=("day", "nunique"), last=("day", "max"), first=("day", "min"),
        ui_quantity=(s.QUANTITY, "sum")).reset_index()
    ui[s.UI_DAYS_SINCE_LAST] = (cutoff - ui["last"]).astype(float)
    ui["ui_days_since_first"] = (cutoff - ui["first"]).astype(float)
    ui = ui[[s.USER_IDX, s.ITEM_IDX, *FEATURES["user_item"]]]
    users = before.groupby(s.USER_IDX).agg(u_purchase_days=("day", "nunique"),
                                           u_items=(s.ITEM_IDX, "nunique"), last=("day", "max"))
    users = users.reindex(range(n_users))
    user_features = pd.DataFrame({
        s.USER_IDX: np.arange(n_users, dtype=np.int32),
        "u_purchase_days": users["u_purchase_days"].fillna(0).to_numpy(float),
        "u_items": users["u_items"].fillna(0).to_numpy(float),
        "u_days_since_last": (cutoff - users["last"]).fillna(9999).to_numpy(float),
        "country": np.where(np.arange(n_users) % 3 == 0, "France", "United Kingdom"),
    })
    recent = before.loc[before["day"] >= cutoff - 28]
    item_features = pd.DataFrame({
        s.ITEM_IDX: np.arange(n_items, dtype=np.int32),
        s.ITEM_BUYERS_28D: recent.groupby(s.ITEM_IDX)[s.USER_IDX].nunique().reindex(range(n_items)).fillna(0)
        .to_numpy(float),
        "i_buyers": before.groupby(s.ITEM_IDX)[s.USER_IDX].nunique().reindex(range(n_items)).fillna(0)
        .to_numpy(float),
        "price": 1.0 + np.arange(n_items) % 7,
        "category": np.array(["mugs", "bags", "cards", "lights"])[np.arange(n_items) % 4],
    })
    targets = window[[s.USER_IDX, s.ITEM_IDX]].drop_duplicates().sort_values([s.USER_IDX, s.ITEM_IDX])
    history_users = set(before[s.USER_IDX].unique().tolist())
    target_users = pd.DataFrame({s.USER_IDX: np.sort(targets[s.USER_IDX].unique())})
    target_users[s.SEGMENT] = [s.WARM if u in history_users else s.COLD for u in target_users[s.USER_IDX]]
    interactions = (before.groupby([s.USER_IDX, s.ITEM_IDX]).size().rename(s.WEIGHT).astype(float)
                    .reset_index())

    candidate_users = (sorted(target_users.loc[target_users[s.SEGMENT] == s.WARM, s.USER_IDX].tolist())
                       if end < DAYS else sorted(history_users))
    popular = item_features.sort_values([s.ITEM_BUYERS_28D, s.ITEM_IDX], ascending=[False, True])[s.ITEM_IDX]
    rows = []
    for user in candidate_users:
        own = set(ui.loc[ui[s.USER_IDX] == user, s.ITEM_IDX].tolist())
        als_items = rng.choice(n_items, size=15, replace=False)
        als_scores = np.sort(rng.random(15))[::-1]
        pool: dict[int, dict[str, object]] = {}
        for rank, (item, score) in enumerate(zip(als_items, als_scores, strict=True), start=1):
            pool[int(item)] = {s.ALS_SCORE: float(score), s.ALS_RANK: rank, s.FROM_ALS: True}
        for item in own:
            pool.setdefault(int(item), {})[s.FROM_HISTORY] = True
        for item in popular.iloc[:8]:
            pool.setdefault(int(item), {})[s.FROM_POPULAR] = True
        for item in rng.choice(n_items, size=3, replace=False):
            entry = pool.setdefault(int(item), {})
            entry[s.FROM_COOC] = True
            entry[s.COOC_SCORE] = float(rng.random())
        for item, entry in sorted(pool.items())[:40]:
            rows.append({s.USER_IDX: user, s.ITEM_IDX: item,
                         s.ALS_SCORE: entry.get(s.ALS_SCORE, np.nan), s.ALS_RANK: entry.get(s.ALS_RANK, 0),
                         s.COOC_SCORE: entry.get(s.COOC_SCORE, 0.0),
                         **{flag: bool(entry.get(flag, False)) for flag in s.CANDIDATE_SOURCE_COLUMNS}})
    candidates = pd.DataFrame(rows).astype({s.USER_IDX: np.int32, s.ITEM_IDX: np.int32, s.ALS_RANK: np.int32})
    return {s.USER_FEATURES: user_features, s.ITEM_FEATURES: item_features, s.USER_ITEM_FEATURES: ui,
            s.TARGETS: targets.astype(np.int32), s.TARGET_USERS: target_users, s.INTERACTIONS: interactions,
            s.CANDIDATES: candidates}


def make_fake_outputs(root: Path, *, n_users: int = 120, n_items: int = 50,
                      seed: int = 3) -> tuple[Path, Path]:
    """Write fake etl/ and als/ directories under ``root``; returns (etl, als)."""
    purchases = simulate_purchases(n_users, n_items, seed)
    etl, als = root / "etl", root / "als"
    test_start, label_start = DAYS - TEST_DAYS, DAYS - TEST_DAYS - LABEL_DAYS
    windows_of = {s.TRAIN_FOLD: (label_start, test_start), s.TEST_FOLD: (test_start, DAYS)}
    for fold, (cutoff, end) in windows_of.items():
        tables = fold_tables(purchases, n_users, n_items, cutoff, end, seed)
        for name, frame in tables.items():
            base = als if name == s.CANDIDATES else etl
            _write(frame, base / s.FOLDS_DIR / fold / name)
    _write(pd.DataFrame({s.USER_ID: [f"u{u:04d}" for u in range(n_users)],
                         s.USER_IDX: np.arange(n_users, dtype=np.int32)}), etl / s.ID_MAPS_DIR / s.USERS)
    _write(pd.DataFrame({s.ITEM_ID: [f"sku-{i:03d}" for i in range(n_items)],
                         s.ITEM_IDX: np.arange(n_items, dtype=np.int32)}), etl / s.ID_MAPS_DIR / s.ITEMS)
    day = pd.Timedelta(days=1)
    # clean/events as the ETL writes it (Spark: UTC timestamps without a zone); one row per purchase
    _write(pd.DataFrame({
        s.USER_ID: [f"u{u:04d}" for u in purchases[s.USER_IDX]],
        s.ITEM_ID: [f"sku-{i:03d}" for i in purchases[s.ITEM_IDX]],
        s.EVENT_TYPE: s.PURCHASE,
        s.TIMESTAMP: pd.DatetimeIndex(START + pd.to_timedelta(purchases["day"], unit="D")
                                      + pd.Timedelta(hours=10)).tz_localize(None),
        s.QUANTITY: purchases[s.QUANTITY].astype(np.int32), s.SESSION_ID: None,
        s.USER_IDX: purchases[s.USER_IDX].astype(np.int32), s.ITEM_IDX: purchases[s.ITEM_IDX].astype(np.int32),
    }), etl / s.CLEAN_DIR / s.EVENTS)
    windows = {"end": (START + DAYS * day - pd.Timedelta(seconds=1)).isoformat(),
               "test_start": (START + test_start * day).isoformat(),
               "label_start": (START + label_start * day).isoformat(),
               "test_days": TEST_DAYS, "label_days": LABEL_DAYS}
    (etl / s.WINDOWS_FILE).write_text(json.dumps(windows))
    (etl / s.FEATURES_FILE).write_text(json.dumps(FEATURES))
    (als / s.ALS_REPORT_FILE).write_text(json.dumps({"backend": "fake"}))
    return etl, als
