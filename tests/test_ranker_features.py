"""The feature frame on hand-made fold tables: neutral values, derived features, spec layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.ranker.features import (
    AFFINITY_PREFIX,
    DAYS_SENTINEL,
    HIST_RANK,
    MISSING_SCORE,
    RANK_SENTINEL,
    UI_KNOWN,
    UNDEFINED,
    _join,
    _pair_code,
    _positions,
    build_features,
    neutral_value,
)
from components.ranker.model import FeatureSpec

CATEGORY = s.ITEM_ATTR_PREFIX + s.ITEM_CATEGORY
LISTS = {
    "user": ["u_n_items", "u_mean_days_between_purchases", s.USER_ATTR_PREFIX + "country"],
    "item": [s.ITEM_BUYERS_28D, "i_avg_price", CATEGORY],
    "user_item": [s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST, "ui_recency_ratio"],
    "categorical": [s.USER_ATTR_PREFIX + "country", CATEGORY],
}


def tables() -> dict[str, pd.DataFrame]:
    candidates = pd.DataFrame({
        s.USER_IDX: [0, 0, 0, 1], s.ITEM_IDX: [10, 11, 12, 10],
        s.ALS_SCORE: [0.9, np.nan, 0.4, 0.2], s.ALS_RANK: [1, 0, 2, 1], s.COOC_SCORE: [0.0, 0.5, 0.0, 0.0],
        s.FROM_ALS: [True, False, True, True], s.FROM_HISTORY: [True, True, False, False],
        s.FROM_COOC: [False, True, False, False], s.FROM_POPULAR: [False, False, True, False],
    })
    users = pd.DataFrame({s.USER_IDX: [0, 1], "u_n_items": [2.0, 0.0],
                          "u_mean_days_between_purchases": [7.0, None],
                          s.USER_ATTR_PREFIX + "country": ["UK", None]})
    items = pd.DataFrame({s.ITEM_IDX: [10, 11, 12], s.ITEM_BUYERS_28D: [5.0, 1.0, 9.0],
                          "i_avg_price": [2.0, 4.0, 8.0], CATEGORY: ["mugs", "mugs", "cards"]})
    ui = pd.DataFrame({s.USER_IDX: [0, 0], s.ITEM_IDX: [10, 11], s.UI_PURCHASE_DAYS: [3.0, 3.0],
                       s.UI_DAYS_SINCE_LAST: [20.0, 5.0], "ui_recency_ratio": [2.0, None]})
    user_category = pd.DataFrame({s.USER_IDX: [0, 0], s.ITEM_CATEGORY: ["mugs", "cards"],
                                  s.UC_SHARE: [0.75, 0.25]})
    return {"candidates": candidates, "users": users, "items": items, "ui": ui,
            "user_category": user_category}


def build(spec: FeatureSpec | None = None) -> tuple[pd.DataFrame, FeatureSpec]:
    t = tables()
    frame, spec = build_features(t["candidates"], t["users"], t["items"], t["ui"], LISTS,
                                 user_category=t["user_category"], spec=spec)
    return frame.set_index([s.USER_IDX, s.ITEM_IDX]), spec


def test_neutral_values_for_pairs_without_history() -> None:
    frame, _ = build()
    fresh = frame.loc[(0, 12)]  # candidate user 0 never touched
    assert fresh[UI_KNOWN] == 0.0
    assert fresh[s.UI_PURCHASE_DAYS] == 0.0
    assert fresh[s.UI_DAYS_SINCE_LAST] == DAYS_SENTINEL
    assert fresh["ui_recency_ratio"] == UNDEFINED
    assert fresh[HIST_RANK] == RANK_SENTINEL
    assert frame.loc[(0, 11), s.ALS_SCORE] == MISSING_SCORE
    assert frame.loc[(0, 11), s.ALS_RANK] == RANK_SENTINEL
    assert frame.loc[(0, 11), "ui_recency_ratio"] == UNDEFINED  # undefined inside a known pair
    assert frame.loc[(1, 10), "u_mean_days_between_purchases"] == UNDEFINED
    assert frame.loc[(1, 10), s.USER_ATTR_PREFIX + "country"] == s.MISSING_CATEGORY
    numeric = frame.select_dtypes("number")
    assert not numeric.isna().any().any()


def test_history_rank_is_the_repurchase_order_and_cross_features() -> None:
    frame, _ = build()
    # Both items bought on 3 days: the more recent one (11, 5 days) ranks first.
    assert frame.loc[(0, 11), HIST_RANK] == 1.0
    assert frame.loc[(0, 10), HIST_RANK] == 2.0
    # user 0 bought items priced 2 and 4 (mean 3): item 12 at 8 is 8/3 of it
    assert frame.loc[(0, 12), "x_price_ratio"] == pytest.approx(8 / 3)
    assert frame.loc[(1, 10), "x_price_ratio"] == UNDEFINED  # user 1 bought nothing
    # both bought items are mugs: mug affinity 1, cards 0; ETL's category share joins on the raw category
    assert frame.loc[(0, 10), AFFINITY_PREFIX + CATEGORY] == 1.0
    assert frame.loc[(0, 12), AFFINITY_PREFIX + CATEGORY] == 0.0
    assert frame.loc[(0, 12), s.UC_SHARE] == 0.25
    assert frame.loc[(1, 10), s.UC_SHARE] == 0.0


def test_spec_layout_and_reuse_for_the_test_fold() -> None:
    frame, spec = build()
    assert spec.categorical == (s.USER_ATTR_PREFIX + "country", CATEGORY)
    assert spec.numeric_first
    assert list(frame.columns) == list(spec.features)
    again, same = build(spec=spec)
    assert same == spec
    pd.testing.assert_frame_equal(again, frame)
    t = tables()
    with pytest.raises(KeyError, match="i_avg_price"):
        build_features(t["candidates"], t["users"], t["items"].drop(columns=["i_avg_price"]), t["ui"],
                       LISTS, user_category=t["user_category"], spec=spec)


def test_neutral_value_rule() -> None:
    assert neutral_value("ui_days_since_first") == DAYS_SENTINEL
    assert neutral_value("ui_mean_interval_days") == UNDEFINED
    assert neutral_value("u_avg_basket_value") == UNDEFINED
    assert neutral_value("ui_recency_ratio") == UNDEFINED
    assert neutral_value("ui_quantity") == 0.0
    assert neutral_value("i_repurchase_rate") == 0.0


def test_validation_ndcg_counts_targets_outside_the_candidates() -> None:
    from components.ranker.validation import _ndcg

    frame = pd.DataFrame({s.USER_IDX: [0, 0, 0, 1, 1], s.ITEM_IDX: [1, 2, 3, 1, 2],
                          s.LABEL: [1, 0, 0, 0, 1], s.N_TARGETS: [2, 2, 2, 1, 1]})
    # user 0: hit at rank 1, one more target not among candidates -> DCG 1, IDCG 1 + 1/log2(3)
    # user 1: its only target ranks 2nd -> 1/log2(3)
    value = _ndcg(frame, np.array([0.9, 0.5, 0.1, 0.8, 0.2]), 10)
    expected = (1 / (1 + 1 / np.log2(3)) + 1 / np.log2(3)) / 2
    assert value == pytest.approx(expected)


def test_the_join_matches_a_pandas_left_merge() -> None:
    """The features' join (an index lookup of the right table's columns) against its reference, pandas'
    merge: the same values and missing values for int, float, bool and string columns (numbers become
    float64 as every numeric feature does; a categorical keeps its values as objects)."""
    frame = pd.DataFrame({s.USER_IDX: [3, 1, 2, 3, 9], s.ITEM_IDX: [0, 1, 1, 2, 0]})
    right = pd.DataFrame({s.USER_IDX: [1, 3, 3, 2], s.ITEM_IDX: [1, 0, 2, 5], "n": [7, 8, 9, 10],
                          "x": [0.5, np.nan, 1.5, 2.5], "b": [True, False, True, True], "c": ["a", "b", None, "d"]})
    expected = frame.merge(right, on=[s.USER_IDX, s.ITEM_IDX], how="left")
    columns: dict[str, np.ndarray] = {}
    position = _positions(_pair_code(frame[s.USER_IDX].to_numpy(), frame[s.ITEM_IDX].to_numpy()),
                          _pair_code(right[s.USER_IDX].to_numpy(), right[s.ITEM_IDX].to_numpy()), "right")
    _join(columns, right, ["n", "x", "b", "c"], position, {"c"})
    for name in ("n", "x", "b"):
        np.testing.assert_array_equal(columns[name], expected[name].astype(np.float64).to_numpy())
    assert [None if pd.isna(v) else v for v in columns["c"]] == [None if pd.isna(v) else v for v in expected["c"]]
    with pytest.raises(ValueError, match=r"columns \['n'\] would be joined twice"):
        _join(columns, right, ["n"], position, set())
    with pytest.raises(ValueError, match="right has more than one row"):
        _positions(np.array([1]), np.array([1, 1]), "right")


def test_itemknn_score_is_a_feature_when_ranker_data_adds_it() -> None:
    """ranker_data's itemknn column (ranker.itemknn_features) becomes a numeric feature, 0 where missing;
    without the column there is no such feature."""
    t = tables()
    candidates = t["candidates"].assign(**{s.ITEMKNN_PAIR_COLUMN: [0.5, 2.0, np.nan, 0.0]})
    frame, spec = build_features(candidates, t["users"], t["items"], t["ui"], LISTS,
                                 user_category=t["user_category"])
    assert s.ITEMKNN_PAIR_COLUMN in spec.numeric and spec.numeric_first
    assert frame[s.ITEMKNN_PAIR_COLUMN].tolist() == [0.5, 2.0, 0.0, 0.0]
    _, without = build()
    assert s.ITEMKNN_PAIR_COLUMN not in without.features


def test_fresh_answers_keep_the_itemknn_score_of_the_snapshot() -> None:
    """components/realtime/features.py recomputes the user-event features of a user with fresh events through
    build_features over the candidate columns; itemknn's score is a model fitted at the cutoff, as ALS's: kept
    at the snapshot (recomputing it there would find no such column: every fresh answer would fail)."""
    from components.realtime.features import recomputed_features

    spec = FeatureSpec(features=(s.ALS_SCORE, s.ITEMKNN_PAIR_COLUMN, s.UI_PURCHASE_DAYS))
    assert recomputed_features(spec) == [s.UI_PURCHASE_DAYS]


def test_the_numpy_group_operations_equal_pandas_bit_for_bit() -> None:
    """build_features groups and ranks with numpy (one user's request cannot afford pandas' per-call cost);
    each primitive against the pandas operation it replaced, on random data with ties, NaNs, negative ids
    (new users and items online) and unsorted rows: equal bit for bit."""
    from components.ranker.features import (
        _categories,
        _dense_rank_within_user,
        _group_codes,
        _group_extreme,
        _group_mean,
        _rank_within_user,
    )

    rng = np.random.default_rng(7)
    n = 3000
    users = rng.integers(-1, 40, n)
    items = rng.permutation(n) - 50  # unique per row, some negative
    coarse = rng.integers(0, 5, n).astype(np.float64)  # many ties
    noisy = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n) * 1e3)
    frame = pd.DataFrame({s.USER_IDX: users, s.ITEM_IDX: items, "a": coarse, "b": noisy})
    for keys, ascending in ((["a"], [False]), (["b"], [True]), (["a", "b"], [False, True]), (["b"], [False])):
        columns = [s.USER_IDX, *keys, s.ITEM_IDX]
        ordered = frame[columns].sort_values(columns, ascending=[True, *ascending, True], kind="mergesort")
        expected = (ordered.groupby(s.USER_IDX, sort=False).cumcount() + 1).reindex(frame.index).astype(np.float64)
        got = _rank_within_user(users, [(frame[k].to_numpy(), asc) for k, asc in zip(keys, ascending, strict=True)],
                                items)
        np.testing.assert_array_equal(got, expected.to_numpy(), err_msg=f"{keys} {ascending}")
    np.testing.assert_array_equal(_dense_rank_within_user(users, coarse),
                                  frame.groupby(s.USER_IDX)["a"].rank(method="dense").to_numpy())
    unique, codes = _group_codes(users)
    by_user = frame.groupby(s.USER_IDX)["b"]
    np.testing.assert_array_equal(_group_extreme(codes, len(unique), noisy, largest=True), by_user.max().to_numpy())
    np.testing.assert_array_equal(_group_extreme(codes, len(unique), noisy, largest=False), by_user.min().to_numpy())
    prices = rng.random(n) * 10.0 ** rng.integers(-3, 6, n)  # magnitudes where summation order shows
    expected_mean = pd.Series(prices).groupby(users).mean().to_numpy()
    assert _group_mean(codes, len(unique), prices).tobytes() == expected_mean.tobytes()
    all_nan = _group_extreme(np.array([0, 0, 1]), 2, np.array([np.nan, np.nan, 1.0]), largest=True)
    assert np.isnan(all_nan[0]) and all_nan[1] == 1.0
    mixed = np.array(["mugs", None, 5, 2.5, np.nan], dtype=object)
    for values in (mixed, np.array(["a", None], dtype=object), np.array([1.0, np.nan]), np.array([3, 4])):
        expected_text = pd.Series(values).astype("string").fillna(s.MISSING_CATEGORY).to_numpy(object)
        assert _categories(values).tolist() == expected_text.tolist()
