"""The distributed path (MLlib ALS and the Spark versions of the other generators and of the union) against
the single-machine one, on tiny data in the shared local Spark session."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.candidates.als import ImplicitAls, MllibAls
from components.candidates.base import RANK, SCORE, FoldTables
from components.candidates.cooc import CoocGenerator, cooc_spark
from components.candidates.history import HistoryGenerator, history_spark
from components.candidates.popular import PopularGenerator, popular_spark
from components.candidates.union import Fusion, union_candidates, union_candidates_spark
from components.config import AlsConfig
from components.errors import NotFittedError
from tests.test_candidates_fixtures import block_events, block_tables, fold_tables, shop_events, windows

pytestmark = pytest.mark.spark
ALS = AlsConfig(factors=8, iterations=10, regularization=0.1, alpha=10.0, seed=7)


def to_spark(spark: Any, frame: pd.DataFrame) -> Any:
    return spark.createDataFrame(frame)


def collect(frame: Any) -> pd.DataFrame:
    out: pd.DataFrame = frame.toPandas()
    return out


def users_frame(spark: Any, users: np.ndarray) -> Any:
    return spark.createDataFrame(pd.DataFrame({s.USER_IDX: users.astype(np.int32)}))


def in_block_share(recs: pd.DataFrame, user_block: np.ndarray, item_block: np.ndarray) -> float:
    return float((user_block[recs[s.USER_IDX]] == item_block[recs[s.ITEM_IDX]]).mean())


def shop_tables() -> FoldTables:
    events = shop_events()
    return fold_tables(events, windows(events)["label_start"], 30)


def test_mllib_and_implicit_both_recover_the_planted_blocks(spark: Any) -> None:
    interactions, user_block, item_block = block_events()
    tables = block_tables(interactions, len(item_block))
    users = np.arange(len(user_block))
    mllib = MllibAls(ALS).fit(to_spark(spark, tables.interactions), to_spark(spark, tables.user_items))
    mllib_recs = collect(mllib.recommend(users_frame(spark, users), 10))
    implicit_recs = ImplicitAls(ALS).fit(tables).recommend(users, 10)
    assert in_block_share(mllib_recs, user_block, item_block) >= 0.95
    assert in_block_share(implicit_recs, user_block, item_block) >= 0.95
    # Same contract: ranks 1..10 per user, scores descending, factors of the configured rank.
    assert mllib_recs.groupby(s.USER_IDX)[RANK].apply(lambda r: sorted(r) == list(range(1, 11))).all()
    assert (mllib_recs.sort_values([s.USER_IDX, RANK]).groupby(s.USER_IDX)[SCORE].diff().dropna() <= 1e-6).all()
    user_factors, item_factors = (collect(f) for f in mllib.factors())
    assert len(user_factors) == len(users) and len(user_factors[s.FACTORS].iloc[0]) == ALS.factors
    assert set(item_factors[s.ITEM_IDX]) == set(interactions[s.ITEM_IDX])


def test_mllib_refuses_to_recommend_before_fit(spark: Any) -> None:
    with pytest.raises(NotFittedError):
        MllibAls(ALS).recommend(users_frame(spark, np.array([0])), 5)


def test_spark_history_and_popular_match_the_local_generators(spark: Any) -> None:
    tables = shop_tables()
    users = np.arange(0, 40, 3)
    local_history = HistoryGenerator().fit(tables).recommend(users, 5)
    spark_history = collect(history_spark(to_spark(spark, tables.user_items), users_frame(spark, users), 5))
    key = [s.USER_IDX, RANK]
    pd.testing.assert_frame_equal(
        local_history.sort_values(key).reset_index(drop=True)[[s.USER_IDX, s.ITEM_IDX, RANK]],
        spark_history.sort_values(key).reset_index(drop=True)[[s.USER_IDX, s.ITEM_IDX, RANK]],
        check_dtype=False)
    local_popular = PopularGenerator().fit(tables).recommend(users, 8)
    spark_popular = collect(popular_spark(to_spark(spark, tables.items), users_frame(spark, users), 8))
    assert (local_popular.sort_values(key)[s.ITEM_IDX].tolist()
            == spark_popular.sort_values(key)[s.ITEM_IDX].tolist())


def test_spark_cooc_matches_the_local_generator(spark: Any) -> None:
    tables = shop_tables()
    users = np.arange(40)
    params: dict[str, Any] = {"neighbours": 6, "half_life_days": 20.0, "max_items_per_user": 8}
    # n = every item: no cut at the end of the list, so both must propose exactly the same pairs.
    local = CoocGenerator(**params).fit(tables).recommend(users, 30)
    distributed = collect(cooc_spark(to_spark(spark, tables.interactions), to_spark(spark, tables.user_items),
                                     users_frame(spark, users), 30, **params))
    merged = local.merge(distributed, on=[s.USER_IDX, s.ITEM_IDX], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all() and len(merged) > 100
    np.testing.assert_allclose(merged[f"{SCORE}_x"], merged[f"{SCORE}_y"], rtol=1e-9)


def test_spark_union_matches_the_local_union(spark: Any) -> None:
    tables = shop_tables()
    users = np.arange(40)
    lists = {"als": ImplicitAls(ALS).fit(tables).recommend(users, 12),
             "history": HistoryGenerator().fit(tables).recommend(users, 12)}
    fusion = Fusion(top_n={"als": 10, "history": 8}, weights={"als": 1.0, "history": 1.5}, rrf_k=5.0,
                    max_per_user=9)
    local = union_candidates(lists, fusion)
    distributed = collect(union_candidates_spark({k: to_spark(spark, v) for k, v in lists.items()}, fusion))
    key = [s.USER_IDX, s.ITEM_IDX]
    local, distributed = (f.sort_values(key).reset_index(drop=True) for f in (local, distributed))
    pd.testing.assert_frame_equal(local, distributed, check_dtype=False)
