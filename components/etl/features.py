"""Features of one fold, all computed from events strictly before the fold's cutoff (the caller filters;
nothing here sees a later event), plus the static catalog and user attributes.

Durations are float days to the cutoff. One pass builds a (user, item, type, UTC day) table; pair
features come from it, user and item features from the pairs, so each event is shuffled once per fold.
Definitions (names in components/schema.py):
  user:  u_n_events (all types), u_n_purchase_days, u_n_invoices (distinct session_id of purchases, or
         purchase timestamp when there is none), u_n_items (distinct items bought), u_spend (sum units x
         price of purchases), u_avg_basket_value (spend / invoices), u_days_since_last / _first (any event),
         u_purchase_days_28d / _90d, u_mean_days_between_purchases ((last - first purchase day) /
         (purchase days - 1)), u_avg_item_price (mean price of purchase rows), u_attr_<users/ column>.
  item:  i_buyers_7d / _28d / _90d / _total (distinct buyers), i_purchase_days_total (distinct (buyer, day)),
         i_trend ((4 x buyers_7d + 1) / (buyers_28d + 1): > 1 = rising), i_avg_price (mean price of all rows
         with one), i_repurchase_rate (buyers with >= 2 purchase days / buyers), i_mean_repurchase_interval
         (mean of the repeat buyers' ui_mean_interval_days), i_days_since_first_sale / _last_sale,
         i_attr_<items/ column>.
  pair:  ui_purchase_days, ui_purchase_days_90d, ui_days_since_last / _first (any event), ui_n_events,
         ui_quantity / ui_spend (purchases), ui_views, ui_carts, ui_returns (event counts), ui_weight
         (weights.py), ui_mean_interval_days, ui_recency_ratio (days since the last purchase / mean interval),
         ui_share_of_user_days (ui_purchase_days / u_n_purchase_days).
Missing values: counts are 0, durations and ratios without a defined value are NULL, categorical values
that are missing are schema.MISSING_CATEGORY (CatBoost cannot take a NULL category).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from components import schema as s
from components.config import EtlConfig
from components.etl.weights import DAY, TS_US, daily_contribution, event_contribution
from components.etl.windows import DAY_MICROS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

# A string attribute with at most this many distinct values is a category however small the table is.
MIN_FREE_TEXT_DISTINCT: Final = 50
# The free-text rule is defined on approx_count_distinct, whose wide sketch (410 longs per column) made
# plan_attributes the slowest job of the ETL on a 4k-row catalog (~2 s). The exact count, cheap here,
# decides the same way unless it lies within this factor of the limit (the sketch errs by ~2 %, never
# 25 %); only then is the sketch computed, so the plan is the one the sketch alone gives.
APPROX_BAND: Final = 1.25

USER_FEATURES: Final = (s.U_N_EVENTS, s.U_N_PURCHASE_DAYS, s.U_N_INVOICES, s.U_N_ITEMS, s.U_SPEND,
                        s.U_AVG_BASKET_VALUE, s.U_DAYS_SINCE_LAST, s.U_DAYS_SINCE_FIRST,
                        s.U_PURCHASE_DAYS_28D, s.U_PURCHASE_DAYS_90D, s.U_MEAN_DAYS_BETWEEN_PURCHASES,
                        s.U_AVG_ITEM_PRICE)
ITEM_FEATURES: Final = (s.ITEM_BUYERS_28D, s.ITEM_BUYERS_7D, s.ITEM_BUYERS_90D, s.ITEM_BUYERS_TOTAL,
                        s.ITEM_PURCHASE_DAYS_TOTAL, s.ITEM_TREND, s.ITEM_AVG_PRICE, s.ITEM_REPURCHASE_RATE,
                        s.ITEM_MEAN_REPURCHASE_INTERVAL, s.ITEM_DAYS_SINCE_FIRST_SALE,
                        s.ITEM_DAYS_SINCE_LAST_SALE)
USER_ITEM_FEATURES: Final = (s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST, s.UI_DAYS_SINCE_FIRST, s.UI_N_EVENTS,
                             s.UI_QUANTITY, s.UI_SPEND, s.UI_VIEWS, s.UI_CARTS, s.UI_RETURNS, s.UI_WEIGHT,
                             s.UI_MEAN_INTERVAL_DAYS, s.UI_RECENCY_RATIO, s.UI_PURCHASE_DAYS_90D,
                             s.UI_SHARE_OF_USER_DAYS)
USER_COUNTS: Final = (s.U_N_EVENTS, s.U_N_PURCHASE_DAYS, s.U_N_INVOICES, s.U_N_ITEMS, s.U_SPEND,
                      s.U_PURCHASE_DAYS_28D, s.U_PURCHASE_DAYS_90D)
ITEM_COUNTS: Final = (s.ITEM_BUYERS_28D, s.ITEM_BUYERS_7D, s.ITEM_BUYERS_90D, s.ITEM_BUYERS_TOTAL,
                      s.ITEM_PURCHASE_DAYS_TOTAL)

# Private columns of the daily and pair tables.
_N = "_n"
_UNITS = "_units"
_SPEND = "_spend"
_PRICE_SUM = "_price_sum"
_PRICE_N = "_price_n"
_FIRST_TS = "_first_ts"
_LAST_TS = "_last_ts"
_W_EVENTS = "_w_events"
_FIRST_PURCHASE_TS = "_first_purchase_ts"
_LAST_PURCHASE_TS = "_last_purchase_ts"
_PURCHASE_PRICE_SUM = "_purchase_price_sum"
_PURCHASE_PRICE_N = "_purchase_price_n"
_ABS_WEIGHT = "_abs_weight"

# A pair whose purchases were all returned sums to 0 only up to rounding, and the sign of the residue
# (+-1e-16) depends on the summation order: within this share of the summed magnitudes it is 0.
WEIGHT_CANCELLED_RTOL: Final = 1e-9


@dataclass(frozen=True)
class AttributePlan:
    """How the attribute columns of items/ or users/ become features."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    skipped: tuple[str, ...]  # free text or empty: kept in clean/, not a feature

    def features(self, prefix: str) -> list[str]:
        return [prefix + c for c in (*self.numeric, *self.categorical)]

    def categorical_features(self, prefix: str) -> list[str]:
        return [prefix + c for c in self.categorical]


