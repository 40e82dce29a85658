"""What one fresh answer costs in process (no HTTP), in CPU time (which a loaded machine stretches in wall
time far less than latency), for this tree and a baseline commit (default main's c0356b7) in the same run:

- the first fresh answer of a user in a process (their rows read, features recomputed, scored);
- a repeated fresh answer of the same users with no new event in between;
- an answer right after the user's next event (the worst case: a new event every time, nothing reusable).

Each user has one event stamped at the real clock, in the embedded store (as the service reads it).

    PYTHONPATH=. .venv/bin/python benchmarks/realtime_inprocess.py --bundle OUT/bundle/model.tar.gz

Writes benchmarks/results/realtime_inprocess.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realtime import BASELINE, export_tree, run_in_tree
from serving_common import REPO, machine, machine_markdown, write_results

# Runs inside the tree under test (its own code: -P, PYTHONPATH=tree); prints one JSON line.
MEASURE = r"""
import json, sys, tempfile, time
from pathlib import Path
from components.bundle import load_bundle
from components.serving.engine import build_serving_model
from components.realtime.fresh import FreshAnswers, now_us
from components.realtime.intake import StoreGuard
from components.realtime.store import SqliteStore, StoredEvent

archive, users_n, repeats = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
work = Path(tempfile.mkdtemp())
bundle = load_bundle(archive)
model = build_serving_model(bundle, source="bench", feature_dir=work / "features")
users = [u for u in model.user_index if model.candidate_count(model.user_index[u])][:users_n]
store = SqliteStore(work / "store.sqlite")
now = now_us()
store.add([StoredEvent(key=f"id:{n}", user_id=u, item_id=model.item_ids[n % len(model.item_ids)],
                       event_type=("view", "add_to_cart", "purchase")[n % 3], timestamp_us=now, quantity=1,
                       price=2.5, session_id=None) for n, u in enumerate(users)])
fresh = FreshAnswers(StoreGuard(store))

def cpu_ms(users, rounds=1):
    start = time.process_time()
    for _ in range(rounds):
        for user in users:
            rec, _ = fresh.recommend(model, user, 10)
            assert rec is not None
    return round((time.process_time() - start) * 1000 / (len(users) * rounds), 3)

out = {"first_answer_cpu_ms": cpu_ms(users), "repeat_answer_cpu_ms": cpu_ms(users, repeats)}
# a new event before every answer: its store write is not counted (the intake's cost), the answer's is
total = 0.0
for r in range(repeats):
    for n, u in enumerate(users):
        store.add([StoredEvent(key=f"id:{r}:{n}", user_id=u, item_id=model.item_ids[(n + r + 1) % len(model.item_ids)],
                               event_type="view", timestamp_us=now + r + 1, quantity=1, price=2.5,
                               session_id=None)])
        start = time.process_time()
        rec, _ = fresh.recommend(model, u, 10)
        total += time.process_time() - start
        assert rec is not None
out["after_new_event_cpu_ms"] = round(total * 1000 / (len(users) * repeats), 3)
print("RESULT " + json.dumps(out))
"""


def measure(tree: Path, archive: Path, users: int, repeats: int) -> dict[str, Any]:
    return run_in_tree(tree, MEASURE, str(archive), str(users), str(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--baseline-rev", default=BASELINE)
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-rt-inprocess-tree-") as tmp:
        tree, short = export_tree(args.baseline_rev, Path(tmp) / "baseline")
        baseline = measure(tree, args.bundle, args.users, args.repeats)
    ours = measure(REPO, args.bundle, args.users, args.repeats)
    payload = {"machine": info, "bundle": str(args.bundle), "users": args.users, "repeats": args.repeats,
               "baseline_rev": short, "baseline": baseline, "ours": ours}

    def ratio(key: str, base_key: str | None = None) -> str:
        base = baseline.get(base_key or key)
        return f"{ours[key] / base:.2f}" if base else "-"

    lines = ["# One fresh answer in process (CPU time)\n", machine_markdown(info),
             f"This tree {info['git_commit']}, baseline {short}, same run; {args.users} users with one event each "
             f"(stamped at the real clock), repeats x{args.repeats}. Load average at the end: ours "
             f"{ours['load_average_at_end']}, baseline {baseline['load_average_at_end']}: a shared, loaded "
             "machine; CPU time is far less affected than wall time, not immune.\n",
             "Command: `PYTHONPATH=. .venv/bin/python benchmarks/realtime_inprocess.py --bundle "
             "OUT/bundle/model.tar.gz`.\n",
             "| CPU ms per fresh answer | ours | baseline | ours / baseline |", "|---|---|---|---|",
             f"| a user's first answer in the process | {ours['first_answer_cpu_ms']} | "
             f"{baseline['first_answer_cpu_ms']} | {ratio('first_answer_cpu_ms')} |",
             f"| repeated answers, no new event in between | {ours['repeat_answer_cpu_ms']} | "
             f"{baseline['repeat_answer_cpu_ms']} | {ratio('repeat_answer_cpu_ms')} |",
             f"| an answer right after the user's next event (the worst case) | "
             f"{ours['after_new_event_cpu_ms']} | {baseline.get('after_new_event_cpu_ms', '-')} | "
             f"{ratio('after_new_event_cpu_ms')} |"]
    write_results("realtime_inprocess", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
