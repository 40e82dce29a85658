"""Time the ETL step (components/etl) after the Spark session is up.

    .venv/bin/python benchmarks/etl.py --online-retail /work/shared/data/online-retail/online_retail.csv.gz
    .venv/bin/python benchmarks/etl.py --synthetic 10000000          # a shop with 10M events
    .venv/bin/python benchmarks/etl.py --synthetic 200000 --smoke    # quick check

Online Retail is turned into the raw contract by the test suite's stand-in importer
(tests/test_etl_online_retail.py), as Parquet with nanosecond timestamps like pandas writes them. The
synthetic shop has views, carts, purchases and returns, a catalog with categories, users with a country,
and ~1 % broken rows (missing user, bad timestamp, exact duplicates). Reports wall seconds per ETL stage
and the Spark JVM's CPU seconds, with the machine's load average: run it on a quiet machine.
Writes benchmarks/results/etl[_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine as shared_machine  # noqa: E402
from machine import machine_line  # noqa: E402

from components import schema as s  # noqa: E402
from components.config import EtlConfig  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PART_ROWS = 1_000_000


def synthetic_raw(root: Path, n_events: int, *, seed: int = 1) -> Path:
    """A shop with ~n_events/25 users and ~n_events/500 items over one year, in Parquet parts."""
    rng = np.random.default_rng(seed)
    n_users = max(100, n_events // 25)
    n_items = max(50, n_events // 500)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    (root / s.EVENTS).mkdir(parents=True, exist_ok=True)
    types = np.array([s.VIEW, s.ADD_TO_CART, s.PURCHASE, s.RETURN])
    written = 0
    part = 0
    while written < n_events:
        n = min(PART_ROWS, n_events - written)
        users = rng.integers(0, n_users, n)
        # users re-visit a personal favourite (a hash of the user) 40 % of the time: repeat buying
        favourite = (users * 2654435761) % n_items
        items = np.where(rng.random(n) < 0.4, favourite, rng.choice(n_items, n, p=popularity))
        kind = rng.choice(4, n, p=[0.6, 0.2, 0.18, 0.02])
        ts = start + rng.integers(0, 365 * 86_400, n).astype("timedelta64[s]")
        user_ids = np.char.add("u", users.astype(str)).astype(object)
        broken = rng.random(n)
        user_ids[broken < 0.005] = None  # missing user
        ts_text = np.datetime_as_string(ts, unit="s").astype(object)
        ts_text[(broken >= 0.005) & (broken < 0.008)] = "not a time"
        frame = pd.DataFrame({
            s.USER_ID: user_ids,
            s.ITEM_ID: np.char.add("sku", items.astype(str)),
            s.EVENT_TYPE: types[kind],
            s.TIMESTAMP: ts_text,
            s.QUANTITY: np.where(kind >= 2, rng.integers(1, 5, n), 1),
            s.PRICE: np.round(1.0 + (items % 97) * 0.5, 2),
            s.SESSION_ID: np.char.add("s", (users * 1000 + (ts - start).astype("int64") // 3_600_000_000)
                                      .astype(str)),
        })
        frame = pd.concat([frame, frame.iloc[: n // 200]], ignore_index=True)  # 0.5 % exact duplicates
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       root / s.EVENTS / f"part-{part:04d}.parquet")
        written += n
        part += 1
    categories = np.array(["mugs", "bags", "cards", "lights", "toys", "kitchen", "garden", "party"])
    items = pd.DataFrame({s.ITEM_ID: [f"sku{i}" for i in range(n_items)],
                          "category": categories[np.arange(n_items) % len(categories)],
                          "price": 1.0 + (np.arange(n_items) % 97) * 0.5})
    users = pd.DataFrame({s.USER_ID: [f"u{u}" for u in range(n_users)],
                          "country": np.where(np.arange(n_users) % 4 == 0, "France", "United Kingdom")})
    for name, table in ((s.ITEMS, items), (s.USERS, users)):
        (root / name).mkdir(parents=True, exist_ok=True)
        table.to_parquet(root / name / "part-0.parquet", index=False)
    return root


def jvm_cpu_seconds() -> float:
    """CPU seconds of this process's children (the Spark JVM in local mode)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == os.getpid():
            total += (int(stat[11]) + int(stat[12])) / tick
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--online-retail", type=Path)
    parser.add_argument("--synthetic", type=int, default=0, help="number of synthetic events")
    parser.add_argument("--runs", type=int, default=1, help="runs per dataset (the first has a cold JVM)")
    parser.add_argument("--smoke", action="store_true", help="write *_smoke results")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from components.etl.step import run_etl
    from components.spark import get_spark
    from tests.test_etl_online_retail import online_retail_to_contract

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ecomrec-etl-bench-"))
    datasets: list[tuple[str, Path]] = []
    if args.online_retail:
        datasets.append(("online_retail", online_retail_to_contract(args.online_retail, work / "or" / "raw")))
    if args.synthetic:
        started = time.perf_counter()
        datasets.append((f"synthetic_{args.synthetic}", synthetic_raw(work / "syn" / "raw", args.synthetic)))
        print(f"synthetic data written in {time.perf_counter() - started:.1f} s", flush=True)
    if not datasets:
        parser.error("give --online-retail and/or --synthetic")
    spark = get_spark("ecomrec-etl-bench")
    results = []
    for name, raw in datasets:
        for run in range(args.runs):
            out = raw.parent / "etl"
            shutil.rmtree(out, ignore_errors=True)
            load_before = os.getloadavg()[0]
            cpu = jvm_cpu_seconds()
            started = time.perf_counter()
            result = run_etl(spark, raw, out, EtlConfig())
            row = {"dataset": name, "run": run + 1, "wall_s": round(time.perf_counter() - started, 2),
                   "jvm_cpu_s": round(jvm_cpu_seconds() - cpu, 2), "stages_s": result.seconds,
                   "events_input": result.reports[s.EVENTS].input,
                   "events_accepted": result.reports[s.EVENTS].accepted,
                   "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)}
            print(json.dumps(row), flush=True)
            results.append(row)
    machine = {**shared_machine(), "spark_master": spark.sparkContext.master}
    suffix = "_smoke" if args.smoke else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"etl{suffix}.json").write_text(json.dumps({"machine": machine, "runs": results}, indent=2))
    lines = ["| dataset | run | wall s | JVM CPU s | events in | accepted | load 1m |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['run']} | {r['wall_s']} | {r['jvm_cpu_s']} | {r['events_input']:,} | "
              f"{r['events_accepted']:,} | {r['load_avg_1m_before']} |" for r in results]
    (RESULTS / f"etl{suffix}.md").write_text(
        f"# ETL step timings\n\nMachine: {machine_line(machine)}; Spark {machine['spark_master']}\n\n"
        + "\n".join(lines) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
