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


def test_harness_exclude_purchased_view_is_the_evaluations() -> None:
    """The exploration view the harness chooses on (EVALUATION.md's exclude_purchased): each user's list
    without the items they bought before, topped up with popular items they did not buy, judged on the
    target items that are new to them; users without a new target left out."""
    from components.ranker.model import PopularFallback

    rng = np.random.default_rng(3)
    frame = _frame(1)
    score = rng.random(len(frame))
    bought = frame.sample(frac=0.3, random_state=1)[[s.USER_IDX, s.ITEM_IDX]]
    bought = pd.concat([bought, pd.DataFrame({s.USER_IDX: [0, 0], s.ITEM_IDX: [500, 501]})])  # not candidates
    targets = frame.loc[frame[s.LABEL] == 1, [s.USER_IDX, s.ITEM_IDX]]
    targets = pd.concat([targets, pd.DataFrame({s.USER_IDX: [1, 2], s.ITEM_IDX: [500, 600]})])  # off the lists
    popular = PopularFallback(item_idx=np.array([500, 501, 502, 503, *range(300, 320)]),
                              scores=np.arange(24, 0, -1, dtype=np.float64))
    new_truth: dict = {}
    for user, item in zip(targets[s.USER_IDX], targets[s.ITEM_IDX], strict=True):
        if not ((bought[s.USER_IDX] == user) & (bought[s.ITEM_IDX] == item)).any():
            new_truth.setdefault(int(user), set()).add(int(item))
    view = ranker_cv.ExploreView(purchased=bought, new_truth=new_truth, fallback=popular, n_items=1000)

    lists = {}
    for user, rows in frame.assign(_score=score).groupby(s.USER_IDX):
        mine = set(bought.loc[bought[s.USER_IDX] == user, s.ITEM_IDX].tolist())
        rows = rows.loc[~rows[s.ITEM_IDX].isin(mine)]
        top = rank_top_k(rows[s.ITEM_IDX].to_numpy(), rows["_score"].to_numpy(), 10)[0].tolist()
        top += [i for i in popular.item_idx.tolist() if i not in mine and i not in top][:10 - len(top)]
        lists[int(user)] = top
    truth = {u: t for u, t in new_truth.items() if u in lists}
    assert len(truth) < len(lists)  # some users have no new target
    expected = mean_metrics(lists, truth, 10, catalog_items=1000)["ndcg"]
    users = np.unique(frame[s.USER_IDX].to_numpy())
    assert abs(view.ndcg(frame, score, users) - expected) < 1e-12
    assert expected > 0
