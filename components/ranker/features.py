"""The ranker's feature frame: one pure pandas function for every fold, so the labelled train fold and the
scored test fold (and serving, which reads the scored rows from the bundle) are built identically.

Inputs are one fold's tables (ETL: user/item/user_item features; ALS: candidates). Every feature is
relative to the fold's cutoff, which is what lets a model trained on the train fold rank the test fold.

Neutral values (no NaN from joins or ranks; documented here once):
- a candidate the user never touched (no user_item row): counts 0, ``*days_since*`` features
  :data:`DAYS_SENTINEL` (far in the past), ``ui_known`` 0, history rank :data:`RANK_SENTINEL`;
- not from ALS: ``als_score`` :data:`MISSING_SCORE`, ``als_rank`` :data:`RANK_SENTINEL`;
- categorical values: strings, :data:`components.ranker.model.MISSING_CATEGORY` when unknown;
- raw numeric user/item attributes stay NaN when unknown (an item without a price): CatBoost treats
  NaN as below every value (nan_mode Min) in training and scoring alike, and the CSV writes it as an
  empty field that both the built-in algorithm and the local trainer read back as NaN.

Numeric features come first, categorical ones last (the spec's FeaturesData layout, see model.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.model import MISSING_CATEGORY, FeatureSpec

log = logging.getLogger(__name__)

DAYS_SENTINEL: Final = 9999.0  # "never": far beyond any log's length
RANK_SENTINEL: Final = 1000.0  # "not in that list": after every real rank (lists hold <= a few hundred)
MISSING_SCORE: Final = -10.0  # "not scored by ALS": below any implicit-ALS dot product in practice

# Derived feature names (only this module and the feature spec use them).
UI_KNOWN: Final = "ui_known"
HIST_RANK: Final = "x_hist_rank"  # position in the `repurchase` baseline's order for this user
UI_PURCHASE_DAYS_REL: Final = "x_ui_purchase_days_rel"  # / the user's top item's purchase days
UI_PURCHASE_SHARE: Final = "x_ui_purchase_share"  # / the user's total item-purchase-days
U_HIST_ITEMS: Final = "x_u_hist_items"  # distinct items the user bought before the cutoff
U_HIST_PURCHASE_DAYS: Final = "x_u_item_purchase_days"  # sum over items of ui_purchase_days
U_REPEAT_SHARE: Final = "x_u_repeat_share"  # share of the user's items bought on >= 2 days
I_HIST_BUYERS: Final = "x_i_hist_buyers"  # distinct users who bought the item before the cutoff
I_REPEAT_RATE: Final = "x_i_repeat_rate"  # share of those who bought it on >= 2 days
I_MEAN_PURCHASE_DAYS: Final = "x_i_mean_purchase_days"  # mean ui_purchase_days over its buyers
RECENCY_RANK: Final = "x_recency_rank"  # position by ui_days_since_last within the user's history
RECENCY_REL: Final = "x_recency_rel"  # ui_days_since_last - the user's most recent days_since_last
ALS_SCORE_GAP: Final = "x_als_score_gap"  # the user's best als_score - this one
COOC_RANK: Final = "x_cooc_rank"  # position by cooc_score within the user's candidates
N_SOURCES: Final = "x_n_sources"  # how many generators proposed the pair
PRICE_RATIO: Final = "x_price_ratio"  # item price / mean price of the user's bought items
UI_CYCLE_DUE: Final = "x_ui_cycle_due"  # days since last / the user's own mean gap between buys of it
I_CYCLE_DUE: Final = "x_i_cycle_due"  # days since last / the item's median repurchase gap
AFFINITY_PREFIX: Final = "x_aff_"  # x_aff_<attr>: share of the user's items with the item's <attr> value

# A first-purchase recency lets the repurchase-cycle features exist; used when ETL provides it.
UI_DAYS_SINCE_FIRST: Final = "ui_days_since_first"

_SOURCE_FLAGS = s.CANDIDATE_SOURCE_COLUMNS


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{what} lacks columns {missing}; has {list(frame.columns)}")


def _rank_within_user(frame: pd.DataFrame, keys: list[str], ascending: list[bool]) -> pd.Series:
    """1-based position of each row within its user under the given sort (ties by item_idx asc)."""
    ordered = frame.sort_values([s.USER_IDX, *keys, s.ITEM_IDX], ascending=[True, *ascending, True],
                                kind="mergesort")
    ranks = ordered.groupby(s.USER_IDX, sort=False).cumcount() + 1
    return ranks.reindex(frame.index).astype(np.float64)


def _price_column(item_feature_names: Sequence[str], item_features: pd.DataFrame) -> str | None:
    """The item's price attribute, if the shop has one (a numeric item feature named like *price*)."""
    for name in item_feature_names:
        if "price" in name.lower() and pd.api.types.is_numeric_dtype(item_features[name]):
            return name
    return None


