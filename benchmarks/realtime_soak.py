"""Soak of the real-time service (issue 14's reliability goal): mixed ``POST /events`` and ``GET
/recommendations`` at 70 % of the measured peak for a while; 0 errors and resident memory growth < 5 %.

Two workers, embedded store, fsync'ed log, as benchmarks/realtime.py. The reads are wrk (paced) over users
who all have fresh events; a client thread posts batches of events for those same users, stamped at the
real clock, at a steady rate (so the answers keep changing: store writes, features recomputed, the
ranker called again). The peak is the mix's: wrk unpaced with the event stream on; the soak then holds
``--share`` of it.
Resident memory (the server's process tree: supervisor + workers) is sampled every 5 s from the end of the
warm-up; growth = last sample / first sample - 1.

    PYTHONPATH=. .venv/bin/python benchmarks/realtime_soak.py --bundle OUT/bundle/model.tar.gz --seconds 600
    PYTHONPATH=. .venv/bin/python benchmarks/realtime_soak.py --bundle OUT/bundle/model.tar.gz   # 60 s smoke

Writes benchmarks/results/realtime_soak.{json,md} (realtime_soak_smoke.* below 600 s).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realtime import PATH, REPO, SUFFIX, event, load_now, seed_fresh, serve, timed_wrk
from serving_common import machine, machine_markdown, process_tree_rss_mb, resolve_bundle, soak_summary, write_results

from components.realtime.store import StoreLimits

log = logging.getLogger("realtime-soak")


class EventStream:
    """Posts ``batch`` events every 1/``per_s`` seconds (paced; after slow answers it catches up by at most
    one post, never with a burst)."""

    def __init__(self, url: str, users: list[str], items: list[str], *, per_s: float, batch: int) -> None:
        self.url, self.users, self.items, self.per_s, self.batch = url, users, items, per_s, batch
        self.stop = threading.Event()
        self.posts = self.accepted = self.errors = self.degraded = 0
        self.error_samples: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventStream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        rng = random.Random(11)
        n = 0
        interval = 1.0 / self.per_s
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                events = [event(rng.choice(self.users), rng.choice(self.items), n + i, tag="soak")
                          for i in range(self.batch)]
                n += self.batch
                try:
                    answer = client.post("/events", json={"events": events})
                    body = answer.json() if answer.status_code == 200 else {}
                    if answer.status_code != 200 or len(body.get("accepted", ())) != self.batch:
                        self.errors += 1
                        self.error_samples = [*self.error_samples[-4:], f"{answer.status_code} {answer.text[:200]}"]
                    self.accepted += len(body.get("accepted", ()))
                    self.degraded += bool(body.get("degraded"))
                except httpx.HTTPError as error:
                    self.errors += 1
                    self.error_samples = [*self.error_samples[-4:], repr(error)]
                self.posts += 1
                next_at = max(next_at + interval, time.monotonic() - interval)  # a backlog of one at most
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def counts(self) -> dict[str, Any]:
        return {"posts": self.posts, "events_accepted": self.accepted, "errors": self.errors,
                "degraded_answers": self.degraded, "error_samples": self.error_samples}


def prefill(url: str, users: list[str], items: list[str], per_user: int, batch: int = 100) -> dict[str, Any]:
    """``per_user`` events for every soak user before anything is measured: at the store's cap (StoreLimits.
    max_events) each user's stored and cached events are as large as they get, as in a service that has run
    for a while (the worker caches still fill during the soak: the second half's growth tells them apart)."""
    rng, started, accepted = random.Random(7), time.monotonic(), 0
    pending = [event(user, rng.choice(items), n, tag=f"prefill-{u}") for u, user in enumerate(users)
               for n in range(per_user)]
    with httpx.Client(base_url=url, timeout=60) as client:
        for first in range(0, len(pending), batch):
            answer = client.post("/events", json={"events": pending[first:first + batch]})
            answer.raise_for_status()
            accepted += len(answer.json()["accepted"])
    if accepted != len(pending):
        raise RuntimeError(f"prefill: {len(pending) - accepted} of {len(pending)} events refused")
    return {"events_per_user": per_user, "events": accepted, "seconds": round(time.monotonic() - started, 1)}


def soak(args: argparse.Namespace, archive: Path, users: list[str], items: list[str], work: Path) -> dict[str, Any]:
    with serve(REPO, archive, work / "soak") as (url, process):
        filled = prefill(url, users, items, args.prefill) if args.prefill else None
        seed_fresh(url, users, items, tag="soak-seed")
        with EventStream(url, users, items, per_s=args.event_posts_per_s, batch=args.batch) as stream:
            wrk: dict[str, Any] = {"path": PATH, "suffix": SUFFIX}
            peak = timed_wrk(process.pid, url, users, connections=16, duration_s=args.peak_seconds, **wrk)
            rate = round(peak["rps"] * args.share)
            connections = max(16, min(256, int(rate * 0.02) * 2))
            log.info("mixed peak %.0f req/s -> soak at %d req/s, %d connections", peak["rps"], rate, connections)
            warmup = timed_wrk(process.pid, url, users, connections=connections, duration_s=args.warmup_seconds,
                               rate=rate, **wrk)
            before_soak = stream.counts()
            samples: list[tuple[float, float]] = []
            stop = threading.Event()
            started = time.monotonic()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((round(time.monotonic() - started, 1), round(process_tree_rss_mb(process.pid), 1)))
                    stop.wait(5.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            segments = []
            remaining = args.seconds
            while remaining > 0:
                seconds = min(args.segment, remaining)
                result = timed_wrk(process.pid, url, users, connections=connections, duration_s=seconds, rate=rate,
                                   **wrk)
                result["events"] = stream.counts()
                segments.append(result)
                log.info("segment %d: %.0f req/s p50 %.2f ms p99 %.2f ms errors %d; events %s; rss %.0f MB",
                         len(segments), result["rps"], result["latency_ms"]["p50"], result["latency_ms"]["p99"],
                         result["errors"], result["events"]["events_accepted"],
                         samples[-1][1] if samples else float("nan"))
                remaining -= seconds
            stop.set()
            sampler.join(timeout=10)
            samples.append((round(time.monotonic() - started, 1), round(process_tree_rss_mb(process.pid), 1)))
        events = stream.counts()
    requests = sum(s["requests"] for s in segments)
    read_errors = sum(s["errors"] for s in segments)
    event_errors = events["errors"] - before_soak["errors"]
    errors = read_errors + event_errors
    return {
        "prefill": filled, "peak_mixed": peak, "share_of_peak": args.share, "target_rps": rate,
        "connections": connections,
        "warmup": warmup, "duration_s": args.seconds, "requests": requests, "read_errors": read_errors,
        "event_posts_per_s": args.event_posts_per_s, "batch": args.batch,
        "events": {**events, "errors_during_soak": event_errors,
                   "accepted_during_soak": events["events_accepted"] - before_soak["events_accepted"]},
        **soak_summary(segments, samples, errors),
    }


def markdown(result: dict[str, Any]) -> str:
    b, s = result["bundle"], result["soak"]
    lines = ["# Real-time soak: mixed events and reads at 70 % of peak\n"]
    if s["duration_s"] < 600:
        lines.append(f"**Smoke run** ({s['duration_s']:g} s; the goal is for 600 s): checks the harness.\n")
    filled = (f"(every user's store filled to its cap of {s['prefill']['events_per_user']} events first: the stored "
              "events at their largest) " if s.get("prefill") else "")
    lines.append(f"Bundle: {b['kind']} {b['version']} ({b['users']} users, {b['candidates_per_user']} candidates a "
                 f"user). 2 workers, embedded store, fsync'ed log. Mixed peak (wrk unpaced, 16 connections, "
                 f"events streaming): {s['peak_mixed']['rps']:,.0f} req/s; soak target {s['target_rps']} req/s "
                 f"({s['share_of_peak']:.0%}) over {s['connections']} connections for {s['duration_s']:g} s after a "
                 f"{s['warmup']['duration_s']:.0f} s warm-up at that rate {filled}"
                 f"(achieved {s['achieved_rps']} req/s, {s['requests']:,} reads) plus "
                 f"{s['event_posts_per_s']:g} POST /events a second of {s['batch']} events each "
                 f"({s['events']['accepted_during_soak']:,} events accepted during the soak, "
                 f"{s['events']['degraded_answers']} degraded answers).\n")
    rss = s["rss_mb"]
    lines += ["| read errors | event errors | worst segment p99 ms | RSS start MB | RSS end MB | RSS max MB | growth | "
              "growth, second half |",
              "|---|---|---|---|---|---|---|---|",
              f"| {s['read_errors']} | {s['events']['errors_during_soak']} | {s['p99_ms_worst_segment']} | "
              f"{rss['start']} | {rss['end']} | {rss['max']} | {rss['growth_share'] * 100:.2f} % | "
              f"{rss['growth_share_second_half'] * 100:.2f} % |",
              "\n| segment | req/s | p50 ms | p99 ms | read errors | server CPU ms/request |",
              "|---|---|---|---|---|---|"]
    for i, seg in enumerate(s["segments"], start=1):
        lines.append(f"| {i} | {seg['rps']} | {seg['latency_ms']['p50']} | {seg['latency_ms']['p99']} | "
                     f"{seg['errors']} | {seg['server_cpu_ms_per_request']} |")
    lines += ["\n| goal | value | target | met |", "|---|---|---|---|"]
    for name, check in s["goals"].items():
        lines.append(f"| {name} | {check['value']} | {check['goal']} | {'yes' if check['met'] else 'NO'} |")
    lines.append("\n" + machine_markdown(result["machine"]))
    lines.append(f"Load average before the soak: {result['load_before']}. A shared, loaded machine: the latencies "
                 "are pessimistic; errors and memory growth are the goals here.\n")
    lines.append("Command: `PYTHONPATH=. .venv/bin/python benchmarks/realtime_soak.py --bundle "
                 "OUT/bundle/model.tar.gz --seconds 600`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0, help="soak length after warm-up (600: the goal)")
    parser.add_argument("--segment", type=float, default=60.0, help="seconds per wrk run (one table row)")
    parser.add_argument("--share", type=float, default=0.7)
    parser.add_argument("--peak-seconds", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0)
    parser.add_argument("--event-posts-per-s", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=10, help="events per POST")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--prefill", type=int, default=StoreLimits().max_events,
                        help="events per user stored before the soak (default: the store's cap; 0: none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-realtime-soak-") as tmp:
        work = Path(tmp)
        under_test = resolve_bundle(args.bundle, workdir=work)
        from components.bundle import load_bundle

        items = [str(i) for i in load_bundle(under_test.archive).item_ids[:500]]
        users = under_test.warm_user_ids[:args.users]
        result = {"machine": info, "bundle": under_test.describe(), "load_before": load_now(),
                  "soak": soak(args, under_test.archive, users, items, work)}
    name = "realtime_soak" if args.seconds >= 600 else "realtime_soak_smoke"
    write_results(name, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
