"""The union of the generators' lists: cap, priority, flags and scores (single-machine)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.candidates import generate
from components.candidates.base import RANK, SCORE, FoldTables
from components.candidates.generate import generate_local
from components.candidates.union import CANDIDATE_COLUMNS, Fusion, union_candidates
from components.config import AlsConfig, CandidateConfig
from tests.test_candidates_fixtures import fold_tables, shop_events, windows


def recs(user: int, items: list[int], scores: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({
        s.USER_IDX: user, s.ITEM_IDX: items,
        SCORE: scores if scores is not None else [10.0 - k for k in range(len(items))],
        RANK: np.arange(1, len(items) + 1)})


def fusion(cap: int = 200, **weights: float) -> Fusion:
    names = ("als", "history", "cooc", "popular")
    return Fusion(top_n=dict.fromkeys(names, 100), weights={n: weights.get(n, 1.0) for n in names},
                  rrf_k=1.0, max_per_user=cap)


def test_union_flags_scores_and_columns() -> None:
    lists = {
        "als": recs(0, [1, 2, 3], [0.9, 0.8, 0.7]),
        "history": recs(0, [3, 4]),
        "cooc": recs(0, [2, 5], [0.4, 0.2]),
        "popular": recs(0, [1, 6]),
    }
    out = union_candidates(lists, fusion()).set_index(s.ITEM_IDX)
    assert tuple(out.reset_index().columns) == (s.ITEM_IDX, *[c for c in CANDIDATE_COLUMNS if c != s.ITEM_IDX])
    assert sorted(out.index) == [1, 2, 3, 4, 5, 6]
    assert out.loc[3, s.FROM_ALS] and out.loc[3, s.FROM_HISTORY] and not out.loc[3, s.FROM_COOC]
    assert out.loc[3, s.ALS_RANK] == 3 and out.loc[3, s.ALS_SCORE] == pytest.approx(0.7)
    assert np.isnan(out.loc[4, s.ALS_SCORE]) and out.loc[4, s.ALS_RANK] == 0
    assert out.loc[5, s.COOC_SCORE] == pytest.approx(0.2) and out.loc[1, s.COOC_SCORE] == 0.0
    assert out.loc[6, s.FROM_POPULAR] and not out.loc[6, [s.FROM_ALS, s.FROM_HISTORY, s.FROM_COOC]].any()
    assert out[list(s.CANDIDATE_SOURCE_COLUMNS)].to_numpy().any(axis=1).all()  # every row has a source


def test_cap_keeps_the_highest_priorities() -> None:
    # rrf_k=1: priority = sum of 1/(1+rank). Item 1 is first in two lists, item 9 is last of one.
    lists = {"als": recs(0, [1, 2, 3, 9]), "history": recs(0, [1, 4]), "popular": recs(0, [5, 6])}
    out = union_candidates(lists, fusion(cap=4))
    assert out[s.ITEM_IDX].tolist() == [1, 5, 2, 4]  # 1/2+1/2, 1/2, then 1/3 twice: smaller item first
    assert len(out) == 4


def test_weights_change_which_source_wins_the_cap() -> None:
    lists = {"als": recs(0, [1, 2, 3]), "popular": recs(0, [7, 8, 9])}
    assert set(union_candidates(lists, fusion(cap=3, popular=3.0))[s.ITEM_IDX]) == {7, 8, 9}
    assert set(union_candidates(lists, fusion(cap=3, als=3.0))[s.ITEM_IDX]) == {1, 2, 3}


def test_top_n_per_source_is_applied_before_fusing() -> None:
    lists = {"als": recs(0, [1, 2, 3, 4])}
    short = Fusion(top_n={"als": 2}, weights={"als": 1.0}, rrf_k=60.0, max_per_user=200)
    assert union_candidates(lists, short)[s.ITEM_IDX].tolist() == [1, 2]


def test_users_are_capped_independently() -> None:
    lists = {"als": pd.concat([recs(0, list(range(10))), recs(1, [3, 4])])}
    out = union_candidates(lists, fusion(cap=5))
    assert out.groupby(s.USER_IDX).size().to_dict() == {0: 5, 1: 2}


def test_unknown_generator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown candidate generator 'knn'"):
        union_candidates({"knn": recs(0, [1])}, fusion())


def _small_fold() -> tuple[FoldTables, np.ndarray, AlsConfig, CandidateConfig]:
    """40 users of the deterministic shop, with small ALS and generator settings (20 each, cap 25)."""
    events = shop_events()
    tables = fold_tables(events, windows(events)["label_start"], 30)
    cand = CandidateConfig(als_top_n=20, history_top_n=20, cooc_top_n=20, popular_top_n=20, max_per_user=25)
    return tables, np.arange(40), AlsConfig(factors=8, iterations=10), cand


def test_generate_local_respects_the_cap_and_is_deterministic() -> None:
    tables, users, als, cand = _small_fold()
    first = generate_local(tables, users, als, cand)
    again = generate_local(tables, users, als, cand)
    pd.testing.assert_frame_equal(first.candidates, again.candidates)
    per_user = first.candidates.groupby(s.USER_IDX).size()
    assert per_user.max() == 25 and not first.candidates.duplicated([s.USER_IDX, s.ITEM_IDX]).any()
    # Every known user gets candidates; a user with no history still gets the popular ones.
    assert set(per_user.index) == set(users)


def test_generate_local_fuses_chunks_of_users_exactly_like_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """At scale the proposals are fused a chunk of users at a time; the candidates must not change."""
    tables, users, als, cand = _small_fold()
    whole = generate_local(tables, users, als, cand)
    monkeypatch.setattr(generate, "MAX_PROPOSALS_PER_CHUNK", 7 * 80)  # 7 users per chunk
    fused_users: list[int] = []

    def counting_union(lists: dict[str, pd.DataFrame], fusion: Fusion) -> pd.DataFrame:
        fused_users.append(lists["popular"][s.USER_IDX].nunique())  # popular proposes to every user
        return union_candidates(lists, fusion)

    monkeypatch.setattr(generate, "union_candidates", counting_union)
    chunked = generate_local(tables, users, als, cand)
    assert fused_users == [7] * 5 + [5]
    pd.testing.assert_frame_equal(chunked.candidates, whole.candidates)
