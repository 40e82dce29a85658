"""The ranker's feature frame: one pure pandas function for every fold, so the labelled train fold and the
scored test fold (and serving, which reads the scored rows from the bundle) are built identically.

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
from collections.abc import Mapping, Sequence
from typing import Final

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


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{what} lacks columns {missing}; has {list(frame.columns)}")


def _rank_within_user(frame: pd.DataFrame, keys: list[str], ascending: list[bool]) -> pd.Series:
    """1-based position of each row within its user under the given sort (ties by item_idx asc)."""
    columns = [s.USER_IDX, *keys, s.ITEM_IDX]
    ordered = frame[columns].sort_values(columns, ascending=[True, *ascending, True], kind="mergesort")
    ranks = ordered.groupby(s.USER_IDX, sort=False).cumcount() + 1
    return ranks.reindex(frame.index).astype(np.float64)


def _left_join(frame: pd.DataFrame, right: pd.DataFrame, on: Sequence[str]) -> pd.DataFrame:
    """``frame.merge(right, on=on, how="left")`` for a ``right`` unique on ``on``: the same rows, order and
    values, but only right's columns are looked up (a merge copies every column of the growing frame)."""
    keys = list(on)
    added = [c for c in right.columns if c not in keys]
    clash = sorted(set(added) & set(frame.columns))
    if clash:
        raise ValueError(f"columns {clash} would be joined twice")
    if len(keys) == 1:
        position = pd.Index(right[keys[0]]).get_indexer(frame[keys[0]])
    else:
        position = pd.MultiIndex.from_frame(right[keys]).get_indexer(pd.MultiIndex.from_frame(frame[keys]))
    found = pd.Series(position >= 0, index=frame.index)
    if right.empty:  # nothing to find (a new user online): the merge's all-missing columns
        return pd.concat([frame, pd.DataFrame({c: pd.Series(np.nan, index=frame.index, dtype=object
                                                             if right[c].dtype == object else np.float64)
                                               for c in added})], axis=1)
    picked = right[added].iloc[np.where(position >= 0, position, 0)].set_axis(frame.index)
    # Unmatched rows become missing exactly as in a merge (ints -> float NaN, bools/strings -> object NaN).
    looked_up = picked.where(found, axis=0) if not found.all() else picked
    return pd.concat([frame, looked_up], axis=1)


def neutral_value(name: str) -> float:
    """The documented stand-in for a missing or undefined computed feature (see the module docstring)."""
    if "days_since" in name:
        return DAYS_SENTINEL
    if any(token in name for token in _UNDEFINED_TOKENS):
        return UNDEFINED
    return 0.0


def _is_attribute(name: str) -> bool:
    return name.startswith(ATTR_PREFIXES)


def _price_column(item_feature_names: Sequence[str], item_features: pd.DataFrame) -> str | None:
    """The item's price (a numeric item feature named like *price*; ETL's computed one comes first)."""
    for name in item_feature_names:
        if "price" in name.lower() and pd.api.types.is_numeric_dtype(item_features[name]):
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


