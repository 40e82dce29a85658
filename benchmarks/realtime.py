"""Real-time serving figures (issue 14's speed goals), on two uvicorn workers with the embedded store:

1. ``POST /events`` throughput, batches of 100, durable log fsync'ed (two client threads, ``--events-s``);
2. ``GET /recommendations`` at a fixed rate (wrk, ``--rate``) where EVERY requested user has fresh events
   (the worst case: store read + as-of features + CatBoost per request);
3. the same rate for users without fresh events (the load-time scores), as the no-regression reference.

    PYTHONPATH=. .venv/bin/python benchmarks/realtime.py [--bundle BUNDLE] [--seconds 15]

Results: benchmarks/results/realtime.json and .md, with the machine and its load at start.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_common import (
    free_port,
    machine,
    machine_markdown,
    python,
    resolve_bundle,
    run_wrk,
    server_process,
    write_results,
)

log = logging.getLogger("realtime-bench")
PATH, SUFFIX = "/recommendations?user_id=", "&top_k=10"


def post_events(url: str, seconds: float, threads: int = 2, batch: int = 100) -> dict[str, Any]:
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(t: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            n = 0
            while time.monotonic() < stop:
                events = [{"user_id": f"bench-{t}-{n}-{i}", "item_id": "x", "event_type": "view",
                           "timestamp": "2030-01-01T00:00:00", "event_id": f"{t}-{n}-{i}"} for i in range(batch)]
                answer = client.post("/events", json={"events": events}).json()
                counts[t] += len(answer["accepted"])
                n += 1

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    return {"events": sum(counts), "seconds": round(elapsed, 2), "events_per_s": round(sum(counts) / elapsed, 1),
            "batch": batch, "client_threads": threads, "fsync": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--name", default="realtime")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-realtime-"))
    bundle = resolve_bundle(args.bundle, workdir=work)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [python(), "-m", "uvicorn", "components.serving.main:app_factory", "--factory", "--workers", "2",
               "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
               "--no-access-log", "--log-level", "warning"]
    env = {"ECOMREC_MODEL": str(bundle.archive), "ECOMREC_WATCH_INTERVAL_S": "0", "ECOMREC_WORK_DIR": str(work / "w"),
           "ECOMREC_EVENTS_RAW_ROOT": str(work / "raw"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    fresh_users = bundle.warm_user_ids[:args.users]
    static_users = bundle.warm_user_ids[args.users:2 * args.users] or bundle.warm_user_ids[:args.users]
    with server_process(command, port, env=env):
        events = post_events(url, args.seconds)
        log.info("POST /events: %s", events)
        with httpx.Client(base_url=url, timeout=30) as client:
            for start in range(0, len(fresh_users), 100):
                client.post("/events", json={"events": [
                    {"user_id": u, "item_id": "x", "event_type": "view", "timestamp": "2030-01-01T00:00:00"}
                    for u in fresh_users[start:start + 100]]})
            for user in fresh_users:  # each worker's row cache warms on first use; do it before measuring
                for _ in range(2):
                    client.get("/recommendations", params={"user_id": user})
        fresh = run_wrk(url, fresh_users, path=PATH, suffix=SUFFIX, connections=16, duration_s=args.seconds,
                        rate=args.rate)
        log.info("fresh users: %s", fresh)
        static = run_wrk(url, static_users, path=PATH, suffix=SUFFIX, connections=16, duration_s=args.seconds,
                         rate=args.rate)
        log.info("users without fresh events: %s", static)
    payload = {"machine": info, "bundle": bundle.describe(), "post_events": events,
               "get_fresh_users": fresh, "get_static_users": static}
    markdown = (f"# Real-time serving ({bundle.kind} bundle, 2 workers, embedded store)\n\n" + machine_markdown(info)
                + f"\n| what | figure |\n|---|---|\n"
                f"| POST /events, batches of 100, fsync'ed log | {events['events_per_s']:,.0f} events/s |\n"
                f"| GET, every user with fresh events, target {args.rate:.0f} req/s | achieved {fresh['rps']:,.0f} "
                f"req/s, p50 {fresh['latency_ms'].get('p50')} ms, p99 {fresh['latency_ms'].get('p99')} ms, "
                f"{fresh['errors']} errors |\n"
                f"| GET, users without fresh events, same rate | achieved {static['rps']:,.0f} req/s, p50 "
                f"{static['latency_ms'].get('p50')} ms, p99 {static['latency_ms'].get('p99')} ms, "
                f"{static['errors']} errors |\n")
    write_results(args.name, payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
