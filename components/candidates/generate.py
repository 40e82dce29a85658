"""One fold's candidates: fit every generator on the fold's tables, recommend for the fold's users, fuse.

Two paths with the same outputs: ``generate_local`` (tables collected to the driver; ``implicit`` ALS,
scipy co-occurrence) and ``generate_spark`` (everything stays in Spark; MLlib ALS). The step picks one
with ``choose_backend``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.als import Factors, ImplicitAls, MllibAls
from components.candidates.base import FoldTables
from components.candidates.cooc import CoocGenerator, cooc_spark
from components.candidates.history import HistoryGenerator, history_spark
from components.candidates.popular import PopularGenerator, popular_spark
from components.candidates.union import Fusion, union_candidates, union_candidates_spark
from components.config import AlsConfig, CandidateConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def lap(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 4)


@dataclass(frozen=True)
class LocalFoldResult:
    candidates: pd.DataFrame
    user_factors: Factors
    item_factors: Factors
    seconds: dict[str, float]


@dataclass(frozen=True)
class SparkFoldTables:
    """The same tables as ``FoldTables``, left in Spark."""

    interactions: DataFrame
    user_items: DataFrame
    items: DataFrame


@dataclass(frozen=True)
class SparkFoldResult:
    candidates: DataFrame
    user_factors: DataFrame
    item_factors: DataFrame
    seconds: dict[str, float]


def generate_local(tables: FoldTables, users: np.ndarray, als: AlsConfig,
                   candidates: CandidateConfig) -> LocalFoldResult:
    """Candidates for ``users`` (global user_idx) from one fold's tables, on this machine."""
    timer = Timer()
    fusion = Fusion.from_config(candidates)
    users = np.unique(np.asarray(users, dtype=np.int64))
    with timer.lap("als_fit"):
        als_model = ImplicitAls(als).fit(tables)
    with timer.lap("als_recommend"):
        lists = {"als": als_model.recommend(users, candidates.als_top_n)}
    with timer.lap("history"):
        lists["history"] = HistoryGenerator().fit(tables).recommend(users, candidates.history_top_n)
    with timer.lap("cooc"):
        if candidates.cooc_top_n > 0:
            cooc = CoocGenerator(neighbours=candidates.cooc_neighbours,
                                 half_life_days=candidates.cooc_half_life_days,
                                 max_items_per_user=candidates.cooc_max_items_per_user)
            lists["cooc"] = cooc.fit(tables).recommend(users, candidates.cooc_top_n)
    with timer.lap("popular"):
        lists["popular"] = PopularGenerator().fit(tables).recommend(users, candidates.popular_top_n)
    with timer.lap("union"):
        fused = union_candidates(lists, fusion)
    user_factors, item_factors = als_model.factors()
    log.info("candidates: %d users, %d rows (%.1f per user), %s", len(users), len(fused),
             len(fused) / max(len(users), 1), timer.seconds)
    return LocalFoldResult(fused, user_factors, item_factors, timer.seconds)


def generate_spark(tables: SparkFoldTables, users: DataFrame, als: AlsConfig,
                   candidates: CandidateConfig) -> SparkFoldResult:
    """The distributed path: MLlib ALS and the Spark versions of the other generators. Lazy except the
    ALS fit, so ``seconds`` holds the fit; the caller's write runs the rest."""
    timer = Timer()
    fusion = Fusion.from_config(candidates)
    users = users.select(s.USER_IDX).distinct().cache()
    with timer.lap("als_fit"):
        model = MllibAls(als).fit(tables.interactions, tables.user_items)
    lists = {
        "als": model.recommend(users, candidates.als_top_n),
        "history": history_spark(tables.user_items, users, candidates.history_top_n),
    }
    if candidates.popular_top_n > 0:
        lists["popular"] = popular_spark(tables.items, users, candidates.popular_top_n)
    if candidates.cooc_top_n > 0:
        lists["cooc"] = cooc_spark(tables.interactions, tables.user_items, users, candidates.cooc_top_n,
                                   neighbours=candidates.cooc_neighbours,
                                   half_life_days=candidates.cooc_half_life_days,
                                   max_items_per_user=candidates.cooc_max_items_per_user)
    user_factors, item_factors = model.factors()
    return SparkFoldResult(union_candidates_spark(lists, fusion), user_factors, item_factors, timer.seconds)
