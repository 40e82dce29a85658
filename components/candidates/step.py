"""The ``als`` step: ETL fold tables -> ALS factors + fused candidates per fold + als.json.

    python -m components.candidates.step --etl OUTPUT/etl --output OUTPUT/als [--config JSON|PATH]

Per fold (each fit only on that fold's interactions, i.e. strictly before its cutoff):
  train: candidates for the warm users of folds/train/target_users (what the ranker learns from);
  test:  candidates for every user with interactions before the test cutoff (serving needs them all).
The backend is chosen once for both folds from the larger matrix (``AlsConfig.backend``): the
single-machine path collects the few columns it needs to the driver; the MLlib path stays in Spark.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.als import choose_backend
from components.candidates.generate import generate_local, generate_spark
from components.candidates.io import (
    fold_path,
    read_fold_tables,
    read_fold_tables_spark,
    read_warm_target_users,
    table_rows,
    write_arrow,
    write_frame,
)
from components.candidates.union import SOURCES
from components.config import PipelineConfig
from components.spark import get_spark, local_uri
from components.stepargs import parse_step_args

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

INPUTS: Final = ("etl",)


def fold_users(fold: s.Fold, interactions_users: np.ndarray, warm_target_users: np.ndarray) -> np.ndarray:
    """Who gets candidates in a fold (see the module docstring)."""
    return warm_target_users if fold == s.TRAIN_FOLD else np.unique(interactions_users)


def candidate_stats(candidates: pd.DataFrame, users: int) -> dict[str, Any]:
    per_user = candidates.groupby(s.USER_IDX).size()
    return {
        "users": users, "users_with_candidates": len(per_user), "rows": len(candidates),
        "per_user_mean": round(float(per_user.mean()), 2) if len(per_user) else 0.0,
        "per_user_max": int(per_user.max()) if len(per_user) else 0,
        "from": {flag: int(candidates[flag].sum()) for flag in SOURCES.values()},
    }


def _run_local(spark: SparkSession, etl: Path, output: Path, fold: s.Fold,
               config: PipelineConfig) -> dict[str, Any]:
    started = time.perf_counter()
    tables = read_fold_tables(etl, fold, spark)
    warm = read_warm_target_users(etl, fold, spark) if fold == s.TRAIN_FOLD else np.array([], np.int64)
    users = fold_users(fold, tables.interactions[s.USER_IDX].to_numpy(np.int64), warm)
    read_seconds = time.perf_counter() - started
    result = generate_local(tables, users, config.als, config.candidates)
    started = time.perf_counter()
    write_arrow(result.user_factors.to_arrow(s.USER_IDX), fold_path(output, fold, s.USER_FACTORS))
    write_arrow(result.item_factors.to_arrow(s.ITEM_IDX), fold_path(output, fold, s.ITEM_FACTORS))
    write_frame(result.candidates, fold_path(output, fold, s.CANDIDATES))
    seconds = {"read": round(read_seconds, 4), **result.seconds,
               "write": round(time.perf_counter() - started, 4)}
    return {"nnz": tables.nnz, "seconds": seconds, **candidate_stats(result.candidates, len(users))}


def _write_spark(frame: DataFrame, path: Path) -> None:
    frame.write.mode("overwrite").parquet(local_uri(path))


def _run_spark(spark: SparkSession, etl: Path, output: Path, fold: s.Fold,
               config: PipelineConfig) -> dict[str, Any]:
    from pyspark.sql import functions as sf

    tables = read_fold_tables_spark(spark, etl, fold)
    if fold == s.TRAIN_FOLD:
        users = (spark.read.parquet(local_uri(fold_path(etl, fold, s.TARGET_USERS)))
                 .where(sf.col(s.SEGMENT) == s.WARM).select(s.USER_IDX))
    else:
        users = tables.interactions.select(s.USER_IDX)
    result = generate_spark(tables, users, config.als, config.candidates)
    started = time.perf_counter()
    _write_spark(result.user_factors, fold_path(output, fold, s.USER_FACTORS))
    _write_spark(result.item_factors, fold_path(output, fold, s.ITEM_FACTORS))
    _write_spark(result.candidates, fold_path(output, fold, s.CANDIDATES))
    seconds = {**result.seconds, "recommend_union_write": round(time.perf_counter() - started, 4)}
    # One job for the report: per-user counts and source totals of what was written.
    written = spark.read.parquet(local_uri(fold_path(output, fold, s.CANDIDATES)))
    per_user = written.groupBy(s.USER_IDX).agg(
        sf.count("*").alias("_n"), *[sf.sum(sf.col(f).cast("long")).alias(f) for f in SOURCES.values()])
    row = per_user.agg(sf.count("*").alias("users"), sf.sum("_n").alias("rows"), sf.max("_n").alias("mx"),
                       *[sf.sum(f).alias(f) for f in SOURCES.values()]).first()
    assert row is not None
    return {
        "nnz": tables.interactions.count(), "seconds": seconds, "users": users.distinct().count(),
        "users_with_candidates": int(row["users"] or 0), "rows": int(row["rows"] or 0),
        "per_user_mean": round(float(row["rows"] or 0) / max(int(row["users"] or 0), 1), 2),
        "per_user_max": int(row["mx"] or 0), "from": {f: int(row[f] or 0) for f in SOURCES.values()},
    }


def run_als(spark: SparkSession, etl: Path, output: Path, config: PipelineConfig) -> dict[str, Any]:
    """Write every fold's factors and candidates under ``output`` and return the als.json report."""
    started = time.perf_counter()
    nnz = max(table_rows(etl, fold, s.INTERACTIONS) for fold in s.FOLDS)
    backend = choose_backend(config.als, nnz)
    log.info("als: backend %s (largest fold matrix: %d non-zeros, single-machine limit %d)", backend, nnz,
             config.als.single_machine_max_nnz)
    folds: dict[str, Any] = {}
    for fold in s.FOLDS:
        run = _run_local if backend == "implicit" else _run_spark
        folds[fold] = run(spark, etl, output, fold, config)
        log.info("als: fold %s: %s", fold, folds[fold])
    timings: dict[str, Any] = {fold: folds[fold].pop("seconds") for fold in folds}
    report = {
        "backend": backend,
        "timings": {"total_seconds": round(time.perf_counter() - started, 4), **timings},
        "folds": folds,
        "params": {"als": config.als.model_dump(), "candidates": config.candidates.model_dump()},
    }
    (output / s.ALS_REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "als", INPUTS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_als(get_spark("ecomrec-als"), args.inputs["etl"], args.output, args.config)


if __name__ == "__main__":
    main()