def history_stats(user_item: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-pair, per-user and per-item statistics of the fold's purchase history (user_item features).

    Returns (pair frame: user_idx, item_idx + pair-level derived, user frame, item frame)."""
    _require(user_item, [s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST],
             "user_item_features")
    ui = user_item[[s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST]
                   + ([UI_DAYS_SINCE_FIRST] if UI_DAYS_SINCE_FIRST in user_item.columns else [])].copy()
    ui[s.UI_PURCHASE_DAYS] = ui[s.UI_PURCHASE_DAYS].fillna(0).astype(np.float64)
    ui[s.UI_DAYS_SINCE_LAST] = ui[s.UI_DAYS_SINCE_LAST].fillna(DAYS_SENTINEL).astype(np.float64)
    bought = ui[s.UI_PURCHASE_DAYS] > 0

    pairs = ui[[s.USER_IDX, s.ITEM_IDX]].copy()
    # The repurchase baseline's own order, as a feature: the ranker starts from the strongest baseline.
    pairs[HIST_RANK] = _rank_within_user(ui, [s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST], [False, True])
    pairs[RECENCY_RANK] = _rank_within_user(ui, [s.UI_DAYS_SINCE_LAST], [True])
    by_user = ui.groupby(s.USER_IDX)
    purchase_days = by_user[s.UI_PURCHASE_DAYS]
    pairs[UI_PURCHASE_DAYS_REL] = ui[s.UI_PURCHASE_DAYS] / purchase_days.transform("max").clip(lower=1)
    pairs[UI_PURCHASE_SHARE] = ui[s.UI_PURCHASE_DAYS] / purchase_days.transform("sum").clip(lower=1)
    pairs[RECENCY_REL] = ui[s.UI_DAYS_SINCE_LAST] - by_user[s.UI_DAYS_SINCE_LAST].transform("min")

    users = pd.DataFrame({
        U_HIST_ITEMS: bought.groupby(ui[s.USER_IDX]).sum().astype(np.float64),
        U_HIST_PURCHASE_DAYS: by_user[s.UI_PURCHASE_DAYS].sum(),
        U_REPEAT_SHARE: (ui[s.UI_PURCHASE_DAYS] >= 2).groupby(ui[s.USER_IDX]).sum()
        / bought.groupby(ui[s.USER_IDX]).sum().clip(lower=1),
    }).reset_index()

    buyers = ui.loc[bought]
    by_item = buyers.groupby(s.ITEM_IDX)
    items = pd.DataFrame({
        I_HIST_BUYERS: by_item.size().astype(np.float64),
        I_REPEAT_RATE: (buyers[s.UI_PURCHASE_DAYS] >= 2).groupby(buyers[s.ITEM_IDX]).mean(),
        I_MEAN_PURCHASE_DAYS: by_item[s.UI_PURCHASE_DAYS].mean(),
    })

    if UI_DAYS_SINCE_FIRST in ui.columns:
        # Repurchase timing: how "due" the item is, against the user's own rhythm and the item's usual one.
        first = ui[UI_DAYS_SINCE_FIRST].astype(np.float64)
        repeat = ui[s.UI_PURCHASE_DAYS] >= 2
        gap = ((first - ui[s.UI_DAYS_SINCE_LAST]) / (ui[s.UI_PURCHASE_DAYS] - 1).clip(lower=1)).where(repeat)
        gap = gap.where(gap > 0)
        pairs[UI_CYCLE_DUE] = (ui[s.UI_DAYS_SINCE_LAST] / gap).fillna(-1.0)
        item_gap = gap.groupby(ui[s.ITEM_IDX]).median()
        items = items.join(item_gap.rename("_item_gap"), how="left")
    items = items.reset_index()
    return pairs, users, items


def build_features(
    candidates: pd.DataFrame,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
    user_item_features: pd.DataFrame,
    feature_lists: Mapping[str, Sequence[str]],
    *,
    user_category: pd.DataFrame | None = None,
    spec: FeatureSpec | None = None,
) -> tuple[pd.DataFrame, FeatureSpec]:
    """Candidates + the fold's features -> (frame: user_idx, item_idx + spec features, spec).

    ``feature_lists`` is ETL's features.json. Pass the train fold's ``spec`` when building the test fold:
    the result then has exactly those columns in that order (a missing one raises)."""
    _require(candidates, [s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *_SOURCE_FLAGS], "candidates")
    user_names = [n for n in feature_lists.get("user", []) if n in user_features.columns]
    item_names = [n for n in feature_lists.get("item", []) if n in item_features.columns]
    ui_names = [n for n in feature_lists.get("user_item", []) if n in user_item_features.columns]
    categorical_declared = set(feature_lists.get("categorical", []))

    frame = candidates[[s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *_SOURCE_FLAGS]].copy()
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

    # User-item history: neutral values for pairs the user never touched.
    ui = user_item_features[[s.USER_IDX, s.ITEM_IDX, *ui_names]].copy()
    ui[UI_KNOWN] = 1.0
    frame = frame.merge(ui, on=[s.USER_IDX, s.ITEM_IDX], how="left")
    for name in [*ui_names, UI_KNOWN]:
        if name in categorical_declared:
            continue
        neutral = DAYS_SENTINEL if "days_since" in name else 0.0
        frame[name] = frame[name].astype(np.float64).fillna(neutral)

    pairs, users, items = history_stats(user_item_features)
    frame = frame.merge(pairs, on=[s.USER_IDX, s.ITEM_IDX], how="left")
    frame = frame.merge(users, on=s.USER_IDX, how="left")
    frame = frame.merge(items, on=s.ITEM_IDX, how="left")
    for name in (HIST_RANK, RECENCY_RANK):
        frame[name] = frame[name].fillna(RANK_SENTINEL)
    for name in (UI_PURCHASE_DAYS_REL, UI_PURCHASE_SHARE, U_HIST_ITEMS, U_HIST_PURCHASE_DAYS, U_REPEAT_SHARE,
                 I_HIST_BUYERS, I_REPEAT_RATE, I_MEAN_PURCHASE_DAYS):
        frame[name] = frame[name].fillna(0.0)
    frame[RECENCY_REL] = frame[RECENCY_REL].fillna(DAYS_SENTINEL)
    derived = [HIST_RANK, RECENCY_RANK, UI_PURCHASE_DAYS_REL, UI_PURCHASE_SHARE, RECENCY_REL, U_HIST_ITEMS,
               U_HIST_PURCHASE_DAYS, U_REPEAT_SHARE, I_HIST_BUYERS, I_REPEAT_RATE, I_MEAN_PURCHASE_DAYS]
    if UI_CYCLE_DUE in frame.columns:
        frame[UI_CYCLE_DUE] = frame[UI_CYCLE_DUE].fillna(-1.0)
        days_since = frame[s.UI_DAYS_SINCE_LAST] if s.UI_DAYS_SINCE_LAST in frame.columns else None
        if days_since is not None:
            frame[I_CYCLE_DUE] = (days_since / frame["_item_gap"]).where(frame[UI_KNOWN] > 0).fillna(-1.0)
            derived.append(I_CYCLE_DUE)
        derived.insert(derived.index(RECENCY_REL), UI_CYCLE_DUE)
    frame = frame.drop(columns=[c for c in ("_item_gap",) if c in frame.columns])

    frame = frame.merge(user_features[[s.USER_IDX, *user_names]], on=s.USER_IDX, how="left")
    frame = frame.merge(item_features[[s.ITEM_IDX, *item_names]], on=s.ITEM_IDX, how="left")

    # Price relative to what this user usually buys (wholesalers vs gift shoppers).
    price = _price_column([n for n in item_names if n not in categorical_declared], item_features)
    if price is not None:
        bought = user_item_features.loc[user_item_features[s.UI_PURCHASE_DAYS].fillna(0) > 0,
                                        [s.USER_IDX, s.ITEM_IDX]]
        priced = bought.merge(item_features[[s.ITEM_IDX, price]], on=s.ITEM_IDX, how="left")
        user_price = priced.groupby(s.USER_IDX)[price].mean().rename("_user_price")
        frame = frame.join(user_price, on=s.USER_IDX)
        ratio = (frame[price] / frame["_user_price"]).replace([np.inf, -np.inf], np.nan)
        frame[PRICE_RATIO] = ratio.fillna(-1.0)
        frame = frame.drop(columns=["_user_price"])
        derived.append(PRICE_RATIO)

    # Affinity to each categorical item attribute (category, brand...): share of the user's bought items
    # with the candidate's value.
    for attr in (n for n in item_names if n in categorical_declared):
        name = f"{AFFINITY_PREFIX}{attr}"
        bought = user_item_features.loc[user_item_features[s.UI_PURCHASE_DAYS].fillna(0) > 0,
                                        [s.USER_IDX, s.ITEM_IDX]]
        values = item_features[[s.ITEM_IDX, attr]].astype({attr: "string"}).fillna({attr: MISSING_CATEGORY})
        tagged = bought.merge(values, on=s.ITEM_IDX, how="left")
        share = tagged.groupby([s.USER_IDX, attr]).size() / tagged.groupby(s.USER_IDX).size()
        key = frame[attr].astype("string").fillna(MISSING_CATEGORY)
        lookup = share.rename(name).reset_index()
        merged = pd.DataFrame({s.USER_IDX: frame[s.USER_IDX], attr: key}).merge(
            lookup, on=[s.USER_IDX, attr], how="left")
        frame[name] = merged[name].fillna(0.0).to_numpy()
        derived.append(name)

    extra: list[str] = []
    if user_category is not None and len(user_category.columns) > 1:
        # Optional ETL table keyed by user_idx + item attribute(s): join on the shared keys.
        keys = [c for c in user_category.columns if c in frame.columns]
        if s.USER_IDX not in keys or len(keys) < 2:
            raise KeyError(f"user_category must share user_idx and an item attribute with the frame; has "
                           f"{list(user_category.columns)}")
        values = [c for c in user_category.columns if c not in keys]
        frame = frame.merge(user_category, on=keys, how="left")
        for name in values:
            frame[name] = frame[name].astype(np.float64).fillna(0.0)
        extra = values

    numeric = [s.ALS_SCORE, s.ALS_RANK, s.COOC_SCORE, *_SOURCE_FLAGS, N_SOURCES, ALS_SCORE_GAP, COOC_RANK,
               *[n for n in ui_names if n not in categorical_declared], UI_KNOWN, *derived, *extra,
               *[n for n in user_names if n not in categorical_declared],
               *[n for n in item_names if n not in categorical_declared]]
    categorical = [n for n in (*user_names, *item_names, *ui_names) if n in categorical_declared]
    numeric = list(dict.fromkeys(numeric))  # the same name from two tables would be one column anyway
    for name in numeric:
        frame[name] = pd.to_numeric(frame[name], errors="raise").astype(np.float64)
    for name in categorical:
        frame[name] = frame[name].astype("string").fillna(MISSING_CATEGORY).astype(object)

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
