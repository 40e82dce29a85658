"""The six recommenders EVALUATION.md compares, as top-K lists per user (index space: user_idx, item_idx).

Each takes a pool of (user_idx, item_idx, score, order keys) rows, keeps the recommender's top K per
user, and tops short lists up with the popular list (:class:`PopularFallback`). Cold users (no history
before the cut) get the popular list from every recommender: the explicit cold-user policy, the same one
serving applies. Lists hold unique items; items a recommender did not score itself carry NaN scores.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.model import PopularFallback

LIST_COLUMNS = (s.USER_IDX, s.RANK, s.ITEM_IDX, s.SCORE)


def _exclude_pairs(pool: pd.DataFrame, exclude: pd.DataFrame | None) -> pd.DataFrame:
    if exclude is None or exclude.empty:
        return pool
    keys = pd.MultiIndex.from_frame(exclude[[s.USER_IDX, s.ITEM_IDX]].astype(np.int64))
    pairs = pd.MultiIndex.from_frame(pool[[s.USER_IDX, s.ITEM_IDX]].astype(np.int64))
    return pool.loc[~pairs.isin(keys)]


def _grouped(frame: pd.DataFrame, value: str) -> dict[int, np.ndarray]:
    """user_idx -> that user's ``value`` column as an array, rows in frame order."""
    if frame.empty:
        return {}
    users = frame[s.USER_IDX].to_numpy(dtype=np.int64)
    values = frame[value].to_numpy()
    order = np.argsort(users, kind="stable")
    users, values = users[order], values[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = np.r_[starts, len(users)]
    return {int(users[a]): values[a:b] for a, b in itertools.pairwise(bounds)}


def ranked_lists(
    pool: pd.DataFrame,
    order_by: Sequence[str],
    ascending: Sequence[bool],
    users: np.ndarray,
    fallback: PopularFallback,
    k: int,
    *,
    exclude: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Top ``k`` of ``pool`` per user in ``users`` by ``order_by`` (ties: item_idx asc), topped up with
    popular items; ``exclude`` (user_idx, item_idx) pairs never appear. Columns: user_idx, rank (1..k),
    item_idx, score."""
    pool = _exclude_pairs(pool.loc[pool[s.USER_IDX].isin(users)], exclude)
    ordered = pool.sort_values([s.USER_IDX, *order_by, s.ITEM_IDX], ascending=[True, *ascending, True],
                               kind="mergesort")
    top = ordered.loc[ordered.groupby(s.USER_IDX, sort=False).cumcount() < k]
    items_by_user = _grouped(top, s.ITEM_IDX)
    scores_by_user = _grouped(top, s.SCORE)
    excluded_by_user = _grouped(exclude, s.ITEM_IDX) if exclude is not None else {}
    empty_items, empty_scores = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    parts_user, parts_item, parts_score, parts_rank = [], [], [], []
    for user in np.asarray(users, dtype=np.int64):
        items = items_by_user.get(int(user), empty_items)
        scores = scores_by_user.get(int(user), empty_scores)
        if len(items) < k:
            items, scores = fallback.top_up(items, scores, k, exclude=excluded_by_user.get(int(user)))
        parts_user.append(np.full(len(items), user, dtype=np.int64))
        parts_item.append(np.asarray(items, dtype=np.int64))
        parts_score.append(np.asarray(scores, dtype=np.float64))
        parts_rank.append(np.arange(1, len(items) + 1, dtype=np.int64))
    if not parts_user:
        return pd.DataFrame({c: pd.Series(dtype=np.float64 if c == s.SCORE else np.int64)
                             for c in LIST_COLUMNS})
    return pd.DataFrame({
        s.USER_IDX: np.concatenate(parts_user), s.RANK: np.concatenate(parts_rank),
        s.ITEM_IDX: np.concatenate(parts_item), s.SCORE: np.concatenate(parts_score),
    })


def popular_lists(users: np.ndarray, fallback: PopularFallback, k: int, *,
                  exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """The same popular list for everyone (minus a user's excluded items)."""
    empty = pd.DataFrame({s.USER_IDX: pd.Series(dtype=np.int64), s.ITEM_IDX: pd.Series(dtype=np.int64),
                          s.SCORE: pd.Series(dtype=np.float64)})
    lists = ranked_lists(empty, [], [], users, fallback, k, exclude=exclude)
    # Popular items score by their buyers count (not NaN): here popular IS the recommender.
    score_of = pd.Series(fallback.scores, index=fallback.item_idx)
    lists[s.SCORE] = lists[s.ITEM_IDX].map(score_of).astype(np.float64)
    return lists


def repurchase_lists(users: np.ndarray, user_item: pd.DataFrame, fallback: PopularFallback, k: int, *,
                     exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """The user's own bought items by distinct purchase days desc, ties by recency (days since last
    event asc); score = purchase days."""
    bought = user_item.loc[user_item[s.UI_PURCHASE_DAYS].fillna(0) > 0,
                           [s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST]]
    pool = bought.assign(**{s.SCORE: bought[s.UI_PURCHASE_DAYS].astype(np.float64)})
    return ranked_lists(pool, [s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST], [False, True], users, fallback, k,
                        exclude=exclude)


def als_lists(users: np.ndarray, candidates: pd.DataFrame, fallback: PopularFallback, k: int, *,
              exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """ALS candidates in ALS score order (als_rank asc); score = als_score."""
    ranked = candidates[s.FROM_ALS].fillna(False).astype(bool) & (candidates[s.ALS_RANK] > 0)
    from_als = candidates.loc[ranked, [s.USER_IDX, s.ITEM_IDX, s.ALS_RANK, s.ALS_SCORE]]
    pool = from_als.assign(**{s.SCORE: from_als[s.ALS_SCORE].astype(np.float64)})
    return ranked_lists(pool, [s.ALS_RANK], [True], users, fallback, k, exclude=exclude)


def scored_lists(users: np.ndarray, scored: pd.DataFrame, fallback: PopularFallback, k: int, *,
                 exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """(user_idx, item_idx, score) rows by score desc, ties item_idx asc: tifu_knn's and itemknn's lists."""
    return ranked_lists(scored[[s.USER_IDX, s.ITEM_IDX, s.SCORE]], [s.SCORE], [False], users, fallback, k,
                        exclude=exclude)


def two_stage_lists(users: np.ndarray, scored: pd.DataFrame, fallback: PopularFallback, k: int, *,
                    exclude: pd.DataFrame | None = None) -> pd.DataFrame:
    """All candidates by the ranker's score desc, ties item_idx asc (= :func:`rank_top_k`)."""
    return scored_lists(users, scored, fallback, k, exclude=exclude)


def with_cold_policy(lists: pd.DataFrame, cold_lists: pd.DataFrame) -> pd.DataFrame:
    """Warm users' lists plus the popular lists of cold users."""
    return pd.concat([lists, cold_lists], ignore_index=True)
