"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with two interchangeable backends.

* ``ImplicitAls``: the single-machine ``implicit`` library (conjugate-gradient solver): ~10x faster than
  MLlib on one instance (benchmarks/als.py), used while the matrix fits one machine.
* ``MllibAls``: Spark MLlib ALS(implicitPrefs=True): the distributed path on a multi-instance cluster.

Both see the same confidence, c_ui = 1 + alpha * f(weight) * recency, with f = log1p by default (weights
span three orders of magnitude; a wholesaler's bulk orders must not flatten everyone else) and recency =
0.5 ** (ui_days_since_last / recency_half_life_days) (tastes drift; last season's items weigh less).
Already-bought items are never filtered from recommendations: repeat buying is most of e-commerce.
MLlib scales regParam by each user's/item's number of ratings (ALS-WR), implicit does not: MLlib gets
``regularization`` divided by the mean ratings per user and item (``mllib_reg_param``), which brings both
to the same recall (on Online Retail: 0.505 implicit vs 0.516 MLlib at 200; the raw value gave 0.13).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import threadpoolctl

from components import schema as s
from components.candidates.base import (
    RANK,
    SCORE,
    CandidateGenerator,
    CompactMatrix,
    FoldTables,
    empty_recommendations,
)
from components.candidates.cooc import recency_weight
from components.config import AlsConfig
from components.errors import NotFittedError
from components.spark import local_uri

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

Backend = Literal["implicit", "mllib"]
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
_RATING = "_confidence"


def choose_backend(config: AlsConfig, nnz: int) -> Backend:
    """``auto``: the single-machine library while the matrix has at most single_machine_max_nnz entries."""
    if config.backend != "auto":
        return config.backend
    return "implicit" if nnz <= config.single_machine_max_nnz else "mllib"


def confidence_values(weight: np.ndarray, days_since_last: np.ndarray, config: AlsConfig) -> np.ndarray:
    """f(weight) * recency; ALS then uses 1 + alpha * this."""
    w = np.asarray(weight, dtype=np.float64)
    scaled = np.log1p(w) if config.confidence == "log" else w
    return scaled * recency_weight(days_since_last, config.recency_half_life_days)


def confidence_column(weight: Column, days_since_last: Column, config: AlsConfig) -> Column:
    """The same as ``confidence_values`` as a Spark expression."""
    from pyspark.sql import functions as sf

    scaled = sf.log1p(weight) if config.confidence == "log" else weight.cast("double")
    if config.recency_half_life_days is None:
        return scaled
    age = sf.greatest(sf.coalesce(days_since_last.cast("double"), sf.lit(0.0)), sf.lit(0.0))
    return scaled * sf.pow(sf.lit(0.5), age / sf.lit(float(config.recency_half_life_days)))


def mllib_reg_param(config: AlsConfig, nnz: int, n_users: int, n_items: int) -> float:
    """MLlib's regParam for the same effective penalty as implicit's ``regularization``."""
    if config.mllib_regularization is not None:
        return config.mllib_regularization
    mean_ratings = (nnz / max(n_users, 1) + nnz / max(n_items, 1)) / 2
    return config.regularization / max(mean_ratings, 1.0)


def blas_thread_warnings() -> list[str]:
    """What is set up to oversubscribe: BLAS pools with > 1 thread fight implicit's own threads (implicit
    warns of slowdowns up to 10x), so we say so and pin BLAS to one thread while fitting."""
    found: list[str] = []
    for var in _BLAS_ENV:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 1:
            found.append(f"{var}={value}")
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas" and int(pool.get("num_threads", 1)) > 1:
            found.append(f"{pool.get('internal_api')} BLAS pool with {pool['num_threads']} threads")
    return list(dict.fromkeys(found))  # numpy and scipy may load the same library twice


_warned_blas = False


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    global _warned_blas
    problems = blas_thread_warnings()
    if problems and not _warned_blas:  # once per process, like implicit's own check
        _warned_blas = True
        log.warning("BLAS threading: %s; limiting BLAS to 1 thread during the ALS fit (implicit runs its "
                    "own threads; set OPENBLAS_NUM_THREADS=1 / MKL_NUM_THREADS=1 to silence this)",
                    ", ".join(problems))
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


class ImplicitAls(CandidateGenerator):
    """ALS with the ``implicit`` library on the fold's interaction matrix (single machine)."""

    name = "als"

    def __init__(self, config: AlsConfig) -> None:
        super().__init__()
        self.config = config
        self._matrix: CompactMatrix | None = None
        self._user_factors = np.zeros((0, config.factors), dtype=np.float32)
        self._item_factors = np.zeros((0, config.factors), dtype=np.float32)
        self._model: object | None = None

    def _fit(self, tables: FoldTables) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        pairs = tables.recency
        values = confidence_values(pairs[s.WEIGHT].to_numpy(np.float64),
                                   pairs[s.UI_DAYS_SINCE_LAST].to_numpy(np.float64, na_value=np.nan),
                                   self.config)
        self._matrix = CompactMatrix.build(pairs[s.USER_IDX].to_numpy(np.int64),
                                           pairs[s.ITEM_IDX].to_numpy(np.int64), values)
        cfg = self.config
        with single_threaded_blas():
            # Built inside the limit so implicit's own BLAS check sees one thread and stays quiet.
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                iterations=cfg.iterations, random_state=cfg.seed, num_threads=cfg.num_threads,
                dtype=np.float32)
            model.fit(self._matrix.matrix, show_progress=False)
        self._model = model
        self._user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        assert self._matrix is not None and self._model is not None
        positions, rows = self._matrix.rows_of(users)
        n = min(n, len(self._matrix.items))
        if len(rows) == 0 or n == 0:
            return empty_recommendations()
        with single_threaded_blas():  # implicit's top-k runs its own threads too (3x faster on 2 cores)
            ids, scores = self._model.recommend(  # type: ignore[attr-defined]
                rows, self._matrix.matrix[rows], N=n, filter_already_liked_items=False)
        return pd.DataFrame({
            s.USER_IDX: np.repeat(users[positions], n).astype(np.int32),
            s.ITEM_IDX: self._matrix.items[np.asarray(ids).ravel()].astype(np.int32),
            SCORE: np.asarray(scores, dtype=np.float64).ravel(),
            RANK: np.tile(np.arange(1, n + 1, dtype=np.int32), len(rows)),
        })

    def factors(self) -> tuple[Factors, Factors]:
        """(user factors, item factors) over the users and items of the fitted matrix."""
        if not self.is_fitted or self._matrix is None:
            raise NotFittedError("ImplicitAls.factors called before fit")
        return Factors(self._matrix.users, self._user_factors), Factors(self._matrix.items, self._item_factors)


@dataclass(frozen=True)
class Factors:
    """Latent vectors by global index: ``ids[k]`` owns ``vectors[k]``."""

    ids: np.ndarray
    vectors: np.ndarray  # float32, (len(ids), factors)

    def to_arrow(self, id_column: str) -> pa.Table:
        """id_column int32, factors list<float> (Spark reads array<float>, the output contract)."""
        k = self.vectors.shape[1]
        offsets = pa.array(np.arange(0, (len(self.ids) + 1) * k, k, dtype=np.int32))
        values = pa.array(np.ascontiguousarray(self.vectors, dtype=np.float32).ravel())
        return pa.table({id_column: pa.array(self.ids.astype(np.int32)),
                         s.FACTORS: pa.ListArray.from_arrays(offsets, values)})


class MllibAls:
    """The same model with Spark MLlib; inputs and outputs stay Spark DataFrames (nothing is collected)."""

    name = "als"

    def __init__(self, config: AlsConfig) -> None:
        self.config = config
        self.reg_param = config.regularization
        self._model: object | None = None

    @property
    def is_fitted(self) -> bool:
        return self._model is not None

    def _require(self) -> object:
        if self._model is None:
            raise NotFittedError("MllibAls used before fit")
        return self._model

    def fit(self, interactions: DataFrame, user_items: DataFrame) -> Self:
        from pyspark.ml.recommendation import ALS
        from pyspark.sql import functions as sf

        cfg = self.config
        context = interactions.sparkSession.sparkContext
        if context.getCheckpointDir() is None and (context.master or "").startswith("local"):
            # MLlib truncates the ALS lineage every checkpointInterval (10) iterations only when it can
            # checkpoint (long runs otherwise risk a StackOverflowError). A cluster needs a shared
            # directory (HDFS/S3), which the platform sets; locally a temp dir does.
            context.setCheckpointDir(local_uri(tempfile.mkdtemp(prefix="ecomrec-als-checkpoints-")))
        ratings = (interactions.select(s.USER_IDX, s.ITEM_IDX, s.WEIGHT)
                   .join(user_items.select(s.USER_IDX, s.ITEM_IDX, s.UI_DAYS_SINCE_LAST),
                         [s.USER_IDX, s.ITEM_IDX], "left")
                   .select(s.USER_IDX, s.ITEM_IDX,
                           confidence_column(sf.col(s.WEIGHT), sf.col(s.UI_DAYS_SINCE_LAST), cfg)
                           .cast("float").alias(_RATING)))
        sizes = ratings.agg(sf.count("*").alias("n"), sf.countDistinct(s.USER_IDX).alias("u"),
                            sf.countDistinct(s.ITEM_IDX).alias("i")).first()
        assert sizes is not None
        self.reg_param = mllib_reg_param(cfg, int(sizes["n"]), int(sizes["u"]), int(sizes["i"]))
        log.info("MLlib ALS: %d ratings, %d users, %d items, regParam %.4g", sizes["n"], sizes["u"], sizes["i"],
                 self.reg_param)
        als = ALS(rank=cfg.factors, maxIter=cfg.iterations, regParam=self.reg_param, alpha=cfg.alpha,
                  implicitPrefs=True, seed=cfg.seed, userCol=s.USER_IDX, itemCol=s.ITEM_IDX,
                  ratingCol=_RATING, coldStartStrategy="drop", nonnegative=False)
        self._model = als.fit(ratings)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        """user_idx, item_idx, score, rank for the users (a user_idx column) the model knows."""
        from pyspark.sql import functions as sf

        model = self._require()
        recs = model.recommendForUserSubset(users.select(s.USER_IDX).distinct(), n)  # type: ignore[attr-defined]
        return recs.select(s.USER_IDX, sf.posexplode("recommendations").alias("_pos", "_rec")).select(
            s.USER_IDX, sf.col(f"_rec.{s.ITEM_IDX}").cast("int").alias(s.ITEM_IDX),
            sf.col("_rec.rating").cast("double").alias(SCORE), (sf.col("_pos") + 1).cast("int").alias(RANK))

    def factors(self) -> tuple[DataFrame, DataFrame]:
        """(user_idx, factors array<float>), (item_idx, factors array<float>)."""
        from pyspark.sql import functions as sf

        model = self._require()
        users = model.userFactors  # type: ignore[attr-defined]
        items = model.itemFactors  # type: ignore[attr-defined]
        return (users.select(sf.col("id").cast("int").alias(s.USER_IDX), sf.col("features").alias(s.FACTORS)),
                items.select(sf.col("id").cast("int").alias(s.ITEM_IDX), sf.col("features").alias(s.FACTORS)))
