"""Candidates from a user's fresh events (REALTIME.md): the bundle's candidate rows of the user plus
(a) the items of their events since the cutoff, (b) those items' co-occurrence neighbours and, for a user
the bundle does not know, (c) ALS fold-in (and the popular items every batch user gets), each new row built
with every feature the ranker uses, by the batch steps' own definitions.

Candidate-source features as of the request time t (the models stay at the cutoff, the user's side moves):
- ``als_score`` / ``als_rank`` / ``from_als``: the dot product of the user's factor with each item's, the
  item's rank among every item ALS saw; proposed (from_als) within the batch's ``als_top_n``, else NaN / 0 as
  in the union (components/candidates/union.py). A known user's factor is the bundle's; a new user's is
  folded in from their fresh items by implicit's own normal equations (:func:`fold_in`, the bundle's ALS
  regularisation and alpha; tests/test_realtime_candidates.py checks it against implicit's recalculate_user).
- ``cooc_score`` / ``from_cooc``: components/candidates/cooc.py's score, sum over the user's items a of
  0.5 ** (days since a / half-life) * sim(a, b), over the bundle's neighbour table (the candidates step's
  own top neighbours), with the user's items as of t (before the cutoff from the bundle's purchased
  table, shifted to t; the fresh items at their last event); proposed within the batch's ``cooc_top_n``.
- ``from_history``: the item is in the user's history as of t within ``history_top_n`` (history.py's
  order); ``from_popular``: in the bundle's popular list within ``popular_top_n``.
Every other feature of a new row comes from :func:`components.ranker.features.build_features` itself, fed
the user's features (a known user's from their bundle rows; none for a new user: the documented neutral
values), the bundle's item feature table, per-item statistics and user_category, and the user's purchases
before the cutoff; it is built once per (user, item) at the cutoff and kept. Per request, on the ranker's
numeric matrix of the whole new candidate set: the features ranked or compared within the user's
candidates (``x_cooc_rank``, ``x_pop_rank_in_user``, ``x_trend_rank_in_user``, ``x_als_score_gap``,
``x_n_sources``) and the history statistics of features.py's history_stats (``x_hist_rank``,
``x_recency_rank``, purchase shares, ``x_recency_rel``, ``x_orders_ago``, ``x_u_repeat_share``) over the
user's items as of t; then components/realtime/features.py moves the user-event features to t.
tests/test_realtime_candidates.py rebuilds half of each tiny-shop user's rows this way and compares them
with the batch pipeline's rows, feature by feature.

Not exact (documented in the README): a pair the user touched before the cutoff that is not among their
bundle rows gets only ui_purchase_days and ui_days_since_last (the bundle's purchased table), the rest
neutral; the user's items before the cutoff are their purchases (interactions without a purchase are not
in the bundle); a new user's ALS weight per item is the ETL's rule (one contribution per event type and UTC
day, purchases scaled by units; components/etl/weights.py); TIFU-KNN's pair scores (off by default) are 0.
"""

from __future__ import annotations

import math
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from components import schema as s
from components.errors import BundleError
from components.ranker.features import (
    ALS_SCORE_GAP,
    COOC_RANK,
    DAYS_SENTINEL,
    HIST_RANK,
    MISSING_SCORE,
    N_SOURCES,
    ORDERS_AGO,
    POP_RANK_IN_USER,
    RANK_SENTINEL,
    RECENCY_RANK,
    RECENCY_REL,
    TREND_RANK_IN_USER,
    U_REPEAT_SHARE,
    UI_PURCHASE_DAYS_REL,
    UI_PURCHASE_SHARE,
    build_features,
)
from components.ranker.model import FeatureSpec, PreparedFeatures
from components.realtime.store import DAY_US, StoredEvent

if TYPE_CHECKING:
    from components.bundle import Bundle

