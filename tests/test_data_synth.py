"""The synthetic shop: contract, determinism, exact size, and the shop-like behaviour it promises."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema as s
from components.data.synth import (
    BAD_TIMESTAMP,
    SynthParams,
    SynthReport,
    default_sizes,
    generate_synthetic,
)
from components.errors import DataContractError, EcomrecError

EVENTS = 20_000
SEED = 11


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthReport, Path]:
    dest = tmp_path_factory.mktemp("synth")
    return generate_synthetic(dest, events=EVENTS, seed=SEED), dest


@pytest.fixture(scope="module")
def events(shop: tuple[SynthReport, Path]) -> pd.DataFrame:
    return pd.read_parquet(shop[1] / s.EVENTS)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def test_contract_tables_and_types(shop: tuple[SynthReport, Path], events: pd.DataFrame) -> None:
    report, dest = shop
    parts = sorted((dest / s.EVENTS).glob("*.parquet"))
    assert len(parts) == report.parts > 1
    schema = pq.read_schema(parts[0])
    expected = {s.USER_ID: pa.string(), s.ITEM_ID: pa.string(), s.EVENT_TYPE: pa.string(),
                s.TIMESTAMP: pa.timestamp("us", tz="UTC"), s.QUANTITY: pa.int64(), s.PRICE: pa.float64(),
                s.SESSION_ID: pa.string()}
    assert {name: schema.field(name).type for name in schema.names} == expected
    assert len(events) == report.events == EVENTS  # exactly the number asked for
    assert set(events[s.EVENT_TYPE]) == set(s.EVENT_TYPES)
    assert events[[s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP]].notna().all().all()
    assert (events[s.QUANTITY] > 0).all()
    assert (events[s.PRICE] >= 0).all()

    items = pd.read_parquet(dest / s.ITEMS)
    users = pd.read_parquet(dest / s.USERS)
    assert items[s.ITEM_ID].is_unique
    assert users[s.USER_ID].is_unique
    assert set(items.columns) == {s.ITEM_ID, s.ITEM_CATEGORY, s.ITEM_BRAND, s.PRICE}
    assert set(users.columns) == {s.USER_ID, s.USER_COUNTRY, s.USER_SEGMENT}
    assert set(events[s.ITEM_ID]) <= set(items[s.ITEM_ID])
    assert set(events[s.USER_ID]) <= set(users[s.USER_ID])
    n_users, n_items, _ = default_sizes(EVENTS, SynthParams())
    assert (len(users), len(items)) == (n_users, n_items) == (report.users, report.items)
    assert n_users == EVENTS // 25
    assert report.by_type == events[s.EVENT_TYPE].value_counts().to_dict()
    start, end = pd.Timestamp(report.start, tz="UTC"), pd.Timestamp(report.end, tz="UTC")
    assert start <= events[s.TIMESTAMP].min()
    assert events[s.TIMESTAMP].max() < end


def test_same_seed_same_bytes_other_seed_other_data(shop: tuple[SynthReport, Path], tmp_path: Path) -> None:
    _, dest = shop
    generate_synthetic(tmp_path / "again", events=EVENTS, seed=SEED)
    assert _digests(tmp_path / "again") == _digests(dest)
    generate_synthetic(tmp_path / "other", events=EVENTS, seed=SEED + 1)
    other = pd.read_parquet(tmp_path / "other" / s.EVENTS)
    same = pd.read_parquet(dest / s.EVENTS)
    assert len(other) == len(same)
    assert not other.equals(same)


def test_funnel(events: pd.DataFrame) -> None:
    counts = events[s.EVENT_TYPE].value_counts()
    assert counts[s.RETURN] < counts[s.PURCHASE] < counts[s.ADD_TO_CART] < counts[s.VIEW]
    assert 0.01 < counts[s.PURCHASE] / counts[s.VIEW] < 0.15  # "a few %" of views
    # Inside a session, every purchase follows a cart of that item and every cart a view of it.
    first = events.groupby([s.SESSION_ID, s.ITEM_ID, s.EVENT_TYPE])[s.TIMESTAMP].min().unstack()
    bought = first[first[s.PURCHASE].notna()]
    assert (bought[s.ADD_TO_CART] <= bought[s.PURCHASE]).all()
    carted = first[first[s.ADD_TO_CART].notna()]
    assert (carted[s.VIEW] <= carted[s.ADD_TO_CART]).all()
    # Returns come after the purchase they undo (possibly in a later part file, same session id).
    returned = first[first[s.RETURN].notna()]
    assert (returned[s.PURCHASE] < returned[s.RETURN]).all()


def test_popularity_is_skewed(shop: tuple[SynthReport, Path], events: pd.DataFrame) -> None:
    per_item = events[s.ITEM_ID].value_counts()
    top = per_item.iloc[: shop[0].items // 10].sum()
    assert top / len(events) > 0.4


def test_repeat_buying(events: pd.DataFrame) -> None:
    purchases = events[events[s.EVENT_TYPE] == s.PURCHASE]
    sessions_per_pair = purchases.groupby([s.USER_ID, s.ITEM_ID])[s.SESSION_ID].nunique()
    assert (sessions_per_pair > 1).mean() > 0.05


def test_cold_users_and_new_items(shop: tuple[SynthReport, Path], events: pd.DataFrame) -> None:
    report, _ = shop
    end = pd.Timestamp(report.end, tz="UTC")
    first_seen = events.groupby(s.USER_ID)[s.TIMESTAMP].min()
    cold = int((first_seen >= end - pd.Timedelta(days=28)).sum())
    assert cold == report.cold_users > 0
    assert report.active_users == len(first_seen)
    item_first = events.groupby(s.ITEM_ID)[s.TIMESTAMP].min()
    assert (item_first > pd.Timestamp(report.start, tz="UTC") + pd.Timedelta(days=90)).sum() > 0
    assert report.new_items > 0


def test_seasonality(events: pd.DataFrame) -> None:
    per_month = events[s.TIMESTAMP].dt.month.value_counts()
    assert per_month[12] > 1.2 * per_month[6]  # the pre-Christmas peak
    weekday = events[s.TIMESTAMP].dt.dayofweek
    assert (weekday >= 5).mean() > 2 / 7  # weekends busier than an average day


def test_attributes_drive_behaviour(shop: tuple[SynthReport, Path], events: pd.DataFrame) -> None:
    _, dest = shop
    items = pd.read_parquet(dest / s.ITEMS).set_index(s.ITEM_ID)
    per_category = items.groupby(s.ITEM_CATEGORY)[s.PRICE].median()
    assert per_category.max() > 3 * per_category.min()  # prices differ by category
    users = pd.read_parquet(dest / s.USERS).set_index(s.USER_ID)
    purchases = events[events[s.EVENT_TYPE] == s.PURCHASE]
    quantity = purchases.groupby(purchases[s.USER_ID].map(users[s.USER_SEGMENT]))[s.QUANTITY].mean()
    assert quantity["wholesale"] > 3 * quantity["casual"]


def test_parts_are_bounded_and_size_is_exact(tmp_path: Path) -> None:
    params = SynthParams(events_per_part=500)
    report = generate_synthetic(tmp_path / "raw", events=3_001, seed=1, params=params)
    sizes = [pq.read_metadata(p).num_rows for p in sorted((tmp_path / "raw" / s.EVENTS).glob("*.parquet"))]
    assert sum(sizes) == report.events == 3_001
    assert max(sizes) <= 500
    assert len(sizes) == report.parts >= 7


def test_quality_noise(tmp_path: Path) -> None:
    report = generate_synthetic(tmp_path / "raw", events=5_000, seed=2, params=SynthParams(quality_noise=0.1))
    events = pd.read_parquet(tmp_path / "raw" / s.EVENTS)
    items = pd.read_parquet(tmp_path / "raw" / s.ITEMS)
    assert len(events) == report.events == 5_000
    assert pq.read_schema(next((tmp_path / "raw" / s.EVENTS).glob("*.parquet"))).field(s.TIMESTAMP).type \
        == pa.string()
    assert events[s.USER_ID].isna().sum() > 0
    assert not events[s.EVENT_TYPE].isin(s.EVENT_TYPES).all()
    assert (events[s.TIMESTAMP] == BAD_TIMESTAMP).sum() > 0
    assert (events[s.QUANTITY] <= 0).sum() > 0
    assert (~events[s.ITEM_ID].isin(items[s.ITEM_ID])).sum() > 0
    assert events.duplicated().sum() > 0
    good = events[s.TIMESTAMP] != BAD_TIMESTAMP
    assert pd.to_datetime(events.loc[good, s.TIMESTAMP], format="ISO8601").notna().all()
    assert 0.005 < (events[s.TIMESTAMP] == BAD_TIMESTAMP).mean() < 0.04  # 10 % corrupted, 1 in 6 kinds


def test_tiny_and_explicit_sizes(tmp_path: Path) -> None:
    report = generate_synthetic(tmp_path / "raw", events=1, seed=0)
    assert report.events == 1
    assert report.parts == 1
    params = SynthParams(users=50, items=40)
    report = generate_synthetic(tmp_path / "sized", events=2_000, seed=0, params=params)
    users = pd.read_parquet(tmp_path / "sized" / s.USERS)
    assert (report.users, report.items, len(users)) == (50, 40, 50)
    assert np.isfinite(pd.read_parquet(tmp_path / "sized" / s.ITEMS)[s.PRICE]).all()


def test_refusals(tmp_path: Path, shop: tuple[SynthReport, Path]) -> None:
    with pytest.raises(DataContractError, match="not empty"):
        generate_synthetic(shop[1], events=10, seed=0)
    with pytest.raises(EcomrecError, match="cart_rate"):
        SynthParams(cart_rate=1.5)
    with pytest.raises(EcomrecError, match="events"):
        generate_synthetic(tmp_path / "x", events=0, seed=0)
    with pytest.raises(EcomrecError, match="start"):
        generate_synthetic(tmp_path / "y", events=10, seed=0, params=SynthParams(start="someday"))
