"""Candidates from a user's fresh events (REALTIME.md): the user's bundle candidates plus (a) the items of
their events since the cutoff, (b) those items' co-occurrence neighbours and, for a user without an ALS factor
at the cutoff (unknown to the bundle, or in its id map with no event before the cutoff), (c) ALS fold-in and
the popular items every batch user gets.

One mechanism for every row of a fresh answer (:meth:`FreshSources.columns_as_of`): the candidate set's
generator columns as of t, then every ranker feature of every row, bundle rows and new pairs alike, by the
ranker's own :func:`components.ranker.features.build_features` over the user's ETL tables at t, which
components/realtime/features.py rebuilds from the bundle's ``history/`` plus the fresh events
(:func:`~components.realtime.features.user_state`): a new pair the user touched before the cutoff gets its
exact user-item features, and the within-candidates ranks and history statistics cover the whole set.

Generator columns as of t (the models stay at the cutoff, the user's side moves), as the batch steps
compute them from the user's user-item table at t:
- ``als_score`` / ``als_rank`` / ``from_als``: the dot product of the user's factor with each item's, the
  item's rank among every item ALS saw; proposed (from_als) within the batch's ``als_top_n``, else NaN / 0 as
  in the union (components/candidates/union.py). A known user's factor and bundle rows keep the bundle's; a
  new user's factor is folded in from their items by implicit's own normal equations (:func:`fold_in`,
  confidence alpha * f(ui_weight) * recency as components/candidates/als.py; tests/test_realtime_candidates.py
  checks it against implicit's recalculate_user).
- ``cooc_score`` / ``from_cooc``: components/candidates/cooc.py's score, sum over the user's interactions a
  (ui_weight > 0) of 0.5 ** (ui_days_since_last / half-life) * sim(a, b), over the bundle's neighbour table
  (the candidates step's own top neighbours); proposed within the batch's ``cooc_top_n``.
- ``from_history``: within ``history_top_n`` of history.py's order (purchase days, recency, item);
  ``from_popular``: in the bundle's popular list within ``popular_top_n``.
Not computed online: TIFU-KNN's pair scores (off by default) of new pairs are 0.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from components import schema as s
from components.errors import BundleError
from components.ranker.features import MISSING_SCORE, RANK_SENTINEL, Columns, FeatureColumns
from components.realtime.features import UserHistory, feature_columns_of, user_state
from components.realtime.store import StoredEvent

if TYPE_CHECKING:
    from components.bundle import Bundle

# How many candidates fresh events add (fixed by reasoning, not tuned on any window): the neighbours are
# the cooc_top_n (100, the batch's own co-occurrence list length) best by the fresh items' share of the
# cooc score; a new user also gets the ALS fold-in's and the popular list's first NEW_USER_LIST items,
# so their ~300 rows match a batch user's ~200 fused rows plus their fresh items and neighbours.
NEW_USER_LIST: Final = 100
FRESH_ITEMS_MAX: Final = 100  # the most recent distinct fresh items taken as candidates (the store keeps 500 events)


@dataclass(frozen=True)
class Settings:
    """manifest["realtime"]: how the candidates and ALS steps made this bundle's candidates."""

    candidates: dict[str, Any]
    als: dict[str, Any]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Settings | None:
        data = manifest.get("realtime")
        if not isinstance(data, dict):
            return None
        return cls(candidates=dict(data["candidates"]), als=dict(data["als"]))