# How many candidates fresh events add (fixed by reasoning, not tuned on any window): the neighbours are
# the cooc_top_n (100, the batch's own co-occurrence list length) best by the fresh items' share of the
# cooc score; a new user also gets the ALS fold-in's and the popular list's first NEW_USER_LIST items,
# so their ~300 rows match a batch user's ~200 fused rows plus their fresh items and neighbours.
NEW_USER_LIST: Final = 100
BUILT_CACHE_USERS: Final = 2048  # users whose new rows at the cutoff are kept (a few hundred KB each at most)
FRESH_ITEMS_MAX: Final = 100  # the most recent distinct fresh items taken as candidates (the store keeps 500 events)
SOURCE_FLAGS: Final = s.CANDIDATE_SOURCE_COLUMNS


@dataclass(frozen=True)
class Settings:
    """manifest["realtime"]: how the batch steps made the candidates and features of this bundle."""

    feature_lists: dict[str, list[str]]
    horizon_days: float
    item_history_columns: list[str]
    candidates: dict[str, Any]
    als: dict[str, Any]
    etl_weights: dict[str, Any]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Settings | None:
        data = manifest.get("realtime")
        if not isinstance(data, dict):
            return None
        return cls(feature_lists={k: list(v) for k, v in data["feature_lists"].items()},
                   horizon_days=float(data["horizon_days"]), item_history_columns=list(data["item_history_columns"]),
                   candidates=dict(data["candidates"]), als=dict(data["als"]), etl_weights=dict(data.get("etl", {})))


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


