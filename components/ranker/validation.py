"""Ranking quality on the train fold's validation users: the number that may guide choices.

The validation channel holds sampled rows (enough for early stopping on AUC); ranking quality needs each
validation user's whole candidate list. ``ranker_data/validation_ranking/`` has it (label and the user's
number of targets |R|, candidates or not), so NDCG@K here follows EVALUATION.md on held-out users of the
train fold, next to the repurchase order on the same lists. The test fold is never looked at."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd

from components import schema as s
from components.evaluation.metrics import mean_metrics
from components.ranker.model import Ranker, rank_top_k


def _ndcg(frame: pd.DataFrame, score: np.ndarray, k: int) -> float:
    lists: dict[Hashable, list[Hashable]] = {}
    truth: dict[Hashable, set[Hashable]] = {}
    users = frame[s.USER_IDX].to_numpy()
    items = frame[s.ITEM_IDX].to_numpy(dtype=np.int64)
    labels = frame[s.LABEL].to_numpy()
    n_targets = frame[s.N_TARGETS].to_numpy()
    order = np.argsort(users, kind="stable")
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    for a, b in zip(starts, [*starts[1:], len(order)], strict=True):
        rows = order[a:b]
        user = int(users[rows[0]])
        found = {int(i) for i in items[rows][labels[rows] == 1]}
        missing = int(n_targets[rows[0]]) - len(found)
        # Targets outside the candidate list still count in |R| (negative ids never collide with items).
        truth[user] = found | {-1 - j for j in range(max(missing, 0))}
        if not truth[user]:
            del truth[user]
            continue
        lists[user] = rank_top_k(items[rows], score[rows], k)[0].tolist()
    return mean_metrics(lists, truth, k, catalog_items=1)["ndcg"] if truth else float("nan")


def validation_ranking_report(ranker: Ranker, frame: pd.DataFrame, k: int = 10) -> dict[str, Any]:
    """{"users", "ndcg_at_k", "repurchase_ndcg_at_k", "ratio"} over the validation users' candidates."""
    key = s.metric_key("ndcg", k)
    report: dict[str, Any] = {"users": int(frame[s.USER_IDX].nunique()), key: _ndcg(frame, ranker.score(frame), k)}
    if {s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST} <= set(frame.columns):
        # The repurchase baseline's order as one score: purchase days desc, then recency.
        days = frame[s.UI_DAYS_SINCE_LAST].to_numpy(dtype=np.float64)
        repurchase = frame[s.UI_PURCHASE_DAYS].to_numpy(dtype=np.float64) - days / (days.max() + 1.0)
        base = _ndcg(frame, repurchase, k)
        report[f"repurchase_{key}"] = base
        report["ratio_to_repurchase"] = report[key] / base if base > 0 else None
    return report