def plan_attributes(frame: DataFrame, attributes: Sequence[str], max_category_share: float,
                    table: str) -> AttributePlan:
    """Numeric when every non-empty value parses as a number; otherwise a category, unless it looks like
    free text (more distinct values than max_category_share of the rows, and over MIN_FREE_TEXT_DISTINCT,
    counted by approx_count_distinct with rsd 2 %). One Spark job over the (small) accepted entity rows,
    a second only when an exact distinct count lies near the limit (see APPROX_BAND)."""
    from pyspark.sql import functions as sf

    if not attributes:
        return AttributePlan((), (), ())

    def trimmed(name: str) -> Column:
        value = sf.trim(sf.col(f"`{name}`"))
        return sf.when(value != "", value)

    aggs: list[Column] = [sf.count(sf.lit(1)).alias("_rows")]
    for i, name in enumerate(attributes):
        number = trimmed(name).cast("double")
        aggs += [sf.count(trimmed(name)).alias(f"n{i}"),
                 sf.count(sf.when(~sf.isnan(number), number)).alias(f"num{i}"),
                 sf.count_distinct(trimmed(name)).alias(f"d{i}")]
    stats = frame.agg(*aggs).collect()[0]
    limit = max(max_category_share * stats["_rows"], MIN_FREE_TEXT_DISTINCT)
    text = [i for i in range(len(attributes)) if 0 < stats[f"n{i}"] != stats[f"num{i}"]]
    distinct = {i: stats[f"d{i}"] for i in text}
    near = [i for i in text if limit / APPROX_BAND <= distinct[i] <= limit * APPROX_BAND]
    if near:
        sketch = frame.agg(*[sf.approx_count_distinct(trimmed(attributes[i]), 0.02).alias(f"d{i}")
                             for i in near]).collect()[0]
        distinct.update({i: sketch[f"d{i}"] for i in near})
    numeric, categorical, skipped = [], [], []
    for i, name in enumerate(attributes):
        present, parsed = stats[f"n{i}"], stats[f"num{i}"]
        if present == 0:
            skipped.append(name)
            log.info("%s/: attribute %r is empty everywhere: not a feature", table, name)
        elif parsed == present:
            numeric.append(name)
        elif distinct[i] > limit:
            skipped.append(name)
            log.info("%s/: attribute %r has %d distinct values in %d rows: free text, not a feature",
                     table, name, distinct[i], stats["_rows"])
        else:
            categorical.append(name)
    return AttributePlan(tuple(numeric), tuple(categorical), tuple(skipped))


