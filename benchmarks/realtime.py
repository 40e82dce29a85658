"""Real-time serving figures (issue 14's speed goals), two uvicorn workers, embedded store, durable log on,
for this tree and a baseline commit (default main's c0356b7) in the same run, as ratios:

1. ``POST /events`` throughput, batches of 100, log fsync'ed (two client threads for ``--events-seconds``);
2. ``GET /recommendations`` at ``--rate`` (wrk, paced) where EVERY requested user has fresh events (the
   worst case: store read + as-of features + the ranker per request). The users' events are stamped at
   the real clock (the answer is a function of the user's events: the first read after an event scores,
   later ones reuse it until the next event; benchmarks/realtime_soak.py interleaves events and reads);
3. the same rate for users without fresh events (their load-time scores);
4. the existing serving benchmark's measurement (serving_http.py: events off, wrk peak at 16 and 64
   connections, then 1,000 req/s paced) for the no-regression ratio.

One command (the lead's idle-machine rerun; a pipeline's Online Retail bundle, else a synthetic one):

    PYTHONPATH=. .venv/bin/python benchmarks/realtime.py --bundle OUT/bundle/model.tar.gz

Results: benchmarks/results/realtime.json and .md, with the machine, the commits and the load before each
server. The soak (mixed events and reads at 70 % of peak) is benchmarks/realtime_soak.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_common import (
    REPO,
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
BASELINE = "c0356b7"  # main before this branch's work on speed


def export_tree(rev: str, into: Path) -> tuple[Path, str]:
    """``rev``'s files (git archive) under ``into``; (folder, short hash)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "x", "-C", str(into)], input=archive.stdout, check=True)
    short = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.strip()
    return into, short


