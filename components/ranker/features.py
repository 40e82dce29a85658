"""The ranker's feature frame: one pure function for every fold, so the labelled train fold, the scored test
fold (whose rows serving reads from the bundle) and a real-time answer's rows (one user, per request) are
built identically. It works on numpy columns (pandas tables in, a frame or the columns out): the same values
as pandas' merges and group-bys, at a per-call cost a request can afford.

Inputs are one fold's tables (ETL: user/item/user_item features; ALS: candidates). Every feature is
relative to the fold's cutoff, which is what lets a model trained on the train fold rank the test fold.

Neutral values (documented here once; :func:`neutral_value` applies them by name):
- ETL's computed user, item and user-item features, when missing (a candidate the user never touched
  has no user_item row) or undefined (an interval with one purchase): ``*days_since*`` ->
  :data:`DAYS_SENTINEL` (far in the past); intervals, ratios, means, averages -> :data:`UNDEFINED`
  (-1: every real one is >= 0); everything else (counts, shares, rates) -> 0. ``ui_known`` says which;
- not from ALS: ``als_score`` :data:`MISSING_SCORE`, ``als_rank`` :data:`RANK_SENTINEL`; not in a
  user's history: history and recency ranks :data:`RANK_SENTINEL`;
- categorical values: strings, :data:`components.schema.MISSING_CATEGORY` when unknown;
- the shop's own numeric attributes (``u_attr_*``, ``i_attr_*``, e.g. a catalog price) stay NaN when
  unknown: CatBoost treats NaN as below every value (nan_mode Min) in training and scoring alike, and
  the CSV writes it as an empty field that both the built-in algorithm and the local trainer read as NaN.

Numeric features come first, categorical ones last (the spec's FeaturesData layout, see model.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.model import FeatureSpec

log = logging.getLogger(__name__)

DAYS_SENTINEL: Final = 9999.0  # "never": far beyond any log's length
RANK_SENTINEL: Final = 1000.0  # "not in that list": after every real rank (lists hold <= a few hundred)
MISSING_SCORE: Final = -10.0  # "not scored by ALS": below any implicit-ALS dot product in practice
UNDEFINED: Final = -1.0  # an interval/ratio/mean that does not exist (all real ones are >= 0)
_UNDEFINED_TOKENS = ("interval", "ratio", "avg", "mean", "between")

# Derived feature names (only this module and the feature spec use them).
UI_KNOWN: Final = "ui_known"
# The blend of the TIFU-KNN pair columns (s.TIFU_PAIR_COLUMNS, written by components/candidates/tifu.py): its
# alpha as chosen on Online Retail's train fold. Defined here, not imported from the candidates package,
# which the inference image (it recomputes features for real-time answers) does not carry.
TIFU_ALPHA: Final = 0.7
TIFU_SCORE: Final = "x_tifu_score"  # alpha-blend of the two TIFU-KNN pair columns (components/candidates/tifu.py)
TIFU_RANK: Final = "x_tifu_rank"  # the candidate's position by x_tifu_score within the user's list
HIST_RANK: Final = "x_hist_rank"  # position in the `repurchase` baseline's order for this user
UI_PURCHASE_DAYS_REL: Final = "x_ui_purchase_days_rel"  # / the user's top item's purchase days
UI_PURCHASE_SHARE: Final = "x_ui_purchase_share"  # / the user's total item-purchase-days
U_REPEAT_SHARE: Final = "x_u_repeat_share"  # share of the user's items bought on >= 2 days
I_MEAN_PURCHASE_DAYS: Final = "x_i_mean_purchase_days"  # mean ui_purchase_days over its buyers
RECENCY_RANK: Final = "x_recency_rank"  # position by ui_days_since_last within the user's history
RECENCY_REL: Final = "x_recency_rel"  # ui_days_since_last - the user's most recent days_since_last
ORDERS_AGO: Final = "x_orders_ago"  # how many of the user's distinct last-touch times are more recent
U_DUE: Final = "x_u_due"  # user's days since last event / their mean days between purchases
ALS_SCORE_GAP: Final = "x_als_score_gap"  # the user's best als_score - this one
COOC_RANK: Final = "x_cooc_rank"  # position by cooc_score within the user's candidates
N_SOURCES: Final = "x_n_sources"  # how many generators proposed the pair
PRICE_RATIO: Final = "x_price_ratio"  # item price / mean price of the user's bought items
I_CYCLE_DUE: Final = "x_i_cycle_due"  # days since last / the item's median repurchase gap over buyers
EXPECTED_REBUY: Final = "x_expected_rebuy"  # P(rebuy in the horizon) if orders keep their pace and mix
EXPECTED_REBUY_RECENT: Final = "x_expected_rebuy_90d"  # the same from the last 90 days only
POP_RANK_IN_USER: Final = "x_pop_rank_in_user"  # rank of i_buyers_28d among the user's candidates
TREND_RANK_IN_USER: Final = "x_trend_rank_in_user"  # rank of i_buyers_7d among the user's candidates
BUYERS_28D_SHARE: Final = "x_buyers_28d_share"  # i_buyers_28d / all buyers-28d: free of seasonal volume
AFFINITY_PREFIX: Final = "x_aff_"  # x_aff_<attr>: share of the user's items with the item's <attr> value
ATTR_PREFIXES = (s.USER_ATTR_PREFIX, s.ITEM_ATTR_PREFIX)

_SOURCE_FLAGS = s.CANDIDATE_SOURCE_COLUMNS


Columns = dict[str, np.ndarray]
# An input table: a DataFrame, or its columns as numpy arrays (what a request reuses; no pandas overhead).
Table: TypeAlias = pd.DataFrame | Mapping[str, np.ndarray]


def _names(table: Table) -> Collection[str]:
    return table.columns if isinstance(table, pd.DataFrame) else table.keys()


def _require(frame: Table, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in _names(frame)]
    if missing:
        raise KeyError(f"{what} lacks columns {missing}; has {list(_names(frame))}")


# The frame is built as numpy columns, grouped by user with sorts and joined by index lookups: the same
# values as the pandas merges and group-bys it replaced (equal bit for bit on Online Retail's folds), at
# ~2 ms for one user's ~250 rows instead of ~100 ms.

def _array(table: Table, name: str) -> np.ndarray:
    """A column as numpy: numbers of pandas' nullable types as float64 (NaN), other extension types as objects."""
    if not isinstance(table, pd.DataFrame):
        return np.asarray(table[name])
    column = table[name]
    if isinstance(column.dtype, np.dtype):
        return column.to_numpy()
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(np.float64, na_value=np.nan)
    return column.to_numpy(object)