def typed_attributes(frame: DataFrame, id_columns: Sequence[str], plan: AttributePlan,
                     attributes: Sequence[str]) -> DataFrame:
    """The entity table with numeric attributes as double and every other attribute as trimmed string."""
    from pyspark.sql import functions as sf

    cols: list[Column] = [sf.col(c) for c in id_columns]
    for name in attributes:
        value = sf.trim(sf.col(f"`{name}`"))
        value = sf.when(value != "", value)
        cols.append((value.cast("double") if name in plan.numeric else value).alias(name))
    return frame.select(*cols)


def attribute_features(typed: DataFrame, idx_column: str, plan: AttributePlan, prefix: str) -> DataFrame:
    from pyspark.sql import functions as sf

    cols = [sf.col(idx_column)]
    cols += [sf.col(f"`{c}`").alias(prefix + c) for c in plan.numeric]
    cols += [sf.coalesce(sf.col(f"`{c}`"), sf.lit(s.MISSING_CATEGORY)).alias(prefix + c)
             for c in plan.categorical]
    return typed.select(*cols)


def _days_before(cutoff_us: int, ts_us: Column) -> Column:
    from pyspark.sql import functions as sf

    return (sf.lit(cutoff_us) - ts_us) / sf.lit(float(DAY_MICROS))


def daily_table(events: DataFrame, reference_us: int, config: EtlConfig) -> DataFrame:
    """One row per (user_idx, item_idx, event_type, UTC day) over ALL events, built once for both folds.
    Cutoffs are midnights, so a fold keeps exactly its history with ``day < cutoff day`` (fold_history)."""
    from pyspark.sql import functions as sf

    units = sf.col(s.QUANTITY)
    price = sf.col(s.PRICE)
    return events.groupBy(s.USER_IDX, s.ITEM_IDX, s.EVENT_TYPE, DAY).agg(
        sf.count(sf.lit(1)).alias(_N),
        sf.sum(units).alias(_UNITS),
        sf.sum(units * sf.coalesce(price, sf.lit(0.0))).alias(_SPEND),
        sf.sum(price).alias(_PRICE_SUM),
        sf.count(price).alias(_PRICE_N),
        sf.min(TS_US).alias(_FIRST_TS),
        sf.max(TS_US).alias(_LAST_TS),
        sf.sum(event_contribution(sf.col(s.EVENT_TYPE), units, sf.col(TS_US), reference_us, config))
        .alias(_W_EVENTS),
    )


def cutoff_day(cutoff_us: int) -> int:
    if cutoff_us % DAY_MICROS:
        raise ValueError(f"a fold cutoff must be a UTC midnight, got {cutoff_us} us")
    return cutoff_us // DAY_MICROS


def fold_history(table: DataFrame, cutoff_us: int) -> DataFrame:
    """Rows of a day-keyed table (daily_table, orders_table) strictly before the cutoff: the one place a
    fold's history is cut."""
    from pyspark.sql import functions as sf

    return table.filter(sf.col(DAY) < cutoff_day(cutoff_us))


def orders_table(events: DataFrame) -> DataFrame:
    """Distinct (user, order, day) of purchases: the order is the session_id, or the purchase time when
    there is none."""
    from pyspark.sql import functions as sf

    order = sf.coalesce(sf.col(s.SESSION_ID), sf.col(TS_US).cast("string"))
    return (events.filter(sf.col(s.EVENT_TYPE) == s.PURCHASE)
            .select(s.USER_IDX, order.alias("_order"), DAY).distinct())


def targets(daily: DataFrame, start_us: int, stop_us: int | None) -> DataFrame:
    """Distinct (user_idx, item_idx) purchases in [start, stop) (stop None = to the end)."""
    from pyspark.sql import functions as sf

    keep = (sf.col(s.EVENT_TYPE) == s.PURCHASE) & (sf.col(DAY) >= cutoff_day(start_us))
    if stop_us is not None:
        keep = keep & (sf.col(DAY) < cutoff_day(stop_us))
    return daily.filter(keep).select(s.USER_IDX, s.ITEM_IDX).distinct()


