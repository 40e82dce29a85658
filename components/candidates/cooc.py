"""Item-item co-occurrence: users who bought A also bought B, from the fold's interactions only.

sim(a, b) = n_ab / sqrt(n_a * n_b) (cosine of the binary item columns; n_ab = users with both), a != b,
keeping each item's ``neighbours`` most similar items. A user's score for item b is
sum over the user's items a of recency(a) * sim(a, b), recency = 0.5 ** (ui_days_since_last / half-life),
so what the user bought lately steers the list. To bound the quadratic pair count, co-occurrence is
counted over each user's ``max_items_per_user`` most recent items (the profile still uses all of them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from components import schema as s
from components.candidates.base import (
    RANK,
    SCORE,
    CandidateGenerator,
    CompactMatrix,
    FoldTables,
    empty_recommendations,
    rank_within_rows,
    top_n_by_row,
    top_n_csr,
    top_n_sparse,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_RECENCY = "_recency"


def recency_weight(days_since_last: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """0.5 ** (days / half-life); a missing recency counts as today (1.0), as in the Spark version."""
    if half_life_days is None:
        return np.ones(len(days_since_last))
    days = np.nan_to_num(np.asarray(days_since_last, dtype=np.float64), nan=0.0)
    return np.power(0.5, np.maximum(days, 0.0) / half_life_days)


class CoocGenerator(CandidateGenerator):
    name = "cooc"

    def __init__(self, *, neighbours: int = 50, half_life_days: float | None = 60.0,
                 max_items_per_user: int = 200) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.half_life_days = half_life_days
        self.max_items_per_user = max_items_per_user
        self._similar: sp.csr_matrix | None = None
        self._profile: CompactMatrix | None = None

    def _fit(self, tables: FoldTables) -> None:
        pairs = tables.recency
        user = pairs[s.USER_IDX].to_numpy(np.int64)
        item = pairs[s.ITEM_IDX].to_numpy(np.int64)
        days = pairs[s.UI_DAYS_SINCE_LAST].to_numpy(np.float64, na_value=np.nan)
        # Profile: every item of the user, weighted by recency; its columns define the item space.
        self._profile = CompactMatrix.build(user, item, recency_weight(days, self.half_life_days), np.float64)
        items = self._profile.items
        # Co-occurrence over each user's most recent items only (same order as cooc_spark).
        order = np.lexsort((item, np.nan_to_num(days, nan=-np.inf), user))
        kept = order[rank_within_rows(user[order]) <= self.max_items_per_user]
        _, rows_kept = np.unique(user[kept], return_inverse=True)
        b = sp.csr_matrix((np.ones(len(kept)), (rows_kept, np.searchsorted(items, item[kept]))),
                          shape=(int(rows_kept.max(initial=-1)) + 1, len(items)))
        b.sum_duplicates()
        b.data[:] = 1.0  # binary: n_ab counts users, whatever the weights
        co = (b.T.tocsr() @ b).astype(np.float64)  # CSR x CSR: no costly CSC round trip
        n_item = np.maximum(co.diagonal(), 1.0)  # an item's column in b has n_item users; 0 only if unused
        n = co.shape[0]
        # n_ab / sqrt(n_a * n_b): the very operations cooc_spark does, so ties break the same way.
        if n * n <= 4 * co.nnz:  # dense-ish (a small catalogue): contiguous blocks are fastest

            def similarity_rows(start: int, stop: int) -> np.ndarray:
                block = co[start:stop].toarray() / np.sqrt(n_item[start:stop, None] * n_item[None, :])
                block[np.arange(stop - start), np.arange(start, stop)] = 0.0  # not its own neighbour
                return block

            top_a, top_b, top_sim, _ = top_n_by_row(similarity_rows, n, n, self.neighbours)
        else:
            a_idx = np.repeat(np.arange(n), np.diff(co.indptr))
            sim = co.data / np.sqrt(n_item[a_idx] * n_item[co.indices])
            sim[a_idx == co.indices] = 0.0
            top_a, top_b, top_sim, _ = top_n_sparse(sp.csr_matrix((sim, co.indices, co.indptr), shape=co.shape),
                                                    self.neighbours)
        self._similar = sp.csr_matrix((top_sim, (top_a, top_b)), shape=co.shape)

    def neighbour_table(self) -> pd.DataFrame:
        """item_idx, neighbour_idx, similarity: every item's kept neighbours (global indices), the table
        the bundle ships for real-time candidates (components/realtime/candidates.py)."""
        assert self._profile is not None and self._similar is not None
        similar = self._similar.tocoo()
        keep = similar.data > 0
        items = self._profile.items
        table = pd.DataFrame({s.ITEM_IDX: items[similar.row[keep]].astype(np.int32),
                              s.NEIGHBOUR_IDX: items[similar.col[keep]].astype(np.int32),
                              s.SIMILARITY: similar.data[keep].astype(np.float64)})
        return table.sort_values([s.ITEM_IDX, s.NEIGHBOUR_IDX], kind="stable").reset_index(drop=True)

    def _recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        assert self._profile is not None and self._similar is not None
        positions, rows = self._profile.rows_of(users)
        if len(rows) == 0:
            return empty_recommendations()
        out = []
        step = 50_000  # users per sparse product: bounds memory at scale
        for first in range(0, len(rows), step):
            scores = self._profile.matrix[rows[first:first + step]] @ self._similar
            row, col, score, rank = top_n_csr(scores, n)
            out.append(pd.DataFrame({
                s.USER_IDX: users[positions[first:first + step]][row].astype(np.int32),
                s.ITEM_IDX: self._profile.items[col].astype(np.int32),
                SCORE: score, RANK: rank.astype(np.int32)}))
        return pd.concat(out, ignore_index=True)


def _recency_column(days: Column, half_life_days: float | None) -> Column:
    from pyspark.sql import functions as sf

    if half_life_days is None:
        return sf.lit(1.0)
    age = sf.greatest(sf.coalesce(days.cast("double"), sf.lit(0.0)), sf.lit(0.0))
    return sf.pow(sf.lit(0.5), age / sf.lit(float(half_life_days)))


def cooc_spark(interactions: DataFrame, user_items: DataFrame, users: DataFrame, n: int, *,
               neighbours: int, half_life_days: float | None, max_items_per_user: int) -> DataFrame:
    """The same scores in Spark: a self-join on user over the capped pairs, cosine, top neighbours,
    then the recency-weighted sum over each requested user's items."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    u, i = s.USER_IDX, s.ITEM_IDX
    pairs = (interactions.select(u, i)
             .join(user_items.select(u, i, s.UI_DAYS_SINCE_LAST), [u, i], "left"))
    recent_first = Window.partitionBy(u).orderBy(sf.col(s.UI_DAYS_SINCE_LAST).asc_nulls_first(), sf.col(i))
    capped = (pairs.withColumn("_pos", sf.row_number().over(recent_first))
              .where(sf.col("_pos") <= max_items_per_user).select(u, i))
    n_item = capped.groupBy(i).agg(sf.count("*").cast("double").alias("_n"))
    a = capped.select(u, sf.col(i).alias("_a"))
    b = capped.select(u, sf.col(i).alias("_b"))
    co = (a.join(b, u).where(sf.col("_a") != sf.col("_b"))
          .groupBy("_a", "_b").agg(sf.count("*").cast("double").alias("_nab")))
    sim = (co.join(n_item.select(sf.col(i).alias("_a"), sf.col("_n").alias("_na")), "_a")
           .join(n_item.select(sf.col(i).alias("_b"), sf.col("_n").alias("_nb")), "_b")
           .select("_a", "_b", (sf.col("_nab") / sf.sqrt(sf.col("_na") * sf.col("_nb"))).alias("_sim")))
    best_neighbours = Window.partitionBy("_a").orderBy(sf.col("_sim").desc(), sf.col("_b"))
    sim = (sim.withColumn("_k", sf.row_number().over(best_neighbours))
           .where(sf.col("_k") <= neighbours).drop("_k"))
    profile = (pairs.join(users.select(u), u, "left_semi")
               .select(u, sf.col(i).alias("_a"),
                       _recency_column(sf.col(s.UI_DAYS_SINCE_LAST), half_life_days).alias(_RECENCY)))
    scores = (profile.join(sim, "_a")
              .groupBy(u, sf.col("_b").alias(i)).agg(sf.sum(sf.col(_RECENCY) * sf.col("_sim")).alias(SCORE))
              .where(sf.col(SCORE) > 0))
    best_items = Window.partitionBy(u).orderBy(sf.col(SCORE).desc(), sf.col(i))
    return (scores.withColumn(RANK, sf.row_number().over(best_items)).where(sf.col(RANK) <= n)
            .select(u, i, SCORE, sf.col(RANK).cast("int").alias(RANK)))
