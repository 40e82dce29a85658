"""Candidate recall (EVALUATION.md): recall of the whole candidate list against the user's distinct
target items, averaged over the evaluated users (a user with no candidates counts as 0)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components import schema as s


def candidate_recall(candidates: pd.DataFrame, targets: pd.DataFrame, users: np.ndarray | None = None) -> float:
    """Mean over ``users`` (default: every user with a target) of |candidates ∩ targets| / |targets|."""
    truth = targets[[s.USER_IDX, s.ITEM_IDX]].drop_duplicates()
    if users is not None:
        truth = truth[truth[s.USER_IDX].isin(np.asarray(users))]
    if truth.empty:
        return float("nan")
    hits = truth.merge(candidates[[s.USER_IDX, s.ITEM_IDX]].drop_duplicates(), on=[s.USER_IDX, s.ITEM_IDX])
    per_user = (hits.groupby(s.USER_IDX).size()
                .reindex(truth[s.USER_IDX].unique(), fill_value=0)
                / truth.groupby(s.USER_IDX).size())
    return float(per_user.mean())