def pair_table(daily: DataFrame, cutoff_us: int, reference_us: int, config: EtlConfig) -> DataFrame:
    """Pair features plus private helper columns that user and item features aggregate further.
    ui_share_of_user_days is added later (it needs the user's purchase days)."""
    from pyspark.sql import functions as sf

    is_purchase = sf.col(s.EVENT_TYPE) == s.PURCHASE
    cut_day = cutoff_us // DAY_MICROS
    contribution = daily_contribution(sf.col(s.EVENT_TYPE), sf.col(_UNITS), sf.col(_LAST_TS),
                                      sf.col(_W_EVENTS), cutoff_us, reference_us, config)

    def count_type(name: str) -> Column:
        return sf.sum(sf.when(sf.col(s.EVENT_TYPE) == name, sf.col(_N)).otherwise(0))

    pairs = daily.groupBy(s.USER_IDX, s.ITEM_IDX).agg(
        sf.count(sf.when(is_purchase, True)).alias(s.UI_PURCHASE_DAYS),
        sf.count(sf.when(is_purchase & (sf.col(DAY) >= cut_day - 90), True)).alias(s.UI_PURCHASE_DAYS_90D),
        sf.sum(_N).alias(s.UI_N_EVENTS),
        sf.sum(sf.when(is_purchase, sf.col(_UNITS)).otherwise(0)).alias(s.UI_QUANTITY),
        sf.sum(sf.when(is_purchase, sf.col(_SPEND)).otherwise(0.0)).alias(s.UI_SPEND),
        count_type(s.VIEW).alias(s.UI_VIEWS),
        count_type(s.ADD_TO_CART).alias(s.UI_CARTS),
        count_type(s.RETURN).alias(s.UI_RETURNS),
        sf.sum(contribution).alias(s.UI_WEIGHT),
        sf.sum(sf.abs(contribution)).alias(_ABS_WEIGHT),
        sf.min(_FIRST_TS).alias(_FIRST_TS),
        sf.max(_LAST_TS).alias(_LAST_TS),
        sf.min(sf.when(is_purchase, sf.col(DAY))).alias("_first_purchase_day"),
        sf.max(sf.when(is_purchase, sf.col(DAY))).alias("_last_purchase_day"),
        sf.min(sf.when(is_purchase, sf.col(_FIRST_TS))).alias(_FIRST_PURCHASE_TS),
        sf.max(sf.when(is_purchase, sf.col(_LAST_TS))).alias(_LAST_PURCHASE_TS),
        sf.sum(_PRICE_SUM).alias(_PRICE_SUM),
        sf.sum(_PRICE_N).alias(_PRICE_N),
        sf.sum(sf.when(is_purchase, sf.col(_PRICE_SUM))).alias(_PURCHASE_PRICE_SUM),
        sf.sum(sf.when(is_purchase, sf.col(_PRICE_N))).alias(_PURCHASE_PRICE_N),
    )
    pd = sf.col(s.UI_PURCHASE_DAYS)
    interval = sf.when(pd >= 2, (sf.col("_last_purchase_day") - sf.col("_first_purchase_day")) / (pd - 1))
    weight = sf.col(s.UI_WEIGHT)
    cancelled = sf.abs(weight) <= sf.lit(WEIGHT_CANCELLED_RTOL) * sf.col(_ABS_WEIGHT)
    return pairs.withColumn(s.UI_WEIGHT, sf.when(cancelled, sf.lit(0.0)).otherwise(weight)).select(
        "*",
        _days_before(cutoff_us, sf.col(_LAST_TS)).alias(s.UI_DAYS_SINCE_LAST),
        _days_before(cutoff_us, sf.col(_FIRST_TS)).alias(s.UI_DAYS_SINCE_FIRST),
        interval.cast("double").alias(s.UI_MEAN_INTERVAL_DAYS),
        (_days_before(cutoff_us, sf.col(_LAST_PURCHASE_TS)) / interval).alias(s.UI_RECENCY_RATIO),
    ).drop("_first_purchase_day", "_last_purchase_day", _ABS_WEIGHT)


def user_day_stats(daily: DataFrame, cutoff_us: int) -> DataFrame:
    """Distinct purchase days per user and their spacing."""
    from pyspark.sql import functions as sf

    cut_day = cutoff_us // DAY_MICROS
    days = daily.filter(sf.col(s.EVENT_TYPE) == s.PURCHASE).select(s.USER_IDX, DAY).distinct()
    n = sf.count(sf.lit(1))
    stats = days.groupBy(s.USER_IDX).agg(
        n.alias(s.U_N_PURCHASE_DAYS),
        sf.count(sf.when(sf.col(DAY) >= cut_day - 28, True)).alias(s.U_PURCHASE_DAYS_28D),
        sf.count(sf.when(sf.col(DAY) >= cut_day - 90, True)).alias(s.U_PURCHASE_DAYS_90D),
        sf.min(DAY).alias("_first_day"),
        sf.max(DAY).alias("_last_day"),
    )
    n_days = sf.col(s.U_N_PURCHASE_DAYS)
    mean_gap = sf.when(n_days >= 2, (sf.col("_last_day") - sf.col("_first_day")) / (n_days - 1))
    return stats.select(s.USER_IDX, s.U_N_PURCHASE_DAYS, s.U_PURCHASE_DAYS_28D, s.U_PURCHASE_DAYS_90D,
                        mean_gap.cast("double").alias(s.U_MEAN_DAYS_BETWEEN_PURCHASES))


