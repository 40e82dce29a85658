"""What a repeated fresh answer costs as a user's stored events grow (issue 14: the soak's p50 rose as every
GET read and parsed all of the user's events), in process, in CPU time, for this tree and a baseline commit
(default 4953db5, before the per-user store versions) in the same run.

Per size (events stored per user), 30 users of the bundle each get that many events in the embedded store
(stamped before the real clock), one answer each, then ``--repeats`` rounds of answers with no new event:
- ``exact``: the exact answers (no rebuild budget), cached per user: the cost of reading the store;
- ``fast``: the rebuild budget spent (ECOMREC_FRESH_EXACT_PER_S=0): every answer is the fast path, which
  moves the as-of counts to the request from the user's events (features.apply_as_of) and scores;
- ``*_new``: then 5 rounds of one new event per user, each followed by the user's answer (the store read
  and parse of the changed user, and the exact rebuild or the fast path).

    PYTHONPATH=. .venv/bin/python benchmarks/realtime_reads.py --bundle OUT/bundle/model.tar.gz

Writes benchmarks/results/realtime_reads.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realtime import export_tree, run_in_tree
from serving_common import REPO, machine, machine_markdown, write_results

BASELINE = "4953db5"
SIZES = (10, 100, 500)

# Runs inside the tree under test (its own code: -P, PYTHONPATH=tree); prints one JSON line.
MEASURE = r"""
import json, sys, tempfile, time
from pathlib import Path
from components.bundle import load_bundle
from components.serving.engine import build_serving_model
from components.realtime.fresh import FreshAnswers, now_us
from components.realtime.intake import StoreGuard
from components.realtime.store import SqliteStore, StoredEvent

archive, sizes, repeats = Path(sys.argv[1]), [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
work = Path(tempfile.mkdtemp())
model = build_serving_model(load_bundle(archive), source="bench", feature_dir=work / "features")
warm = [u for u in model.user_index if model.candidate_count(model.user_index[u])]
store = SqliteStore(work / "store.sqlite", timeout_s=5.0)
now, items, out = now_us(), model.item_ids, {}
for offset, n in enumerate(sizes):
    users = warm[offset * 30:(offset + 1) * 30]
    store.add([StoredEvent(key=f"id:{u}:{i}", user_id=u, item_id=items[(i * 7 + offset) % len(items)],
                           event_type=("view", "add_to_cart", "purchase")[i % 3], timestamp_us=now - (n - i) * 1000,
                           quantity=1, price=2.5, session_id=None) for u in users for i in range(n)])
    for path, budget in (("exact", float("inf")), ("fast", 0.0)):
        fresh = FreshAnswers(StoreGuard(store), exact_per_s=budget)
        for user in users:
            assert fresh.recommend(model, user, 10)[0] is not None
        start = time.process_time()
        for _ in range(repeats):
            for user in users:
                fresh.recommend(model, user, 10)
        out[f"{path}_{n}"] = round((time.process_time() - start) * 1000 / (repeats * len(users)), 4)
        spent = 0.0
        for k in range(5):  # then answers right after each new event (the store's add is not timed)
            store.add([StoredEvent(key=f"new:{path}:{u}:{k}", user_id=u, item_id=items[(k * 13 + offset) % len(items)],
                                   event_type="view", timestamp_us=now_us(), quantity=1, price=2.5, session_id=None)
                       for u in users])
            start = time.process_time()
            for user in users:
                fresh.recommend(model, user, 10)
            spent += time.process_time() - start
        out[f"{path}_new_{n}"] = round(spent * 1000 / (5 * len(users)), 4)
print("RESULT " + json.dumps(out))
"""


def measure(tree: Path, archive: Path, repeats: int) -> dict[str, Any]:
    return run_in_tree(tree, MEASURE, str(archive), ",".join(map(str, SIZES)), str(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--baseline-rev", default=BASELINE)
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-rt-reads-tree-") as tmp:
        tree, short = export_tree(args.baseline_rev, Path(tmp) / "baseline")
        baseline = measure(tree, args.bundle, args.repeats)
    ours = measure(REPO, args.bundle, args.repeats)
    payload = {"machine": info, "bundle": str(args.bundle), "repeats": args.repeats, "sizes": SIZES,
               "baseline_rev": short, "baseline": baseline, "ours": ours}
    lines = ["# A repeated fresh answer as the user's stored events grow (CPU ms, in process)\n",
             machine_markdown(info),
             f"This tree {info['git_commit']}, baseline {short}, same run; 30 users per size, {args.repeats} rounds "
             f"of answers with no new event, then 5 of one new event and an answer. Load average at the end: "
             f"ours {ours['load_average_at_end']}, "
             f"baseline {baseline['load_average_at_end']}: a shared machine; CPU time is far less affected than "
             "wall time, not immune.\n",
             "Command: `PYTHONPATH=. .venv/bin/python benchmarks/realtime_reads.py --bundle "
             "OUT/bundle/model.tar.gz`.\n",
             "| answer | events a user | ours | baseline | ours / baseline |", "|---|---|---|---|---|"]
    for path, label in (("exact", "exact (cached)"), ("fast", "fast path (budget spent)"),
                        ("exact_new", "exact, right after a new event (a rebuild)"),
                        ("fast_new", "fast path, right after a new event")):
        for n in SIZES:
            key = f"{path}_{n}"
            lines.append(f"| {label} | {n} | {ours[key]} | {baseline[key]} | {ours[key] / baseline[key]:.2f} |")
    write_results("realtime_reads", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
