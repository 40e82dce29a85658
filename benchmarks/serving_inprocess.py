"""The in-process scoring limit: requests per second the service's own answer path does without HTTP
(look-up, slice of the user's load-time scored candidates, top-k, filters, payload, orjson), one
process per core, random users that have candidates (every request ranks a personal list).

    .venv/bin/python benchmarks/serving_inprocess.py [--bundle OUT/bundle/model.tar.gz] [--seconds 10]

Writes benchmarks/results/serving_inprocess.{json,md} (serving_inprocess_smoke.* with --smoke). Also used by
serving_http.py for the 50 % goal.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from serving_common import machine, machine_markdown, resolve_bundle, write_results

log = logging.getLogger("serving-bench")


def _load(archive: str) -> Any:
    from components.serving.engine import build_serving_model
    from components.serving.source import BundleFetcher

    with BundleFetcher(Path(tempfile.mkdtemp(prefix="bench-"))).open(archive) as bundle:
        return build_serving_model(bundle, source=archive)


def _worker(archive: str, users: list[str], seconds: float, seed: int, ready: Any, start: Any,
            out: Any) -> None:
    model = _load(archive)
    rng = random.Random(seed)
    picks = [rng.choice(users) for _ in range(4096)]
    for user in picks[:200]:  # warm-up: first calls, caches
        model.recommend(user, 10)
    ready.put(seed)
    start.wait()
    latencies: list[float] = []
    n, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        rec = model.recommend(picks[n % len(picks)], 10)
        orjson.dumps(model.to_payload(rec))
        latencies.append(time.perf_counter() - t0)
        n += 1
    elapsed = time.perf_counter() - began
    latencies.sort()
    out.put({"requests": n, "seconds": elapsed, "p50_ms": latencies[len(latencies) // 2] * 1e3,
             "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3})


def measure(archive: Path, users: list[str], *, processes: int, seconds: float) -> dict[str, Any]:
    """Run ``processes`` scoring loops in parallel for ``seconds``; total requests/s and per-call latency."""
    ctx = mp.get_context("spawn")  # a fresh interpreter per process: no inherited threads or locks
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(archive), users, seconds, seed, ready, start, out))
               for seed in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:  # each loads the bundle and warms up first; then all start together
        ready.get(timeout=600)
    start.set()
    results = [out.get(timeout=seconds + 300) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    total = sum(r["requests"] / r["seconds"] for r in results)
    return {"processes": processes, "seconds": seconds, "rps": round(total, 1),
            "rps_per_process": [round(r["requests"] / r["seconds"], 1) for r in results],
            "p50_ms": round(statistics.median(r["p50_ms"] for r in results), 3),
            "p99_ms": round(max(r["p99_ms"] for r in results), 3)}


def run(bundle: Path | None, seconds: float, workdir: Path) -> dict[str, Any]:
    info = machine()
    under_test = resolve_bundle(bundle, workdir=workdir)
    cores = os.cpu_count() or 1
    one = measure(under_test.archive, under_test.warm_user_ids, processes=1, seconds=seconds)
    allcores = measure(under_test.archive, under_test.warm_user_ids, processes=cores, seconds=seconds)
    return {"machine": info, "bundle": under_test.describe(), "single_process": one, "all_cores": allcores}


def markdown(result: dict[str, Any]) -> str:
    one, allc, b = result["single_process"], result["all_cores"], result["bundle"]
    return (
        "# In-process scoring limit\n\n"
        f"Bundle: {b['kind']} {b['version']} ({b['users']} users, {b['items']} items, "
        f"{b['candidates_per_user']} candidates a user). Random users with candidates, top 10, answer "
        "path without HTTP (ranking + payload + JSON).\n\n"
        "| processes | requests/s | p50 ms | p99 ms |\n|---|---|---|---|\n"
        f"| 1 | {one['rps']} | {one['p50_ms']} | {one['p99_ms']} |\n"
        f"| {allc['processes']} | {allc['rps']} | {allc['p50_ms']} | {allc['p99_ms']} |\n\n"
        + machine_markdown(result["machine"])
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="model.tar.gz of a pipeline run (default: synthetic)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true", help="write serving_inprocess_smoke.* instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as workdir:
        result = run(args.bundle, args.seconds, Path(workdir))
    result["smoke"] = args.smoke
    text = markdown(result)
    if args.smoke:
        note = "**Smoke run** (busy shared machine): checks the harness, not the figures."
        text = text.replace("\n\n", f"\n\n{note}\n\n", 1)
    write_results("serving_inprocess_smoke" if args.smoke else "serving_inprocess", result, text)


if __name__ == "__main__":
    main()