def etl_weight(events: Sequence[StoredEvent], rules: dict[str, Any]) -> float:
    """One item's interaction weight by the ETL's rule (components/etl/weights.py): one contribution per
    (event type, UTC day), purchases and returns scaled by their units (log2(1 + min(q, cap)) or min(q, cap))."""
    weights = rules.get("event_weights") or {}
    days: dict[tuple[str, int], int] = {}
    for e in events:
        key = (e.event_type, e.timestamp_us // DAY_US)
        days[key] = days.get(key, 0) + max(int(e.quantity), 1)
    total = 0.0
    for (kind, _), units in days.items():
        scale = 1.0
        if kind in (s.PURCHASE, s.RETURN) and rules.get("purchase_weight_by_quantity", True):
            capped = min(units, int(rules.get("quantity_cap", 100)))
            scale = capped if rules.get("quantity_scale") == "linear" else math.log2(1.0 + capped)
        total += float(weights.get(kind, 0.0)) * scale
    return total


class FreshSources:
    """What the bundle carries for candidates from fresh events, laid out for requests."""

    def __init__(self, bundle: Bundle, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.spec = FeatureSpec.from_dict(bundle.manifest["feature_spec"])
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
        np.cumsum(np.bincount(neighbours[s.ITEM_IDX].to_numpy(np.int64), minlength=n_items),
                  out=self.neighbour_offsets[1:])
        self.neighbour_items = neighbours[s.NEIGHBOUR_IDX].to_numpy(np.int64)
        self.neighbour_sims = neighbours[s.SIMILARITY].to_numpy(np.float64)
        items = bundle.optional_table(s.BUNDLE_ITEM_FEATURES)
        assert items is not None
        history = settings.item_history_columns
        self.item_features = items.drop(columns=history)
        self.item_history = items[[s.ITEM_IDX, *history]].dropna(how="all", subset=history)
        popular_n = int(settings.candidates.get("popular_top_n", 0))
        self.popular = {int(i): rank for rank, i in enumerate(bundle.popular_items[:popular_n].tolist(), start=1)}
        self.popular_items = np.asarray(bundle.popular_items, dtype=np.int64)
        self._built_rows: OrderedDict[Hashable, Matrix] = OrderedDict()
        self._lock = threading.Lock()
        purchased = pd.read_parquet(bundle.root / s.BUNDLE_PURCHASED).sort_values([s.USER_IDX, s.ITEM_IDX],
                                                                                   kind="stable")
        self.purchased = purchased.reset_index(drop=True)  # user_idx, item_idx, ui_purchase_days, ui_days_since_last
        self.purchased_offsets = np.asarray(bundle.purchased_offsets, dtype=np.int64)
        shares = bundle.optional_table(s.BUNDLE_USER_CATEGORY)
        self.user_category = shares.reset_index(drop=True) if shares is not None else None
        if self.user_category is not None:
            self.user_category_offsets = np.zeros(len(bundle.user_ids) + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.user_category[s.USER_IDX].to_numpy(np.int64), minlength=len(bundle.user_ids)),
                      out=self.user_category_offsets[1:])

    @classmethod
    def load(cls, bundle: Bundle, folder: Path) -> FreshSources | None:
        """None for a bundle without what fresh candidates need (made before them): its users with fresh
        events are re-scored on their bundle rows only. Raises BundleError on parts that do not fit the
        bundle (an index beyond its maps, a similarity that is not a finite number, missing settings)."""
        files = bundle.manifest.get("files", {})
        if "realtime" not in bundle.manifest or s.BUNDLE_ITEM_NEIGHBOURS not in files \
                or s.BUNDLE_ITEM_FEATURES not in files:
            return None
        try:
            settings = Settings.from_manifest(bundle.manifest)
            assert settings is not None
            sources = cls(bundle, settings, folder)
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise BundleError(f"bundle {bundle.version}: unusable real-time parts ({type(error).__name__}: "
                              f"{error})") from error
        sources._check(len(bundle.item_ids), len(bundle.user_ids))
        return sources

    def _check(self, n_items: int, n_users: int) -> None:
        indices = [("item_neighbours", self.neighbour_items, n_items),
                   ("item_features", self.item_features[s.ITEM_IDX].to_numpy(np.int64), n_items)]
        if self.user_category is not None:
            indices.append(("user_category", self.user_category[s.USER_IDX].to_numpy(np.int64), n_users))
        for name, values, size in indices:
            if len(values) and (values.min() < 0 or values.max() >= size):
                raise BundleError(f"{name}: an index beyond the bundle's {size}-row map")
        if not np.isfinite(self.neighbour_sims).all() or self.item_factors.shape[0] != n_items:
            raise BundleError("item_neighbours or item factors do not fit the bundle")

    # ------------------------------------------------------------------ the user's side as of t
    def history(self, user_idx: int | None) -> pd.DataFrame:
        """The user's purchases before the cutoff (user_idx, item_idx, ui_purchase_days, ui_days_since_last)."""
        if user_idx is None:
            return self.purchased.iloc[0:0]
        return self.purchased.iloc[self.purchased_offsets[user_idx]:self.purchased_offsets[user_idx + 1]]

    def user_items_as_of(self, user_idx: int | None, events: Sequence[StoredEvent], item_index: dict[str, int],
                         cutoff_us: int, at_us: int) -> pd.DataFrame:
        """item_idx, days_since_last (as of t), purchase_days (distinct UTC days) of the user's items: before
        the cutoff (shifted to t) and from the fresh events in [cutoff, t)."""
        past = self.history(user_idx)
        shift = (at_us - cutoff_us) / DAY_US
        days = dict(zip(past[s.ITEM_IDX].tolist(), (past[s.UI_DAYS_SINCE_LAST].to_numpy(np.float64) + shift).tolist(),
                        strict=True))
        purchase = dict(zip(past[s.ITEM_IDX].tolist(), past[s.UI_PURCHASE_DAYS].to_numpy(np.float64).tolist(),
                            strict=True))
        new_days: dict[int, set[int]] = {}
        for e in events:
            item = item_index.get(e.item_id)
            if item is None or not cutoff_us <= e.timestamp_us < at_us:
                continue
            days[item] = min(days.get(item, math.inf), (at_us - e.timestamp_us) / DAY_US)
            if e.event_type == s.PURCHASE:
                new_days.setdefault(item, set()).add(e.timestamp_us // DAY_US)
            purchase.setdefault(item, 0.0)
        for item, added in new_days.items():
            purchase[item] += len(added)
        items = np.fromiter(days, dtype=np.int64, count=len(days))
        return pd.DataFrame({s.ITEM_IDX: items, "days": [days[i] for i in items.tolist()],
                             "purchase_days": [purchase[i] for i in items.tolist()]})

    def cooc_scores(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """sum_a weights[a] * sim(a, b) for every item b (dense over the catalogue)."""
        out = np.zeros(len(self.neighbour_offsets) - 1)
        for item, weight in zip(items.tolist(), weights.tolist(), strict=True):
            lo, hi = self.neighbour_offsets[item], self.neighbour_offsets[item + 1]
            np.add.at(out, self.neighbour_items[lo:hi], weight * self.neighbour_sims[lo:hi])
        return out

    def user_factor(self, user_idx: int | None, events: Sequence[StoredEvent], item_index: dict[str, int],
                    at_us: int) -> np.ndarray | None:
        """The bundle's factor of a known user; a new user's folded in from their fresh items (confidence
        alpha * f(weight) * recency, as the ALS step weighs an interaction); None when neither exists."""
        if user_idx is not None and user_idx < len(self.user_factors):
            factor = np.asarray(self.user_factors[user_idx], dtype=np.float64)
            return factor if factor.any() else None
        by_item: dict[int, list[StoredEvent]] = {}
        for e in events:
            item = item_index.get(e.item_id)
            if item is not None and e.timestamp_us < at_us and self.item_factors[item].any():
                by_item.setdefault(item, []).append(e)
        if not by_item:
            return None
        als = self.settings.als
        items = np.fromiter(by_item, dtype=np.int64, count=len(by_item))
        weight = np.array([etl_weight(by_item[i], self.settings.etl_weights) for i in items.tolist()])
        keep = weight > 0
        if not keep.any():
            return None
        items, weight = items[keep], weight[keep]
        last = np.array([max(e.timestamp_us for e in by_item[i]) for i in items.tolist()])
        scaled = np.log1p(weight) if als.get("confidence", "log") == "log" else weight
        value = scaled * recency((at_us - last) / DAY_US, als.get("recency_half_life_days"))
        return fold_in(self.item_factors, self.gram, items, float(als["alpha"]) * value, float(als["regularization"]))

    # ------------------------------------------------------------------ candidates and their rows
    def sources(self, user_idx: int | None, events: Sequence[StoredEvent], item_index: dict[str, int],
                cutoff_us: int, at_us: int, existing: np.ndarray) -> pd.DataFrame:
        """The new candidate set's source columns (user_idx, item_idx, als_score, als_rank, cooc_score,
        from_*) as of t: the ``existing`` bundle items plus the fresh ones (see the module docstring)."""
        cfg = self.settings.candidates
        mine = self.user_items_as_of(user_idx, events, item_index, cutoff_us, at_us)
        my_items = mine[s.ITEM_IDX].to_numpy(np.int64)
        weights = recency(mine["days"].to_numpy(np.float64), cfg.get("cooc_half_life_days"))
        cooc = self.cooc_scores(my_items, weights)
        cooc_top = _top(cooc, int(cfg["cooc_top_n"]), positive=True)
        fresh_items = _recent_items(events, item_index, cutoff_us, at_us)[:FRESH_ITEMS_MAX]
        fresh_weights = weights[_positions(my_items, fresh_items)]
        neighbours = _top(self.cooc_scores(fresh_items, fresh_weights), int(cfg["cooc_top_n"]), positive=True)
        new = [fresh_items, neighbours]
        factor = self.user_factor(user_idx, events, item_index, at_us)
        als_rank = np.zeros(len(cooc), dtype=np.int64)
        als_score = np.full(len(cooc), np.nan)
        if factor is not None:
            scores = self.als_factors @ factor
            order = np.lexsort((self.als_items, -scores))[:int(cfg["als_top_n"])]
            als_rank[self.als_items[order]] = np.arange(1, len(order) + 1)
            als_score[self.als_items[order]] = scores[order]
            if user_idx is None:
                new.append(self.als_items[order[:NEW_USER_LIST]])
        if user_idx is None:
            new.append(self.popular_items[:NEW_USER_LIST])
        items = np.unique(np.concatenate([existing.astype(np.int64), *[np.asarray(n, np.int64) for n in new]]))
        # history.py's order as of t: more purchase days, then more recent, then the smaller item
        order = np.lexsort((my_items, mine["days"].to_numpy(), -mine["purchase_days"].to_numpy()))
        history_rank = np.zeros(len(cooc), dtype=np.int64)
        history_rank[my_items[order]] = np.arange(1, len(order) + 1)
        in_cooc = np.zeros(len(cooc), dtype=bool)
        in_cooc[cooc_top] = True
        frame = pd.DataFrame({
            s.USER_IDX: np.full(len(items), -1 if user_idx is None else user_idx, dtype=np.int64),
            s.ITEM_IDX: items,
            s.ALS_SCORE: als_score[items], s.ALS_RANK: als_rank[items],
            s.COOC_SCORE: np.where(in_cooc[items], cooc[items], 0.0),
            s.FROM_ALS: als_rank[items] > 0,
            s.FROM_HISTORY: (history_rank[items] > 0) & (history_rank[items] <= int(cfg["history_top_n"])),
            s.FROM_COOC: in_cooc[items],
            s.FROM_POPULAR: np.array([i in self.popular for i in items.tolist()], dtype=bool),
        })
        return frame

    def new_rows(self, user_idx: int | None, sources: pd.DataFrame, existing_rows: pd.DataFrame) -> pd.DataFrame:
        """Feature rows at the cutoff for ``sources``' items without a bundle row, by build_features."""
        lists = self.settings.feature_lists
        key = int(sources[s.USER_IDX].to_numpy()[0]) if len(sources) else -1
        user_names = [n for n in lists["user"] if n in self.spec.features]
        if len(existing_rows):  # the user's ETL features, as every bundle row of theirs carries them
            users = existing_rows[user_names].iloc[:1].assign(**{s.USER_IDX: key})
        else:
            users = pd.DataFrame({s.USER_IDX: pd.Series([], dtype=np.int64),
                                  **{n: pd.Series([], dtype=object) for n in user_names}})
        history = self.history(user_idx).assign(**{s.USER_IDX: key})
        for name in lists["user_item"]:
            if name not in history.columns:
                history[name] = np.nan  # not in the bundle: the neutral value
        shares = pd.DataFrame({s.USER_IDX: pd.Series([], dtype=np.int64), s.ITEM_CATEGORY: pd.Series([], dtype=object),
                               s.UC_SHARE: pd.Series([], dtype=np.float64)})
        if self.user_category is not None and user_idx is not None:  # the ETL's table, shipped in the bundle
            lo, hi = self.user_category_offsets[user_idx], self.user_category_offsets[user_idx + 1]
            shares = self.user_category.iloc[lo:hi].assign(**{s.USER_IDX: key})
        for name in s.TIFU_PAIR_COLUMNS:  # TIFU-KNN's pair scores (off by default) are not computed online
            if name in self.spec.features:
                sources = sources.assign(**{name: 0.0})
        frame, _ = build_features(sources, users, self.item_features, history, lists, user_category=shares,
                                  spec=self.spec, horizon_days=self.settings.horizon_days,
                                  item_history=self.item_history)
        return frame

    def _built(self, cache_key: Hashable | None, user_idx: int | None, fresh: pd.DataFrame,
               existing_rows: pd.DataFrame, prepare: Callable[[pd.DataFrame], PreparedFeatures]) -> Matrix:
        """New rows at the cutoff for ``fresh``'s items in the ranker's layout, built once per (user, item) and
        kept in a small LRU (build_features costs far more than the rest of a request; a row at the cutoff
        does not depend on the request time: its time-dependent columns are overwritten per request)."""
        with self._lock:
            cached = self._built_rows.get(cache_key) if cache_key is not None else None
            if cached is not None:
                self._built_rows.move_to_end(cache_key)
        wanted = fresh[s.ITEM_IDX].to_numpy(np.int64)
        missing = fresh if cached is None else fresh.loc[~np.isin(wanted, cached.items)]
        if len(missing):
            frame = self.new_rows(user_idx, missing, existing_rows)
            prepared = prepare(frame)
            built = Matrix(frame[s.ITEM_IDX].to_numpy(np.int64), prepared.numeric, prepared.categorical)
            cached = built if cached is None else cached.concat(built)
            if cache_key is not None:
                with self._lock:
                    self._built_rows[cache_key] = cached
                    if len(self._built_rows) > BUILT_CACHE_USERS:
                        self._built_rows.popitem(last=False)
        assert cached is not None
        return cached.take(np.flatnonzero(np.isin(cached.items, wanted)))

    def prepared_as_of(self, user_idx: int | None, existing: Matrix, existing_rows: pd.DataFrame,
                       events: Sequence[StoredEvent], item_index: dict[str, int], cutoff_us: int, at_us: int, *,
                       prepare: Callable[[pd.DataFrame], PreparedFeatures],
                       cache_key: Hashable | None = None) -> Matrix:
        """The user's candidate rows for a request at t, in the ranker's layout (float64 numeric): the
        bundle's rows (``existing``, from ``existing_rows``) and the new ones, with the source features as of
        t and the within-candidates features and history statistics over the whole set. The user-event
        features are still the cutoff's (components/realtime/features.py moves them to t). ``cache_key``
        (the user) lets later requests reuse the new rows built at the cutoff."""
        sources = self.sources(user_idx, events, item_index, cutoff_us, at_us, existing.items)
        is_new = ~np.isin(sources[s.ITEM_IDX].to_numpy(np.int64), existing.items)
        rows = existing
        if is_new.any():
            rows = existing.concat(self._built(cache_key, user_idx, sources.loc[is_new], existing_rows, prepare))
        rows = rows.take(np.argsort(rows.items, kind="stable"))
        numeric = rows.numeric.astype(np.float64)
        if not np.array_equal(rows.items, sources[s.ITEM_IDX].to_numpy(np.int64)):
            raise ValueError("a user's candidate rows repeat an item")  # the bundle's rows are unique per pair
        col = {name: j for j, name in enumerate(self.spec.numeric)}

        def put(name: str, values: np.ndarray, where: np.ndarray | None = None) -> None:
            if name in col:
                if where is None:
                    numeric[:, col[name]] = values
                else:
                    numeric[where, col[name]] = values[where]

        put(s.COOC_SCORE, sources[s.COOC_SCORE].to_numpy(np.float64))
        for flag in (s.FROM_COOC, s.FROM_HISTORY):
            put(flag, sources[flag].to_numpy(np.float64))
        # a new row's ALS columns as build_features fills them (a new user's factor moves with their events)
        new = ~np.isin(rows.items, existing.items)
        als_rank = sources[s.ALS_RANK].to_numpy(np.float64)
        put(s.ALS_SCORE, sources[s.ALS_SCORE].fillna(MISSING_SCORE).to_numpy(np.float64), new)
        put(s.ALS_RANK, np.where(als_rank > 0, als_rank, RANK_SENTINEL), new)
        put(s.FROM_ALS, sources[s.FROM_ALS].to_numpy(np.float64), new)
        within_candidates(numeric, rows.items, col)
        mine = self.user_items_as_of(user_idx, events, item_index, cutoff_us, at_us)
        history_as_of(numeric, rows.items, col, mine)
        return Matrix(rows.items, numeric, rows.categorical)


@dataclass(frozen=True)
class Matrix:
    """One user's candidate rows in the ranker's layout (components/ranker/model.py PreparedFeatures)."""

    items: np.ndarray  # item_idx per row
    numeric: np.ndarray  # the spec's numeric features, in its order
    categorical: np.ndarray  # the spec's categorical features (objects)

    def take(self, rows: np.ndarray) -> Matrix:
        return Matrix(self.items[rows], self.numeric[rows], self.categorical[rows])

    def concat(self, other: Matrix) -> Matrix:
        return Matrix(np.concatenate([self.items, other.items]),
                      np.concatenate([self.numeric.astype(np.float64), other.numeric.astype(np.float64)]),
                      np.concatenate([self.categorical, other.categorical]))

    @property
    def prepared(self) -> PreparedFeatures:
        return PreparedFeatures(numeric=self.numeric.astype(np.float32), categorical=self.categorical)


def _rank(items: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """1-based position under the sort by ``keys`` (first key first; negate a key for descending), ties by
    the smaller item: components/ranker/features.py _rank_within_user for one user."""
    order = np.lexsort((items, *reversed(keys)))
    rank = np.empty(len(items), dtype=np.float64)
    rank[order] = np.arange(1, len(items) + 1)
    return rank


def within_candidates(numeric: np.ndarray, items: np.ndarray, col: dict[str, int]) -> None:
    """build_features' features ranked or compared within a user's candidates, over all the rows (one
    user), in place: x_n_sources, x_als_score_gap, x_cooc_rank, x_pop_rank_in_user, x_trend_rank_in_user."""
    if N_SOURCES in col:
        numeric[:, col[N_SOURCES]] = numeric[:, [col[f] for f in SOURCE_FLAGS if f in col]].sum(axis=1)
    if ALS_SCORE_GAP in col and s.ALS_SCORE in col:
        score = numeric[:, col[s.ALS_SCORE]]
        scored = score != MISSING_SCORE
        best = score[scored].max() if scored.any() else np.nan
        numeric[:, col[ALS_SCORE_GAP]] = np.where(scored, best - score, -MISSING_SCORE)
    if COOC_RANK in col and s.COOC_SCORE in col:
        cooc = numeric[:, col[s.COOC_SCORE]]
        numeric[:, col[COOC_RANK]] = np.where(cooc > 0, _rank(items, -cooc), RANK_SENTINEL)
    for name, column in ((POP_RANK_IN_USER, s.ITEM_BUYERS_28D), (TREND_RANK_IN_USER, s.ITEM_BUYERS_7D)):
        if name in col and column in col:
            numeric[:, col[name]] = _rank(items, -numeric[:, col[column]])


# history_stats' outputs and build_features' stand-ins for a pair outside the user's history
_HISTORY_FILL: Final = {HIST_RANK: RANK_SENTINEL, RECENCY_RANK: RANK_SENTINEL, UI_PURCHASE_DAYS_REL: 0.0,
                        UI_PURCHASE_SHARE: 0.0, RECENCY_REL: DAYS_SENTINEL, ORDERS_AGO: RANK_SENTINEL}


def history_as_of(numeric: np.ndarray, items: np.ndarray, col: dict[str, int], mine: pd.DataFrame) -> None:
    """components/ranker/features.py history_stats (the repurchase order, recency ranks, purchase shares,
    orders ago, repeat share) over the user's items as of t (``mine``: item_idx, days, purchase_days), in
    place for every row: a fresh item ranks as the repurchase baseline would rank it now."""
    if mine.empty or not any(n in col for n in (*_HISTORY_FILL, U_REPEAT_SHARE)):
        return
    history = mine[s.ITEM_IDX].to_numpy(np.int64)
    days = np.nan_to_num(mine["days"].to_numpy(np.float64), nan=DAYS_SENTINEL)
    bought = np.nan_to_num(mine["purchase_days"].to_numpy(np.float64), nan=0.0)
    stats = {
        HIST_RANK: _rank(history, -bought, days),
        RECENCY_RANK: _rank(history, days),
        UI_PURCHASE_DAYS_REL: bought / max(bought.max(), 1.0),
        UI_PURCHASE_SHARE: bought / max(bought.sum(), 1.0),
        RECENCY_REL: days - days.min(),
        ORDERS_AGO: np.unique(days, return_inverse=True)[1].astype(np.float64),
    }
    order = np.argsort(history)
    position = np.searchsorted(history, items, sorter=order).clip(max=len(history) - 1)
    found = history[order[position]] == items
    for name, values in stats.items():
        if name in col:
            numeric[:, col[name]] = np.where(found, values[order[position]], _HISTORY_FILL[name])
    if U_REPEAT_SHARE in col:
        numeric[:, col[U_REPEAT_SHARE]] = (bought >= 2).sum() / max(int((bought > 0).sum()), 1)


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
