"""One loaded bundle laid out as flat numpy arrays, answering in well under a millisecond. Nothing here
touches pandas or CatBoost per request.

The ranking is the evaluation's ``two_stage`` policy, built from the ranker package's own pieces so the
two cannot drift: every candidate row is scored once at load with :meth:`Ranker.score` (the bundle's
feature values are a static snapshot, so scoring them per request would give the same numbers at a cost),
part by part so the feature columns are never all in memory; a request orders the user's (item, score)
slice with :func:`rank_top_k` and tops a short list up with :class:`PopularFallback`; users without
candidate rows get the popular list.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from components import schema as s
from components.bundle import Bundle
from components.errors import BundleError
from components.ranker.model import FeatureSpec, PopularFallback, Ranker, rank_top_k

log = logging.getLogger(__name__)

UNKNOWN_USER = "unknown_user"  # the id is not in the bundle's user map
NO_CANDIDATES = "no_candidates"  # a known user without candidate rows (no history before the cutoff)
FALLBACK_REASONS = (UNKNOWN_USER, NO_CANDIDATES)
# Rows scored per CatBoost call at load. CatBoost's working memory grows with the call and the process
# keeps it afterwards: on the Online Retail bundle (parts of 500,000 rows) the service's peak RSS while
# loading is 0.56 GB with 50,000-row calls vs 0.90 GB with whole parts, its RSS once loaded 0.30 vs 0.47 GB.
LOAD_SCORE_ROWS: Final = 50_000


class UnknownCategoryAttributeError(ValueError):
    """The request filters by category but the bundle's catalog has no category attribute."""


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    item_idx: np.ndarray  # int64, best first
    scores: np.ndarray  # float64; NaN for items the recommender did not score (top-up)
    fallback: str | None  # None, or one of FALLBACK_REASONS
    candidates_considered: int  # the user's candidate rows, ranked on their load-time scores


@dataclass(frozen=True)
class ScoredCandidates:
    """Every candidate row's item and ranker score, grouped by user: user u's rows are
    ``items[offsets[u]:offsets[u + 1]]`` (ascending item_idx, as in the bundle)."""

    offsets: np.ndarray  # int64, n_users + 1
    items: np.ndarray  # int32 item_idx
    scores: np.ndarray  # float64 P(purchase): the evaluation ranks on float64, parity needs the same bits


def _check_users(n_users: int, count: int) -> list[int]:
    """User indices spread over 0..n_users-1; each stands for the first user at or after it with rows."""
    return sorted({int(u) for u in np.linspace(0, n_users - 1, min(count, n_users)).astype(np.int64)})


def score_candidates(bundle: Bundle, ranker: Ranker, *, thread_count: int = 1,
                     check_users: int = 16) -> ScoredCandidates:
    """Score every candidate row once, one bundle part at a time, keeping (item_idx, score) only.

    Raises BundleError when a score is not a finite number in [0, 1] or when, for a spread of
    ``check_users`` users, scoring the user's rows alone (``score_prepared(prepare(rows))``, one thread)
    does not give bit-identical scores to the batch: CatBoost scores rows independently, and this proves
    it for the bundle at hand."""
    n_users = bundle.n_users
    total = bundle.candidate_row_count
    counts = np.zeros(n_users, dtype=np.int64)
    items = np.empty(total, dtype=np.int32)
    scores = np.empty(total, dtype=np.float64)
    pending = _check_users(n_users, check_users)
    filled = 0
    for frame in bundle.iter_candidate_parts():
        if frame.empty:
            continue
        stop = filled + len(frame)
        if stop > total:
            raise BundleError(f"bundle {bundle.version}: candidate parts hold more rows than their footers say")
        users = frame[s.USER_IDX].to_numpy(np.int64, copy=True)  # copies: no view keeps the part alive
        part_scores = ranker.score(frame, thread_count=thread_count, batch_rows=LOAD_SCORE_ROWS)
        valid = np.isfinite(part_scores) & (part_scores >= 0) & (part_scores <= 1)
        if not valid.all():
            bad = int(np.argmin(valid))
            raise BundleError(f"bundle {bundle.version}: the ranker scored a candidate of user "
                              f"{bundle.user_ids[users[bad]]!r} {part_scores[bad]!r}, not a probability")
        last = int(users[-1])
        while pending and pending[0] <= last:
            user = int(users[np.searchsorted(users, pending[0])])  # the first user at or after the target
            pending = [p for p in pending if p > user]
            rows = slice(int(np.searchsorted(users, user)), int(np.searchsorted(users, user, side="right")))
            alone = ranker.score_prepared(ranker.prepare(frame.iloc[rows]), thread_count=1)
            if not np.array_equal(alone, part_scores[rows]):
                raise BundleError(f"bundle {bundle.version}: user {bundle.user_ids[user]!r}'s scores differ "
                                  f"between batch scoring and scoring the user's rows alone")
        counts += np.bincount(users, minlength=n_users)
        items[filled:stop] = frame[s.ITEM_IDX].to_numpy()
        scores[filled:stop] = part_scores
        filled = stop
        del frame  # the next part is read with this one's features freed
    if filled != total:
        raise BundleError(f"bundle {bundle.version}: candidate parts hold {filled} rows, their footers {total}")
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return ScoredCandidates(offsets=offsets, items=items, scores=scores)