def history_stats(user_item: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-pair and per-user statistics of the fold's history (user_item features) that ETL does not
    provide: the repurchase baseline's own order, relative recency, repeat-buyer traits. Each user's
    values depend on that user's rows only, so they can be computed on any chunk of users.

    Returns (pairs: user_idx, item_idx + pair stats, users: user_idx + stats)."""
    ui = _history_frame(user_item)
    bought = ui[s.UI_PURCHASE_DAYS] > 0

    pairs = ui[[s.USER_IDX, s.ITEM_IDX]].copy()
    # The repurchase baseline's order as a feature: the ranker starts from the strongest baseline.
    pairs[HIST_RANK] = _rank_within_user(ui, [s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST], [False, True])
    pairs[RECENCY_RANK] = _rank_within_user(ui, [s.UI_DAYS_SINCE_LAST], [True])
    by_user = ui.groupby(s.USER_IDX)
    purchase_days = by_user[s.UI_PURCHASE_DAYS]
    pairs[UI_PURCHASE_DAYS_REL] = ui[s.UI_PURCHASE_DAYS] / purchase_days.transform("max").clip(lower=1)
    pairs[UI_PURCHASE_SHARE] = ui[s.UI_PURCHASE_DAYS] / purchase_days.transform("sum").clip(lower=1)
    pairs[RECENCY_REL] = ui[s.UI_DAYS_SINCE_LAST] - by_user[s.UI_DAYS_SINCE_LAST].transform("min")
    # Items touched at the same moment share a basket: 0 = in the user's latest basket, 1 = the one before.
    pairs[ORDERS_AGO] = by_user[s.UI_DAYS_SINCE_LAST].rank(method="dense") - 1.0

    repeat = ui[s.UI_PURCHASE_DAYS] >= 2
    n_bought = bought.groupby(ui[s.USER_IDX]).sum().clip(lower=1)
    users = pd.DataFrame({U_REPEAT_SHARE: repeat.groupby(ui[s.USER_IDX]).sum() / n_bought}).reset_index()
    return pairs, users


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


def _expected_rebuy(frame: pd.DataFrame, item_days: str, user_days: str, span_days: float | pd.Series,
                    horizon_days: float) -> pd.Series:
    """1 - (1 - p)^n: p = share of the user's purchase days that included the item, n = purchase days
    expected in the horizon at the user's pace. A pointwise model ranks better with the product given."""
    days = frame[user_days].clip(lower=0)
    share = (frame[item_days] / days.clip(lower=1)).clip(0, 1)
    orders = days * horizon_days / np.maximum(span_days, horizon_days)
    return 1.0 - (1.0 - share) ** orders


def _pace_features(frame: pd.DataFrame, horizon_days: float, buyers_28d_total: float) -> list[str]:
    """Cross features of ETL's user, item and pair features (added to ``frame`` when their inputs exist)."""
    added: list[str] = []
    columns = set(frame.columns)
    if {s.UI_PURCHASE_DAYS, s.U_N_PURCHASE_DAYS, s.U_DAYS_SINCE_FIRST} <= columns:
        span = frame[s.U_DAYS_SINCE_FIRST].where(frame[s.U_DAYS_SINCE_FIRST] < DAYS_SENTINEL, 0.0)
        frame[EXPECTED_REBUY] = _expected_rebuy(frame, s.UI_PURCHASE_DAYS, s.U_N_PURCHASE_DAYS, span, horizon_days)
        added.append(EXPECTED_REBUY)
    if {s.UI_PURCHASE_DAYS_90D, s.U_PURCHASE_DAYS_90D} <= columns:
        frame[EXPECTED_REBUY_RECENT] = _expected_rebuy(frame, s.UI_PURCHASE_DAYS_90D, s.U_PURCHASE_DAYS_90D, 90.0,
                                                       horizon_days)
        added.append(EXPECTED_REBUY_RECENT)
    # Popularity relative to the user's other candidates and to the season's volume: absolute counts
    # drift between the train and the test fold (Christmas), ranks and shares much less.
    if s.ITEM_BUYERS_28D in columns:
        frame[POP_RANK_IN_USER] = _rank_within_user(frame, [s.ITEM_BUYERS_28D], [False])
        frame[BUYERS_28D_SHARE] = frame[s.ITEM_BUYERS_28D] / max(buyers_28d_total, 1.0)
        added += [POP_RANK_IN_USER, BUYERS_28D_SHARE]
    if {s.U_DAYS_SINCE_LAST, s.U_MEAN_DAYS_BETWEEN_PURCHASES} <= columns:
        gap = frame[s.U_MEAN_DAYS_BETWEEN_PURCHASES]
        frame[U_DUE] = (frame[s.U_DAYS_SINCE_LAST] / gap.where(gap > 0)).fillna(UNDEFINED)
        added.append(U_DUE)
    if s.ITEM_BUYERS_7D in columns:
        frame[TREND_RANK_IN_USER] = _rank_within_user(frame, [s.ITEM_BUYERS_7D], [False])
        added.append(TREND_RANK_IN_USER)
    return added


def build_features(
    candidates: pd.DataFrame,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
    user_item_features: pd.DataFrame,
    feature_lists: Mapping[str, Sequence[str]],
    *,
    user_category: pd.DataFrame | None = None,
    spec: FeatureSpec | None = None,
    horizon_days: float = 28.0,
    item_history: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, FeatureSpec]:
    """Candidates + the fold's features -> (frame: user_idx, item_idx + spec features, spec).

    ``feature_lists`` is ETL's features.json; ``user_category`` its optional (user_idx, category,
    uc_share) table. ``horizon_days`` is the length of the window the ranker predicts (the fold's
    label or test window). Pass the train fold's ``spec`` when building the test fold: the result then
    has exactly those columns in that order (a missing one raises).

    Every feature depends on the row, its user's rows, or per-item tables, so the frame can be built for
    a chunk of users at a time (memory bound at scale): pass that chunk's candidates, user features,
    user_item features and user_category, the whole item_features, and ``item_history`` computed once
    by :func:`item_history_stats` on the whole user_item table (computed here when not given)."""
    # Copy-on-write: the dozen merges below otherwise copy (consolidate) the whole growing frame each
    # time; same values, a little over twice as fast (and the default from pandas 3).
    with pd.option_context("mode.copy_on_write", True):
        return _build_features(candidates, user_features, item_features, user_item_features, feature_lists,
                               user_category=user_category, spec=spec, horizon_days=horizon_days,
                               item_history=item_history)


def _build_features(
    candidates: pd.DataFrame,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
    user_item_features: pd.DataFrame,
    feature_lists: Mapping[str, Sequence[str]],
    *,
    user_category: pd.DataFrame | None,
    spec: FeatureSpec | None,
    horizon_days: float,
    item_history: pd.DataFrame | None,
) -> tuple[pd.DataFrame, FeatureSpec]:
    _require(candidates, [s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *_SOURCE_FLAGS], "candidates")
    categorical_declared = set(feature_lists.get("categorical", []))
    user_names = [n for n in feature_lists.get("user", []) if n in user_features.columns]
    item_names = [n for n in feature_lists.get("item", []) if n in item_features.columns]
    ui_names = [n for n in feature_lists.get("user_item", []) if n in user_item_features.columns]

    # ranker_data adds them (ranker.tifu_features, ranker.itemknn_features)
    pair_columns = [c for c in (*s.TIFU_PAIR_COLUMNS, s.ITEMKNN_PAIR_COLUMN) if c in candidates.columns]
    frame = candidates[[s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *_SOURCE_FLAGS, *pair_columns]].copy()
    frame = frame.drop_duplicates([s.USER_IDX, s.ITEM_IDX]).reset_index(drop=True)
    for flag in _SOURCE_FLAGS:
        frame[flag] = frame[flag].fillna(False).astype(np.float64)
    frame[N_SOURCES] = frame[list(_SOURCE_FLAGS)].sum(axis=1)
    als_score = frame[s.ALS_SCORE].astype(np.float64)
    best = als_score.groupby(frame[s.USER_IDX]).transform("max")
    frame[ALS_SCORE_GAP] = (best - als_score).fillna(-MISSING_SCORE)
    frame[s.ALS_SCORE] = als_score.fillna(MISSING_SCORE)
    frame[s.ALS_RANK] = frame[s.ALS_RANK].astype(np.float64).where(frame[s.ALS_RANK] > 0, RANK_SENTINEL)
    frame[s.COOC_SCORE] = frame[s.COOC_SCORE].astype(np.float64).fillna(0.0)
    cooc_rank = _rank_within_user(frame, [s.COOC_SCORE], [False])
    frame[COOC_RANK] = cooc_rank.where(frame[s.COOC_SCORE] > 0, RANK_SENTINEL)
    pair_features: list[str] = []
    if set(s.TIFU_PAIR_COLUMNS) <= set(pair_columns):  # TIFU-KNN's score (Hu et al. 2020) and its rank
        own, neighbours = s.TIFU_PAIR_COLUMNS
        frame[TIFU_SCORE] = TIFU_ALPHA * frame[own].astype(np.float64) + (1 - TIFU_ALPHA) * frame[neighbours]
        frame[TIFU_RANK] = _rank_within_user(frame, [TIFU_SCORE], [False]).where(frame[TIFU_SCORE] > 0,
                                                                                 RANK_SENTINEL)
        pair_features = [*s.TIFU_PAIR_COLUMNS, TIFU_SCORE, TIFU_RANK]
    if s.ITEMKNN_PAIR_COLUMN in pair_columns:  # items like the user's own: what ranks never-bought items
        frame[s.ITEMKNN_PAIR_COLUMN] = frame[s.ITEMKNN_PAIR_COLUMN].astype(np.float64).fillna(0.0)
        pair_features.append(s.ITEMKNN_PAIR_COLUMN)

    ui = user_item_features[[s.USER_IDX, s.ITEM_IDX, *ui_names]].copy()
    ui[UI_KNOWN] = 1.0
    frame = _left_join(frame, ui, [s.USER_IDX, s.ITEM_IDX])
    frame[UI_KNOWN] = frame[UI_KNOWN].fillna(0.0)

    pairs, users = history_stats(user_item_features)
    items = item_history if item_history is not None else item_history_stats(user_item_features)
    frame = _left_join(frame, pairs, [s.USER_IDX, s.ITEM_IDX])
    frame = _left_join(frame, users, [s.USER_IDX])
    frame = _left_join(frame, items, [s.ITEM_IDX])
    for name in (HIST_RANK, RECENCY_RANK):
        frame[name] = frame[name].fillna(RANK_SENTINEL)
    for name in (UI_PURCHASE_DAYS_REL, UI_PURCHASE_SHARE, U_REPEAT_SHARE, I_MEAN_PURCHASE_DAYS):
        frame[name] = frame[name].fillna(0.0)
    frame[RECENCY_REL] = frame[RECENCY_REL].fillna(DAYS_SENTINEL)
    frame[ORDERS_AGO] = frame[ORDERS_AGO].fillna(RANK_SENTINEL)
    derived = [HIST_RANK, RECENCY_RANK, UI_PURCHASE_DAYS_REL, UI_PURCHASE_SHARE, RECENCY_REL, ORDERS_AGO,
               U_REPEAT_SHARE, I_MEAN_PURCHASE_DAYS]
    if _ITEM_GAP in frame.columns:
        days_since = frame[s.UI_DAYS_SINCE_LAST].astype(np.float64)
        due = (days_since / frame[_ITEM_GAP]).where(frame[UI_KNOWN] > 0)
        frame[I_CYCLE_DUE] = due.replace([np.inf, -np.inf], np.nan).fillna(UNDEFINED)
        frame = frame.drop(columns=[_ITEM_GAP])
        derived.append(I_CYCLE_DUE)

    frame = _left_join(frame, user_features[[s.USER_IDX, *user_names]], [s.USER_IDX])
    frame = _left_join(frame, item_features[[s.ITEM_IDX, *item_names]], [s.ITEM_IDX])
    # ETL's computed features: documented neutral values for missing rows and undefined values.
    for name in (*ui_names, *user_names, *item_names):
        if name not in categorical_declared and not _is_attribute(name):
            values = pd.to_numeric(frame[name], errors="raise").astype(np.float64)
            frame[name] = values.fillna(neutral_value(name))

    # Price relative to what this user usually buys (wholesalers vs gift shoppers).
    numeric_items = [n for n in item_names if n not in categorical_declared]
    price = _price_column(numeric_items, item_features)
    if price is not None:
        bought = user_item_features.loc[user_item_features[s.UI_PURCHASE_DAYS].fillna(0) > 0,
                                        [s.USER_IDX, s.ITEM_IDX]]
        priced = bought.merge(item_features[[s.ITEM_IDX, price]], on=s.ITEM_IDX, how="left")
        priced = priced.loc[priced[price] > 0]
        user_price = priced.groupby(s.USER_IDX)[price].mean().rename("_user_price")
        frame = frame.join(user_price, on=s.USER_IDX)
        ratio = (frame[price] / frame["_user_price"]).where(frame[price] > 0)
        frame[PRICE_RATIO] = ratio.replace([np.inf, -np.inf], np.nan).fillna(UNDEFINED)
        frame = frame.drop(columns=["_user_price"])
        derived.append(PRICE_RATIO)

    buyers_total = float(item_features[s.ITEM_BUYERS_28D].sum()) if s.ITEM_BUYERS_28D in item_features else 0.0
    derived += _pace_features(frame, horizon_days, buyers_total)

    # Affinity to each categorical item attribute (category, brand...): share of the user's bought items
    # with the candidate's value.
    if [n for n in item_names if n in categorical_declared]:
        bought = user_item_features.loc[user_item_features[s.UI_PURCHASE_DAYS].fillna(0) > 0,
                                        [s.USER_IDX, s.ITEM_IDX]]
    for attr in (n for n in item_names if n in categorical_declared):
        name = f"{AFFINITY_PREFIX}{attr}"
        values = item_features[[s.ITEM_IDX, attr]].astype({attr: "string"}).fillna({attr: s.MISSING_CATEGORY})
        tagged = bought.merge(values, on=s.ITEM_IDX, how="left")
        share = (tagged.groupby([s.USER_IDX, attr]).size() / tagged.groupby(s.USER_IDX).size()).rename(name)
        key = pd.DataFrame({s.USER_IDX: frame[s.USER_IDX], attr: frame[attr].astype("string")
                            .fillna(s.MISSING_CATEGORY)})
        merged = key.merge(share.reset_index(), on=[s.USER_IDX, attr], how="left")
        frame[name] = merged[name].fillna(0.0).to_numpy()
        derived.append(name)

    # ETL's user_category (user_idx, category, uc_share): the user's share of events in the item's category.
    category_feature = s.ITEM_ATTR_PREFIX + s.ITEM_CATEGORY
    if user_category is not None and category_feature in frame.columns:
        _require(user_category, [s.USER_IDX, s.ITEM_CATEGORY, s.UC_SHARE], s.USER_CATEGORY)
        shares = user_category[[s.USER_IDX, s.ITEM_CATEGORY, s.UC_SHARE]].astype({s.ITEM_CATEGORY: "string"})
        category = frame[category_feature].astype("string").fillna(s.MISSING_CATEGORY)
        key = pd.DataFrame({s.USER_IDX: frame[s.USER_IDX], s.ITEM_CATEGORY: category})
        merged = key.merge(shares, on=[s.USER_IDX, s.ITEM_CATEGORY], how="left")
        frame[s.UC_SHARE] = merged[s.UC_SHARE].astype(np.float64).fillna(0.0).to_numpy()
        derived.append(s.UC_SHARE)

    numeric = [s.ALS_SCORE, s.ALS_RANK, s.COOC_SCORE, *_SOURCE_FLAGS, N_SOURCES, ALS_SCORE_GAP, COOC_RANK,
               *pair_features,
               *[n for n in ui_names if n not in categorical_declared], UI_KNOWN, *derived,
               *[n for n in user_names if n not in categorical_declared], *numeric_items]
    numeric = list(dict.fromkeys(numeric))  # the same name from two tables is one column anyway
    categorical = list(dict.fromkeys(n for n in (*user_names, *item_names, *ui_names)
                                     if n in categorical_declared))
    for name in numeric:
        frame[name] = pd.to_numeric(frame[name], errors="raise").astype(np.float64)
    for name in categorical:
        frame[name] = frame[name].astype("string").fillna(s.MISSING_CATEGORY).astype(object)

    built = FeatureSpec(features=(*numeric, *categorical), categorical=tuple(categorical))
    if spec is not None:
        missing = [n for n in spec.features if n not in frame.columns]
        if missing:
            raise KeyError(f"this fold cannot build features of the given spec: missing {missing}")
        if set(spec.categorical) != set(built.categorical):
            raise ValueError(f"categorical features differ from the spec: {built.categorical} vs "
                             f"{spec.categorical}")
        built = spec
    out = frame[[s.USER_IDX, s.ITEM_IDX, *built.features]]
    log.info("features: %d rows, %d users, %d features (%d categorical)", len(out),
             out[s.USER_IDX].nunique(), len(built.features), len(built.categorical))
    return out.reset_index(drop=True), built
