"""The ranker's user-event features "as of" a time t, from the bundle's rows (the snapshot at the cutoff c)
plus the user's events in [c, t).

Only a named subset is recomputed (:data:`AS_OF_FEATURES`): the ones that follow from the snapshot and
the new events exactly, because c is a UTC midnight (the ETL's folds are) so no day of a new event is a
day of the history. Definitions are the ETL's (components/etl/features.py, pair_table and user_features):

- per (user, item) with new events: ``ui_n_events`` (+ every event), ``ui_views`` / ``ui_carts`` /
  ``ui_returns`` (+ events of the type), ``ui_quantity`` (+ purchased units), ``ui_spend`` (+ units x
  price, price 0 when absent), ``ui_purchase_days`` (+ distinct UTC days with a purchase), ``ui_known`` 1;
- per user: ``u_n_events``, ``u_spend``, ``u_n_purchase_days`` likewise, ``u_n_items`` (+ items first
  bought after the cutoff);
- every ``*_days_since_*`` of the subset as of t: (t - last event) / day when there are new events, else
  the snapshot + (t - c) / day; sentinels (never) stay.

Not recomputed (they keep the snapshot's value; tests/test_realtime_parity.py lists them): windowed counts
(``*_28d``, ``*_90d``: the window slides with t), weights and decays (``ui_weight``), intervals, ratios and
means, ``u_n_invoices`` (an order's session may span the cutoff), every item feature (other users' new
events), and the ranker's derived ``x_*`` features (ranks and shares over the user's candidates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.features import DAYS_SENTINEL, UI_KNOWN
from components.realtime.store import DAY_US, StoredEvent

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


def features_as_of(rows: pd.DataFrame, events: Sequence[StoredEvent], *, item_index: dict[str, int],
                   bought_before: set[int], cutoff_us: int, at_us: int) -> pd.DataFrame:
    """A copy of one user's candidate ``rows`` (item_idx + features at the cutoff) with the subset
    recomputed as of ``at_us`` from ``events`` (the user's events in [cutoff, at)). ``bought_before``:
    the items the user bought before the cutoff (the bundle's purchased list)."""
    out = rows.copy()
    columns = {name: out[name].to_numpy(np.float64, copy=True) for name in AS_OF_FEATURES if name in out.columns}
    apply_as_of(columns, out[s.ITEM_IDX].to_numpy(np.int64), events, item_index=item_index,
                bought_before=bought_before, cutoff_us=cutoff_us, at_us=at_us)
    for name, values in columns.items():
        out[name] = values
    return out


def apply_as_of(columns: dict[str, np.ndarray], items: np.ndarray, events: Sequence[StoredEvent], *,
                item_index: dict[str, int], bought_before: set[int], cutoff_us: int, at_us: int) -> None:
    """The same on arrays: ``columns`` maps the subset's names present in the rows to their float64
    values at the cutoff (one per row of ``items``), updated in place. The serving path calls this on its
    prepared matrix; :func:`features_as_of` on a frame."""
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
