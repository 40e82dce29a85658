"""A synthetic but complete bundle (random shop, real CatBoost model, written with the real
``write_bundle``) for the serving tests and benchmarks, and for trying the service without a pipeline run.
Its shape follows the Online Retail bundle: a few thousand users and items, ~200 candidates a user, some
users without candidates, numeric features first and string categoricals last."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components import schema as s
from components.bundle.build import BundleInputs, write_bundle

NUMERIC = (s.ALS_SCORE, s.ALS_RANK, s.COOC_SCORE, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST, s.ITEM_BUYERS_28D,
           "i_price", "u_orders")
CATEGORICAL = ("i_category", "u_country")
CATEGORIES = ("mugs", "bags", "cards", "lights", "toys")
COUNTRIES = ("United Kingdom", "France", "Germany", "EIRE")


@dataclass(frozen=True)
class SyntheticShop:
    archive: Path  # model.tar.gz
    candidates: pd.DataFrame  # the scoring rows as written (user_idx, item_idx + features)
    user_ids: list[str]
    item_ids: list[str]
    cold_user_ids: list[str]  # known users without candidate rows


def make_synthetic_bundle(output: Path, *, n_users: int = 300, n_items: int = 200, per_user: int = 50,
                          cold_share: float = 0.1, iterations: int = 30, depth: int = 4, seed: int = 0,
                          group: str = "ecomrec", tag: str = "", parts: int = 1) -> SyntheticShop:
    """Write ``output/model.tar.gz``. ``tag`` changes the content (and so the version) without changing
    the shape, for swap tests. ``parts`` > 1 writes the candidates as that many parts of ascending user
    ranges, as ranker_data's scoring/ does."""
    from catboost import CatBoostClassifier

    rng = np.random.default_rng(seed)
    per_user = min(per_user, n_items)
    user_ids = [f"{10000 + u}" for u in range(n_users)]  # numeric-looking string ids, like Online Retail
    item_ids = [f"SKU-{i:05d}{tag}" for i in range(n_items)]
    warm = rng.random(n_users) >= cold_share
    warm[0] = True
    rows_user = np.repeat(np.flatnonzero(warm), per_user)
    rows_item = np.concatenate([rng.choice(n_items, size=per_user, replace=False) for _ in range(warm.sum())])
    n = len(rows_user)
    item_category = np.array(CATEGORIES)[np.arange(n_items) % len(CATEGORIES)]
    user_country = np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n_users)]
    buyers = rng.poisson(5, n_items).astype(np.float64)
    als_score = rng.normal(0.3, 0.2, n)
    from_als = rng.random(n) < 0.8
    candidates = pd.DataFrame({
        s.USER_IDX: rows_user.astype(np.int32),
        s.ITEM_IDX: rows_item.astype(np.int32),
        s.ALS_SCORE: np.where(from_als, als_score, np.nan),
        s.ALS_RANK: np.where(from_als, rng.integers(1, 101, n), 0).astype(np.int32),
        s.COOC_SCORE: rng.exponential(1.0, n) * (rng.random(n) < 0.3),
        s.UI_PURCHASE_DAYS: rng.poisson(0.4, n).astype(np.float64),
        s.UI_DAYS_SINCE_LAST: rng.integers(0, 365, n).astype(np.float64),
        s.ITEM_BUYERS_28D: buyers[rows_item],
        "i_price": 1.0 + (rows_item % 17).astype(np.float64),
        "u_orders": rng.poisson(3, n_users)[rows_user].astype(np.float64),
        "i_category": item_category[rows_item],
        "u_country": user_country[rows_user],
    })
    logit = (2 * np.nan_to_num(candidates[s.ALS_SCORE].to_numpy()) + 0.8 * candidates[s.UI_PURCHASE_DAYS]
             + 0.1 * candidates[s.ITEM_BUYERS_28D] + (candidates["i_category"] == "mugs") - 2.0)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    features = [*NUMERIC, *CATEGORICAL]
    model = CatBoostClassifier(iterations=iterations, depth=depth, verbose=0, random_seed=seed, thread_count=2,
                               cat_features=list(CATEGORICAL), allow_writing_files=False)
    train = rng.choice(n, size=min(n, 50_000), replace=False)  # the model's size, not its fit, matters here
    model.fit(candidates[features].iloc[train], label[train])

    work = Path(tempfile.mkdtemp(prefix="synthetic-", dir=output.parent if output.parent.exists() else None))
    model_file = work / s.MODEL_FILE
    model.save_model(str(model_file))
    scoring = _write_parts(candidates, work / s.SCORING_DIR, parts) if parts > 1 else candidates
    purchased = candidates.loc[candidates[s.UI_PURCHASE_DAYS] > 0, [s.USER_IDX, s.ITEM_IDX]]
    popular = pd.DataFrame({s.ITEM_IDX: np.arange(n_items, dtype=np.int64), s.SCORE: buyers})
    popular = popular[popular[s.SCORE] > 0].sort_values([s.SCORE, s.ITEM_IDX], ascending=[False, True])
    inputs = BundleInputs(
        users_map=pd.DataFrame({s.USER_ID: user_ids, s.USER_IDX: np.arange(n_users, dtype=np.int32)}),
        items_map=pd.DataFrame({s.ITEM_ID: item_ids, s.ITEM_IDX: np.arange(n_items, dtype=np.int32)}),
        user_factors=rng.normal(size=(n_users, 8)).astype(np.float32),
        item_factors=rng.normal(size=(n_items, 8)).astype(np.float32),
        candidates=scoring,
        popular=popular.reset_index(drop=True),
        items=pd.DataFrame({s.ITEM_IDX: np.arange(n_items, dtype=np.int32), s.ITEM_ID: item_ids,
                            s.ITEM_CATEGORY: item_category}),
        purchased=purchased,
        feature_spec={"features": features, "categorical": list(CATEGORICAL)},
        model_file=model_file,
        window={"test_start": "2011-11-09T00:00:00Z", "label_start": "2011-10-12T00:00:00Z",
                "end": "2011-12-09T12:50:00Z", "test_days": 28, "label_days": 28, "tag": tag},
        evaluation={"ranking_metrics": {s.TWO_STAGE: {"ndcg_at_10": {"value": 0.1}}}},
    )
    output.mkdir(parents=True, exist_ok=True)
    archive = write_bundle(inputs, output, group=group)
    shutil.rmtree(work)  # the model file and any scoring parts: the bundle holds copies
    return SyntheticShop(archive=archive, candidates=candidates, user_ids=user_ids, item_ids=item_ids,
                         cold_user_ids=[user_ids[u] for u in np.flatnonzero(~warm)])


def _write_parts(candidates: pd.DataFrame, directory: Path, parts: int) -> Path:
    """``candidates`` as ``parts`` Parquet files of ascending user ranges, each sorted by (user, item)."""
    directory.mkdir(parents=True)
    ordered = candidates.sort_values([s.USER_IDX, s.ITEM_IDX], kind="stable")
    users = np.unique(ordered[s.USER_IDX].to_numpy())
    for number, chunk in enumerate(np.array_split(users, parts)):
        rows = ordered.loc[ordered[s.USER_IDX].isin(chunk)]
        rows.to_parquet(directory / f"part-{number:05d}.parquet", index=False)
    return directory