def recency(days: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """components/candidates/cooc.py's recency_weight (the inference image carries no candidates package)."""
    if half_life_days is None:
        return np.ones(len(days))
    return np.power(0.5, np.maximum(np.nan_to_num(np.asarray(days, np.float64), nan=0.0), 0.0) / half_life_days)


def fold_in(item_factors: np.ndarray, gram: np.ndarray, items: np.ndarray, confidence: np.ndarray,
            regularization: float) -> np.ndarray:
    """A user's ALS factor from their items' confidences (alpha * value), the item factors fixed: implicit's
    normal equations (implicit/cpu/als.py, user_linear_equation: (YtY + reg I + sum (c - 1) y y^T) x =
    sum c y). ``gram`` = Y^T Y."""
    y = item_factors[items].astype(np.float64)
    a = gram + regularization * np.eye(gram.shape[0]) + (y.T * (confidence - 1.0)) @ y
    b = (confidence[:, None] * y).sum(axis=0)
    return np.linalg.solve(a, b)


class FreshSources:
    """What the bundle carries for candidates from fresh events, laid out for requests."""

    def __init__(self, bundle: Bundle, settings: Settings, history: UserHistory, folder: Path) -> None:
        self.settings = settings
        self.history = history
        n_items = len(bundle.item_ids)
        self.item_factors = np.asarray(bundle.item_factors, dtype=np.float32)
        self.als_items = np.flatnonzero(np.abs(self.item_factors).sum(axis=1) > 0)  # the items ALS fitted
        self.als_factors = self.item_factors[self.als_items].astype(np.float64)  # scored per request: copied once
        self.gram = self.item_factors.astype(np.float64).T @ self.item_factors.astype(np.float64)
        # one user's factor per request: memory-mapped from this worker's copy (the bundle's folder goes)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle.root / s.BUNDLE_USER_FACTORS, folder / "user_factors.npy")
        self.user_factors = np.load(folder / "user_factors.npy", mmap_mode="r")
        neighbours = bundle.optional_table(s.BUNDLE_ITEM_NEIGHBOURS)
        assert neighbours is not None
        neighbours = neighbours.sort_values([s.ITEM_IDX, s.SIMILARITY], ascending=[True, False], kind="stable")
        owners = neighbours[s.ITEM_IDX].to_numpy(np.int64)
        if len(owners) and (owners.min() < 0 or owners.max() >= n_items):
            raise BundleError(f"{s.BUNDLE_ITEM_NEIGHBOURS}: an item_idx beyond the bundle's {n_items}-item map")
        self.neighbour_offsets = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(owners, minlength=n_items), out=self.neighbour_offsets[1:])
        self.neighbour_items = neighbours[s.NEIGHBOUR_IDX].to_numpy(np.int64)
        self.neighbour_sims = neighbours[s.SIMILARITY].to_numpy(np.float64)
        popular_n = int(settings.candidates.get("popular_top_n", 0))
        self.popular = {int(i): rank for rank, i in enumerate(bundle.popular_items[:popular_n].tolist(), start=1)}
        self.popular_items = np.asarray(bundle.popular_items, dtype=np.int64)

    @classmethod
    def load(cls, bundle: Bundle, history: UserHistory | None, folder: Path) -> FreshSources | None:
        """None for a bundle without what fresh candidates need (the fold's history, the neighbours and the
        manifest's settings): its users with fresh events are re-scored on their bundle rows only. Raises
        BundleError on parts that do not fit the bundle (an index beyond its maps, a similarity that is not
        a finite number, missing settings)."""
        files = bundle.manifest.get("files", {})
        if history is None or "realtime" not in bundle.manifest or s.BUNDLE_ITEM_NEIGHBOURS not in files:
            return None
        try:
            settings = Settings.from_manifest(bundle.manifest)
            assert settings is not None
            sources = cls(bundle, settings, history, folder)
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise BundleError(f"bundle {bundle.version}: unusable real-time parts ({type(error).__name__}: "
                              f"{error})") from error
        if len(sources.neighbour_items) and (sources.neighbour_items.min() < 0
                                             or sources.neighbour_items.max() >= len(bundle.item_ids)):
            raise BundleError(f"item_neighbours: an index beyond the bundle's {len(bundle.item_ids)}-row map")
        if not np.isfinite(sources.neighbour_sims).all() or sources.item_factors.shape[0] != len(bundle.item_ids):
            raise BundleError("item_neighbours or item factors do not fit the bundle")
        return sources

    def cooc_scores(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """sum_a weights[a] * sim(a, b) for every item b (dense over the catalogue; summed in items' order)."""
        start, stop = self.neighbour_offsets[items], self.neighbour_offsets[items + 1]
        counts = stop - start
        rows = np.repeat(start - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        return np.bincount(self.neighbour_items[rows], weights=np.repeat(weights, counts) * self.neighbour_sims[rows],
                           minlength=len(self.neighbour_offsets) - 1)

    def known_factor(self, user_idx: int | None) -> np.ndarray | None:
        """The bundle's ALS factor of the user; None for a user ALS never saw: unknown to the bundle, or in
        its id map without an event before the cutoff (the map covers the whole log), both new users."""
        if user_idx is None or user_idx >= len(self.user_factors):
            return None
        factor = np.asarray(self.user_factors[user_idx], dtype=np.float64)
        return factor if factor.any() else None

    def user_factor(self, user_idx: int | None, ui: Columns) -> np.ndarray | None:
        """The bundle's factor of a known user; a new user's folded in from their user-item table at t
        (``ui``: confidence alpha * f(ui_weight) * recency, as the ALS step weighs an interaction); None
        when neither exists."""
        known = self.known_factor(user_idx)
        if known is not None:
            return known
        items = ui[s.ITEM_IDX].astype(np.int64)
        weight = ui[s.UI_WEIGHT].astype(np.float64)
        keep = (items >= 0) & (weight > 0)
        keep[keep] = np.abs(self.item_factors[items[keep]]).sum(axis=1) > 0
        if not keep.any():
            return None
        als = self.settings.als
        scaled = np.log1p(weight[keep]) if als.get("confidence", "log") == "log" else weight[keep]
        value = scaled * recency(ui[s.UI_DAYS_SINCE_LAST].astype(np.float64)[keep], als.get("recency_half_life_days"))
        return fold_in(self.item_factors, self.gram, items[keep], float(als["alpha"]) * value,
                       float(als["regularization"]))

    # ------------------------------------------------------------------ candidates and their rows
    def sources(self, user_idx: int | None, ui: Columns, events: Sequence[StoredEvent],
                item_index: dict[str, int], cutoff_us: int, at_us: int, existing: np.ndarray) -> Columns:
        """The candidate set's generator columns (user_idx, item_idx, als_score, als_rank, cooc_score,
        from_*) as of t from the user's user-item table at t (``ui``): the ``existing`` bundle items plus the
        fresh ones (see the module docstring)."""
        cfg = self.settings.candidates
        known = ui[s.ITEM_IDX] >= 0  # an item the bundle does not know has no neighbour or factor
        mine = {name: values[known] for name, values in ui.items()}
        my_items = mine[s.ITEM_IDX].astype(np.int64)
        days = mine[s.UI_DAYS_SINCE_LAST].astype(np.float64)
        weights = recency(days, cfg.get("cooc_half_life_days"))
        interacted = mine[s.UI_WEIGHT].astype(np.float64) > 0  # the ETL's interactions table
        cooc = self.cooc_scores(my_items[interacted], weights[interacted])
        cooc_top = _top(cooc, int(cfg["cooc_top_n"]), positive=True)
        fresh_items = _recent_items(events, item_index, cutoff_us, at_us)[:FRESH_ITEMS_MAX]
        fresh_weights = weights[_positions(my_items, fresh_items)]
        neighbours = _top(self.cooc_scores(fresh_items, fresh_weights), int(cfg["cooc_top_n"]), positive=True)
        new = [fresh_items, neighbours]
        new_user = self.known_factor(user_idx) is None  # no factor at the cutoff: fold-in and popular as one
        factor = self.user_factor(user_idx, mine)
        als_rank = np.zeros(len(cooc), dtype=np.int64)
        als_score = np.full(len(cooc), np.nan)
        if factor is not None:
            scores = self.als_factors @ factor
            # best first, ties to the smaller item (als_items ascend: a stable sort keeps their order)
            order = np.argsort(-scores, kind="stable")[:int(cfg["als_top_n"])]
            als_rank[self.als_items[order]] = np.arange(1, len(order) + 1)
            als_score[self.als_items[order]] = scores[order]
            if new_user:
                new.append(self.als_items[order[:NEW_USER_LIST]])
        if new_user:
            new.append(self.popular_items[:NEW_USER_LIST])
        items = np.unique(np.concatenate([existing.astype(np.int64), *[np.asarray(n, np.int64) for n in new]]))
        # history.py's order at t: more purchase days, then more recent, then the smaller item
        purchase_days = mine[s.UI_PURCHASE_DAYS].astype(np.float64)
        order = np.lexsort((my_items, np.nan_to_num(days, nan=np.inf), -purchase_days))
        history_rank = np.zeros(len(cooc), dtype=np.int64)
        history_rank[my_items[order]] = np.arange(1, len(order) + 1)
        in_cooc = np.zeros(len(cooc), dtype=bool)
        in_cooc[cooc_top] = True
        return {
            s.USER_IDX: np.full(len(items), -1 if user_idx is None else user_idx, dtype=np.int64),
            s.ITEM_IDX: items,
            s.ALS_SCORE: als_score[items], s.ALS_RANK: als_rank[items],
            s.COOC_SCORE: np.where(in_cooc[items], cooc[items], 0.0),
            s.FROM_ALS: als_rank[items] > 0,
            s.FROM_HISTORY: (history_rank[items] > 0) & (history_rank[items] <= int(cfg["history_top_n"])),
            s.FROM_COOC: in_cooc[items],
            s.FROM_POPULAR: np.array([i in self.popular for i in items.tolist()], dtype=bool),
        }

    def candidates_as_of(self, user_idx: int | None, rows: pd.DataFrame, ui: Columns,
                         events: Sequence[StoredEvent], item_index: dict[str, int], cutoff_us: int, at_us: int, *,
                         extra: np.ndarray | None = None) -> Columns:
        """The candidate set's generator columns at t as the union step hands them to build_features (NaN
        ALS score and 0 rank when not from ALS): the bundle's ``rows`` of the user (their ALS columns and
        popular flag: the user's factor and the list are the bundle's) and the fresh candidates, from the
        user's user-item table at t (``ui``); ``extra`` items are candidates too (the parity tests' pairs)."""
        existing = rows[s.ITEM_IDX].to_numpy(np.int64) if len(rows) else np.zeros(0, dtype=np.int64)
        wanted = existing if extra is None else np.union1d(existing, extra)
        candidates = self.sources(user_idx, ui, events, item_index, cutoff_us, at_us, wanted)
        if len(existing):
            # the bundle rows hold build_features' stand-ins: back to the union's missing values
            position = np.searchsorted(candidates[s.ITEM_IDX], existing)
            score = rows[s.ALS_SCORE].to_numpy(np.float64)
            rank = rows[s.ALS_RANK].to_numpy(np.float64)
            bundle = {s.ALS_SCORE: np.where(score == MISSING_SCORE, np.nan, score),
                      s.ALS_RANK: np.where(rank >= RANK_SENTINEL, 0.0, rank),
                      s.FROM_ALS: rows[s.FROM_ALS].to_numpy(np.float64) > 0,
                      s.FROM_POPULAR: rows[s.FROM_POPULAR].to_numpy(np.float64) > 0}
            for name, values in bundle.items():
                column = candidates[name].astype(values.dtype)
                column[position] = values
                candidates[name] = column
        for name in s.TIFU_PAIR_COLUMNS:  # TIFU-KNN's pair scores (off by default): the bundle's, 0 for a new pair
            if name in self.history.spec.features:
                column = np.zeros(len(candidates[s.ITEM_IDX]))
                if len(existing) and name in rows.columns:
                    column[np.searchsorted(candidates[s.ITEM_IDX], existing)] = \
                        rows[name].to_numpy(np.float64)
                candidates[name] = column
        return candidates

    def columns_as_of(self, user_idx: int | None, rows: pd.DataFrame, events: Sequence[StoredEvent],
                      item_index: dict[str, int], cutoff_us: int, at_us: int, *,
                      extra: np.ndarray | None = None) -> FeatureColumns | None:
        """The user's candidate rows for a request at t (user_idx, item_idx + every spec feature, item_idx
        ascending): the bundle's ``rows`` of the user and the new pairs, every feature as of t (the module
        docstring); ``extra``: see :meth:`candidates_as_of`. None when the user has neither history nor
        fresh events."""
        state = user_state(self.history, user_idx, events, item_index=item_index, cutoff_us=cutoff_us, at_us=at_us)
        if state is None:
            return None
        candidates = self.candidates_as_of(user_idx, rows, state[1], events, item_index, cutoff_us, at_us,
                                           extra=extra)
        return feature_columns_of(candidates, state, self.history, attributes=rows if len(rows) else None, full=True)

    def rows_as_of(self, user_idx: int | None, rows: pd.DataFrame, events: Sequence[StoredEvent],
                   item_index: dict[str, int], cutoff_us: int, at_us: int, *,
                   extra: np.ndarray | None = None) -> pd.DataFrame | None:
        """:meth:`columns_as_of` as a frame."""
        built = self.columns_as_of(user_idx, rows, events, item_index, cutoff_us, at_us, extra=extra)
        return None if built is None else built.frame()


def _top(scores: np.ndarray, n: int, *, positive: bool) -> np.ndarray:
    """Indices of the n best scores, ties to the smaller index (the generators' order)."""
    candidates = np.flatnonzero(scores > 0) if positive else np.arange(len(scores))
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:n]]


def _positions(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    sorter = np.argsort(haystack)
    return sorter[np.searchsorted(haystack, needles, sorter=sorter)]


def _recent_items(events: Sequence[StoredEvent], item_index: dict[str, int], cutoff_us: int,
                  at_us: int) -> np.ndarray:
    """The distinct known items of the events in [cutoff, t), most recent first."""
    last: dict[int, int] = {}
    for e in events:
        item = item_index.get(e.item_id)
        if item is not None and cutoff_us <= e.timestamp_us < at_us:
            last[item] = max(last.get(item, e.timestamp_us), e.timestamp_us)
    return np.array(sorted(last, key=lambda i: (-last[i], i)), dtype=np.int64)
