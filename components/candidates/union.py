"""Union of the generators' lists into one candidate table per fold, at most ``max_per_user`` per user.

Priority of a (user, item) = sum over the generators that proposed it of weight_g / (rrf_k + rank_g)
(weighted reciprocal-rank fusion: an item several generators agree on rises; no generator's score scale
matters). When the union is longer than the cap, the lowest priorities go; ties keep the smaller item_idx.
Rows come out per user in priority order. Columns (schema.py): user_idx, item_idx, als_score (NaN when
not from ALS), als_rank (0 when not from ALS), cooc_score (0 when not from co-occurrence), from_als,
from_history, from_cooc, from_popular.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.base import RANK, SCORE
from components.config import CandidateConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Generator name -> its source flag, in the fixed order used for flags and tie-free bookkeeping.
SOURCES: Final = {"als": s.FROM_ALS, "history": s.FROM_HISTORY, "cooc": s.FROM_COOC, "popular": s.FROM_POPULAR}
CANDIDATE_COLUMNS: Final = (s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *s.CANDIDATE_SOURCE_COLUMNS)
_PRIORITY = "_priority"


@dataclass(frozen=True)
class Fusion:
    """How many of each generator's list to take and how much its rank counts."""

    top_n: Mapping[str, int]
    weights: Mapping[str, float]
    rrf_k: float
    max_per_user: int

    @classmethod
    def from_config(cls, config: CandidateConfig) -> Fusion:
        return cls(
            top_n={"als": config.als_top_n, "history": config.history_top_n, "cooc": config.cooc_top_n,
                   "popular": config.popular_top_n},
            weights={"als": config.als_weight, "history": config.history_weight, "cooc": config.cooc_weight,
                     "popular": config.popular_weight},
            rrf_k=config.rrf_k, max_per_user=config.max_per_user)


def empty_candidates() -> pd.DataFrame:
    frame = pd.DataFrame({
        s.USER_IDX: np.array([], np.int32), s.ITEM_IDX: np.array([], np.int32),
        s.ALS_SCORE: np.array([], np.float64), s.ALS_RANK: np.array([], np.int32),
        s.COOC_SCORE: np.array([], np.float64)})
    for flag in SOURCES.values():
        frame[flag] = np.array([], dtype=bool)
    return frame


def union_candidates(lists: Mapping[str, pd.DataFrame], fusion: Fusion) -> pd.DataFrame:
    """Fuse the generators' recommendation frames (user_idx, item_idx, score, rank) into candidates."""
    unknown = sorted(set(lists) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown candidate generator {unknown[0]!r}; known: {', '.join(SOURCES)}")
    parts = []
    for code, name in enumerate(SOURCES):
        frame = lists.get(name)
        if frame is None or frame.empty:
            continue
        frame = frame[frame[RANK].to_numpy() <= fusion.top_n[name]]
        parts.append((code, frame))
    if not parts:
        return empty_candidates()
    user = np.concatenate([f[s.USER_IDX].to_numpy(np.int64) for _, f in parts])
    item = np.concatenate([f[s.ITEM_IDX].to_numpy(np.int64) for _, f in parts])
    rank = np.concatenate([f[RANK].to_numpy(np.int64) for _, f in parts])
    score = np.concatenate([f[SCORE].to_numpy(np.float64) for _, f in parts])
    source = np.concatenate([np.full(len(f), code, dtype=np.int64) for code, f in parts])
    weight = np.array([fusion.weights.get(name, 0.0) for name in SOURCES])[source]

    key = user * (int(item.max()) + 1) + item
    pair_keys, pair = np.unique(key, return_inverse=True)  # sorted by (user, item)
    n_pairs = len(pair_keys)
    priority = np.bincount(pair, weights=weight / (fusion.rrf_k + rank), minlength=n_pairs)
    pair_user = np.zeros(n_pairs, np.int64)
    pair_item = np.zeros(n_pairs, np.int64)
    pair_user[pair], pair_item[pair] = user, item
    flags = {flag: np.bincount(pair[source == code], minlength=n_pairs) > 0
             for code, flag in enumerate(SOURCES.values())}
    als_score = np.full(n_pairs, np.nan)
    als_rank = np.zeros(n_pairs, np.int32)
    cooc_score = np.zeros(n_pairs)
    is_als, is_cooc = source == list(SOURCES).index("als"), source == list(SOURCES).index("cooc")
    als_score[pair[is_als]], als_rank[pair[is_als]] = score[is_als], rank[is_als]
    cooc_score[pair[is_cooc]] = score[is_cooc]

    order = np.lexsort((pair_item, -priority, pair_user))
    sorted_user = pair_user[order]
    starts = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]])
    position = np.arange(n_pairs) - np.repeat(starts, np.diff(np.r_[starts, n_pairs]))
    keep = order[position < fusion.max_per_user]
    out = pd.DataFrame({
        s.USER_IDX: pair_user[keep].astype(np.int32), s.ITEM_IDX: pair_item[keep].astype(np.int32),
        s.ALS_SCORE: als_score[keep], s.ALS_RANK: als_rank[keep], s.COOC_SCORE: cooc_score[keep]})
    for flag, values in flags.items():
        out[flag] = values[keep]
    return out


def union_candidates_spark(lists: Mapping[str, DataFrame], fusion: Fusion) -> DataFrame:
    """The same fusion in Spark (the distributed path)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    unknown = sorted(set(lists) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown candidate generator {unknown[0]!r}; known: {', '.join(SOURCES)}")
    parts = [
        lists[name].where(sf.col(RANK) <= fusion.top_n[name]).select(
            s.USER_IDX, s.ITEM_IDX, sf.lit(name).alias("_source"), sf.col(SCORE).cast("double").alias(SCORE),
            sf.col(RANK).cast("int").alias(RANK),
            (sf.lit(float(fusion.weights[name])) / (sf.lit(float(fusion.rrf_k)) + sf.col(RANK))).alias("_w"))
        for name in SOURCES if name in lists]
    if not parts:
        raise ValueError("union_candidates_spark needs at least one generator's list")
    stacked = parts[0]
    for part in parts[1:]:
        stacked = stacked.unionByName(part)

    def from_source(name: str, value: str) -> Column:
        return sf.max(sf.when(sf.col("_source") == name, sf.col(value)))

    fused = stacked.groupBy(s.USER_IDX, s.ITEM_IDX).agg(
        sf.sum("_w").alias(_PRIORITY),
        sf.coalesce(from_source("als", SCORE), sf.lit(float("nan"))).alias(s.ALS_SCORE),
        sf.coalesce(from_source("als", RANK), sf.lit(0)).cast("int").alias(s.ALS_RANK),
        sf.coalesce(from_source("cooc", SCORE), sf.lit(0.0)).alias(s.COOC_SCORE),
        *[sf.max((sf.col("_source") == name).cast("int")).cast("boolean").alias(flag)
          for name, flag in SOURCES.items()])
    best = Window.partitionBy(s.USER_IDX).orderBy(sf.col(_PRIORITY).desc(), sf.col(s.ITEM_IDX).asc())
    return (fused.withColumn("_pos", sf.row_number().over(best)).where(sf.col("_pos") <= fusion.max_per_user)
            .select(*CANDIDATE_COLUMNS))
