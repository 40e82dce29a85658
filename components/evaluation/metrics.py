"""Ranking metrics exactly as EVALUATION.md defines them, as pure functions.

Per user, with R the user's test items and L the top-K list (unique items, best first):

- Precision@K = |L ∩ R| / K  (a list shorter than K still divides by K)
- Recall@K = |L ∩ R| / |R|
- HitRate@K = 1 if |L ∩ R| > 0 else 0
- NDCG@K = DCG / IDCG, DCG = Σ_{i=1..K} rel_i / log2(i + 1), IDCG over min(|R|, K) relevant items
- MAP@K = (1 / min(|R|, K)) Σ_{i=1..K} Precision@i · rel_i
- Coverage@K = distinct items recommended across all users / items in the catalog

Averages run over the evaluated users, who by definition have |R| >= 1 (a user with an empty R is a
caller bug and raises). A user without a list (or with an empty one) scores 0 on every per-user metric.
The evaluation step and :func:`components.evaluation.recompute.recompute_metrics` both call these.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

PER_USER_METRICS = ("precision", "recall", "hit_rate", "ndcg", "map")
U = TypeVar("U", bound=Hashable)  # user key (user_idx or user_id)
T = TypeVar("T", bound=Hashable)  # item key (item_idx or item_id)


@dataclass(frozen=True)
class UserMetrics:
    precision: float
    recall: float
    hit_rate: float
    ndcg: float
    map: float


def _discounts(k: int) -> np.ndarray:
    """1 / log2(i + 1) for i = 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def user_metrics(recommended: Sequence[T], relevant: Iterable[T], k: int) -> UserMetrics:
    """Every per-user metric at ``k`` for one user (``recommended`` best first; only its first k count)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    relevant_set = set(relevant)
    if not relevant_set:
        raise ValueError("a user without test items cannot be evaluated (|R| = 0)")
    top = list(recommended[:k])
    if len(set(top)) != len(top):
        raise ValueError(f"recommendation list has duplicate items: {top}")
    rel = np.fromiter((item in relevant_set for item in top), dtype=np.float64, count=len(top))
    hits = float(rel.sum())
    discounts = _discounts(k)
    dcg = float((rel * discounts[: len(top)]).sum())
    ideal = min(len(relevant_set), k)
    idcg = float(discounts[:ideal].sum())
    # Precision@i at each position i (1-based) times rel_i; summed and normalised by min(|R|, K).
    precision_at_i = np.cumsum(rel) / np.arange(1, len(top) + 1, dtype=np.float64) if len(top) else rel
    average_precision = float((precision_at_i * rel).sum()) / ideal
    return UserMetrics(
        precision=hits / k,
        recall=hits / len(relevant_set),
        hit_rate=1.0 if hits > 0 else 0.0,
        ndcg=dcg / idcg,
        map=average_precision,
    )


def coverage(recommendations: Mapping[U, Sequence[T]], k: int, catalog_items: int) -> float:
    """Distinct items in the users' top-k lists / items in the catalog."""
    if catalog_items < 1:
        raise ValueError(f"catalog_items must be >= 1, got {catalog_items}")
    distinct: set[T] = set()
    for items in recommendations.values():
        distinct.update(items[:k])
    return len(distinct) / catalog_items


def mean_metrics(
    recommendations: Mapping[U, Sequence[T]],
    ground_truth: Mapping[U, Iterable[T]],
    k: int,
    catalog_items: int,
) -> dict[str, float]:
    """Metrics at ``k`` averaged over the users of ``ground_truth`` (the evaluated users).

    ``recommendations`` may hold users outside ``ground_truth`` (ignored, also for coverage) and may
    miss some (they get an empty list). Returns {"precision": ..., ..., "coverage": ...}."""
    if not ground_truth:
        raise ValueError("no evaluated users: ground truth is empty")
    totals = dict.fromkeys(PER_USER_METRICS, 0.0)
    evaluated_lists: dict[U, Sequence[T]] = {}
    for user, relevant in ground_truth.items():
        recommended = recommendations.get(user, ())
        evaluated_lists[user] = recommended
        one = user_metrics(recommended, relevant, k)
        for name in PER_USER_METRICS:
            totals[name] += getattr(one, name)
    n = len(ground_truth)
    result = {name: total / n for name, total in totals.items()}
    result["coverage"] = coverage(evaluated_lists, k, catalog_items)
    return result


def mean_recall(candidates: Mapping[U, Iterable[T]], ground_truth: Mapping[U, Iterable[T]]) -> float:
    """Recall of whole (unbounded) lists, averaged over the ground-truth users: candidate recall."""
    if not ground_truth:
        raise ValueError("no evaluated users: ground truth is empty")
    total = 0.0
    for user, relevant in ground_truth.items():
        relevant_set = set(relevant)
        if not relevant_set:
            raise ValueError(f"user {user!r} has no test items (|R| = 0)")
        total += len(relevant_set.intersection(candidates.get(user, ()))) / len(relevant_set)
    return total / len(ground_truth)
