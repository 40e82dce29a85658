"""Item-item nearest neighbours with BM25 weighting: implicit's ``BM25Recommender`` (implicit.nearest_neighbours),
fitted on the fold's interactions (user_idx, item_idx, weight: the user's history before the cut).

A user's score for item j is implicit's: Σ_i w_ui · sim(i, j) over the user's items i, i.e. the user's
interaction row times the model's item-item similarity matrix (``NearestNeighboursScorer``). We take that
product a chunk of users at a time so one pass gives both the plain lists (own items allowed, as the other
recommenders) and the lists with excluded pairs (EVALUATION.md's exclude_purchased view).

The same score of given (user, item) pairs is a ranker feature (:func:`with_pair_scores`, ranker_data):
"items like the ones you bought" is what ranks items the user never bought (the exploration view).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from components import schema as s
from components.candidates.tifu import CHUNK_USERS, top_pairs

K_NEIGHBOURS = 20  # implicit's defaults: K=20 similar items per item, BM25 K1=1.2, B=0.75
BM25_K1 = 1.2
BM25_B = 0.75


def user_item_matrix(interactions: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """The (n_users x n_items) matrix of the positive interaction weights: what the model is fitted on and
    what a user's scores are taken from (any subset of users' rows gives those users' scores)."""
    positive = interactions.loc[interactions[s.WEIGHT] > 0]
    return sp.csr_matrix(
        (positive[s.WEIGHT].to_numpy(np.float64),
         (positive[s.USER_IDX].to_numpy(np.int64), positive[s.ITEM_IDX].to_numpy(np.int64))),
        shape=(n_users, n_items))


def pair_scores(similarity: sp.csr_matrix, user_items: sp.csr_matrix, users: np.ndarray,
                items: np.ndarray) -> np.ndarray:
    """Σ_i w_ui · sim(i, j) of each (user, item j) pair (the score :meth:`ItemKnn.recommend` ranks by; 0 when
    no item of the user is a neighbour of j), a chunk of users at a time as sparse rows."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    out = np.zeros(len(users), dtype=np.float64)
    unique, row = np.unique(users, return_inverse=True)
    for start in range(0, len(unique), CHUNK_USERS):
        pick = np.flatnonzero((row >= start) & (row < start + CHUNK_USERS))
        scores = (user_items[unique[start:start + CHUNK_USERS]] @ similarity).tocsr()
        out[pick] = np.asarray(scores[row[pick] - start, items[pick]], dtype=np.float64).ravel()
    return out


def with_pair_scores(candidates: pd.DataFrame, similarity: sp.csr_matrix, user_items: sp.csr_matrix) -> pd.DataFrame:
    """``candidates`` plus :data:`components.schema.ITEMKNN_PAIR_COLUMN` of each (user_idx, item_idx) row."""
    score = pair_scores(similarity, user_items, candidates[s.USER_IDX].to_numpy(), candidates[s.ITEM_IDX].to_numpy())
    return candidates.assign(**{s.ITEMKNN_PAIR_COLUMN: score})


class ItemKnn:
    def __init__(self, interactions: pd.DataFrame, n_users: int, n_items: int, *, neighbours: int = K_NEIGHBOURS,
                 k1: float = BM25_K1, b: float = BM25_B) -> None:
        from implicit.nearest_neighbours import BM25Recommender

        self.user_items = user_item_matrix(interactions, n_users, n_items)
        self.model = BM25Recommender(K=neighbours, K1=k1, B=b, num_threads=1)
        with warnings.catch_warnings():  # implicit converts its own BM25-weighted COO matrix and says so
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model.fit(self.user_items, show_progress=False)
        self.similarity: sp.csr_matrix = self.model.similarity.tocsr()

    def score_blocks(self, users: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        users = np.asarray(users, dtype=np.int64)
        for start in range(0, len(users), CHUNK_USERS):
            chunk = users[start:start + CHUNK_USERS]
            yield chunk, (self.user_items[chunk] @ self.similarity).toarray()

    def recommend(self, users: np.ndarray, n: int, *, exclude: sp.csr_matrix | None = None) -> pd.DataFrame:
        """user_idx, item_idx, score: each user's top ``n`` items with a positive score."""
        return top_pairs(self.score_blocks(users), n, exclude=exclude)
