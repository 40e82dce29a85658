"""Where do `later` baskets lose? Recall of the candidate set versus ranking, on a replay (REALTIME.md).

Runs components.realtime.replay.replay on a bundle and its run's data (as ``ecomrec evaluate replay``),
keeping every candidate set the realtime answers scored (FreshAnswers.score's items and scores; a user
answered from the load-time scores: their bundle rows), then, per segment, splits each basket's purchased
items by what the user had done before the basket (bought before: ``repeat``; in their latest basket:
``in_last_basket``; touched never: ``new``) and reports, for each kind, the share of truth items in the
candidate set (the ceiling of any ranking) and in the realtime top 10. Meant for the window one earlier
than the test window (choices are made there, never on the test window).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/replay_diagnose.py --bundle RUN/bundle/model.tar.gz \
        --data RUN --tag replay_diagnose_early
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine
from components import schema as s
from components.realtime import fresh, replay
from components.realtime.store import DAY_US

KINDS = ("in_last_basket", "repeat_older", "new")


def run(bundle: Path, data: Path) -> tuple[replay.ReplayResult, dict[tuple[str, int], set[str]]]:
    seen: dict[tuple[str, int], set[str]] = {}
    original = fresh.FreshAnswers.score

    def score(self: Any, model: Any, user_idx: Any, rows: Any, events: Any, at_us: Any = None, *,
              user_id: str = "", version: int | None = None) -> Any:
        items, scores = original(self, model, user_idx, rows, events, at_us, user_id=user_id, version=version)
        seen[(user_id, int(at_us))] = {model.item_ids[int(i)] for i in items.tolist()}
        return items, scores

    fresh.FreshAnswers.score = score  # type: ignore[method-assign]
    try:
        result = replay.replay(bundle, data)
    finally:
        fresh.FreshAnswers.score = original  # type: ignore[method-assign]
    return result, seen


def diagnose(result: replay.ReplayResult, seen: dict[tuple[str, int], set[str]], bundle: Path, data: Path
             ) -> dict[str, Any]:
    etl = data / "etl"
    events = pd.read_parquet(etl / s.CLEAN_DIR / s.EVENTS, columns=[s.USER_ID, s.ITEM_ID, s.EVENT_TYPE,
                                                                    s.TIMESTAMP, s.SESSION_ID])
    events["ts_us"] = pd.to_datetime(events[s.TIMESTAMP], utc=True).astype("int64") // 1000
    events[s.USER_ID] = events[s.USER_ID].astype(str)
    events[s.ITEM_ID] = events[s.ITEM_ID].astype(str)
    cut = replay.datetime_to_us(json.loads((etl / s.WINDOWS_FILE).read_text())["test_start"])
    test = replay._baskets(events.loc[events["ts_us"] >= cut].copy())
    starts = test.groupby(replay.BASKET_ID)["_start"].first()
    purchases = events.loc[events[s.EVENT_TYPE] == s.PURCHASE]
    by_user = {u: g.sort_values("ts_us") for u, g in purchases.groupby(s.USER_ID)}
    recs = result.recommendations
    top10 = {(r, b): set(g.loc[g[s.RANK] <= 10, s.ITEM_ID]) for (r, b), g in
             recs.groupby([s.RECOMMENDER, replay.BASKET_ID])}
    rows = []
    for _, truth in result.truth.groupby([s.USER_ID, replay.BASKET_ID, s.SEGMENT]):
        user, basket, cell = (str(truth[c].iat[0]) for c in (s.USER_ID, replay.BASKET_ID, s.SEGMENT))
        start = int(starts.loc[basket])
        before = by_user.get(user, pd.DataFrame(columns=[s.ITEM_ID, "ts_us", s.SESSION_ID]))
        before = before.loc[before["ts_us"] < start]
        last_items: set[str] = set()
        if len(before):
            last_ts = int(before["ts_us"].max())
            # the latest basket: the latest purchase's session (its day when the data has none)
            last_session = before.loc[before["ts_us"] == last_ts, s.SESSION_ID].iat[0]
            last_items = set(before.loc[before[s.SESSION_ID] == last_session, s.ITEM_ID])
        older = set(before[s.ITEM_ID]) - last_items
        candidates = seen.get((user, start))  # None: answered from the load-time scores
        for item in truth[s.ITEM_ID]:
            kind = "in_last_basket" if item in last_items else "repeat_older" if item in older else "new"
            rows.append({"cell": cell, "basket": basket, "kind": kind,
                         "in_candidates": candidates is not None and item in candidates,
                         "fresh": candidates is not None,
                         "realtime_top10": item in top10.get((replay.REALTIME, basket), set()),
                         "static_top10": item in top10.get((replay.STATIC, basket), set()),
                         "repurchase_top10": item in top10.get((replay.REPURCHASE_REALTIME, basket), set())})
    frame = pd.DataFrame(rows)
    frame["order"] = frame["cell"].str.split("_").str[1]
    out: dict[str, Any] = {}
    for order, part in frame.groupby("order"):
        block: dict[str, Any] = {"truth_items": len(part), "baskets": int(part["basket"].nunique()),
                                 "fresh_answers_share": float(part["fresh"].mean())}
        for kind in (*KINDS, "all"):
            sub = part if kind == "all" else part.loc[part["kind"] == kind]
            fresh_sub = sub.loc[sub["fresh"]]
            block[kind] = {"items": len(sub), "share_of_truth": len(sub) / max(len(part), 1),
                           "candidate_recall_fresh": float(fresh_sub["in_candidates"].mean()) if len(fresh_sub)
                           else None,
                           "realtime_top10": float(sub["realtime_top10"].mean()) if len(sub) else None,
                           "static_top10": float(sub["static_top10"].mean()) if len(sub) else None,
                           "repurchase_top10": float(sub["repurchase_top10"].mean()) if len(sub) else None}
        out[str(order)] = block
    out["later_by_gap"] = by_gap(result, starts, frame)
    return out


GAP_DAYS = (0.5, 3.0, 7.0, 14.0)  # bins of the days since the user's previous scored basket began


def by_gap(result: replay.ReplayResult, starts: pd.Series, items: pd.DataFrame) -> dict[str, Any]:
    """Later baskets by the time since the user's previous scored basket: how many, NDCG@10 per recommender
    (replay_metrics over that subset), and the kinds of their truth items."""
    truth = result.truth
    first = truth.drop_duplicates(replay.BASKET_ID).sort_values(replay.BASKET_INDEX)
    first = first.assign(_start=first[replay.BASKET_ID].map(starts).to_numpy(np.int64))
    first["_gap"] = first.groupby(s.USER_ID)["_start"].diff() / DAY_US
    later = first.loc[first[s.SEGMENT].str.endswith(replay.LATER)]
    bins = np.digitize(later["_gap"].to_numpy(np.float64), GAP_DAYS)
    edges = (0.0, *GAP_DAYS, np.inf)
    out: dict[str, Any] = {}
    for b in range(len(edges) - 1):
        baskets = set(later.loc[bins == b, replay.BASKET_ID])
        if not baskets:
            continue
        sub_truth = truth.loc[truth[replay.BASKET_ID].isin(baskets)]
        sub_recs = result.recommendations.loc[result.recommendations[replay.BASKET_ID].isin(baskets)]
        metrics = replay.replay_metrics(sub_truth, sub_recs, 1)["replay_metrics"]
        kinds = items.loc[items["basket"].isin(baskets), "kind"].value_counts(normalize=True)
        out[f"[{edges[b]}, {edges[b + 1]}) days"] = {
            "baskets": len(baskets), "truth_kinds": {k: float(kinds.get(k, 0.0)) for k in KINDS},
            "ndcg_at_10": {name: metrics[name]["all"][s.metric_key("ndcg", 10)]["value"] for name in metrics}}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tag", default="replay_diagnose")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    info = machine()
    started = time.perf_counter()
    result, seen = run(args.bundle, args.data)
    report = {"machine": info, "bundle": str(args.bundle), "data": str(args.data),
              "seconds": time.perf_counter() - started,
              "ndcg_at_10": {name: {seg: result.metrics["replay_metrics"][name][seg][s.metric_key("ndcg", 10)]["value"]
                                    for seg in ("all", replay.FIRST, replay.LATER)}
                             for name in replay.REPLAY_RECOMMENDERS},
              "by_order": diagnose(result, seen, args.bundle, args.data)}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.tag}.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report["ndcg_at_10"], indent=1))
    print(json.dumps(report["by_order"], indent=1))


if __name__ == "__main__":
    main()
