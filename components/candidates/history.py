"""The user's own past items: repeat buying is most of e-commerce, so they are always candidates.

Order (the ``repurchase`` baseline of EVALUATION.md): more distinct purchase days first, then the more
recent (smaller ui_days_since_last), then the smaller item_idx. score = ui_purchase_days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.base import (
    RANK,
    SCORE,
    CandidateGenerator,
    FoldTables,
    empty_recommendations,
    rank_within_rows,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


class HistoryGenerator(CandidateGenerator):
    name = "history"

    def __init__(self) -> None:
        super().__init__()
        self._pairs = pd.DataFrame()

    def _fit(self, tables: FoldTables) -> None:
        ui = tables.user_items
        days_since = ui[s.UI_DAYS_SINCE_LAST].to_numpy(dtype=np.float64, na_value=np.inf)
        purchase_days = ui[s.UI_PURCHASE_DAYS].to_numpy(dtype=np.float64, na_value=0.0)
        user = ui[s.USER_IDX].to_numpy(np.int64)
        item = ui[s.ITEM_IDX].to_numpy(np.int64)
        order = np.lexsort((item, days_since, -purchase_days, user))
        self._pairs = pd.DataFrame({
            s.USER_IDX: user[order].astype(np.int32), s.ITEM_IDX: item[order].astype(np.int32),
            SCORE: purchase_days[order], RANK: rank_within_rows(user[order]).astype(np.int32),
        })

    def _recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        pairs = self._pairs
        if pairs.empty:
            return empty_recommendations()
        keep = (pairs[RANK].to_numpy() <= n) & np.isin(pairs[s.USER_IDX].to_numpy(), users)
        return pairs[keep].reset_index(drop=True)


def history_spark(user_items: DataFrame, users: DataFrame, n: int) -> DataFrame:
    """The same ranking in Spark (the distributed path): ``users`` has a user_idx column."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    order = Window.partitionBy(s.USER_IDX).orderBy(
        sf.col(s.UI_PURCHASE_DAYS).desc_nulls_last(), sf.col(s.UI_DAYS_SINCE_LAST).asc_nulls_last(),
        sf.col(s.ITEM_IDX).asc())
    return (user_items.join(users.select(s.USER_IDX), s.USER_IDX, "left_semi")
            .withColumn(RANK, sf.row_number().over(order))
            .where(sf.col(RANK) <= n)
            .select(s.USER_IDX, s.ITEM_IDX,
                    sf.coalesce(sf.col(s.UI_PURCHASE_DAYS).cast("double"), sf.lit(0.0)).alias(SCORE),
                    sf.col(RANK).cast("int").alias(RANK)))
