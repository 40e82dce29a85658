"""Implicit interaction weight per (user, item) (DATA_CONTRACT.md "Interaction weight").

weight = sum over contributions of  event_weights[type] x q(units) x decay(age)
  - contribution unit (config.weight_unit): "event" = one per row; "day" = one per (user, item, type, UTC
    day), with the day's units summed: a repeat buyer counts by purchase days, not by rows.
  - q: for purchases and returns when purchase_weight_by_quantity, linear min(u, cap) or
    log2(1 + min(u, cap)); 1 otherwise. Returns carry a negative weight, so a return cancels the
    purchase it undoes.
  - decay: 0.5 ** (age_days / decay_half_life_days), age relative to the fold cutoff (none when unset).
Pairs with weight <= 0 are dropped from interactions/ (they stay visible as ui_weight); a sum within
1e-9 of its terms' magnitudes is 0 (fully returned purchases cancel only up to rounding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components import schema as s
from components.config import EtlConfig
from components.errors import DataContractError
from components.etl.windows import DAY_MICROS

if TYPE_CHECKING:
    from pyspark.sql import Column

# Columns of the per-fold daily table (features.daily_table) the weights are computed from.
DAY: str = "_day"  # UTC day number since the epoch
TS_US: str = "_ts_us"  # event time, microseconds since the epoch


def check_event_weights(config: EtlConfig) -> None:
    unknown = sorted(set(config.event_weights) - set(s.EVENT_TYPES))
    if unknown:
        raise DataContractError(
            f"config etl.event_weights: unknown event type {unknown[0]!r}; known: {', '.join(s.EVENT_TYPES)}")


def type_weight(event_type: Column, config: EtlConfig) -> Column:
    from pyspark.sql import functions as sf

    check_event_weights(config)
    expr = sf.lit(0.0)
    for name, weight in sorted(config.event_weights.items()):
        expr = sf.when(event_type == name, sf.lit(float(weight))).otherwise(expr)
    return expr


def quantity_factor(event_type: Column, units: Column, config: EtlConfig) -> Column:
    from pyspark.sql import functions as sf

    if not config.purchase_weight_by_quantity:
        return sf.lit(1.0)
    capped = sf.least(units.cast("double"), sf.lit(float(config.quantity_cap)))
    scaled = capped if config.quantity_scale == "linear" else sf.log2(sf.lit(1.0) + capped)
    return sf.when(event_type.isin(s.PURCHASE, s.RETURN), scaled).otherwise(sf.lit(1.0))


def decay_factor(ts_us: Column, cutoff_us: int, config: EtlConfig) -> Column:
    from pyspark.sql import functions as sf

    if config.decay_half_life_days is None:
        return sf.lit(1.0)
    age_days = (sf.lit(cutoff_us) - ts_us) / sf.lit(float(DAY_MICROS))
    return sf.pow(sf.lit(0.5), age_days / sf.lit(float(config.decay_half_life_days)))


def event_contribution(event_type: Column, units: Column, ts_us: Column, cutoff_us: int,
                       config: EtlConfig) -> Column:
    """One event's weight (weight_unit "event")."""
    return (type_weight(event_type, config) * quantity_factor(event_type, units, config)
            * decay_factor(ts_us, cutoff_us, config))


def daily_contribution(event_type: Column, day_units: Column, day_last_ts_us: Column, day_event_sum: Column,
                       cutoff_us: int, reference_us: int, config: EtlConfig) -> Column:
    """The weight one (user, item, type, day) row adds at ``cutoff_us``: one contribution for the day with
    its units summed and its last event's age ("day"), or the day's summed per-event weights ("event").

    The per-event sums are computed once for all folds with ages relative to ``reference_us`` (the end of
    the log); 0.5 ** ((cutoff - t) / h) = 0.5 ** ((reference - t) / h) * 2 ** ((reference - cutoff) / h)
    moves them to the fold's cutoff exactly."""
    from pyspark.sql import functions as sf

    if config.weight_unit == "day":
        return event_contribution(event_type, day_units, day_last_ts_us, cutoff_us, config)
    if config.decay_half_life_days is None:
        return day_event_sum
    shift = 2.0 ** ((reference_us - cutoff_us) / DAY_MICROS / config.decay_half_life_days)
    return day_event_sum * sf.lit(shift)
