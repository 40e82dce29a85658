"""The ranker's user-event features "as of" a time t, from the bundle's snapshot at the cutoff c plus the
user's events in [c, t).

One definition: for a bundle that carries the test fold's history (``history/``: the ETL's daily and
orders tables before c, components/etl/features.py ``fold_history``), :func:`recompute` rebuilds the
user's ETL tables at t from their daily rows plus the fresh events' daily rows, exactly as the ETL's
``pair_table`` / ``user_day_stats`` / ``user_features`` / ``user_item_features`` / ``user_category_share``
define them (ported to numpy over one user's rows: Spark is not in the request path), then hands them to
the ranker's own :func:`components.ranker.features.build_features`, so every derived ``x_*`` feature comes
from the batch's function. tests/test_realtime_parity.py checks every recomputed column against the
ETL's Spark features and build_features at the same cutoff.

Recomputed (:func:`recomputed_features`): every ETL user and user-item feature (windowed counts,
``ui_weight``, intervals, ratios, averages and ``u_n_invoices`` included), ``ui_known``, ``uc_share``, and
the ``x_*`` features that read them. Kept at the snapshot (:data:`KEPT_X` and the prefixes below): the
candidate generators' columns (ALS, co-occurrence, TIFU and itemknn scores, ``from_*`` flags, ``x_n_sources``,
``x_als_score_gap``, ``x_cooc_rank``: models fit at the cutoff), every item feature (``i_*``: they count
every user's events, which this user's request does not know) and the ``x_*`` built from item features
only, and the shop's attributes.

With fresh candidates (components/realtime/candidates.py, a bundle with the neighbour table) the same
tables feed one build_features over the whole candidate set (:func:`user_state`, :func:`feature_columns_of`):
every feature of every row, new pairs included, is then the batch's.

The service computes them as of the user's newest event (:func:`as_of_us`), not the clock: a user's
features change with their events only, so a user without fresh events is the snapshot itself.

Windows at a t that is not a midnight use the ETL's own formula, ``day >= t // day - N`` (the day of t
counts). An event on an item the bundle does not know counts for the user's features; its item has no
item features (the batch would have them from the event itself: ``x_price_ratio`` may differ).

Bundles without ``history/`` (older runs, synthetic shops) get the earlier subset (:data:`AS_OF_FEATURES`,
:func:`apply_as_of`): counts and durations that follow from the snapshot and the new events alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.features import (
    ALS_SCORE_GAP,
    BUYERS_28D_SHARE,
    COOC_RANK,
    DAYS_SENTINEL,
    I_MEAN_PURCHASE_DAYS,
    N_SOURCES,
    POP_RANK_IN_USER,
    TIFU_RANK,
    TIFU_SCORE,
    TREND_RANK_IN_USER,
    UI_KNOWN,
    Columns,
    FeatureColumns,
    as_columns,
    feature_columns,
)
from components.ranker.model import FeatureSpec
from components.realtime.store import DAY_US, StoredEvent

if TYPE_CHECKING:
    from components.bundle import Bundle

PAIR_COUNTS: Final = (s.UI_N_EVENTS, s.UI_VIEWS, s.UI_CARTS, s.UI_RETURNS, s.UI_QUANTITY, s.UI_SPEND,
                      s.UI_PURCHASE_DAYS)
PAIR_DAYS: Final = (s.UI_DAYS_SINCE_LAST, s.UI_DAYS_SINCE_FIRST)
USER_COUNTS: Final = (s.U_N_EVENTS, s.U_SPEND, s.U_N_PURCHASE_DAYS, s.U_N_ITEMS)
USER_DAYS: Final = (s.U_DAYS_SINCE_LAST, s.U_DAYS_SINCE_FIRST)
AS_OF_FEATURES: Final = (*PAIR_COUNTS, *PAIR_DAYS, UI_KNOWN, *USER_COUNTS, *USER_DAYS)
_TYPE_COUNT: Final = {s.VIEW: s.UI_VIEWS, s.ADD_TO_CART: s.UI_CARTS, s.RETURN: s.UI_RETURNS}


def _days(delta_us: float) -> float:
    return delta_us / float(DAY_US)


def _shift(values: np.ndarray, by_days: float) -> np.ndarray:
    """Snapshot days-since values moved from c to t; the 'never' sentinel stays."""
    return np.where(values >= DAYS_SENTINEL, values, values + by_days)


def apply_as_of(columns: dict[str, np.ndarray], items: np.ndarray, events: Sequence[StoredEvent], *,
                item_index: dict[str, int], bought_before: set[int], cutoff_us: int, at_us: int) -> None:
    """The subset (:data:`AS_OF_FEATURES`) as of ``at_us`` from ``events`` (the user's events in [cutoff,
    at)), for a bundle without history: ``columns`` maps the subset's names present in the rows to their
    float64 values at the cutoff (one per row of ``items``), updated in place. ``bought_before``: the
    items the user bought before the cutoff (the bundle's purchased list)."""
    shift = _days(at_us - cutoff_us)
    for name in (*PAIR_DAYS, *USER_DAYS):
        if name in columns:
            columns[name][:] = _shift(columns[name], shift)
    events = [e for e in events if cutoff_us <= e.timestamp_us < at_us]
    if not events:
        return
    position = {int(item): i for i, item in enumerate(items.tolist())}
    pair_updates: dict[int, dict[str, float]] = {}
    purchase_days: dict[int, set[int]] = {}
    pair_first: dict[int, int] = {}
    pair_last: dict[int, int] = {}
    user_days: set[int] = set()
    user_spend = 0.0
    new_items: set[int | str] = set()  # items first bought after the cutoff (ids for unknown items)
    for e in events:
        item = item_index.get(e.item_id, -1)
        is_purchase = e.event_type == s.PURCHASE
        spend = e.quantity * (e.price or 0.0) if is_purchase else 0.0
        if is_purchase:
            user_days.add(e.timestamp_us // DAY_US)
            user_spend += spend
            if item not in bought_before:
                new_items.add(item if item >= 0 else e.item_id)
        if item not in position:
            continue
        update = pair_updates.setdefault(item, dict.fromkeys(PAIR_COUNTS, 0.0))
        update[s.UI_N_EVENTS] += 1
        if e.event_type in _TYPE_COUNT:
            update[_TYPE_COUNT[e.event_type]] += 1
        if is_purchase:
            update[s.UI_QUANTITY] += e.quantity
            update[s.UI_SPEND] += spend
            purchase_days.setdefault(item, set()).add(e.timestamp_us // DAY_US)
        pair_first[item] = min(pair_first.get(item, e.timestamp_us), e.timestamp_us)
        pair_last[item] = max(pair_last.get(item, e.timestamp_us), e.timestamp_us)
    for item, update in pair_updates.items():
        update[s.UI_PURCHASE_DAYS] = float(len(purchase_days.get(item, ())))
        row = position[item]
        for name, added in update.items():
            if name in columns:
                columns[name][row] += added
        if s.UI_DAYS_SINCE_LAST in columns:
            columns[s.UI_DAYS_SINCE_LAST][row] = _days(at_us - pair_last[item])
        first = columns.get(s.UI_DAYS_SINCE_FIRST)
        if first is not None and first[row] >= DAYS_SENTINEL:  # no history on the pair: a new event is first
            first[row] = _days(at_us - pair_first[item])
        if UI_KNOWN in columns:
            columns[UI_KNOWN][row] = 1.0
    user = {s.U_N_EVENTS: float(len(events)), s.U_SPEND: user_spend, s.U_N_PURCHASE_DAYS: float(len(user_days)),
            s.U_N_ITEMS: float(len(new_items))}
    for name, added in user.items():
        if name in columns:
            columns[name] += added
    if s.U_DAYS_SINCE_LAST in columns:
        columns[s.U_DAYS_SINCE_LAST][:] = _days(at_us - max(e.timestamp_us for e in events))
    if s.U_DAYS_SINCE_FIRST in columns:
        since_first = _days(at_us - min(e.timestamp_us for e in events))
        values = columns[s.U_DAYS_SINCE_FIRST]
        values[:] = np.where(values >= DAYS_SENTINEL, since_first, values)


# ---------------------------------------------------------------- the whole row, from the bundle's history
# Columns of the ETL's daily table (components/etl/features.py daily_table; weights.py DAY) and orders table.
DAY: Final = "_day"
_N, _UNITS, _SPEND, _PRICE_SUM, _PRICE_N = "_n", "_units", "_spend", "_price_sum", "_price_n"
_FIRST_TS, _LAST_TS, _W_EVENTS, _ORDER = "_first_ts", "_last_ts", "_w_events", "_order"
WEIGHT_CANCELLED_RTOL: Final = 1e-9  # components/etl/features.py
USER_WINDOWS: Final = (28, 90)  # u_purchase_days_28d / _90d; ui_purchase_days_90d: 90
# x_* features built from candidate or item columns only: the same at t as in the snapshot.
KEPT_X: Final = frozenset({N_SOURCES, ALS_SCORE_GAP, COOC_RANK, TIFU_SCORE, TIFU_RANK, I_MEAN_PURCHASE_DAYS,
                           POP_RANK_IN_USER, TREND_RANK_IN_USER, BUYERS_28D_SHARE})
_KEPT_COLUMNS: Final = frozenset({*s.CANDIDATE_SCORE_COLUMNS, *s.CANDIDATE_SOURCE_COLUMNS, *s.TIFU_PAIR_COLUMNS,
                                   s.ITEMKNN_PAIR_COLUMN})


def recomputed_features(spec: FeatureSpec) -> list[str]:
    """The spec's features :func:`recompute` moves to the request time (the module docstring says which)."""
    return [name for name in spec.numeric
            if name not in KEPT_X and name not in _KEPT_COLUMNS and not name.startswith("i_")
            and not name.startswith((s.USER_ATTR_PREFIX, s.ITEM_ATTR_PREFIX))]


@dataclass(frozen=True)
class Weights:
    """The ETL's interaction-weight settings (components/config.py EtlConfig; the bundle's manifest)."""

    event_weights: dict[str, float]
    by_quantity: bool
    quantity_cap: float
    log_scale: bool
    half_life_days: float | None
    per_day: bool
    reference_us: int  # the ETL's daily "event" weights are aged from the end of the log

    def contribution(self, event_type: np.ndarray, units: np.ndarray, ts_us: np.ndarray, at_us: int) -> np.ndarray:
        """components/etl/weights.py event_contribution, aged to ``at_us``."""
        weight = np.array([self.event_weights.get(t, 0.0) for t in event_type.tolist()], dtype=np.float64)
        if self.by_quantity:
            capped = np.minimum(units.astype(np.float64), self.quantity_cap)
            scaled = np.log2(1.0 + capped) if self.log_scale else capped
            weight = weight * np.where(np.isin(event_type, (s.PURCHASE, s.RETURN)), scaled, 1.0)
        if self.half_life_days is not None:
            weight = weight * 0.5 ** ((at_us - ts_us) / float(DAY_US) / self.half_life_days)
        return weight


class UserHistory:
    """The bundle's ``history/`` tables, held per user for requests (the daily rows sorted by user)."""

    def __init__(self, bundle: Bundle) -> None:
        root = bundle.root / s.BUNDLE_HISTORY
        daily = pd.read_parquet(root / "daily.parquet")
        # ~75 bytes a row in memory (Online Retail: 333,568 rows, 25 MB); the event type as a small code
        kinds = pd.Categorical(daily[s.EVENT_TYPE])
        self.kinds = np.asarray(kinds.categories, dtype=object)
        self.daily = {name: daily[name].to_numpy() for name in daily.columns if name not in (s.USER_IDX, s.EVENT_TYPE)}
        self.daily[s.EVENT_TYPE] = kinds.codes
        self.offsets = _offsets(daily[s.USER_IDX].to_numpy(np.int64), bundle.n_users)
        orders = pd.read_parquet(root / "orders.parquet")
        self.orders = orders[_ORDER].astype(str).to_numpy()
        self.order_offsets = _offsets(orders[s.USER_IDX].to_numpy(np.int64), bundle.n_users)
        # as numpy columns: a request's build_features reads them without pandas' per-column cost
        self.item_features = as_columns(pd.read_parquet(root / "item_features.parquet"))
        self.item_history = as_columns(pd.read_parquet(root / "item_history.parquet"))
        self.spec = FeatureSpec.from_dict(bundle.manifest["feature_spec"])
        self.recomputed = recomputed_features(self.spec)
        names = self.spec.features
        self.lists: dict[str, list[str]] = {
            "user": [n for n in names if n.startswith("u_")], "item": [n for n in names if n.startswith("i_")],
            "user_item": [n for n in names if n.startswith("ui_") and n != UI_KNOWN],
            "categorical": list(self.spec.categorical)}
        # The item columns the recomputed features read (the price and the categories, in the spec's order,
        # so build_features picks the same price): fewer columns, a faster request, the same values.
        self.request_lists = {**self.lists, "item": [n for n in self.lists["item"]
                                                     if "price" in n.lower() or n in self.spec.categorical]}
        window = bundle.manifest["window"]
        self.horizon_days = float(window["test_days"])
        etl = bundle.manifest["etl"]  # the weight settings, written with the history (bundle/build.py)
        self.weights = Weights(
            event_weights={str(k): float(v) for k, v in etl["event_weights"].items()},
            by_quantity=bool(etl["purchase_weight_by_quantity"]), quantity_cap=float(etl["quantity_cap"]),
            log_scale=etl["quantity_scale"] == "log", half_life_days=etl["decay_half_life_days"],
            per_day=etl["weight_unit"] == "day", reference_us=_iso_us(str(window["end"])))
        # the ETL's item_categories: the catalog's category, trimmed, empty = none
        values = bundle.items[s.ITEM_CATEGORY].tolist() if s.ITEM_CATEGORY in bundle.items else []
        self.categories: dict[int, str] = {
            int(i): v.strip() for i, v in zip(bundle.items[s.ITEM_IDX].tolist(), values, strict=False)
            if isinstance(v, str) and v.strip()}

    @classmethod
    def load(cls, bundle: Bundle) -> UserHistory | None:
        """None for a bundle without ``history/`` (the subset path then applies)."""
        return cls(bundle) if f"{s.BUNDLE_HISTORY}/daily.parquet" in bundle.manifest["files"] else None

    def user_daily(self, user_idx: int) -> dict[str, np.ndarray]:
        rows = slice(int(self.offsets[user_idx]), int(self.offsets[user_idx + 1]))
        out = {name: values[rows] for name, values in self.daily.items()}
        out[s.EVENT_TYPE] = self.kinds[out[s.EVENT_TYPE]]
        return out

    def user_orders(self, user_idx: int) -> set[str]:
        return set(self.orders[self.order_offsets[user_idx]:self.order_offsets[user_idx + 1]].tolist())


def _offsets(users: np.ndarray, n_users: int) -> np.ndarray:
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users)[:n_users], out=offsets[1:])
    return offsets


def _iso_us(text: str) -> int:
    return int(pd.Timestamp(text).value // 1000)


def as_of_us(cutoff: int, events: Sequence[StoredEvent]) -> int:
    """The moment a user's features are computed at: just after their newest event since the cutoff, or
    the cutoff itself. A user's features change with their events only, never with the clock alone, so a
    user without fresh events is exactly the bundle's snapshot and its load-time scores are the
    per-request scores (REALTIME.md)."""
    return max([cutoff, *(e.timestamp_us + 1 for e in events if e.timestamp_us >= cutoff)])


def _fresh_daily(events: Sequence[StoredEvent], item_index: dict[str, int], weights: Weights
                 ) -> tuple[dict[str, np.ndarray], set[str]]:
    """The events' rows of the ETL's daily table (one per item, type, UTC day) and their orders. Items the
    bundle does not know get negative indices (they count for the user, no item feature matches them)."""
    unknown: dict[str, int] = {}
    kinds = np.array([e.event_type for e in events], dtype=object)
    units = np.array([e.quantity for e in events], dtype=np.float64)
    stamps = np.array([e.timestamp_us for e in events], dtype=np.int64)
    contributions = weights.contribution(kinds, units, stamps, weights.reference_us).tolist()
    groups: dict[tuple[int, str, int], list[float]] = {}
    for e, w in zip(events, contributions, strict=True):
        item = item_index[e.item_id] if e.item_id in item_index else -unknown.setdefault(e.item_id, len(unknown) + 1)
        row = groups.setdefault((item, e.event_type, e.timestamp_us // DAY_US),
                                [0, 0.0, 0.0, 0.0, 0, e.timestamp_us, e.timestamp_us, 0.0])
        price = e.price
        row[0] += 1
        row[1] += e.quantity
        row[2] += e.quantity * (price or 0.0)
        if price is not None:
            row[3] += price
            row[4] += 1
        row[5], row[6] = min(row[5], e.timestamp_us), max(row[6], e.timestamp_us)
        row[7] += w
    keys, values = list(groups), list(groups.values())
    daily = {s.ITEM_IDX: np.array([k[0] for k in keys], dtype=np.int64),
             s.EVENT_TYPE: np.array([k[1] for k in keys], dtype=object),
             DAY: np.array([k[2] for k in keys], dtype=np.int64)}
    for position, name in enumerate((_N, _UNITS, _SPEND, _PRICE_SUM, _PRICE_N, _FIRST_TS, _LAST_TS, _W_EVENTS)):
        daily[name] = np.array([v[position] for v in values])
    orders = {e.session_id if e.session_id is not None else str(e.timestamp_us)
              for e in events if e.event_type == s.PURCHASE}
    return daily, orders


UserTables: TypeAlias = tuple[Columns, Columns, Columns]


def user_tables(daily: dict[str, np.ndarray], orders: set[str], user_idx: int, at_us: int, weights: Weights,
                categories: dict[int, str]) -> UserTables:
    """One user's (user_features, user_item_features, user_category) at ``at_us`` from their daily rows
    (events before ``at_us`` only) and distinct orders: components/etl/features.py's definitions."""
    items, pair = np.unique(daily[s.ITEM_IDX].astype(np.int64), return_inverse=True)
    n = len(items)
    kind = daily[s.EVENT_TYPE].astype(str)
    day = daily[DAY].astype(np.int64)
    count = daily[_N].astype(np.float64)
    units = daily[_UNITS].astype(np.float64)
    purchase = kind == s.PURCHASE
    cut_day = at_us // DAY_US

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(pair, weights=values.astype(np.float64), minlength=n)

    def extreme(ufunc: np.ufunc, values: np.ndarray, where: np.ndarray, start: float) -> np.ndarray:
        out = np.full(n, start)
        ufunc.at(out, pair[where], values[where].astype(np.float64))
        return out

    everywhere = np.ones(len(day), dtype=bool)
    last_ts = daily[_LAST_TS].astype(np.int64)
    if weights.per_day:
        contribution = weights.contribution(kind, units, last_ts, at_us)
    else:
        shift = 1.0 if weights.half_life_days is None else 2.0 ** (
            (weights.reference_us - at_us) / float(DAY_US) / weights.half_life_days)
        contribution = daily[_W_EVENTS].astype(np.float64) * shift
    weight = total(contribution)
    weight[np.abs(weight) <= WEIGHT_CANCELLED_RTOL * total(np.abs(contribution))] = 0.0
    purchase_days = total(purchase)
    first_day = extreme(np.minimum, day, purchase, np.inf)
    last_day = extreme(np.maximum, day, purchase, -np.inf)
    interval = np.where(purchase_days >= 2, (last_day - first_day) / np.maximum(purchase_days - 1, 1), np.nan)
    pair_first = extreme(np.minimum, daily[_FIRST_TS], everywhere, np.inf)
    pair_last = extreme(np.maximum, last_ts, everywhere, -np.inf)
    last_purchase = extreme(np.maximum, last_ts, purchase, -np.inf)
    price_sum = np.nan_to_num(daily[_PRICE_SUM].astype(np.float64))
    price_n = daily[_PRICE_N].astype(np.float64)

    def days_before(ts: np.ndarray) -> np.ndarray:
        return (at_us - ts) / float(DAY_US)

    spend = total(np.where(purchase, daily[_SPEND].astype(np.float64), 0.0))
    ui = {
        s.USER_IDX: np.full(n, user_idx, dtype=np.int64), s.ITEM_IDX: items,
        s.UI_PURCHASE_DAYS: purchase_days,
        s.UI_DAYS_SINCE_LAST: days_before(pair_last), s.UI_DAYS_SINCE_FIRST: days_before(pair_first),
        s.UI_N_EVENTS: total(count), s.UI_QUANTITY: total(np.where(purchase, units, 0.0)), s.UI_SPEND: spend,
        s.UI_VIEWS: total(np.where(kind == s.VIEW, count, 0.0)),
        s.UI_CARTS: total(np.where(kind == s.ADD_TO_CART, count, 0.0)),
        s.UI_RETURNS: total(np.where(kind == s.RETURN, count, 0.0)),
        s.UI_WEIGHT: weight, s.UI_MEAN_INTERVAL_DAYS: interval,
        s.UI_RECENCY_RATIO: days_before(last_purchase) / interval,
        s.UI_PURCHASE_DAYS_90D: total(purchase & (day >= cut_day - 90)),
    }
    days = np.unique(day[purchase])
    n_days = len(days)
    invoices = len(orders)
    price_total = float(np.where(purchase, price_n, 0.0).sum())
    user_spend = float(spend.sum())
    user = {name: np.array([value], dtype=np.int64 if name == s.USER_IDX else np.float64) for name, value in {
        s.USER_IDX: user_idx, s.U_N_EVENTS: float(count.sum()), s.U_N_PURCHASE_DAYS: float(n_days),
        s.U_N_INVOICES: float(invoices), s.U_N_ITEMS: float((purchase_days > 0).sum()),
        s.U_SPEND: user_spend, s.U_AVG_BASKET_VALUE: user_spend / invoices if invoices else np.nan,
        s.U_DAYS_SINCE_LAST: days_before(np.array(pair_last.max())),
        s.U_DAYS_SINCE_FIRST: days_before(np.array(pair_first.min())),
        s.U_PURCHASE_DAYS_28D: float((days >= cut_day - USER_WINDOWS[0]).sum()),
        s.U_PURCHASE_DAYS_90D: float((days >= cut_day - USER_WINDOWS[1]).sum()),
        s.U_MEAN_DAYS_BETWEEN_PURCHASES: (days[-1] - days[0]) / (n_days - 1) if n_days >= 2 else np.nan,
        s.U_AVG_ITEM_PRICE: (float(np.where(purchase, price_sum, 0.0).sum()) / price_total
                             if price_total else np.nan),
    }.items()}
    ui[s.UI_SHARE_OF_USER_DAYS] = purchase_days / n_days if n_days else np.zeros(n)
    per_category: dict[str, float] = {}
    for item, events in zip(items.tolist(), ui[s.UI_N_EVENTS].tolist(), strict=True):
        category = categories.get(item)
        if category is not None:
            per_category[category] = per_category.get(category, 0.0) + events
    user_category = {s.USER_IDX: np.full(len(per_category), user_idx, dtype=np.int64),
                     s.ITEM_CATEGORY: np.array(list(per_category), dtype=object),
                     s.UC_SHARE: np.array(list(per_category.values()), dtype=np.float64) / max(float(count.sum()), 1.0)}
    return user, ui, user_category


def user_state(history: UserHistory, user_idx: int | None, events: Sequence[StoredEvent], *,
               item_index: dict[str, int], cutoff_us: int, at_us: int
               ) -> UserTables | None:
    """The user's ETL tables (user_features, user_item_features, user_category) at ``at_us`` from the
    bundle's history of ``user_idx`` (None: a user the bundle does not know, user_idx -1 in the tables) and
    ``events`` (those in [cutoff, at) count); None when the user has no event at all."""
    if user_idx is None:
        daily = {name: values[:0] for name, values in history.daily.items()}
        daily[s.EVENT_TYPE] = history.kinds[daily[s.EVENT_TYPE]]
        orders: set[str] = set()
    else:
        daily = history.user_daily(user_idx)
        orders = history.user_orders(user_idx)
    fresh = [e for e in events if cutoff_us <= e.timestamp_us < at_us]
    if fresh:
        rows_new, orders_new = _fresh_daily(fresh, item_index, history.weights)
        daily = {name: np.concatenate([values, rows_new[name]]) for name, values in daily.items()
                 if name in rows_new}
        orders |= orders_new
    if len(daily[s.ITEM_IDX]) == 0:  # no history at all: nothing of the user's to recompute
        return None
    return user_tables(daily, orders, -1 if user_idx is None else user_idx, at_us, history.weights,
                       history.categories)


def feature_columns_of(candidates: Columns, state: UserTables, history: UserHistory, *,
                       attributes: pd.DataFrame | None, full: bool) -> FeatureColumns:
    """build_features over one user's ``candidates`` (user_idx, item_idx + the generators' columns) with the
    user's tables ``state`` (:func:`user_state`), the bundle's item features and per-item history statistics.
    ``attributes``: a bundle row of the user (their shop attributes, as in the snapshot; None: missing).
    ``full``: every feature of the spec, in its order (new rows); else the columns :func:`recompute` needs."""
    user, ui, user_category = state
    user = dict(user)
    for name in (n for n in history.lists["user"] if n.startswith(s.USER_ATTR_PREFIX)):
        value = attributes[name].iloc[0] if attributes is not None and name in attributes.columns else np.nan
        user[name] = np.array([value], dtype=object if isinstance(value, str) else None)
    return feature_columns(candidates, user, history.item_features, ui,
                           history.lists if full else history.request_lists,
                           user_category=user_category if s.UC_SHARE in history.spec.features else None,
                           spec=history.spec if full else None, horizon_days=history.horizon_days,
                           item_history=history.item_history)


def recompute(rows: pd.DataFrame, events: Sequence[StoredEvent], history: UserHistory, *, user_idx: int,
              item_index: dict[str, int], cutoff_us: int, at_us: int) -> dict[str, np.ndarray]:
    """The user's :func:`recomputed_features` at ``at_us`` for their candidate ``rows`` (the bundle's rows,
    item_idx ascending), from the bundle's history and ``events`` (those in [cutoff, at) count)."""
    state = user_state(history, user_idx, events, item_index=item_index, cutoff_us=cutoff_us, at_us=at_us)
    if state is None:
        return {}
    candidates = as_columns(rows[[s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *s.CANDIDATE_SOURCE_COLUMNS,
                                  *[c for c in s.TIFU_PAIR_COLUMNS if c in rows.columns]]])
    built = feature_columns_of(candidates, state, history, attributes=rows, full=False)
    return {name: built.columns[name].astype(np.float64) for name in history.recomputed}
