"""Per-request scoring with CatBoost Pools built once per user at load time.

``Ranker.score_prepared`` builds a CatBoost Pool from the user's rows on every call; that construction
costs about twice the model evaluation itself for ~200 rows. Serving scores the same rows of the same
users again and again, so each user's Pool is built once when the bundle loads (~1 s and ~50 MB for
Online Retail) and every request evaluates the model on it: the real model, per request, on the bundle's
feature values. The load-time check (``check_against``) proves bit-identical scores with the ranker's own
path, or the bundle is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from components.errors import BundleError
from components.ranker.model import PreparedFeatures, Ranker


def _probability(raw: np.ndarray) -> np.ndarray:
    """The ranker's P(purchase) from CatBoost's raw score (same formula as components.ranker.model)."""
    return 1.0 / (1.0 + np.exp(-raw))


class PooledScorer:
    def __init__(self, ranker: Ranker, prepared: PreparedFeatures, offsets: np.ndarray, *,
                 thread_count: int = 1) -> None:
        from catboost import FeaturesData, Pool

        spec = ranker.spec
        if spec is None:
            raise BundleError("the ranker has no feature spec; cannot lay out scoring rows")
        self._model = ranker.model
        self._thread_count = thread_count
        self._pools: list[object | None] = [None] * (len(offsets) - 1)
        cat_positions = spec.categorical_positions
        for user_idx in np.flatnonzero(np.diff(offsets) > 0):
            rows = slice(int(offsets[user_idx]), int(offsets[user_idx + 1]))
            numeric = np.ascontiguousarray(prepared.numeric[rows], dtype=np.float32)
            if spec.numeric_first:
                categorical = np.ascontiguousarray(prepared.categorical[rows]) if spec.categorical else None
                pool = Pool(FeaturesData(num_feature_data=numeric, cat_feature_data=categorical), thread_count=1)
            else:  # the spec interleaves categoricals: one object matrix in spec order
                matrix = Ranker._object_matrix(spec, numeric, prepared.categorical[rows])
                pool = Pool(matrix, cat_features=cat_positions or None, thread_count=1)
            self._pools[int(user_idx)] = pool

    def score(self, user_idx: int) -> np.ndarray:
        """P(purchase) of the user's candidate rows, in row order."""
        pool = self._pools[user_idx]
        if pool is None:
            return np.empty(0, dtype=np.float64)
        raw = self._model.predict(pool, prediction_type="RawFormulaVal",  # type: ignore[attr-defined]
                                  thread_count=self._thread_count)
        return _probability(np.asarray(raw, dtype=np.float64))

    def check_against(self, ranker: Ranker, prepared: PreparedFeatures, offsets: np.ndarray,
                      users: Iterable[int]) -> None:
        """Raise BundleError unless the pooled scores equal ``ranker.score_prepared`` bit for bit."""
        for user_idx in users:
            rows = slice(int(offsets[user_idx]), int(offsets[user_idx + 1]))
            expected = ranker.score_prepared(prepared, rows, thread_count=1)
            if not np.array_equal(self.score(int(user_idx)), expected):
                raise BundleError(f"pooled scoring of user_idx {user_idx} differs from the ranker's scores")
