"""Issue 17's record: a finished pipeline run against the strongest simple peers, every metric recomputed
from its two Parquet files (EVALUATION.md), beside the same figures of a baseline run of the same data
(e.g. main's code) for the step times.

    .venv/bin/python benchmarks/quality_peers.py --run /tmp/i17-or [--base /tmp/i17-base] --tag quality_peers

Writes benchmarks/results/<tag>.{json,md} with the machine (benchmarks/machine.py). Wall times on a shared
machine are noisy: the load at start is recorded, and step times of both runs are listed side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import REPO, machine, machine_line

sys.path.insert(0, str(REPO))
from components import schema as s
from components.evaluation.recompute import recompute_metrics
from pipelines.graph import STEP_NAMES

RESULTS = REPO / "benchmarks" / "results"
COLUMNS = [("ndcg", 10), ("map", 10), ("recall", 10), ("precision", 10), ("hit_rate", 10), ("coverage", 10),
           ("ndcg", 20), ("recall", 20)]


def step_seconds(run: Path) -> dict[str, float]:
    out = {}
    for step in STEP_NAMES:
        marker = run / step / "_SUCCESS"
        if marker.exists():
            out[step] = float(json.loads(marker.read_text()).get("seconds", float("nan")))
    return out


def summarise(run: Path) -> dict[str, Any]:
    evaluation = json.loads((run / "evaluation" / s.EVALUATION_FILE).read_text())
    recomputed = recompute_metrics(pd.read_parquet(run / "evaluation" / s.GROUND_TRUTH_FILE),
                                   pd.read_parquet(run / "evaluation" / s.RECOMMENDATIONS_FILE),
                                   evaluation["data"]["catalog_items"])["ranking_metrics"]
    for name, block in recomputed.items():  # the file's figures are the recomputed ones, to 1e-9
        for key, entry in block.items():
            assert abs(entry["value"] - evaluation["ranking_metrics"][name][key]["value"]) <= 1e-9, (name, key)
    table = {name: {s.metric_key(m, k): recomputed[name][s.metric_key(m, k)]["value"] for m, k in COLUMNS}
             for name in s.RECOMMENDERS if name in recomputed}
    two_stage = evaluation["ranking_metrics"][s.TWO_STAGE]
    return {"warm": table, "headline": evaluation["headline"], "gate": evaluation.get("gate"),
            "exclude_purchased": {name: block.get("ndcg_at_10", {}).get("value")
                                  for name, block in evaluation["exclude_purchased"]["ranking_metrics"].items()},
            "candidate_recall": two_stage["candidate_recall"]["value"],
            "candidates_per_user": two_stage["candidates_per_user"]["value"],
            "tifu_knn": {k: v for k, v in evaluation.get(s.TIFU_KNN, {}).items() if k != "tried"},
            "users": evaluation["users"], "split": evaluation["split"], "steps": step_seconds(run)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=None, help="a run of the same data before this change")
    parser.add_argument("--tag", default="quality_peers")
    args = parser.parse_args()
    info = machine()
    run = summarise(args.run)
    base = {"steps": step_seconds(args.base)} if args.base else None
    report = {"machine": info, "run": str(args.run), "result": run, "base": base}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    head = run["headline"]
    lines = [f"# Two-stage against the strongest simple peers ({args.tag})", "",
             f"Machine: {machine_line(info)}", "",
             f"Online Retail, warm users ({run['users']['warm']:,}), test from {run['split']['test_start']}; "
             "every figure recomputed from ground_truth.parquet and recommendations.parquet.", "",
             "| recommender | " + " | ".join(f"{m}@{k}" for m, k in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(f"{row[s.metric_key(m, k)]:.4f}" for m, k in COLUMNS) + " |"
              for name, row in run["warm"].items()]
    lines += ["", f"- two_stage NDCG@10 {head['two_stage']:.4f} = **{head['two_stage_over_strongest_baseline']:.3f}x** "
              f"the strongest baseline ({head['strongest_baseline']}, {head['strongest_baseline_value']:.4f}); "
              f"{head['two_stage_over_best_baseline']:.3f}x the best of popular and repurchase; "
              f"{head['two_stage_over_als']:.3f}x als (goal: >= 1.05x the strongest).",
              f"- exclude_purchased NDCG@10: two_stage {head['exclude_purchased']['two_stage']:.4f}, als "
              f"{head['exclude_purchased']['als']:.4f} = **{head['exclude_purchased']['two_stage_over_als']:.3f}x** "
              "(goal: >= 1.3x).",
              f"- candidate recall {run['candidate_recall']:.4f} with {run['candidates_per_user']:.1f} per user.",
              f"- tifu_knn settings {run['tifu_knn'].get('params')}, chosen on {run['tifu_knn'].get('chosen_on')}.",
              "", "| step | this run s | " + ("base run s |" if base else "") , "|---|---|" + ("---|" if base else "")]
    for step, seconds in run["steps"].items():
        before = f"{base['steps'].get(step, float('nan')):.1f} |" if base else ""
        lines.append(f"| {step} | {seconds:.1f} | {before}")
    total = sum(run["steps"].values())
    lines.append(f"| total | {total:.1f} | " + (f"{sum(base['steps'].values()):.1f} |" if base else ""))
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
