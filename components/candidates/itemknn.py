"""Item-item nearest neighbours with BM25 weighting: implicit's ``BM25Recommender`` (implicit.nearest_neighbours),
fitted on the fold's interactions (user_idx, item_idx, weight: the user's history before the cut).

A user's score for item j is implicit's: Σ_i w_ui · sim(i, j) over the user's items i, i.e. the user's
interaction row times the model's item-item similarity matrix (``NearestNeighboursScorer``). We take that
product a chunk of users at a time so one pass gives both the plain lists (own items allowed, as the other
recommenders) and the lists with excluded pairs (EVALUATION.md's exclude_purchased view).
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


class ItemKnn:
    def __init__(self, interactions: pd.DataFrame, n_users: int, n_items: int, *, neighbours: int = K_NEIGHBOURS,
                 k1: float = BM25_K1, b: float = BM25_B) -> None:
        from implicit.nearest_neighbours import BM25Recommender

        positive = interactions.loc[interactions[s.WEIGHT] > 0]
        self.user_items = sp.csr_matrix(
            (positive[s.WEIGHT].to_numpy(np.float64),
             (positive[s.USER_IDX].to_numpy(np.int64), positive[s.ITEM_IDX].to_numpy(np.int64))),
            shape=(n_users, n_items))
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
