"""Every ranking metric of evaluation.json from ground_truth.parquet and recommendations.parquet alone
(EVALUATION.md: anyone can recompute them; the numbers must agree to 1e-9).

    from components.evaluation.recompute import recompute_metrics
    metrics = recompute_metrics(pd.read_parquet("ground_truth.parquet"),
                                pd.read_parquet("recommendations.parquet"), catalog_items)
    metrics["ranking_metrics"]["two_stage"]["ndcg_at_10"]["value"]

``catalog_items`` is evaluation.json's data.catalog_items (coverage's denominator). Candidate recall needs
the candidate lists and is not recomputable from these two files.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from components import schema as s
from components.evaluation.metrics import mean_metrics

SEGMENTS = (s.WARM, s.COLD, "all")


def metric_block(lists: Mapping[Hashable, Sequence[Hashable]], truth: Mapping[Hashable, Iterable[Hashable]],
                 catalog_items: int, ks: Sequence[int] = s.KS) -> dict[str, dict[str, float]]:
    """{"ndcg_at_10": {"value": ...}, ...} over the users of ``truth``; {} when it has none."""
    if not truth:
        return {}
    block: dict[str, dict[str, float]] = {}
    for k in ks:
        values = mean_metrics(lists, truth, k, catalog_items)
        for metric in s.METRICS:
            block[s.metric_key(metric, k)] = {"value": float(values[metric])}
    return block


def truth_by_segment(ground_truth: pd.DataFrame, user: str, item: str
                     ) -> dict[str, dict[Hashable, set[Hashable]]]:
    """{"warm": {user: {items}}, "cold": ..., "all": ...} from (user, item, segment) rows."""
    segment_of_user = ground_truth.groupby(user)[s.SEGMENT].agg(lambda v: set(v))
    conflicting = segment_of_user[segment_of_user.map(len) > 1]
    if len(conflicting):
        raise ValueError(f"users in two segments: {list(conflicting.index[:5])}")
    items = ground_truth.groupby(user)[item].agg(set)
    everyone = {key: set(value) for key, value in items.items()}
    out: dict[str, dict[Hashable, set[Hashable]]] = {"all": everyone}
    for segment in (s.WARM, s.COLD):
        members = set(segment_of_user.index[segment_of_user.map(lambda v, seg=segment: seg in v)])
        out[segment] = {u: everyone[u] for u in everyone if u in members}
    return out


def lists_by_recommender(recommendations: pd.DataFrame, user: str, item: str
                         ) -> dict[str, dict[Hashable, list[Hashable]]]:
    """{recommender: {user: [items by rank]}}; ranks must run 1..n without gaps per user."""
    out: dict[str, dict[Hashable, list[Hashable]]] = {}
    ordered = recommendations.sort_values([s.RECOMMENDER, user, s.RANK], kind="mergesort")
    for (recommender, who), rows in ordered.groupby([s.RECOMMENDER, user], sort=False):
        ranks = rows[s.RANK].tolist()
        if ranks != list(range(1, len(ranks) + 1)):
            raise ValueError(f"{recommender}: ranks of user {who!r} are not 1..{len(ranks)}: {ranks}")
        out.setdefault(str(recommender), {})[who] = rows[item].tolist()
    return out


def recompute_metrics(ground_truth: pd.DataFrame, recommendations: pd.DataFrame,
                      catalog_items: int) -> dict[str, Any]:
    """{"ranking_metrics": warm headline per recommender, "segments": {warm, cold, all}} from the two
    files, exactly as evaluation.json lays them out."""
    truth = truth_by_segment(ground_truth, s.USER_ID, s.ITEM_ID)
    lists = lists_by_recommender(recommendations, s.USER_ID, s.ITEM_ID)
    segments: dict[str, dict[str, Any]] = {
        segment: {name: metric_block(per_user, truth[segment], catalog_items)
                  for name, per_user in lists.items()}
        for segment in SEGMENTS
    }
    return {"ranking_metrics": segments[s.WARM], "segments": segments}
