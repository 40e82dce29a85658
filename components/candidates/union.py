"""Union of the generators' lists into one candidate table per fold, at most ``max_per_user`` per user.

Priority of a (user, item) = sum over the generators that proposed it of weight_g / (rrf_k + rank_g)
(weighted reciprocal-rank fusion: an item several generators agree on rises; no generator's score scale
matters). When the union is longer than the cap, the lowest priorities go; ties keep the smaller item_idx.
Rows come out per user in priority order. Columns (schema.py): user_idx, item_idx, als_score (NaN when
not from ALS), als_rank (0 when not from ALS), cooc_score (0 when not from co-occurrence), from_als,
from_history, from_cooc, from_popular.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.base import RANK, SCORE, top_n_by_row
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


def _check_sources(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown candidate generator {unknown[0]!r}; known: {', '.join(SOURCES)}")


@dataclass(frozen=True)
class _Rows:
    """Every proposal of every generator, one entry per (generator, user, item)."""

    user: np.ndarray
    item: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    source: np.ndarray  # index into SOURCES
    contribution: np.ndarray  # weight / (rrf_k + rank)


def union_candidates(lists: Mapping[str, pd.DataFrame], fusion: Fusion) -> pd.DataFrame:
    """Fuse the generators' recommendation frames (user_idx, item_idx, score, rank; unique pairs within
    each frame) into candidates: one sort of the (user, item) keys, then a partial sort per user."""
    _check_sources(lists)
    columns: list[tuple[np.ndarray, ...]] = []
    for code, name in enumerate(SOURCES):
        frame = lists.get(name)
        if frame is None or frame.empty:
            continue
        rank = frame[RANK].to_numpy(np.int64)
        within = rank <= fusion.top_n[name]  # numpy masks: no copy of the frame (millions of rows)
        columns.append((np.full(int(within.sum()), code, dtype=np.int8), rank[within],
                        frame[s.USER_IDX].to_numpy(np.int64)[within], frame[s.ITEM_IDX].to_numpy(np.int64)[within],
                        frame[SCORE].to_numpy(np.float64)[within]))
    if not columns or not sum(len(c[0]) for c in columns):
        return empty_candidates()
    source, rank, user, item, score = (np.concatenate(parts) for parts in zip(*columns, strict=True))
    weights = np.array([fusion.weights.get(name, 0.0) for name in SOURCES])
    rows = _Rows(user=user, item=item, rank=rank, score=score, source=source,
                 contribution=weights[source] / (fusion.rrf_k + rank))
    return _fuse(rows, int(rows.item.max()) + 1, fusion.max_per_user)


_ALS, _COOC = list(SOURCES).index("als"), list(SOURCES).index("cooc")


def _frame(user: np.ndarray, item: np.ndarray, als_score: np.ndarray, als_rank: np.ndarray,
           cooc_score: np.ndarray, flags: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({
        s.USER_IDX: user.astype(np.int32), s.ITEM_IDX: item.astype(np.int32),
        s.ALS_SCORE: als_score.astype(np.float64), s.ALS_RANK: als_rank.astype(np.int32),
        s.COOC_SCORE: cooc_score.astype(np.float64)})
    for code, flag in enumerate(SOURCES.values()):
        out[flag] = (flags & (1 << code)) > 0
    return out


def _fuse(rows: _Rows, n_items: int, cap: int) -> pd.DataFrame:
    pair_keys, pair = np.unique(rows.user * n_items + rows.item, return_inverse=True)  # sorted (user, item)
    n_pairs = len(pair_keys)
    priority = np.bincount(pair, weights=rows.contribution, minlength=n_pairs)
    flags = np.zeros(n_pairs, dtype=np.uint8)
    for code in range(len(SOURCES)):
        flags[pair[rows.source == code]] |= np.uint8(1 << code)  # a pair occurs once per generator
    als_score, als_rank, cooc_score = np.full(n_pairs, np.nan), np.zeros(n_pairs, np.int64), np.zeros(n_pairs)
    is_als, is_cooc = rows.source == _ALS, rows.source == _COOC
    als_score[pair[is_als]], als_rank[pair[is_als]] = rows.score[is_als], rows.rank[is_als]
    cooc_score[pair[is_cooc]] = rows.score[is_cooc]
    pair_user, pair_item = pair_keys // n_items, pair_keys % n_items
    # Pairs are sorted by (user, item), so each user is a contiguous run. Lay the runs out as rows of a
    # dense (users x longest run) block, item order preserved, and take each row's top ``cap`` with a
    # partial sort: ties then go to the smaller item, and no full sort of every pair is needed.
    starts = np.flatnonzero(np.r_[True, pair_user[1:] != pair_user[:-1]])
    bounds = np.r_[starts, n_pairs]
    position = np.arange(n_pairs) - np.repeat(starts, np.diff(bounds))
    width = int(position.max()) + 1

    def block(first: int, stop: int) -> np.ndarray:
        lo, hi = bounds[first], bounds[stop]
        dense = np.full((stop - first, width), -np.inf)
        dense[np.repeat(np.arange(stop - first), np.diff(bounds[first:stop + 1])), position[lo:hi]] = priority[lo:hi]
        return dense

    run, column, _, _ = top_n_by_row(block, len(starts), width, cap, positive_only=False)
    keep = starts[run] + column
    return _frame(pair_user[keep], pair_item[keep], als_score[keep], als_rank[keep], cooc_score[keep],
                  flags[keep])


def union_candidates_spark(lists: Mapping[str, DataFrame], fusion: Fusion) -> DataFrame:
    """The same fusion in Spark (the distributed path)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    _check_sources(lists)
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
