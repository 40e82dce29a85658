"""Popular items of the fold: most distinct buyers in the 28 days before the cutoff (i_buyers_28d), the
same list for every user. It carries what is selling now (seasonal and new items ALS has barely seen)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.base import RANK, SCORE, CandidateGenerator, FoldTables

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class PopularGenerator(CandidateGenerator):
    name = "popular"

    def __init__(self) -> None:
        super().__init__()
        self._items = np.array([], dtype=np.int64)
        self._scores = np.array([], dtype=np.float64)

    def _fit(self, tables: FoldTables) -> None:
        buyers = tables.items[s.ITEM_BUYERS_28D].to_numpy(dtype=np.float64, na_value=0.0)
        items = tables.items[s.ITEM_IDX].to_numpy(np.int64)
        order = np.lexsort((items, -buyers))
        order = order[buyers[order] > 0]  # an item nobody bought lately says nothing about "popular now"
        self._items, self._scores = items[order], buyers[order]

    @property
    def ranking(self) -> pd.DataFrame:
        """item_idx, score, best first (the cold-user fallback list)."""
        return pd.DataFrame({s.ITEM_IDX: self._items.astype(np.int32), SCORE: self._scores})

    def _recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        k = min(n, len(self._items))
        return pd.DataFrame({
            s.USER_IDX: np.repeat(users, k).astype(np.int32),
            s.ITEM_IDX: np.tile(self._items[:k], len(users)).astype(np.int32),
            SCORE: np.tile(self._scores[:k], len(users)),
            RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)),
        })


def popular_spark(items: DataFrame, users: DataFrame, n: int) -> DataFrame:
    """The same list in Spark: the top n is tiny, so it is collected and broadcast to every user."""
    from pyspark.sql import functions as sf

    top = (items.where(sf.col(s.ITEM_BUYERS_28D) > 0)
           .orderBy(sf.col(s.ITEM_BUYERS_28D).desc(), sf.col(s.ITEM_IDX).asc()).limit(n)
           .select(s.ITEM_IDX, sf.col(s.ITEM_BUYERS_28D).cast("double").alias(SCORE)).collect())
    spark = items.sparkSession
    ranked = spark.createDataFrame(
        [(int(r[s.ITEM_IDX]), float(r[SCORE]), k + 1) for k, r in enumerate(top)],
        f"{s.ITEM_IDX} int, {SCORE} double, {RANK} int")
    return users.select(s.USER_IDX).crossJoin(sf.broadcast(ranked))
