"""Features, weights, targets and segments on a hand-built shop (3 users, 4 items) whose expected values
are worked out by hand below, and the leakage test: events at or after a cutoff never reach that fold."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components import schema as s
from components.config import EtlConfig
from components.etl.step import run_etl

# end = 03-10 15:00 -> test_start = 03-08 00:00 (test_days 2), label_start = train cutoff C = 03-05 00:00.
CONFIG = EtlConfig(test_days=2, label_days=3)
EVENTS = [
    # user, item, type, timestamp, quantity, price, session
    ("a", "i1", "purchase", "2024-03-01T10:00:00", "2", "1.5", "s1"),
    ("a", "i2", "purchase", "2024-03-01T10:00:00", "1", "4.0", "s1"),
    ("a", "i1", "purchase", "2024-03-03 12:00:00", "1", "1.5", "s2"),
    ("a", "i3", "view", "2024-03-04T12:00:00Z", "", "10", ""),
    ("b", "i1", "purchase", "2024-02-01T00:00:00", "3", "1.0", "s3"),
    ("b", "i2", "add_to_cart", "2024-03-04T08:00:00+02:00", "", "", ""),  # = 06:00 UTC
    ("b", "i1", "return", "2024-02-03T00:00:00", "3", "", "s4"),
    ("c", "i4", "purchase", "2024-03-06T09:00:00", "1", "7", "s5"),  # label window: train target, cold
    ("a", "i2", "purchase", "2024-03-06T10:00:00", "1", "4.0", "s6"),  # label window: train target
    ("b", "i1", "purchase", "2024-03-09T10:00:00", "1", "1.0", "s7"),  # test window
    ("c", "i4", "purchase", "2024-03-10T15:00:00", "1", "7", "s8"),  # the last event: end
]
ITEMS = pd.DataFrame({s.ITEM_ID: ["i1", "i2", "i3", "i4"], "category": ["mugs", "mugs", "bags", "cards"],
                      "price": [1.5, 4.0, 10.0, 7.0]})
USERS = pd.DataFrame({s.USER_ID: ["a", "b", "c"], "country": ["UK", "France", "UK"]})
COLUMNS = [s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID]


def write_raw(root: Path, events: Sequence[tuple[str, ...]]) -> Path:
    for name, frame in ((s.EVENTS, pd.DataFrame(events, columns=COLUMNS)), (s.ITEMS, ITEMS), (s.USERS, USERS)):
        (root / name).mkdir(parents=True, exist_ok=True)
        frame.to_csv(root / name / "part-0.csv", index=False)
    return root


def by_id(out: Path, fold: str, table: str) -> pd.DataFrame:
    """A fold table keyed by the original ids (indices are surrogate keys and may shift between runs)."""
    frame = pd.read_parquet(out / s.FOLDS_DIR / fold / table)
    if s.USER_IDX in frame:
        users = pd.read_parquet(out / s.ID_MAPS_DIR / s.USERS)
        frame = frame.merge(users, on=s.USER_IDX).drop(columns=s.USER_IDX)
    if s.ITEM_IDX in frame:
        items = pd.read_parquet(out / s.ID_MAPS_DIR / s.ITEMS)
        frame = frame.merge(items, on=s.ITEM_IDX).drop(columns=s.ITEM_IDX)
    keys = [k for k in (s.USER_ID, s.ITEM_ID, s.ITEM_CATEGORY) if k in frame]
    return frame.sort_values(keys).reset_index(drop=True)[keys + sorted(set(frame) - set(keys))]


@pytest.fixture(scope="module")
def shop(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hand")
    run_etl(spark, write_raw(root / "raw", EVENTS), root / "etl", CONFIG)
    return root / "etl"


def row(frame: pd.DataFrame, **keys: str) -> dict[str, Any]:
    match = frame
    for key, value in keys.items():
        match = match[match[key] == value]
    assert len(match) == 1, f"expected one row for {keys}, got {len(match)}"
    return dict(match.iloc[0])


def test_windows_and_id_maps(shop: Path) -> None:
    windows = json.loads((shop / s.WINDOWS_FILE).read_text())
    assert windows["test_start"] == "2024-03-08T00:00:00Z"
    assert windows["label_start"] == "2024-03-05T00:00:00Z"
    assert windows["end"] == "2024-03-10T15:00:00Z"
    users = pd.read_parquet(shop / s.ID_MAPS_DIR / s.USERS).sort_values(s.USER_IDX)
    assert list(users[s.USER_ID]) == ["a", "b", "c"]
    assert list(users[s.USER_IDX]) == [0, 1, 2]
    assert str(users[s.USER_IDX].dtype) == "int32"


def test_user_features_by_hand(shop: Path) -> None:
    users = by_id(shop, s.TRAIN_FOLD, s.USER_FEATURES)
    a = row(users, user_id="a")
    assert a[s.U_N_EVENTS] == 4
    assert a[s.U_N_PURCHASE_DAYS] == 2
    assert a[s.U_N_INVOICES] == 2
    assert a[s.U_N_ITEMS] == 2
    assert a[s.U_SPEND] == pytest.approx(2 * 1.5 + 4.0 + 1.5)
    assert a[s.U_AVG_BASKET_VALUE] == pytest.approx(8.5 / 2)
    assert a[s.U_DAYS_SINCE_LAST] == pytest.approx(0.5)  # view 03-04 12:00
    assert a[s.U_DAYS_SINCE_FIRST] == pytest.approx(3 + 14 / 24)  # 03-01 10:00
    assert a[s.U_PURCHASE_DAYS_28D] == 2
    assert a[s.U_PURCHASE_DAYS_90D] == 2
    assert a[s.U_MEAN_DAYS_BETWEEN_PURCHASES] == pytest.approx(2.0)
    assert a[s.U_AVG_ITEM_PRICE] == pytest.approx((1.5 + 4.0 + 1.5) / 3)
    assert a[s.USER_ATTR_PREFIX + "country"] == "UK"
    b = row(users, user_id="b")
    assert (b[s.U_N_EVENTS], b[s.U_N_PURCHASE_DAYS], b[s.U_N_INVOICES]) == (3, 1, 1)
    assert b[s.U_DAYS_SINCE_LAST] == pytest.approx(0.75)  # the +02:00 cart = 06:00 UTC
    assert b[s.U_DAYS_SINCE_FIRST] == pytest.approx(33.0)  # 2024-02-01 (leap year)
    assert b[s.U_PURCHASE_DAYS_28D] == 0  # 02-01 is before C - 28 d = 02-06
    assert b[s.U_PURCHASE_DAYS_90D] == 1
    assert math.isnan(b[s.U_MEAN_DAYS_BETWEEN_PURCHASES])
    # c has no event before C: present through users/, counts 0, durations missing
    c = row(users, user_id="c")
    assert (c[s.U_N_EVENTS], c[s.U_N_PURCHASE_DAYS], c[s.U_SPEND]) == (0, 0, 0)
    assert math.isnan(c[s.U_DAYS_SINCE_LAST])
    assert c[s.USER_ATTR_PREFIX + "country"] == "UK"


def test_item_features_by_hand(shop: Path) -> None:
    items = by_id(shop, s.TRAIN_FOLD, s.ITEM_FEATURES)
    i1 = row(items, item_id="i1")
    assert i1[s.ITEM_BUYERS_28D] == 1  # a only: b's purchase (02-01) is older than 28 days
    assert i1[s.ITEM_BUYERS_7D] == 1
    assert i1[s.ITEM_BUYERS_90D] == 2
    assert i1[s.ITEM_BUYERS_TOTAL] == 2
    assert i1[s.ITEM_PURCHASE_DAYS_TOTAL] == 3
    assert i1[s.ITEM_TREND] == pytest.approx((4 * 1 + 1) / (1 + 1))
    assert i1[s.ITEM_AVG_PRICE] == pytest.approx((1.5 + 1.5 + 1.0) / 3)
    assert i1[s.ITEM_REPURCHASE_RATE] == pytest.approx(0.5)
    assert i1[s.ITEM_MEAN_REPURCHASE_INTERVAL] == pytest.approx(2.0)
    assert i1[s.ITEM_DAYS_SINCE_FIRST_SALE] == pytest.approx(33.0)
    assert i1[s.ITEM_DAYS_SINCE_LAST_SALE] == pytest.approx(1.5)
    assert i1[s.ITEM_ATTR_PREFIX + "category"] == "mugs"
    assert i1[s.ITEM_ATTR_PREFIX + "price"] == pytest.approx(1.5)
    i3 = row(items, item_id="i3")  # viewed, never bought
    assert (i3[s.ITEM_BUYERS_TOTAL], i3[s.ITEM_TREND], i3[s.ITEM_AVG_PRICE]) == (0, 1.0, 10.0)
    assert math.isnan(i3[s.ITEM_REPURCHASE_RATE])
    i4 = row(items, item_id="i4")  # catalog only before C
    assert i4[s.ITEM_BUYERS_TOTAL] == 0
    assert math.isnan(i4[s.ITEM_DAYS_SINCE_LAST_SALE])


def test_user_item_features_weights_and_interactions_by_hand(shop: Path) -> None:
    pairs = by_id(shop, s.TRAIN_FOLD, s.USER_ITEM_FEATURES)
    assert len(pairs) == 5  # (a,i1) (a,i2) (a,i3) (b,i1) (b,i2): only pairs with history before C
    a1 = row(pairs, user_id="a", item_id="i1")
    assert a1[s.UI_PURCHASE_DAYS] == 2
    assert a1[s.UI_DAYS_SINCE_LAST] == pytest.approx(1.5)
    assert a1[s.UI_DAYS_SINCE_FIRST] == pytest.approx(3 + 14 / 24)
    assert (a1[s.UI_N_EVENTS], a1[s.UI_QUANTITY], a1[s.UI_VIEWS], a1[s.UI_CARTS], a1[s.UI_RETURNS]) == (
        2, 3, 0, 0, 0)
    assert a1[s.UI_SPEND] == pytest.approx(4.5)
    # default weights: purchase 5 x log2(1 + units) per purchase day: day 1 has 2 units, day 2 has 1
    assert a1[s.UI_WEIGHT] == pytest.approx(5 * math.log2(3) + 5 * math.log2(2))
    assert a1[s.UI_MEAN_INTERVAL_DAYS] == pytest.approx(2.0)
    assert a1[s.UI_RECENCY_RATIO] == pytest.approx(1.5 / 2.0)
    assert a1[s.UI_PURCHASE_DAYS_90D] == 2
    assert a1[s.UI_SHARE_OF_USER_DAYS] == pytest.approx(1.0)
    assert row(pairs, user_id="a", item_id="i2")[s.UI_SHARE_OF_USER_DAYS] == pytest.approx(0.5)
    b1 = row(pairs, user_id="b", item_id="i1")
    assert b1[s.UI_RETURNS] == 1
    assert b1[s.UI_WEIGHT] == pytest.approx(0.0)  # the return of all 3 units cancels the purchase
    interactions = by_id(shop, s.TRAIN_FOLD, s.INTERACTIONS)
    got = {(r.user_id, r.item_id): r.weight for r in interactions.itertuples()}
    assert got == pytest.approx({("a", "i1"): 5 * math.log2(3) + 5, ("a", "i2"): 5.0, ("a", "i3"): 1.0,
                                 ("b", "i2"): 3.0})


def test_targets_segments_and_user_category(shop: Path) -> None:
    train = by_id(shop, s.TRAIN_FOLD, s.TARGETS)
    assert set(zip(train[s.USER_ID], train[s.ITEM_ID], strict=True)) == {("a", "i2"), ("c", "i4")}
    segments = by_id(shop, s.TRAIN_FOLD, s.TARGET_USERS)
    assert dict(zip(segments[s.USER_ID], segments[s.SEGMENT], strict=True)) == {"a": s.WARM, "c": s.COLD}
    test = by_id(shop, s.TEST_FOLD, s.TARGETS)
    assert set(zip(test[s.USER_ID], test[s.ITEM_ID], strict=True)) == {("b", "i1"), ("c", "i4")}
    segments = by_id(shop, s.TEST_FOLD, s.TARGET_USERS)
    assert dict(zip(segments[s.USER_ID], segments[s.SEGMENT], strict=True)) == {"b": s.WARM, "c": s.WARM}
    shares = by_id(shop, s.TRAIN_FOLD, s.USER_CATEGORY)
    got = {(r.user_id, r.category): r.uc_share for r in shares.itertuples()}
    assert got == pytest.approx({("a", "mugs"): 0.75, ("a", "bags"): 0.25, ("b", "mugs"): 1.0})


def test_features_json_lists_what_was_written(shop: Path) -> None:
    spec = json.loads((shop / s.FEATURES_FILE).read_text())
    assert spec["categorical"] == [s.USER_ATTR_PREFIX + "country", s.ITEM_ATTR_PREFIX + "category"]
    assert spec[s.USER_CATEGORY] == [s.UC_SHARE]
    for fold in s.FOLDS:
        for group, table, keys in (("user", s.USER_FEATURES, [s.USER_IDX]),
                                   ("item", s.ITEM_FEATURES, [s.ITEM_IDX]),
                                   ("user_item", s.USER_ITEM_FEATURES, [s.USER_IDX, s.ITEM_IDX])):
            columns = list(pd.read_parquet(shop / s.FOLDS_DIR / fold / table).columns)
            assert columns == keys + spec[group], (fold, table)
    assert {s.ITEM_BUYERS_28D, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST} <= {
        *spec["item"], *spec["user_item"]}


def test_leakage_events_after_a_cutoff_do_not_change_that_fold(spark: Any, shop: Path, tmp_path: Path) -> None:
    """Change, add and drop events at or after the train cutoff (end kept the same, so the cutoffs are the
    same): every train-fold table built from history must be identical, compared by ids."""
    changed = [e for e in EVENTS if e[3] < "2024-03-05"]
    changed += [
        ("a", "i3", "purchase", "2024-03-05T00:00:00", "50", "10", "x1"),  # exactly at the cutoff
        ("a", "i1", "return", "2024-03-06T00:00:00", "3", "1.5", "x2"),
        ("d", "i2", "purchase", "2024-03-07T00:00:00", "1", "4.0", "x3"),  # a user who appears later
        ("0", "i4", "view", "2024-03-09T00:00:00", "", "", ""),  # sorts first: shifts every user_idx
        ("c", "i4", "purchase", "2024-03-10T15:00:00", "1", "7", "s8"),
    ]
    other = tmp_path / "etl"
    run_etl(spark, write_raw(tmp_path / "raw", changed), other, CONFIG)
    assert json.loads((other / s.WINDOWS_FILE).read_text()) == json.loads((shop / s.WINDOWS_FILE).read_text())
    for table in (s.INTERACTIONS, s.USER_FEATURES, s.ITEM_FEATURES, s.USER_ITEM_FEATURES, s.USER_CATEGORY):
        before = by_id(shop, s.TRAIN_FOLD, table)
        after = by_id(other, s.TRAIN_FOLD, table)
        pd.testing.assert_frame_equal(before, after, check_dtype=False, obj=table)
    # ...while the test fold, whose history includes those events, does see them
    assert not by_id(other, s.TEST_FOLD, s.INTERACTIONS).equals(by_id(shop, s.TEST_FOLD, s.INTERACTIONS))


@pytest.mark.parametrize(("config", "expected"), [
    # two purchases on day 0 (2 and 30 units), one on day 1 (1 unit), a view on day 1; cutoff = day 3
    (EtlConfig(weight_unit="event", quantity_scale="linear", quantity_cap=10), 5 * (2 + 10 + 1) + 1),
    (EtlConfig(weight_unit="day", quantity_scale="linear", quantity_cap=10), 5 * (10 + 1) + 1),
    (EtlConfig(weight_unit="day", quantity_scale="log"), 5 * (math.log2(33) + 1) + 1),
    (EtlConfig(weight_unit="day", purchase_weight_by_quantity=False), 5 * 2 + 1),
    # half-life 1 day: day-0 purchases (noon) are 2.5 days old at the cutoff, day-1 events 1.5 days
    (EtlConfig(weight_unit="event", quantity_scale="linear", decay_half_life_days=1.0),
     5 * 32 * 0.5**2.5 + (5 * 1 + 1) * 0.5**1.5),
    (EtlConfig(weight_unit="day", quantity_scale="linear", decay_half_life_days=1.0),
     5 * 32 * 0.5**2.5 + (5 * 1 + 1) * 0.5**1.5),
])
def test_weight_variants(spark: Any, config: EtlConfig, expected: float) -> None:
    from components.etl import features as feat
    from components.etl.weights import DAY, TS_US
    from components.etl.windows import DAY_MICROS

    noon = DAY_MICROS // 2
    rows = [(0, 0, s.PURCHASE, 2, 1.0, "a", noon, 0), (0, 0, s.PURCHASE, 30, 1.0, "a", noon, 0),
            (0, 0, s.PURCHASE, 1, 1.0, "b", DAY_MICROS + noon, 1), (0, 0, s.VIEW, 1, 1.0, None, DAY_MICROS + noon, 1)]
    events = spark.createDataFrame(rows, f"{s.USER_IDX} int, {s.ITEM_IDX} int, {s.EVENT_TYPE} string, "
                                         f"{s.QUANTITY} int, {s.PRICE} double, {s.SESSION_ID} string, "
                                         f"{TS_US} long, {DAY} int")
    cutoff, end = 3 * DAY_MICROS, 10 * DAY_MICROS  # the per-event sums are made relative to the end
    daily = feat.fold_history(feat.daily_table(events, end, config), cutoff)
    (got,) = feat.pair_table(daily, cutoff, end, config).select(s.UI_WEIGHT).collect()
    assert got[0] == pytest.approx(expected)


def test_fully_returned_pairs_weigh_exactly_zero_and_are_not_interactions(spark: Any) -> None:
    """Decayed per-event weights of purchases and the returns that undo them cancel only up to rounding:
    summed in Spark's order about a third of such pairs came out +1e-16 (a positive interaction for ALS)
    before the cancellation tolerance. A partly returned pair keeps its remaining weight."""
    import random

    from components.etl import features as feat
    from components.etl.weights import DAY, TS_US
    from components.etl.windows import DAY_MICROS

    config = EtlConfig(weight_unit="event", quantity_scale="linear", decay_half_life_days=1.0)
    cutoff = 10 * DAY_MICROS
    draw = random.Random(1)
    rows = []
    for user in range(200):
        for k in range(3):
            ts, units = int(cutoff - draw.uniform(0.05, 4.0) * DAY_MICROS), draw.randint(1, 3)
            rows += [(user, 0, s.PURCHASE, units, 1.0, f"p{user}-{k}", ts, ts // DAY_MICROS),
                     (user, 0, s.RETURN, units, 1.0, f"r{user}-{k}", ts, ts // DAY_MICROS)]
    partly = int(cutoff - 0.5 * DAY_MICROS)
    rows += [(200, 0, s.PURCHASE, 3, 1.0, "p", partly, partly // DAY_MICROS),
             (200, 0, s.RETURN, 1, 1.0, "r", partly, partly // DAY_MICROS)]
    events = spark.createDataFrame(rows, f"{s.USER_IDX} int, {s.ITEM_IDX} int, {s.EVENT_TYPE} string, "
                                         f"{s.QUANTITY} int, {s.PRICE} double, {s.SESSION_ID} string, "
                                         f"{TS_US} long, {DAY} int")
    pairs = feat.pair_table(feat.fold_history(feat.daily_table(events, cutoff, config), cutoff), cutoff, cutoff,
                            config)
    weights = pd.DataFrame(pairs.select(s.USER_IDX, s.UI_WEIGHT).toPandas()).set_index(s.USER_IDX)[s.UI_WEIGHT]
    assert (weights.drop(200) == 0.0).all()
    assert weights[200] == pytest.approx(5 * 2 * 0.5**0.5)
    assert [row[s.USER_IDX] for row in feat.interactions(pairs).select(s.USER_IDX).collect()] == [200]


def test_users_without_a_users_row_get_the_missing_category(spark: Any) -> None:
    from components.etl import features as feat
    from components.etl.weights import DAY, TS_US
    from components.etl.windows import DAY_MICROS

    events = spark.createDataFrame(
        [(0, 0, s.PURCHASE, 1, 1.0, "a", 0, 0), (1, 0, s.PURCHASE, 1, 1.0, "b", 0, 0)],
        f"{s.USER_IDX} int, {s.ITEM_IDX} int, {s.EVENT_TYPE} string, {s.QUANTITY} int, {s.PRICE} double, "
        f"{s.SESSION_ID} string, {TS_US} long, {DAY} int")
    attrs = spark.createDataFrame([(0, "UK", 30.0)], f"{s.USER_IDX} int, u_attr_country string, u_attr_age double")
    daily = feat.daily_table(events, DAY_MICROS, CONFIG)
    pairs = feat.pair_table(daily, DAY_MICROS, DAY_MICROS, CONFIG)
    frame = feat.user_features(pairs, feat.user_day_stats(daily, DAY_MICROS),
                               feat.user_invoices(feat.orders_table(events)), DAY_MICROS, attrs,
                               ["u_attr_country", "u_attr_age"])
    got = {r[s.USER_IDX]: r for r in frame.collect()}
    assert got[0]["u_attr_country"] == "UK"
    assert got[1]["u_attr_country"] == s.MISSING_CATEGORY
    assert got[1]["u_attr_age"] is None
    assert got[1][s.U_N_INVOICES] == 1
