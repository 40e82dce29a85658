"""ALS backends on the same matrix: Spark MLlib vs the ``implicit`` library vs our candidate step.

    .venv/bin/python benchmarks/als.py --etl OUTPUT/etl                 # Online Retail (real ETL output)
    .venv/bin/python benchmarks/als.py --csv online_retail.csv.gz       # Online Retail (pandas stand-in)
    .venv/bin/python benchmarks/als.py --synthetic-nnz 1000000          # planted-cluster matrix
    .venv/bin/python benchmarks/als.py --csv ... --synthetic-nnz 50000 --smoke   # quick check

For each dataset (train fold; recall = candidate recall of the list against the fold's targets, averaged
over the target users) it times, with the same factors / iterations / regularization / alpha / confidence:
  implicit:      AlternatingLeastSquares fit + top-N for the target users (the library alone);
  mllib:         pyspark.ml ALS(implicitPrefs=True) fit + recommendForUserSubset top-N (Spark local mode);
  step_local:    generate_local, i.e. what the als step runs on one machine (ALS + history + co-occurrence
                 + popular + union, capped at max_per_user);
  step_spark:    generate_spark + collect, the step's distributed path (only with --spark-path).
Writes benchmarks/results/als.{json,md} with the machine it ran on. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components import schema as s
from components.candidates.als import ImplicitAls, MllibAls
from components.candidates.base import FoldTables
from components.candidates.generate import SparkFoldTables, generate_local, generate_spark
from components.candidates.metrics import candidate_recall
from components.config import AlsConfig, CandidateConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_line

ALS_PACKAGES = ("implicit", "pyspark", "numpy", "scipy", "pandas", "threadpoolctl")

log = logging.getLogger("als_bench")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Dataset:
    name: str
    tables: FoldTables
    users: np.ndarray
    targets: pd.DataFrame


def synthetic(nnz: int, *, seed: int = 0) -> Dataset:
    """Users in 50 taste clusters buy Zipf-popular items of their cluster (80%) or of the whole catalogue;
    targets are 5 further draws per user from the same tastes."""
    rng = np.random.default_rng(seed)
    n_users, n_items, clusters = max(200, nnz // 20), max(100, nnz // 25), 50
    user_cluster = rng.integers(0, clusters, n_users)
    item_cluster = rng.integers(0, clusters, n_items)
    zipf = 1.0 / np.arange(1, n_items + 1) ** 0.8
    members = [np.flatnonzero(item_cluster == c) for c in range(clusters)]

    def draw(per_user: np.ndarray) -> pd.DataFrame:
        users = np.repeat(np.arange(n_users), per_user)
        own = rng.random(len(users)) < 0.8
        items = rng.choice(n_items, size=len(users), p=zipf / zipf.sum())
        for c in range(clusters):
            pick = own & (user_cluster[users] == c)
            weights = zipf[members[c]] / zipf[members[c]].sum()
            items[pick] = rng.choice(members[c], size=int(pick.sum()), p=weights)
        return pd.DataFrame({s.USER_IDX: users, s.ITEM_IDX: items})

    history = draw(np.maximum(1, rng.poisson(1.25 * nnz / n_users, n_users)))  # ~20% repeats collapse
    pairs = history.groupby([s.USER_IDX, s.ITEM_IDX], as_index=False).size()
    pairs[s.WEIGHT] = 5.0 * pairs["size"] * rng.uniform(1, 5, len(pairs))
    pairs[s.UI_PURCHASE_DAYS] = pairs["size"]
    pairs[s.UI_DAYS_SINCE_LAST] = rng.uniform(0, 365, len(pairs))
    items = pd.DataFrame({s.ITEM_IDX: np.arange(n_items)})
    recent = pairs[pairs[s.UI_DAYS_SINCE_LAST] < 28]
    items[s.ITEM_BUYERS_28D] = items[s.ITEM_IDX].map(recent.groupby(s.ITEM_IDX).size()).fillna(0)
    target_users = rng.choice(n_users, size=min(n_users, 5000), replace=False)
    targets = draw(np.where(np.isin(np.arange(n_users), target_users), 5, 0)).drop_duplicates()
    tables = FoldTables(pairs[[s.USER_IDX, s.ITEM_IDX, s.WEIGHT]],
                        pairs[[s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST]], items)
    return Dataset(f"synthetic {len(pairs):,} interactions", tables, np.sort(target_users), targets)


def timed(fn: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float, float]:
    """(result, wall seconds, CPU seconds of this process: all its threads; steadier on a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def implicit_alone(data: Dataset, als: AlsConfig, n: int) -> dict[str, Any]:
    model = ImplicitAls(als)
    _, fit_s, fit_cpu = timed(lambda: (model.fit(data.tables), pd.DataFrame())[1])
    recs, rec_s, rec_cpu = timed(lambda: model.recommend(data.users, n))
    return {"fit_s": fit_s, "recommend_s": rec_s, "total_s": round(fit_s + rec_s, 3),
            "cpu_s": round(fit_cpu + rec_cpu, 3), "per_user": n,
            "recall": round(candidate_recall(recs, data.targets, data.users), 4)}


def run_dataset(data: Dataset, als: AlsConfig, cand: CandidateConfig, top_n: int, spark: Any,
                spark_path: bool) -> dict[str, Any]:
    log.info("%s: %d interactions, %d target users", data.name, data.tables.nnz, len(data.users))
    out: dict[str, Any] = {"interactions": data.tables.nnz, "target_users": len(data.users), "top_n": top_n}

    # The library alone, asked for top_n and for the longer lists it needs to approach the step's recall.
    for n in sorted({top_n, 2 * top_n, 500}):
        out[f"implicit_top{n}"] = implicit_alone(data, als, n)
        log.info("implicit top %d: %s", n, out[f"implicit_top{n}"])

    result, local_s, local_cpu = timed(lambda: generate_local(data.tables, data.users, als, cand).candidates)
    base = out[f"implicit_top{top_n}"]
    out["step_local"] = {"total_s": local_s, "cpu_s": local_cpu,
                         "recall": round(candidate_recall(result, data.targets, data.users), 4),
                         "per_user": round(len(result) / max(len(data.users), 1), 1),
                         "vs_implicit_wall": round(local_s / max(base["total_s"], 1e-9), 2),
                         "vs_implicit_cpu": round(local_cpu / max(base["cpu_s"], 1e-9), 2)}
    log.info("step_local: %s", out["step_local"])

    if spark is None:
        return out
    interactions = spark.createDataFrame(data.tables.interactions).cache()
    user_items = spark.createDataFrame(data.tables.user_items).cache()
    items = spark.createDataFrame(data.tables.items).cache()
    users = spark.createDataFrame(pd.DataFrame({s.USER_IDX: data.users.astype(np.int32)})).cache()
    for frame in (interactions, user_items, items, users):
        frame.count()  # materialise outside the timings
    mllib = MllibAls(als)
    _, fit_s, _ = timed(lambda: (mllib.fit(interactions, user_items), pd.DataFrame())[1])
    recs, rec_s, _ = timed(lambda: mllib.recommend(users, top_n).toPandas())
    out["mllib"] = {"fit_s": fit_s, "recommend_s": rec_s, "total_s": round(fit_s + rec_s, 3), "per_user": top_n,
                    "recall": round(candidate_recall(recs, data.targets, data.users), 4)}
    log.info("mllib: %s", out["mllib"])
    if spark_path:
        tables = SparkFoldTables(interactions, user_items, items)
        result, spark_s, _ = timed(lambda: generate_spark(tables, users, als, cand).candidates.toPandas())
        out["step_spark"] = {"total_s": spark_s,
                             "recall": round(candidate_recall(result, data.targets, data.users), 4)}
        log.info("step_spark: %s", out["step_spark"])
    for frame in (interactions, user_items, items, users):
        frame.unpersist()
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# ALS backends on the same matrix (train fold)", "",
             f"Machine: {machine_line(report['machine'])}.", "",
             "CPU seconds are this process's (all threads; not the JVM's), steadier than wall time on a shared "
             "machine.", "",
             "| dataset | run | wall s | CPU s | recall | per user | notes |", "|---|---|---|---|---|---|---|"]
    for name, res in report["datasets"].items():
        for run, r in res.items():
            if not isinstance(r, dict):
                continue
            parts = [f"fit {r['fit_s']} s + top-N {r['recommend_s']} s" if "fit_s" in r else "",
                     f"{r['vs_implicit_wall']}x wall / {r['vs_implicit_cpu']}x CPU of implicit top-{res['top_n']}"
                     if "vs_implicit_wall" in r else ""]
            lines.append(f"| {name} | {run} | {r['total_s']} | {r.get('cpu_s', '')} | {r['recall']} | "
                         f"{r.get('per_user', '')} | {'; '.join(p for p in parts if p)} |")
    lines += ["", f"ALS: {json.dumps(report['als'])}", "", f"Candidates: {json.dumps(report['candidates'])}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--etl", type=Path, help="ETL output with the Online Retail folds")
    parser.add_argument("--csv", type=Path, help="online_retail.csv.gz (pandas stand-in of the train fold)")
    parser.add_argument("--synthetic-nnz", type=int, default=0, help="also a synthetic matrix of ~this size")
    parser.add_argument("--top-n", type=int, default=200)
    parser.add_argument("--no-mllib", action="store_true", help="skip Spark entirely")
    parser.add_argument("--spark-path", action="store_true", help="also time the step's distributed path")
    parser.add_argument("--smoke", action="store_true", help="few iterations: check the script, not the numbers")
    parser.add_argument("--out", type=Path, default=RESULTS / "als")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    als, cand = AlsConfig(), CandidateConfig()
    if args.smoke:
        als = als.model_copy(update={"iterations": 2})
    datasets: list[Dataset] = []
    if args.etl or args.csv:
        from als_tune import load_csv, load_etl  # sibling script (benchmarks/ is not a package)

        fold = load_etl(args.etl) if args.etl else load_csv(args.csv)
        datasets.append(Dataset("online retail", fold.tables, fold.users, fold.targets))
    if args.synthetic_nnz:
        datasets.append(synthetic(args.synthetic_nnz))
    if not datasets:
        parser.error("give --etl, --csv and/or --synthetic-nnz")
    spark = None
    if not args.no_mllib:
        from components.spark import get_spark

        spark = get_spark("ecomrec-als-bench")
    report = {"machine": machine(ALS_PACKAGES), "als": als.model_dump(), "candidates": cand.model_dump(),
              "smoke": args.smoke,
              "datasets": {d.name: run_dataset(d, als, cand, args.top_n, spark, args.spark_path) for d in datasets}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