class ServingModel:
    """An immutable, ready-to-serve bundle. The service swaps whole instances, never mutates one
    (except the served-items tally, which only feeds a gauge)."""

    def __init__(self, bundle: Bundle, scored: ScoredCandidates, *, source: str,
                 registry_version: int | None = None) -> None:
        self.version = bundle.version
        self.group = str(bundle.manifest.get("group", ""))
        self.manifest = bundle.manifest
        self.source = source
        self.registry_version = registry_version
        self.loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.user_index: dict[str, int] = bundle.user_index
        self.item_index: dict[str, int] = bundle.item_index
        self.item_ids: list[str] = bundle.item_ids.tolist()  # list indexing beats numpy for a few items
        self.n_items = len(self.item_ids)
        self.offsets = scored.offsets
        self.candidate_items = scored.items
        self.candidate_scores = scored.scores
        self.popular = PopularFallback(item_idx=np.asarray(bundle.popular_items, dtype=np.int64),
                                       scores=np.asarray(bundle.popular_scores, dtype=np.float64))
        self.purchased_offsets = np.asarray(bundle.purchased_offsets, dtype=np.int64)
        self.purchased_items = np.asarray(bundle.purchased_items, dtype=np.int64)
        self.category_codes, self.category_index = _category_codes(bundle, self.n_items)
        self._served = np.zeros(self.n_items, dtype=bool)
        self.items_served = 0
        # Real time (components/realtime): the ranker and the candidates' feature rows, kept only when the
        # service takes events (build_serving_model's feature_dir), for per-request scoring.
        self.ranker: Ranker | None = None
        self.feature_rows: Any = None  # components.realtime.rows.FeatureRows
        self.user_history: Any = None  # components.realtime.features.UserHistory (a bundle with history/)
        self.fresh_sources: Any = None  # components.realtime.candidates.FreshSources (None: bundle rows only)

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
        scores = self.candidate_scores[rows]
        items, top_scores = self.top_k(candidates, scores, k, blocked)
        return self._done(Recommendation(user_id, items, top_scores, None, len(candidates)))

    def top_k(self, items: np.ndarray, scores: np.ndarray, k: int, blocked: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """The k best of ``items`` not in ``blocked``, topped up from the popular list (blocked items never)."""
        if blocked is not None:
            keep = ~np.isin(items, blocked)
            items, scores = items[keep], scores[keep]
        return self.popular.top_up(*rank_top_k(items, scores, k), k, exclude=blocked)

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

    def smoke_check(self) -> None:
        """Raise BundleError if the model could not answer: no popular list for cold users, an item index
        outside the item map, no user with a personal list. The scores themselves were checked as they
        were computed (:func:`score_candidates`)."""
        if len(self.popular.item_idx) == 0:
            raise BundleError(f"bundle {self.version}: empty popular list, cold users would get nothing")
        indices = (self.popular.item_idx, self.candidate_items)
        if any(i.min(initial=0) < 0 or i.max(initial=-1) >= self.n_items for i in indices):
            raise BundleError(f"bundle {self.version}: item index beyond the {self.n_items}-item map")
        if self.offsets[-1] == 0:
            raise BundleError(f"bundle {self.version}: no user has candidate rows")
        log.info("bundle %s: %d candidates of %d users scored and checked", self.version, self.offsets[-1],
                 int(np.count_nonzero(np.diff(self.offsets))))


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
                        scoring_threads: int = 1, smoke_users: int = 16,
                        feature_dir: Path | None = None) -> ServingModel:
    """Load the bundle's CatBoost model with its feature spec, score every candidate with it (then drop
    the model: requests do not need it) and check the result end to end."""
    try:
        spec = FeatureSpec.from_dict(bundle.manifest["feature_spec"])
        ranker = Ranker.load(bundle.model_path, spec=spec)
        scored = score_candidates(bundle, ranker, thread_count=scoring_threads, check_users=smoke_users)
    except BundleError:
        raise
    except (KeyError, ValueError, FileNotFoundError, OSError) as error:
        raise BundleError(
            f"bundle {source}: cannot prepare the ranker ({type(error).__name__}: {error})") from error
    except Exception as error:  # CatBoostError and friends: any failure here means "refuse this bundle"
        raise BundleError(
            f"bundle {source}: model does not load ({type(error).__name__}: {error})") from error
    model = ServingModel(bundle, scored, source=source, registry_version=registry_version)
    model.smoke_check()
    if feature_dir is not None:  # real time: keep what per-request scoring needs
        from components.realtime.candidates import FreshSources
        from components.realtime.features import UserHistory
        from components.realtime.rows import FeatureRows

        model.ranker = ranker
        model.user_history = UserHistory.load(bundle)
        # one copy per worker process (each loads the bundle itself) and per load: a reload of the served
        # version (the same content registered again) must not rewrite the files the served model reads
        # (its memory-mapped user factors would be truncated under it: SIGBUS); FeatureRows.write prunes it
        folder = feature_dir / f"{model.version}.{time.time_ns()}-{os.getpid()}"
        model.feature_rows = FeatureRows.write(bundle, folder)
        model.fresh_sources = FreshSources.load(bundle, model.user_history, folder / "fresh")
    return model