def run_in_tree(tree: Path, code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` (which prints one ``RESULT <json>`` line) with ``tree``'s own code (-P, PYTHONPATH=tree)
    and one BLAS thread, as the service's workers run (components/serving/server.py): a spinning BLAS pool
    inflates the CPU time of every ALS product. Returns the result plus the load average at the end."""
    with tempfile.TemporaryDirectory(prefix="bench-rt-tree-") as tmp:
        result = subprocess.run([python(), "-P", "-c", code, *args], cwd=tree, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(tree), "TMPDIR": tmp,
                                     "OPENBLAS_NUM_THREADS": "1"}, timeout=1800)
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{tree}: no result (exit {result.returncode}): {result.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


@contextmanager
def serve(tree: Path, archive: Path, work: Path, *, events: bool = True, workers: int = 2,
          extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The service of ``tree`` (its own code and launcher: ``-P`` and the tree as PYTHONPATH and working
    directory)."""
    port = free_port()
    # the container's command (components/serving/__main__.py: the project's launcher and uvicorn options)
    command = [python(), "-P", "-m", "components.serving", "--model", str(archive), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    work.mkdir(parents=True, exist_ok=True)
    env = {"ECOMREC_MODEL": str(archive), "ECOMREC_WATCH_INTERVAL_S": "0", "ECOMREC_WORK_DIR": str(work / "w"),
           "PYTHONPATH": str(tree), "TMPDIR": str(work), **(extra_env or {})}
    if events:
        env["ECOMREC_EVENTS_RAW_ROOT"] = str(work / "raw")
    with server_process(command, port, env=env, cwd=tree) as process:
        yield f"http://127.0.0.1:{port}", process


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def event(user: str, item: str, n: int, *, tag: str) -> dict[str, Any]:
    """A view, cart or purchase stamped at the real clock (so as-of features move with each request)."""
    kind = ("view", "add_to_cart", "purchase")[n % 3]
    body: dict[str, Any] = {"user_id": user, "item_id": item, "event_type": kind, "timestamp": now_iso(),
                            "event_id": f"{tag}-{n}"}
    if kind == "purchase":
        body.update(quantity=1 + n % 3, price=2.5)
    return body


def post_events(url: str, seconds: float, threads: int = 2, batch: int = 100) -> dict[str, Any]:
    counts, errors, rejected = [0] * threads, [0] * threads, [0] * threads
    stop = time.monotonic() + seconds

    def run(t: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            n = 0
            while time.monotonic() < stop:
                events = [{"user_id": f"bench-{t}-{n}-{i}", "item_id": "x", "event_type": "view",
                           "timestamp": now_iso(), "event_id": f"{t}-{n}-{i}"} for i in range(batch)]
                answer = client.post("/events", json={"events": events})
                if answer.status_code != 200:
                    errors[t] += 1
                else:
                    body = answer.json()
                    counts[t] += len(body["accepted"])
                    rejected[t] += len(body["rejected"])
                n += 1

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    return {"events": sum(counts), "seconds": round(elapsed, 2), "events_per_s": round(sum(counts) / elapsed, 1),
            "batch": batch, "client_threads": threads, "fsync": True, "errors": sum(errors),
            "rejected": sum(rejected)}


# Each worker makes its own exact answer of each fresh user, at most ECOMREC_FRESH_EXACT_PER_S (default 100)
# a second, fast answers in between: the warm-up lasts until both have made all of them, before timing.
EXACT_PER_S = 100.0


def seed_fresh(url: str, users: Sequence[str], items: Sequence[str], *, tag: str) -> float:
    """One event per user (stamped now), then reads over 16 connections (both workers), about ten per user
    every 3 s, for 1.5x the time the rebuild budget needs for every user: each worker's caches are warm
    before timing. Returns the warm-up's seconds."""
    rng = random.Random(7)
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(users), 100):
            chunk = users[start:start + 100]
            answer = client.post("/events", json={"events": [
                event(u, rng.choice(items), start + i, tag=tag) for i, u in enumerate(chunk)]})
            answer.raise_for_status()
    seconds = 3 + 1.5 * len(users) / EXACT_PER_S
    run_wrk(url, users, path=PATH, suffix=SUFFIX, connections=16, duration_s=seconds, rate=len(users) * 10 / 3)
    return seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the server's process tree so far (the workers'): cost per request, which a
    loaded machine stretches in wall time but hardly changes."""
    import psutil

    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def timed_wrk(pid: int, url: str, users: Sequence[str], **wrk: Any) -> dict[str, Any]:
    """run_wrk plus the server's and the load generator's (wrk's) CPU milliseconds per request."""
    import resource

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
        return usage.ru_utime + usage.ru_stime

    before, client_before = cpu_seconds(pid), children()
    result = run_wrk(url, users, **wrk)
    requests = max(result["requests"], 1)
    result["server_cpu_ms_per_request"] = round((cpu_seconds(pid) - before) * 1000 / requests, 3)
    result["wrk_cpu_ms_per_request"] = round((children() - client_before) * 1000 / requests, 4)
    return result


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure_tree(tree: Path, label: str, archive: Path, work: Path, *, fresh: list[str], static: list[str],
                 items: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"tree": str(tree)}
    wrk = {"path": PATH, "suffix": SUFFIX, "connections": 16, "duration_s": args.seconds, "rate": args.rate}
    out["load_before"] = load_now()
    with serve(tree, archive, work / f"{label}-rt") as (url, process):
        out["post_events"] = post_events(url, args.events_seconds)
        if out["post_events"]["rejected"] or not out["post_events"]["events"]:
            raise RuntimeError(f"{label}: POST /events refused the benchmark's events: {out['post_events']}")
        out["warm_up_s"] = seed_fresh(url, fresh, items, tag=label)
        out["get_fresh"] = timed_wrk(process.pid, url, fresh, **wrk)
        out["get_static"] = timed_wrk(process.pid, url, static, **wrk)
    log.info("%s: %s", label, {k: out[k] for k in ("post_events", "get_fresh", "get_static")})
    out["load_before_events_off"] = load_now()
    with serve(tree, archive, work / f"{label}-plain", events=False) as (url, process):
        run_wrk(url, static, path=PATH, suffix=SUFFIX, connections=16, duration_s=3)  # warm-up
        out["events_off_peak"] = [timed_wrk(process.pid, url, static, path=PATH, suffix=SUFFIX, connections=c,
                                            duration_s=args.seconds) for c in (16, 64)]
        out["events_off_1000"] = timed_wrk(process.pid, url, static, path=PATH, suffix=SUFFIX, connections=40,
                                           duration_s=args.seconds, rate=1000)
    log.info("%s events off: %s", label, out["events_off_peak"])
    return out


def _lat(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    return (f"{run['rps']:,.0f} req/s achieved, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"{run['errors']} errors, server CPU {run.get('server_cpu_ms_per_request', '?')} ms/request")


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}" if base else "n/a"


def _p99_ratio(ours: dict[str, Any], base: dict[str, Any] | None) -> str:
    return f"p99 {_ratio(ours['latency_ms']['p99'], base['latency_ms']['p99'])}" if base else "-"


def markdown(payload: dict[str, Any], args: argparse.Namespace) -> str:
    o, b = payload["ours"], payload.get("baseline")
    bundle = payload["bundle"]
    lines = [f"# Real-time serving ({bundle['kind']} bundle {bundle['version']}: {bundle['users']} users, "
             f"{bundle['candidates_per_user']} candidates a user; 2 workers, embedded store, fsync'ed log)\n",
             machine_markdown(payload["machine"]),
             f"This tree: {payload['machine']['git_commit']}; baseline: {payload.get('baseline_rev')} (same run). "
             f"Load average (1, 5, 15 min) before each server: ours {o['load_before']}, "
             f"baseline {b['load_before'] if b else '-'}. A shared, loaded machine: figures of one run compare; "
             "absolute latencies are pessimistic.\n",
             "Command: `PYTHONPATH=. .venv/bin/python benchmarks/realtime.py --bundle OUT/bundle/model.tar.gz` "
             f"(here `--seconds {args.seconds:g} --rate {args.rate:g}`).\n",
             "| what | ours | baseline | ours / baseline |", "|---|---|---|---|"]
    ev_o = o["post_events"]["events_per_s"]
    ev_b = b["post_events"]["events_per_s"] if b else 0
    lines.append(f"| POST /events, batches of 100, fsync'ed log (goal >= 5,000 events/s) | {ev_o:,.0f} events/s | "
                 f"{ev_b:,.0f} events/s | {_ratio(ev_o, ev_b)} |")

    def row(title: str, ours: dict[str, Any], base: dict[str, Any] | None, ratio: str) -> None:
        lines.append(f"| {title} | {_lat(ours)} | {_lat(base) if base else '-'} | {ratio} |")

    fresh_b = b["get_fresh"] if b else None
    row(f"GET, every user with fresh events, {args.rate:.0f} req/s paced (goal p99 <= 10 ms)", o["get_fresh"],
        fresh_b, _p99_ratio(o["get_fresh"], fresh_b))
    static_b = b["get_static"] if b else None
    row("GET, users without fresh events, same rate", o["get_static"], static_b, _p99_ratio(o["get_static"], static_b))
    for i, c in enumerate((16, 64)):
        po, pb = o["events_off_peak"][i], (b["events_off_peak"][i] if b else None)
        row(f"events off (serving_http.py's measurement), peak at {c} connections", po, pb,
            f"throughput {_ratio(po['rps'], pb['rps'])}" if pb else "-")
    off_b = b["events_off_1000"] if b else None
    row("events off, 1,000 req/s paced", o["events_off_1000"], off_b, _p99_ratio(o["events_off_1000"], off_b))
    lines.append("\nwrk (one thread, 16 connections; 40 for the paced events-off run) shares the 2 cores with "
                 "the two workers. Pacing: latency from the actual send; check the achieved rate. The fresh "
                 f"users' events are stamped at the real clock ({len(payload['fresh_users'])} users, "
                 f"one event each, then {o.get('warm_up_s', 3):g} s of reads, about ten per user every 3 s, to warm "
                 "both workers: each makes every user's exact answer once, within its rebuild budget). Server CPU: the "
                 "workers' user + system time over the run / requests (psutil): what a request costs, which the "
                 "machine's load inflates far less than latency.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--seconds", type=float, default=15.0, help="each wrk run")
    parser.add_argument("--events-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--baseline-rev", default=BASELINE, help="'' to skip the baseline")
    parser.add_argument("--name", default="realtime")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        work = Path(tmp)
        under_test = resolve_bundle(args.bundle, workdir=work)
        from components.bundle import load_bundle

        items = [str(i) for i in load_bundle(under_test.archive).item_ids[:500]]
        fresh = under_test.warm_user_ids[:args.users]
        static = under_test.warm_user_ids[args.users:2 * args.users] or fresh
        payload: dict[str, Any] = {"machine": info, "bundle": under_test.describe(), "rate": args.rate,
                                   "seconds": args.seconds, "fresh_users": fresh}
        if args.baseline_rev:
            tree, payload["baseline_rev"] = export_tree(args.baseline_rev, work / "baseline-tree")
            payload["baseline"] = measure_tree(tree, "baseline", under_test.archive, work, fresh=fresh,
                                               static=static, items=items, args=args)
        payload["ours"] = measure_tree(REPO, "ours", under_test.archive, work, fresh=fresh, static=static,
                                       items=items, args=args)
    text = markdown(payload, args)
    write_results(args.name, payload, text)
    print(text)


if __name__ == "__main__":
    main()
