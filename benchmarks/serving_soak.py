"""Soak: our server at 70 % of its peak for a long stretch (10 minutes by default), with wrk on loopback.
Reports errors (socket errors and non-2xx answers), latency per segment, and resident memory of the server's
process tree (master + workers) sampled every few seconds: growth from after warm-up to the end.

Goals (the issue): 0 errors, resident memory growth < 5 %.

    .venv/bin/python benchmarks/serving_soak.py --bundle OUT/bundle/model.tar.gz               # 10 minutes
    .venv/bin/python benchmarks/serving_soak.py --duration 20 --segment 10 --smoke             # smoke run

Writes benchmarks/results/serving_soak.{json,md} (serving_soak_smoke.* with --smoke).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from serving_common import (
    free_port,
    machine,
    machine_markdown,
    process_tree_rss_mb,
    python,
    resolve_bundle,
    run_wrk,
    server_process,
    soak_summary,
    write_results,
)

log = logging.getLogger("serving-bench")
PATH, SUFFIX = "/recommendations?user_id=", "&top_k=10"


def soak(archive: Path, users: list[str], *, workers: int, duration_s: float, segment_s: float, share: float,
         rate: float | None, peak_seconds: float, sample_s: float = 5.0) -> dict[str, Any]:
    port = free_port()
    command = [python(), "-m", "components.serving", "--model", str(archive), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, port, env={"ECOMREC_WATCH_INTERVAL_S": "0"}) as process:
        run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=16, duration_s=3)  # warm-up
        peak = None
        if rate is None:
            peak = run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=32, duration_s=peak_seconds)
            rate = round(peak["rps"] * share)
            log.info("peak %.0f req/s -> soak at %d req/s", peak["rps"], rate)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((round(time.monotonic() - started, 1), round(process_tree_rss_mb(process.pid), 1)))
                stop.wait(sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        segments = []
        connections = max(16, min(256, int(rate * 0.02) * 2))
        remaining = duration_s
        while remaining > 0:
            seconds = min(segment_s, remaining)
            result = run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=connections, duration_s=seconds,
                             rate=rate)
            segments.append(result)
            log.info("segment %d: %.0f req/s p50 %.2f ms p99 %.2f ms errors %d rss %.0f MB", len(segments),
                     result["rps"], result["latency_ms"]["p50"], result["latency_ms"]["p99"], result["errors"],
                     samples[-1][1] if samples else float("nan"))
            remaining -= seconds
        stop.set()
        sampler.join(timeout=10)
        samples.append((round(time.monotonic() - started, 1), round(process_tree_rss_mb(process.pid), 1)))
    requests = sum(s["requests"] for s in segments)
    errors = sum(s["errors"] for s in segments)
    return {
        "workers": workers, "target_rps": rate, "share_of_peak": share if peak else None, "peak": peak,
        "duration_s": duration_s, "requests": requests, "errors": errors,
        **soak_summary(segments, samples, errors),
    }


def markdown(result: dict[str, Any]) -> str:
    b, s = result["bundle"], result["soak"]
    lines = ["# Soak at 70 % of peak\n"]
    if result.get("smoke"):
        lines.append("**Smoke run** (tiny duration on a busy shared machine): checks the harness, not the "
                     "figures.\n")
    lines.append(f"Bundle: {b['kind']} {b['version']} ({b['users']} users, {b['items']} items). "
                 f"{s['workers']} worker(s), target {s['target_rps']} req/s for {s['duration_s']} s "
                 f"({s['requests']} requests, achieved {s['achieved_rps']} req/s).\n")
    rss = s["rss_mb"]
    lines.append("| errors | worst segment p99 ms | RSS start MB | RSS end MB | RSS max MB | growth |\n"
                 "|---|---|---|---|---|---|")
    lines.append(f"| {s['errors']} | {s['p99_ms_worst_segment']} | {rss['start']} | {rss['end']} | {rss['max']} "
                 f"| {rss['growth_share'] * 100:.2f} % |")
    lines.append("\n| segment | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for i, seg in enumerate(s["segments"], start=1):
        lines.append(f"| {i} | {seg['rps']} | {seg['latency_ms']['p50']} | {seg['latency_ms']['p99']} "
                     f"| {seg['errors']} |")
    lines.append("\n| goal | value | target | met |\n|---|---|---|---|")
    for name, check in s["goals"].items():
        lines.append(f"| {name} | {check['value']} | {check['goal']} | {'yes' if check['met'] else 'NO'} |")
    lines.append("\n" + machine_markdown(result["machine"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="model.tar.gz of a pipeline run (default: synthetic)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds at the soak rate")
    parser.add_argument("--segment", type=float, default=60.0, help="seconds per wrk run (one table row)")
    parser.add_argument("--share", type=float, default=0.7, help="share of the measured peak to hold")
    parser.add_argument("--rate", type=float, help="fixed request rate instead of a share of the peak")
    parser.add_argument("--peak-seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke", action="store_true", help="write serving_soak_smoke.* instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serving-soak-") as workdir:
        info = machine()
        under_test = resolve_bundle(args.bundle, workdir=Path(workdir))
        result = {"machine": info, "bundle": under_test.describe(), "smoke": args.smoke,
                  "soak": soak(under_test.archive, under_test.warm_user_ids, workers=args.workers,
                               duration_s=args.duration, segment_s=args.segment, share=args.share, rate=args.rate,
                               peak_seconds=args.peak_seconds)}
    write_results("serving_soak_smoke" if args.smoke else "serving_soak", result, markdown(result))


if __name__ == "__main__":
    main()