def as_columns(table: pd.DataFrame) -> Columns:
    """A table's columns as numpy (the build_features input a request reuses)."""
    return {name: _array(table, name) for name in table.columns}


def _numeric(values: np.ndarray) -> np.ndarray:
    """float64, as ``pd.to_numeric(errors="raise").astype(float64)``."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    return np.asarray(pd.to_numeric(values, errors="raise"), dtype=np.float64)


def _filled(values: np.ndarray, value: float) -> np.ndarray:
    out = _numeric(values)
    out[np.isnan(out)] = value
    return out


def _categories(values: np.ndarray) -> np.ndarray:
    """Each value as pandas' ``astype("string")`` writes it, missing ones MISSING_CATEGORY (object array)."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        out = values.copy()
        out[pd.isna(values)] = s.MISSING_CATEGORY
        return out
    return pd.Series(values).astype("string").fillna(s.MISSING_CATEGORY).to_numpy(object)


def _pair_code(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One int64 per (user, item): negative ids (new users and items online) included."""
    return (users.astype(np.int64) << 32) | (items.astype(np.int64) & 0xFFFFFFFF)


def _positions(keys: np.ndarray, table_keys: np.ndarray, what: str) -> np.ndarray:
    """The row of ``table_keys`` holding each key, -1 for none: a left join's lookup."""
    if len(table_keys) and table_keys.dtype.kind in "iu" and (np.diff(table_keys) > 0).all():
        # ascending and unique (most tables: written sorted by their keys): a binary search, no hash table
        position = np.minimum(np.searchsorted(table_keys, keys), len(table_keys) - 1)
        return np.where(table_keys[position] == keys, position, -1)
    index = pd.Index(table_keys)
    if not index.is_unique:
        raise ValueError(f"{what} has more than one row for some key")
    return np.asarray(index.get_indexer(keys))


def _take(values: np.ndarray, position: np.ndarray, *, keep_type: bool = False) -> np.ndarray:
    """``values`` at ``position``, missing (-1) as a merge leaves them: numbers as float64 NaN (``keep_type``:
    their own type while nothing is missing, then objects), anything else as objects (None)."""
    missing = position < 0
    if not missing.any():
        return values[position] if keep_type or values.dtype.kind not in "biu" else values[position].astype(np.float64)
    if values.dtype.kind in "biuf" and not keep_type:
        out = np.full(len(position), np.nan)
        out[~missing] = values[position[~missing]]
        return out
    out = np.full(len(position), None, dtype=object)
    out[~missing] = values[position[~missing]]
    return out


def _join(columns: Columns, table: Table, names: Sequence[str], position: np.ndarray,
          categorical: set[str]) -> None:
    clash = sorted(set(names) & set(columns))
    if clash:
        raise ValueError(f"columns {clash} would be joined twice")
    for name in names:
        columns[name] = _take(_array(table, name), position, keep_type=name in categorical)


def _group_codes(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct users ascending, each row's position among them)."""
    unique, codes = np.unique(users, return_inverse=True)
    return unique, codes.reshape(-1)


def _group_extreme(codes: np.ndarray, n: int, values: np.ndarray, *, largest: bool) -> np.ndarray:
    """Per group: the max (or min) of the non-NaN values; NaN for a group with none (pandas' group max)."""
    out = np.full(n, -np.inf if largest else np.inf)
    (np.fmax if largest else np.fmin).at(out, codes, values)
    seen = np.zeros(n, dtype=bool)
    seen[codes[~np.isnan(values)]] = True
    out[~seen] = np.nan
    return out


def _group_starts(sorted_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(True where a new user starts, each sorted row's group start) for users sorted ascending."""
    n = len(sorted_users)
    start = np.ones(n, dtype=bool)
    start[1:] = sorted_users[1:] != sorted_users[:-1]
    return start, np.maximum.accumulate(np.where(start, np.arange(n), 0))


def _rank_within_user(users: np.ndarray, keys: Sequence[tuple[np.ndarray, bool]], items: np.ndarray) -> np.ndarray:
    """1-based position of each row within its user under ``keys`` ((values, ascending), NaN last as in
    pandas' sort), ties by item_idx ascending."""
    columns = [items]
    for values, ascending in reversed(keys):
        missing = np.isnan(values)
        columns += [np.where(missing, 0.0, values if ascending else -values), missing]
    order = np.lexsort([*columns, users])
    _, first = _group_starts(users[order])
    ranks = np.empty(len(order))
    ranks[order] = np.arange(len(order)) - first + 1
    return ranks


def _dense_rank_within_user(users: np.ndarray, values: np.ndarray) -> np.ndarray:
    """pandas' ``groupby(user)[values].rank(method="dense")`` for values without NaN."""
    order = np.lexsort((values, users))
    start, first = _group_starts(users[order])
    ordered = values[order]
    new = start.copy()
    new[1:] |= ordered[1:] != ordered[:-1]
    counted = np.cumsum(new)
    ranks = np.empty(len(order))
    ranks[order] = counted - counted[first] + 1
    return ranks


def _group_mean(codes: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """pandas' group mean bit for bit: Kahan-compensated sums in row order (pandas/_libs/groupby.pyx
    group_mean), NaN for an empty group."""
    total, compensation, count = [0.0] * n, [0.0] * n, [0] * n
    for code, value in zip(codes.tolist(), values.tolist(), strict=True):
        y = value - compensation[code]
        t = total[code] + y
        compensation[code] = t - total[code] - y
        if compensation[code] != compensation[code]:  # an infinite value: no compensation
            compensation[code] = 0.0
        total[code] = t
        count[code] += 1
    return np.array([t / c if c else np.nan for t, c in zip(total, count, strict=True)], dtype=np.float64)


def _lookup_users(users: np.ndarray, unique: np.ndarray) -> np.ndarray:
    """Each of ``users``' position in the ascending ``unique``, -1 when absent."""
    if not len(unique):
        return np.full(len(users), -1, dtype=np.int64)
    position = np.minimum(np.searchsorted(unique, users), len(unique) - 1)
    return np.where(unique[position] == users, position, -1)


def neutral_value(name: str) -> float:
    """The documented stand-in for a missing or undefined computed feature (see the module docstring)."""
    if "days_since" in name:
        return DAYS_SENTINEL
    if any(token in name for token in _UNDEFINED_TOKENS):
        return UNDEFINED
    return 0.0


def _is_attribute(name: str) -> bool:
    return name.startswith(ATTR_PREFIXES)


def _price_column(item_feature_names: Sequence[str], item_features: Table) -> str | None:
    """The item's price (a numeric item feature named like *price*; ETL's computed one comes first)."""
    for name in item_feature_names:
        if "price" in name.lower() and _array(item_features, name).dtype.kind in "biuf":
            return name
    return None


# The user_item columns the history statistics read (days since first is optional).
ITEM_HISTORY_INPUTS: Final = (s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST, s.UI_DAYS_SINCE_FIRST)


def _history_frame(user_item: pd.DataFrame) -> pd.DataFrame:
    _require(user_item, list(ITEM_HISTORY_INPUTS[:4]), "user_item_features")
    ui = user_item[[c for c in ITEM_HISTORY_INPUTS if c in user_item.columns]].copy()
    ui[s.UI_PURCHASE_DAYS] = ui[s.UI_PURCHASE_DAYS].fillna(0).astype(np.float64)
    ui[s.UI_DAYS_SINCE_LAST] = ui[s.UI_DAYS_SINCE_LAST].fillna(DAYS_SENTINEL).astype(np.float64)
    return ui


def _history_stats(users: np.ndarray, items: np.ndarray, purchase_days: np.ndarray, days_since_last: np.ndarray
                   ) -> tuple[Columns, np.ndarray, np.ndarray]:
    """Per-pair and per-user statistics of the fold's history (one row per user_item row) that ETL does not
    provide: the repurchase baseline's own order, relative recency, repeat-buyer traits. Each user's values
    depend on that user's rows only, so they can be computed on any chunk of users.

    Returns (pair statistics in the user_item rows' order, the distinct users, their x_u_repeat_share)."""
    unique, codes = _group_codes(users)
    n = len(unique)
    top = _group_extreme(codes, n, purchase_days, largest=True)
    pairs = {
        # The repurchase baseline's order as a feature: the ranker starts from the strongest baseline.
        HIST_RANK: _rank_within_user(users, [(purchase_days, False), (days_since_last, True)], items),
        RECENCY_RANK: _rank_within_user(users, [(days_since_last, True)], items),
        UI_PURCHASE_DAYS_REL: purchase_days / np.maximum(top[codes], 1),
        UI_PURCHASE_SHARE: purchase_days / np.maximum(np.bincount(codes, purchase_days, n)[codes], 1),
        RECENCY_REL: days_since_last - _group_extreme(codes, n, days_since_last, largest=False)[codes],
        # Items touched at the same moment share a basket: 0 = in the user's latest basket, 1 = the one before.
        ORDERS_AGO: _dense_rank_within_user(users, days_since_last) - 1.0,
    }
    repeat_share = (np.bincount(codes, (purchase_days >= 2).astype(np.float64), n)
                    / np.maximum(np.bincount(codes, (purchase_days > 0).astype(np.float64), n), 1))
    return pairs, unique, repeat_share


def item_history_stats(user_item: pd.DataFrame) -> pd.DataFrame:
    """Per-item statistics over ALL the fold's buyers (item_idx + stats). Compute them once on the whole
    user_item table and pass them to :func:`build_features` when it runs on a chunk of users."""
    ui = _history_frame(user_item)
    buyers = ui.loc[ui[s.UI_PURCHASE_DAYS] > 0]
    items = pd.DataFrame({I_MEAN_PURCHASE_DAYS: buyers.groupby(s.ITEM_IDX)[s.UI_PURCHASE_DAYS].mean()})
    if s.UI_DAYS_SINCE_FIRST in ui.columns:
        # The item's usual repurchase gap (median over its repeat buyers): how "due" is it for this user?
        repeat = ui[s.UI_PURCHASE_DAYS] >= 2
        first = ui[s.UI_DAYS_SINCE_FIRST].astype(np.float64)
        gap = ((first - ui[s.UI_DAYS_SINCE_LAST]) / (ui[s.UI_PURCHASE_DAYS] - 1).clip(lower=1)).where(repeat)
        items = items.join(gap.where(gap > 0).groupby(ui[s.ITEM_IDX]).median().rename(_ITEM_GAP), how="outer")
    return items.reset_index()


_ITEM_GAP = "_item_gap"


def _expected_rebuy(item_days: np.ndarray, user_days: np.ndarray, span_days: float | np.ndarray,
                    horizon_days: float) -> np.ndarray:
    """1 - (1 - p)^n: p = share of the user's purchase days that included the item, n = purchase days
    expected in the horizon at the user's pace. A pointwise model ranks better with the product given."""
    days = np.maximum(user_days, 0)
    share = np.clip(item_days / np.maximum(days, 1), 0, 1)
    orders = days * horizon_days / np.maximum(span_days, horizon_days)
    return 1.0 - (1.0 - share) ** orders


def _pace_features(columns: Columns, users: np.ndarray, items: np.ndarray, horizon_days: float,
                   buyers_28d_total: float) -> list[str]:
    """Cross features of ETL's user, item and pair features (added to ``columns`` when their inputs exist)."""
    added: list[str] = []
    if {s.UI_PURCHASE_DAYS, s.U_N_PURCHASE_DAYS, s.U_DAYS_SINCE_FIRST} <= columns.keys():
        since_first = columns[s.U_DAYS_SINCE_FIRST]
        span = np.where(since_first < DAYS_SENTINEL, since_first, 0.0)
        columns[EXPECTED_REBUY] = _expected_rebuy(columns[s.UI_PURCHASE_DAYS], columns[s.U_N_PURCHASE_DAYS], span,
                                                  horizon_days)
        added.append(EXPECTED_REBUY)
    if {s.UI_PURCHASE_DAYS_90D, s.U_PURCHASE_DAYS_90D} <= columns.keys():
        columns[EXPECTED_REBUY_RECENT] = _expected_rebuy(columns[s.UI_PURCHASE_DAYS_90D],
                                                         columns[s.U_PURCHASE_DAYS_90D], 90.0, horizon_days)
        added.append(EXPECTED_REBUY_RECENT)
    # Popularity relative to the user's other candidates and to the season's volume: absolute counts
    # drift between the train and the test fold (Christmas), ranks and shares much less.
    if s.ITEM_BUYERS_28D in columns:
        columns[POP_RANK_IN_USER] = _rank_within_user(users, [(columns[s.ITEM_BUYERS_28D], False)], items)
        columns[BUYERS_28D_SHARE] = columns[s.ITEM_BUYERS_28D] / max(buyers_28d_total, 1.0)
        added += [POP_RANK_IN_USER, BUYERS_28D_SHARE]
    if {s.U_DAYS_SINCE_LAST, s.U_MEAN_DAYS_BETWEEN_PURCHASES} <= columns.keys():
        gap = columns[s.U_MEAN_DAYS_BETWEEN_PURCHASES]
        columns[U_DUE] = _filled(columns[s.U_DAYS_SINCE_LAST] / np.where(gap > 0, gap, np.nan), UNDEFINED)
        added.append(U_DUE)
    if s.ITEM_BUYERS_7D in columns:
        columns[TREND_RANK_IN_USER] = _rank_within_user(users, [(columns[s.ITEM_BUYERS_7D], False)], items)
        added.append(TREND_RANK_IN_USER)
    return added


def build_features(
    candidates: Table,
    user_features: Table,
    item_features: Table,
    user_item_features: Table,
    feature_lists: Mapping[str, Sequence[str]],
    *,
    user_category: Table | None = None,
    spec: FeatureSpec | None = None,
    horizon_days: float = 28.0,
    item_history: Table | None = None,
) -> tuple[pd.DataFrame, FeatureSpec]:
    """Candidates + the fold's features -> (frame: user_idx, item_idx + spec features, spec).

    ``feature_lists`` is ETL's features.json; ``user_category`` its optional (user_idx, category,
    uc_share) table. ``horizon_days`` is the length of the window the ranker predicts (the fold's
    label or test window). Pass the train fold's ``spec`` when building the test fold: the result then
    has exactly those columns in that order (a missing one raises).

    Every feature depends on the row, its user's rows, or per-item tables, so the frame can be built for
    a chunk of users at a time (memory bound at scale): pass that chunk's candidates, user features,
    user_item features and user_category, the whole item_features, and ``item_history`` computed once
    by :func:`item_history_stats` on the whole user_item table (computed here when not given). The same
    function builds one user's rows for a real-time answer (components/realtime/features.py)."""
    built = feature_columns(candidates, user_features, item_features, user_item_features, feature_lists,
                            user_category=user_category, spec=spec, horizon_days=horizon_days,
                            item_history=item_history)
    return built.frame(), built.spec


@dataclass(frozen=True)
class FeatureColumns:
    """build_features' result before its frame: (user_idx, item_idx) per row and the spec's columns."""

    users: np.ndarray
    items: np.ndarray
    columns: Columns
    spec: FeatureSpec

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({s.USER_IDX: self.users, s.ITEM_IDX: self.items,
                             **{name: self.columns[name] for name in self.spec.features}})


def feature_columns(
    candidates: Table,
    user_features: Table,
    item_features: Table,
    user_item_features: Table,
    feature_lists: Mapping[str, Sequence[str]],
    *,
    user_category: Table | None = None,
    spec: FeatureSpec | None = None,
    horizon_days: float = 28.0,
    item_history: Table | None = None,
) -> FeatureColumns:
    """:func:`build_features` as numpy columns (a request's rows go to the ranker without a frame)."""
    _require(candidates, [s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *_SOURCE_FLAGS], "candidates")
    declared = set(feature_lists.get("categorical", []))
    user_names = [n for n in feature_lists.get("user", []) if n in _names(user_features)]
    item_names = [n for n in feature_lists.get("item", []) if n in _names(item_features)]
    ui_names = [n for n in feature_lists.get("user_item", []) if n in _names(user_item_features)]

    # ranker_data adds them (ranker.tifu_features, ranker.itemknn_features)
    pair_columns = [c for c in (*s.TIFU_PAIR_COLUMNS, s.ITEMKNN_PAIR_COLUMN) if c in _names(candidates)]
    users, items = _array(candidates, s.USER_IDX), _array(candidates, s.ITEM_IDX)
    codes = _pair_code(users, items)
    _, first = np.unique(codes, return_index=True)
    keep = None if len(first) == len(codes) else np.sort(first)  # each pair once, its first row
    if keep is not None:
        users, items, codes = users[keep], items[keep], codes[keep]
    columns: Columns = {}
    for name in (*s.CANDIDATE_SCORE_COLUMNS, *_SOURCE_FLAGS, *pair_columns):
        values = _array(candidates, name)
        columns[name] = values if keep is None else values[keep]
    for flag in _SOURCE_FLAGS:
        values = columns[flag]
        columns[flag] = (_filled(values, 0.0) if values.dtype.kind in "biuf"
                         else pd.Series(values).fillna(False).astype(np.float64).to_numpy())
    columns[N_SOURCES] = sum((columns[flag] for flag in _SOURCE_FLAGS), np.zeros(len(users)))
    user_set, user_codes = _group_codes(users)
    als_score = _numeric(columns[s.ALS_SCORE])
    best = _group_extreme(user_codes, len(user_set), als_score, largest=True)[user_codes]
    columns[ALS_SCORE_GAP] = _filled(best - als_score, -MISSING_SCORE)
    columns[s.ALS_SCORE] = _filled(als_score, MISSING_SCORE)
    als_rank = _numeric(columns[s.ALS_RANK])
    columns[s.ALS_RANK] = np.where(als_rank > 0, als_rank, RANK_SENTINEL)
    cooc = columns[s.COOC_SCORE] = _filled(columns[s.COOC_SCORE], 0.0)
    columns[COOC_RANK] = np.where(cooc > 0, _rank_within_user(users, [(cooc, False)], items), RANK_SENTINEL)
    pair_features: list[str] = []
    if set(s.TIFU_PAIR_COLUMNS) <= set(pair_columns):  # TIFU-KNN's score (Hu et al. 2020) and its rank
        own, neighbours = s.TIFU_PAIR_COLUMNS
        score = columns[TIFU_SCORE] = (TIFU_ALPHA * _numeric(columns[own])
                                       + (1 - TIFU_ALPHA) * _numeric(columns[neighbours]))
        columns[TIFU_RANK] = np.where(score > 0, _rank_within_user(users, [(score, False)], items), RANK_SENTINEL)
        pair_features = [*s.TIFU_PAIR_COLUMNS, TIFU_SCORE, TIFU_RANK]
    if s.ITEMKNN_PAIR_COLUMN in pair_columns:  # items like the user's own: what ranks never-bought items
        columns[s.ITEMKNN_PAIR_COLUMN] = _filled(columns[s.ITEMKNN_PAIR_COLUMN], 0.0)
        pair_features.append(s.ITEMKNN_PAIR_COLUMN)

    _require(user_item_features, list(ITEM_HISTORY_INPUTS[:4]), "user_item_features")
    ui_users, ui_items = _array(user_item_features, s.USER_IDX), _array(user_item_features, s.ITEM_IDX)
    in_ui = _positions(codes, _pair_code(ui_users, ui_items), "user_item_features")
    _join(columns, user_item_features, ui_names, in_ui, declared)
    columns[UI_KNOWN] = (in_ui >= 0).astype(np.float64)

    ui_purchase_days = _filled(_array(user_item_features, s.UI_PURCHASE_DAYS), 0.0)
    pairs, history_users, repeat_share = _history_stats(
        ui_users, ui_items, ui_purchase_days, _filled(_array(user_item_features, s.UI_DAYS_SINCE_LAST), DAYS_SENTINEL))
    for name, fill in ((HIST_RANK, RANK_SENTINEL), (RECENCY_RANK, RANK_SENTINEL), (UI_PURCHASE_DAYS_REL, 0.0),
                       (UI_PURCHASE_SHARE, 0.0), (RECENCY_REL, DAYS_SENTINEL), (ORDERS_AGO, RANK_SENTINEL)):
        columns[name] = _filled(_take(pairs[name], in_ui), fill)
    columns[U_REPEAT_SHARE] = _filled(_take(repeat_share, _lookup_users(users, history_users)), 0.0)
    if item_history is not None:
        item_stats = item_history
    elif isinstance(user_item_features, pd.DataFrame):
        item_stats = item_history_stats(user_item_features)
    else:
        raise ValueError("item_history is required with user_item_features given as arrays")
    in_stats = _positions(items, _array(item_stats, s.ITEM_IDX), "item_history")
    _join(columns, item_stats, [c for c in _names(item_stats) if c != s.ITEM_IDX], in_stats, declared)
    columns[I_MEAN_PURCHASE_DAYS] = _filled(columns[I_MEAN_PURCHASE_DAYS], 0.0)
    derived = [HIST_RANK, RECENCY_RANK, UI_PURCHASE_DAYS_REL, UI_PURCHASE_SHARE, RECENCY_REL, ORDERS_AGO,
               U_REPEAT_SHARE, I_MEAN_PURCHASE_DAYS]
    if _ITEM_GAP in columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            due = _numeric(columns[s.UI_DAYS_SINCE_LAST]) / _numeric(columns.pop(_ITEM_GAP))
        due[~np.isfinite(due) | (columns[UI_KNOWN] <= 0)] = UNDEFINED
        columns[I_CYCLE_DUE] = due
        derived.append(I_CYCLE_DUE)

    _join(columns, user_features, user_names,
          _positions(users, _array(user_features, s.USER_IDX), "user_features"), declared)
    in_items = _positions(items, _array(item_features, s.ITEM_IDX), "item_features")
    _join(columns, item_features, item_names, in_items, declared)
    # ETL's computed features: documented neutral values for missing rows and undefined values.
    for name in (*ui_names, *user_names, *item_names):
        if name not in declared and not _is_attribute(name):
            columns[name] = _filled(columns[name], neutral_value(name))

    # the user_item rows of bought pairs (price and affinity features)
    bought = ui_purchase_days > 0
    bought_users, bought_items = ui_users[bought], ui_items[bought]
    in_catalog = _positions(bought_items, _array(item_features, s.ITEM_IDX), "item_features")
    # Price relative to what this user usually buys (wholesalers vs gift shoppers).
    numeric_items = [n for n in item_names if n not in declared]
    price = _price_column(numeric_items, item_features)
    if price is not None:
        paid = _take(_numeric(_array(item_features, price)), in_catalog)
        priced = paid > 0
        price_users, price_codes = _group_codes(bought_users[priced])
        user_price = _take(_group_mean(price_codes, len(price_users), paid[priced]),
                           _lookup_users(users, price_users))
        item_price = columns[price]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = item_price / user_price
        ratio[~np.isfinite(ratio) | ~(item_price > 0)] = UNDEFINED
        columns[PRICE_RATIO] = ratio
        derived.append(PRICE_RATIO)

    # pandas' Series.sum: NaN as 0, numpy's pairwise sum
    buyers_total = (float(np.nansum(_numeric(_array(item_features, s.ITEM_BUYERS_28D))))
                    if s.ITEM_BUYERS_28D in _names(item_features) else 0.0)
    derived += _pace_features(columns, users, items, horizon_days, buyers_total)

    # Affinity to each categorical item attribute (category, brand...): share of the user's bought items
    # with the candidate's value (bought items missing from the catalog count in the user's total only).
    if any(n in declared for n in item_names):
        buyers, bought_codes = _group_codes(bought_users)
        bought_totals = _take(np.bincount(bought_codes, minlength=len(buyers)).astype(np.float64),
                              _lookup_users(users, buyers))
        found = in_catalog >= 0
    for attr in (n for n in item_names if n in declared):
        name = f"{AFFINITY_PREFIX}{attr}"
        tags = _categories(_array(item_features, attr))[in_catalog[found]]
        tagged, wanted = _pair_lookup_codes(bought_users[found], tags, users, _categories(columns[attr]))
        seen, counts = np.unique(tagged, return_counts=True)
        at = _positions(wanted, seen, name)
        share = columns[name] = np.zeros(len(users))
        share[at >= 0] = counts[at[at >= 0]] / bought_totals[at >= 0]
        derived.append(name)

    # ETL's user_category (user_idx, category, uc_share): the user's share of events in the item's category.
    category_feature = s.ITEM_ATTR_PREFIX + s.ITEM_CATEGORY
    if user_category is not None and category_feature in columns:
        _require(user_category, [s.USER_IDX, s.ITEM_CATEGORY, s.UC_SHARE], s.USER_CATEGORY)
        raw = _array(user_category, s.ITEM_CATEGORY)
        known = ~pd.isna(raw)  # a missing category matches no item (the item side's missing is MISSING_CATEGORY)
        columns[s.UC_SHARE] = _filled(_take(
            _numeric(_array(user_category, s.UC_SHARE))[known],
            _pair_lookup(users, _categories(columns[category_feature]),
                         _array(user_category, s.USER_IDX)[known], _categories(raw[known]), s.USER_CATEGORY)),
            0.0)
        derived.append(s.UC_SHARE)

    numeric = [s.ALS_SCORE, s.ALS_RANK, s.COOC_SCORE, *_SOURCE_FLAGS, N_SOURCES, ALS_SCORE_GAP, COOC_RANK,
               *pair_features,
               *[n for n in ui_names if n not in declared], UI_KNOWN, *derived,
               *[n for n in user_names if n not in declared], *numeric_items]
    numeric = list(dict.fromkeys(numeric))  # the same name from two tables is one column anyway
    categorical = list(dict.fromkeys(n for n in (*user_names, *item_names, *ui_names) if n in declared))
    for name in numeric:
        columns[name] = _numeric(columns[name])
    for name in categorical:
        columns[name] = _categories(columns[name])

    built = FeatureSpec(features=(*numeric, *categorical), categorical=tuple(categorical))
    if spec is not None:
        missing = [n for n in spec.features if n not in columns]
        if missing:
            raise KeyError(f"this fold cannot build features of the given spec: missing {missing}")
        if set(spec.categorical) != set(built.categorical):
            raise ValueError(f"categorical features differ from the spec: {built.categorical} vs "
                             f"{spec.categorical}")
        built = spec
    if log.isEnabledFor(logging.INFO):
        log.info("features: %d rows, %d users, %d features (%d categorical)", len(users), len(user_set),
                 len(built.features), len(built.categorical))
    return FeatureColumns(users, items, {n: columns[n] for n in built.features}, built)


def _pair_lookup_codes(table_users: np.ndarray, table_values: np.ndarray, users: np.ndarray, values: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(user, string value) pairs of a table and of the frame as comparable int64 codes (table's, frame's)."""
    codes, _ = pd.factorize(np.concatenate([table_values, values]))
    split = len(table_values)
    return _pair_code(table_users, codes[:split]), _pair_code(users, codes[split:])


def _pair_lookup(users: np.ndarray, values: np.ndarray, table_users: np.ndarray, table_values: np.ndarray,
                 what: str) -> np.ndarray:
    """The row of (table_users, table_values) holding each (user, value), -1 for none (values: strings)."""
    table, frame = _pair_lookup_codes(table_users, table_values, users, values)
    return _positions(frame, table, what)
