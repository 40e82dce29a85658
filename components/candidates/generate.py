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
from components.candidates.base import CandidateGenerator, FoldTables
from components.candidates.cooc import CoocGenerator, cooc_spark
from components.candidates.history import HistoryGenerator, history_spark
from components.candidates.popular import PopularGenerator, popular_spark
from components.candidates.union import Fusion, empty_candidates, union_candidates, union_candidates_spark
from components.config import AlsConfig, CandidateConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# Generators' (user, item) proposals fused at once (~100 MB of arrays): bounds memory, and measured twice
# as fast as 20M (cache-sized sorts). Chunks only change ALS scores in float32's last bits (BLAS blocking).
MAX_PROPOSALS_PER_CHUNK = 2_000_000


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
    generators: dict[str, tuple[CandidateGenerator | ImplicitAls, int]] = {"als": (als_model, candidates.als_top_n)}
    with timer.lap("history"):
        generators["history"] = HistoryGenerator().fit(tables), candidates.history_top_n
    with timer.lap("cooc"):
        if candidates.cooc_top_n > 0:
            cooc = CoocGenerator(neighbours=candidates.cooc_neighbours,
                                 half_life_days=candidates.cooc_half_life_days,
                                 max_items_per_user=candidates.cooc_max_items_per_user)
            generators["cooc"] = cooc.fit(tables), candidates.cooc_top_n
    with timer.lap("popular"):
        generators["popular"] = PopularGenerator().fit(tables), candidates.popular_top_n
    # Every generator proposes hundreds of items per user; fusing a chunk of users at a time keeps the
    # proposals (not only the fused candidates) within memory at any number of users.
    proposals_per_user = sum(n for _, n in generators.values())
    users_per_chunk = max(1, MAX_PROPOSALS_PER_CHUNK // max(proposals_per_user, 1))
    parts = []
    for first in range(0, len(users), users_per_chunk):
        chunk = users[first:first + users_per_chunk]
        lists = {}
        for name, (generator, n) in generators.items():
            with timer.lap(f"{name}_recommend"):
                lists[name] = generator.recommend(chunk, n)
        with timer.lap("union"):
            parts.append(union_candidates(lists, fusion))
    fused = pd.concat(parts, ignore_index=True) if parts else empty_candidates()
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
