"""The train-fold tuning harness (benchmarks/ranker_cv.py) scores NDCG@10 exactly as EVALUATION.md does:
its vectorised NDCG agrees with the evaluation step's metric functions, targets outside the candidate
list included."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from components import schema as s
from components.evaluation.metrics import mean_metrics
from components.ranker.model import rank_top_k

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ranker_cv


def _frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for user in range(40):
        n = int(rng.integers(1, 30))
        items = rng.choice(200, size=n, replace=False)
        labels = (rng.random(n) < 0.2).astype(np.int64)
        missed = int(rng.integers(0, 3))  # targets the candidate list does not hold
        parts.append(pd.DataFrame({s.USER_IDX: user, s.ITEM_IDX: items, s.LABEL: labels,
                                   s.N_TARGETS: int(labels.sum()) + missed}))
    return pd.concat(parts, ignore_index=True)


def _reference(frame: pd.DataFrame, score: np.ndarray, k: int) -> float:
    lists, truth = {}, {}
    for user, rows in frame.assign(_score=score).groupby(s.USER_IDX):
        n_targets = int(rows[s.N_TARGETS].iloc[0])
        if n_targets == 0:
            continue
        found = set(rows.loc[rows[s.LABEL] == 1, s.ITEM_IDX].tolist())
        truth[user] = found | {-1 - j for j in range(n_targets - len(found))}
        lists[user] = rank_top_k(rows[s.ITEM_IDX].to_numpy(), rows["_score"].to_numpy(), k)[0].tolist()
    return mean_metrics(lists, truth, k, catalog_items=1)["ndcg"]


def test_harness_ndcg_matches_the_evaluation_metrics() -> None:
    for seed in range(3):
        frame = _frame(seed)
        score = np.round(np.random.default_rng(seed + 10).random(len(frame)), 1)  # ties: item_idx decides
        for k in (1, 10):
            assert abs(ranker_cv.ndcg(frame, score, k) - _reference(frame, score, k)) < 1e-12


def test_harness_ndcg_rewards_a_better_order() -> None:
    frame = _frame(5)
    perfect = frame[s.LABEL].to_numpy(dtype=np.float64)
    assert ranker_cv.ndcg(frame, perfect) > ranker_cv.ndcg(frame, -perfect)