def user_invoices(orders: DataFrame) -> DataFrame:
    """Distinct orders per user (orders: a fold's rows of orders_table)."""
    from pyspark.sql import functions as sf

    return (orders.select(s.USER_IDX, "_order").distinct().groupBy(s.USER_IDX)
            .agg(sf.count(sf.lit(1)).alias(s.U_N_INVOICES)))


def user_features(pairs: DataFrame, day_stats: DataFrame, invoices: DataFrame, cutoff_us: int,
                  attributes: DataFrame | None, attribute_names: Sequence[str]) -> DataFrame:
    """One row per user with events before the cutoff or a row in users/ (attributes)."""
    from pyspark.sql import functions as sf

    base = pairs.groupBy(s.USER_IDX).agg(
        sf.sum(s.UI_N_EVENTS).alias(s.U_N_EVENTS),
        sf.count(sf.when(sf.col(s.UI_PURCHASE_DAYS) > 0, True)).alias(s.U_N_ITEMS),
        sf.sum(s.UI_SPEND).alias(s.U_SPEND),
        sf.max(_LAST_TS).alias(_LAST_TS),
        sf.min(_FIRST_TS).alias(_FIRST_TS),
        (sf.sum(_PURCHASE_PRICE_SUM) / sf.sum(_PURCHASE_PRICE_N)).alias(s.U_AVG_ITEM_PRICE),
    )
    frame = base.join(day_stats, s.USER_IDX, "left").join(invoices, s.USER_IDX, "left")
    if attributes is not None:
        frame = frame.join(attributes, s.USER_IDX, "full")
    frame = frame.fillna(0, subset=list(USER_COUNTS))
    if attribute_names:  # users with events but no users/ row: the string-only fill leaves numbers NULL
        frame = frame.fillna(s.MISSING_CATEGORY, subset=list(attribute_names))
    invoices_col = sf.col(s.U_N_INVOICES)
    return frame.select(
        s.USER_IDX,
        s.U_N_EVENTS, s.U_N_PURCHASE_DAYS, s.U_N_INVOICES, s.U_N_ITEMS,
        sf.col(s.U_SPEND).cast("double").alias(s.U_SPEND),
        sf.when(invoices_col > 0, sf.col(s.U_SPEND) / invoices_col).alias(s.U_AVG_BASKET_VALUE),
        _days_before(cutoff_us, sf.col(_LAST_TS)).alias(s.U_DAYS_SINCE_LAST),
        _days_before(cutoff_us, sf.col(_FIRST_TS)).alias(s.U_DAYS_SINCE_FIRST),
        s.U_PURCHASE_DAYS_28D, s.U_PURCHASE_DAYS_90D, s.U_MEAN_DAYS_BETWEEN_PURCHASES, s.U_AVG_ITEM_PRICE,
        *[sf.col(f"`{c}`") for c in attribute_names],
    )


