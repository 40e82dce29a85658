"""Per-request scoring: one loaded bundle laid out as flat numpy arrays, answering in well under a
millisecond. Nothing here touches pandas per request.

The ranking is the evaluation's ``two_stage`` policy, built from the ranker package's own pieces so the
two cannot drift: score the user's candidate rows with :meth:`Ranker.score_prepared`, order them with
:func:`rank_top_k`, top a short list up with :class:`PopularFallback`; users without candidate rows get
the popular list.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from components import schema as s
from components.bundle import Bundle
from components.errors import BundleError
from components.ranker.model import FeatureSpec, PopularFallback, PreparedFeatures, Ranker, rank_top_k
from components.serving.scoring import PooledScorer

log = logging.getLogger(__name__)

UNKNOWN_USER = "unknown_user"  # the id is not in the bundle's user map
NO_CANDIDATES = "no_candidates"  # a known user without candidate rows (no history before the cutoff)
FALLBACK_REASONS = (UNKNOWN_USER, NO_CANDIDATES)


class UnknownCategoryAttributeError(ValueError):
    """The request filters by category but the bundle's catalog has no category attribute."""


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    item_idx: np.ndarray  # int64, best first
    scores: np.ndarray  # float64; NaN for items the recommender did not score (top-up)
    fallback: str | None  # None, or one of FALLBACK_REASONS
    candidates_scored: int


class ServingModel:
    """An immutable, ready-to-serve bundle. The service swaps whole instances, never mutates one
    (except the served-items tally, which only feeds a gauge)."""

    def __init__(self, bundle: Bundle, ranker: Ranker, *, source: str, registry_version: int | None = None,
                 scoring_threads: int = 1) -> None:
        self.version = bundle.version
        self.group = str(bundle.manifest.get("group", ""))
        self.manifest = bundle.manifest
        self.source = source
        self.registry_version = registry_version
        self.loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.ranker = ranker
        self.scoring_threads = scoring_threads
        self.user_index: dict[str, int] = bundle.user_index
        self.item_index: dict[str, int] = bundle.item_index
        self.item_ids: list[str] = bundle.item_ids.tolist()  # list indexing beats numpy for a few items
        self.n_items = len(self.item_ids)
        self.offsets = np.asarray(bundle.candidate_offsets, dtype=np.int64)
        self.candidate_items = bundle.candidates[s.ITEM_IDX].to_numpy(dtype=np.int64)
        # The slow parts of scoring (column picking, dtype conversion, CatBoost Pools) are done once, here.
        self.prepared: PreparedFeatures | None = ranker.prepare(bundle.candidates)
        self.scorer = PooledScorer(ranker, self.prepared, self.offsets, thread_count=scoring_threads)
        self.popular = PopularFallback(item_idx=np.asarray(bundle.popular_items, dtype=np.int64),
                                       scores=np.asarray(bundle.popular_scores, dtype=np.float64))
        self.purchased_offsets = np.asarray(bundle.purchased_offsets, dtype=np.int64)
        self.purchased_items = np.asarray(bundle.purchased_items, dtype=np.int64)
        self.category_codes, self.category_index = _category_codes(bundle, self.n_items)
        self._served = np.zeros(self.n_items, dtype=bool)
        self.items_served = 0

    @property
    def n_users(self) -> int:
        return len(self.user_index)

    def candidate_count(self, user_idx: int) -> int:
        return int(self.offsets[user_idx + 1] - self.offsets[user_idx])

    def recommend(self, user_id: str, k: int, *, exclude_purchased: bool = False,
                  exclude: Sequence[str] = (), category: str | None = None) -> Recommendation:
        user_idx = self.user_index.get(user_id)
        blocked = self._blocked(user_idx, exclude_purchased, exclude, category)
        if user_idx is None or self.offsets[user_idx + 1] == self.offsets[user_idx]:
            reason = UNKNOWN_USER if user_idx is None else NO_CANDIDATES
            items, scores = self.popular.top(k, exclude=blocked)
            return self._done(Recommendation(user_id, items, scores, reason, 0))
        rows = slice(int(self.offsets[user_idx]), int(self.offsets[user_idx + 1]))
        candidates = self.candidate_items[rows]
        scores = self.scorer.score(user_idx)
        if blocked is not None:
            keep = ~np.isin(candidates, blocked)
            ranked = rank_top_k(candidates[keep], scores[keep], k)
        else:
            ranked = rank_top_k(candidates, scores, k)
        items, top_scores = self.popular.top_up(*ranked, k, exclude=blocked)
        return self._done(Recommendation(user_id, items, top_scores, None, len(candidates)))

    def _blocked(self, user_idx: int | None, exclude_purchased: bool, exclude: Sequence[str],
                 category: str | None) -> np.ndarray | None:
        """Item indices the filters rule out, or None when no filter applies (the parity path)."""
        parts: list[np.ndarray] = []
        if exclude:
            known = [self.item_index[i] for i in exclude if i in self.item_index]
            parts.append(np.asarray(known, dtype=np.int64))
        if exclude_purchased and user_idx is not None:
            start, stop = self.purchased_offsets[user_idx], self.purchased_offsets[user_idx + 1]
            parts.append(self.purchased_items[start:stop])
        if category is not None:
            if self.category_codes is None:
                raise UnknownCategoryAttributeError(
                    f"this model's catalog has no {s.ITEM_CATEGORY!r} attribute to filter on")
            code = self.category_index.get(category, -2)  # -2 matches no item: an empty answer, not an error
            parts.append(np.flatnonzero(self.category_codes != code))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _done(self, rec: Recommendation) -> Recommendation:
        fresh = ~self._served[rec.item_idx]
        if fresh.any():
            self._served[rec.item_idx] = True
            self.items_served += int(fresh.sum())
        return rec

    def to_payload(self, rec: Recommendation) -> dict[str, object]:
        ids = self.item_ids
        return {
            "user_id": rec.user_id,
            "model_version": self.version,
            "items": [{"item_id": ids[i], "score": None if math.isnan(v) else v}
                      for i, v in zip(rec.item_idx.tolist(), rec.scores.tolist(), strict=True)],
            "fallback": rec.fallback is not None,
            "fallback_reason": rec.fallback,
        }

    def smoke_check(self, n_users: int) -> None:
        """Score a spread of users and the fallback path; raise BundleError if anything is off (including
        pooled scores that differ from the ranker's own path). Also warms CatBoost's first-call paths before
        the model takes traffic. Frees the prepared rows afterwards: the Pools hold what scoring needs."""
        if len(self.popular.item_idx) == 0:
            raise BundleError(f"bundle {self.version}: empty popular list, cold users would get nothing")
        top_index = max(self.popular.item_idx.max(initial=-1), self.candidate_items.max(initial=-1))
        if top_index >= self.n_items:
            raise BundleError(f"bundle {self.version}: item index beyond the {self.n_items}-item map")
        with_rows = np.flatnonzero(np.diff(self.offsets) > 0)
        if len(with_rows) == 0:
            raise BundleError(f"bundle {self.version}: no user has candidate rows")
        user_ids = list(self.user_index)
        picks = with_rows[np.linspace(0, len(with_rows) - 1, min(n_users, len(with_rows))).astype(int)]
        for user_idx in picks:
            rows = slice(int(self.offsets[user_idx]), int(self.offsets[user_idx + 1]))
            scores = self.scorer.score(int(user_idx))
            if scores.shape != (rows.stop - rows.start,) or not np.all((scores >= 0) & (scores <= 1)):
                raise BundleError(f"bundle {self.version}: smoke scoring of user "
                                  f"{user_ids[user_idx]!r} gave invalid scores")
            rank_top_k(self.candidate_items[rows], scores, 10)
        if self.prepared is not None:
            self.scorer.check_against(self.ranker, self.prepared, self.offsets, picks)
            self.prepared = None
        self.popular.top(10)
        log.info("bundle %s: smoke scoring of %d users passed", self.version, min(n_users, len(with_rows)))