def item_features(pairs: DataFrame, cutoff_us: int, attributes: DataFrame | None,
                  attribute_names: Sequence[str]) -> DataFrame:
    """One row per item with events before the cutoff or a row in the catalog."""
    from pyspark.sql import functions as sf

    last_buy = sf.col(_LAST_PURCHASE_TS)

    def buyers_since(days: int) -> Column:
        return sf.count(sf.when(last_buy >= cutoff_us - days * DAY_MICROS, True))

    base = pairs.groupBy(s.ITEM_IDX).agg(
        buyers_since(28).alias(s.ITEM_BUYERS_28D),
        buyers_since(7).alias(s.ITEM_BUYERS_7D),
        buyers_since(90).alias(s.ITEM_BUYERS_90D),
        sf.count(sf.when(sf.col(s.UI_PURCHASE_DAYS) > 0, True)).alias(s.ITEM_BUYERS_TOTAL),
        sf.sum(s.UI_PURCHASE_DAYS).alias(s.ITEM_PURCHASE_DAYS_TOTAL),
        (sf.sum(_PRICE_SUM) / sf.sum(_PRICE_N)).alias(s.ITEM_AVG_PRICE),
        sf.count(sf.when(sf.col(s.UI_PURCHASE_DAYS) >= 2, True)).alias("_repeat_buyers"),
        sf.avg(s.UI_MEAN_INTERVAL_DAYS).alias(s.ITEM_MEAN_REPURCHASE_INTERVAL),
        sf.min(_FIRST_PURCHASE_TS).alias(_FIRST_PURCHASE_TS),
        sf.max(_LAST_PURCHASE_TS).alias(_LAST_PURCHASE_TS),
    )
    frame = base if attributes is None else base.join(attributes, s.ITEM_IDX, "full")
    frame = frame.fillna(0, subset=[*ITEM_COUNTS, "_repeat_buyers"])
    if attribute_names:  # items outside a non-strict catalog: the string-only fill leaves numbers NULL
        frame = frame.fillna(s.MISSING_CATEGORY, subset=list(attribute_names))
    buyers = sf.col(s.ITEM_BUYERS_TOTAL)
    return frame.select(
        s.ITEM_IDX,
        *ITEM_COUNTS,
        ((sf.col(s.ITEM_BUYERS_7D) * 4 + 1) / (sf.col(s.ITEM_BUYERS_28D) + 1)).alias(s.ITEM_TREND),
        s.ITEM_AVG_PRICE,
        sf.when(buyers > 0, sf.col("_repeat_buyers") / buyers).alias(s.ITEM_REPURCHASE_RATE),
        s.ITEM_MEAN_REPURCHASE_INTERVAL,
        _days_before(cutoff_us, sf.col(_FIRST_PURCHASE_TS)).alias(s.ITEM_DAYS_SINCE_FIRST_SALE),
        _days_before(cutoff_us, sf.col(_LAST_PURCHASE_TS)).alias(s.ITEM_DAYS_SINCE_LAST_SALE),
        *[sf.col(f"`{c}`") for c in attribute_names],
    )


def user_item_features(pairs: DataFrame, day_stats: DataFrame) -> DataFrame:
    from pyspark.sql import functions as sf

    user_days = day_stats.select(s.USER_IDX, s.U_N_PURCHASE_DAYS)
    share = sf.when(sf.col(s.U_N_PURCHASE_DAYS) > 0, sf.col(s.UI_PURCHASE_DAYS) / sf.col(s.U_N_PURCHASE_DAYS))
    joined = pairs.join(user_days, s.USER_IDX, "left")
    return joined.select(
        s.USER_IDX, s.ITEM_IDX,
        *[sf.coalesce(share, sf.lit(0.0)).alias(c) if c == s.UI_SHARE_OF_USER_DAYS
          else sf.col(c).cast("double") if c in (s.UI_SPEND, s.UI_WEIGHT) else sf.col(c)
          for c in USER_ITEM_FEATURES],
    )


def interactions(pairs: DataFrame) -> DataFrame:
    from pyspark.sql import functions as sf

    return pairs.filter(sf.col(s.UI_WEIGHT) > 0).select(
        s.USER_IDX, s.ITEM_IDX, sf.col(s.UI_WEIGHT).cast("double").alias(s.WEIGHT))


def user_category_share(pairs: DataFrame, item_categories: DataFrame) -> DataFrame:
    """(user_idx, category, uc_share): the share of the user's events before the cutoff on items of each
    catalog category (events on items without a category count in the denominator only). ``pairs`` is
    the fold's pair_table, whose ui_n_events already counts the user's events per item."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    per_item = pairs.select(s.USER_IDX, s.ITEM_IDX, sf.col(s.UI_N_EVENTS).alias(_N))
    joined = per_item.join(sf.broadcast(item_categories), s.ITEM_IDX, "left")
    total = sf.sum(_N).over(Window.partitionBy(s.USER_IDX))
    per_user = joined.select(s.USER_IDX, sf.col(s.ITEM_CATEGORY), _N, total.alias("_total"))
    return (per_user.filter(sf.col(s.ITEM_CATEGORY).isNotNull())
            .groupBy(s.USER_IDX, s.ITEM_CATEGORY).agg((sf.sum(_N) / sf.first("_total")).alias(s.UC_SHARE)))