def _category_codes(bundle: Bundle, n_items: int) -> tuple[np.ndarray | None, dict[str, int]]:
    """Category per item_idx as int codes (-1 unknown) for a vectorised filter; None without the column."""
    items = bundle.items
    if s.ITEM_CATEGORY not in items.columns:
        return None, {}
    values = items[s.ITEM_CATEGORY].astype("string")
    names = sorted(set(values.dropna().tolist()))
    index = {name: code for code, name in enumerate(names)}
    codes = np.full(n_items, -1, dtype=np.int64)
    idx = items[s.ITEM_IDX].to_numpy(dtype=np.int64)
    codes[idx] = [index.get(v, -1) if isinstance(v, str) else -1 for v in values.tolist()]
    return codes, index


def build_serving_model(bundle: Bundle, *, source: str, registry_version: int | None = None,
                        scoring_threads: int = 1, smoke_users: int = 16) -> ServingModel:
    """Load the bundle's CatBoost model with its feature spec and check it end to end."""
    try:
        spec = FeatureSpec.from_dict(bundle.manifest["feature_spec"])
        ranker = Ranker.load(bundle.model_path, spec=spec)
        model = ServingModel(bundle, ranker, source=source, registry_version=registry_version,
                             scoring_threads=scoring_threads)
    except (KeyError, ValueError, FileNotFoundError, OSError) as error:
        raise BundleError(
            f"bundle {source}: cannot prepare the ranker ({type(error).__name__}: {error})") from error
    except Exception as error:  # CatBoostError and friends: any failure here means "refuse this bundle"
        raise BundleError(
            f"bundle {source}: model does not load ({type(error).__name__}: {error})") from error
    model.smoke_check(smoke_users)
    return model
