"""Row-level checks: every input row gets exactly one outcome, accepted (reason NULL) or rejected with the
FIRST failing check, in the fixed orders EVENT_CHECKS and ENTITY_CHECKS (components/event_rules.py, shared
with POST /events).

Everything is Spark SQL expressions over string columns (no Python UDFs). Parsed values live in private
``_p_*`` columns next to the originals, so a rejected row keeps exactly what the file said.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from components import schema as s
from components.errors import DataContractError
from components.etl.read import MALFORMED, ROW_ID, RawTable

# The reasons, their order and the value rules are the raw contract's, shared with POST /events: they
# live in components/event_rules.py (which checks one row in plain Python), imported here.
from components.event_rules import (
    DUPLICATE,
    DUPLICATE_ID,
    INVALID_ENCODING,
    MALFORMED_ROW,
    MAX_QUANTITY,
    MISSING_ID,
    MISSING_ITEM_ID,
    MISSING_TIMESTAMP,
    MISSING_USER_ID,
    NEGATIVE_PRICE,
    NON_POSITIVE_QUANTITY,
    REPLACEMENT_CHAR,
    TIMESTAMP_PATTERN,
    UNKNOWN_EVENT_TYPE,
    UNKNOWN_ITEM,
    UNPARSABLE_PRICE,
    UNPARSABLE_QUANTITY,
    UNPARSABLE_TIMESTAMP,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Parsed columns (private; step.py renames them to the contract names for clean/).
P_USER: Final = "_p_user_id"
P_ITEM: Final = "_p_item_id"
P_TYPE: Final = "_p_event_type"
P_TS: Final = "_p_timestamp"
P_QTY: Final = "_p_quantity"
P_PRICE: Final = "_p_price"
P_SESSION: Final = "_p_session_id"
P_ID: Final = "_p_id"
PRE_REASON: Final = "_pre_reason"
_H64: Final = "_h64"
_H32: Final = "_h32"
_FIRST: Final = "_first"


@dataclass(frozen=True)
class Checked:
    """A table after the checks: ``frame`` = originals + source_file + private parsed columns + reason."""

    table: RawTable
    frame: DataFrame
    checks: tuple[str, ...]
    persisted: tuple[DataFrame, ...] = ()  # what check_events cached; the caller releases it


def _clean_string(col: Column) -> Column:
    from pyspark.sql import functions as sf

    trimmed = sf.trim(col)
    return sf.when(trimmed != "", trimmed)


def _first_failing(checks: Sequence[tuple[str, Column]]) -> Column:
    """CASE WHEN c1 THEN r1 WHEN c2 THEN r2 ... END: the first failing check names the row's reason."""
    from pyspark.sql import functions as sf

    expr = None
    for reason, failed in checks:
        expr = sf.when(failed, sf.lit(reason)) if expr is None else expr.when(failed, sf.lit(reason))
    assert expr is not None
    return expr


def _bad_encoding(columns: Sequence[str]) -> Column:
    from pyspark.sql import functions as sf

    flags = [sf.coalesce(sf.col(f"`{c}`").contains(REPLACEMENT_CHAR), sf.lit(False)) for c in columns]
    out = flags[0]
    for flag in flags[1:]:
        out = out | flag
    return out


def _original(table: RawTable, name: str) -> Column:
    from pyspark.sql import functions as sf

    return sf.col(f"`{name}`") if name in table.columns else sf.lit(None).cast("string")


def check_events(table: RawTable, catalog_ids: DataFrame | None,
                 cache: Callable[[DataFrame], DataFrame] = lambda frame: frame) -> Checked:
    """Parse and check every event row. ``catalog_ids`` (one column ``_p_id``, unique) turns on the strict
    catalog check: an event whose item is not in it is rejected as unknown_item. ``cache`` persists the
    parsed rows, which every later use of the result (counts, rejected/, clean/) reads."""
    from pyspark.sql import functions as sf

    frame = table.frame
    # One raw file is often one split (one Parquet row group, one gzip CSV): parsing it, and every use of
    # the cache below, would run on one core. Spread the rows first (ROW_ID, the read order, is fixed
    # already), hashed rather than round-robin so no sort is needed to keep it deterministic.
    parallelism = frame.sparkSession.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < parallelism:
        frame = frame.repartition(parallelism, ROW_ID)
    qty_text = _clean_string(_original(table, s.QUANTITY))
    qty_num = qty_text.cast("double")
    price_text = _clean_string(_original(table, s.PRICE))
    price_num = price_text.cast("double")
    ts_text = _clean_string(_original(table, s.TIMESTAMP))
    frame = frame.select(
        "*",
        _clean_string(_original(table, s.USER_ID)).alias(P_USER),
        _clean_string(_original(table, s.ITEM_ID)).alias(P_ITEM),
        sf.lower(_clean_string(_original(table, s.EVENT_TYPE))).alias(P_TYPE),
        sf.when(ts_text.rlike(TIMESTAMP_PATTERN), ts_text.cast("timestamp")).alias(P_TS),
        ts_text.isNull().alias("_ts_missing"),
        # missing quantity = 1 unit (contract default); NaN, inf, fractions and overflow are unparsable
        sf.when(qty_text.isNull(), sf.lit(1.0)).otherwise(qty_num).alias("_qty_num"),
        price_text.isNotNull().alias("_price_given"),
        price_num.alias("_price_num"),
        _clean_string(_original(table, s.SESSION_ID)).alias(P_SESSION),
    )
    qty = sf.col("_qty_num")
    price = sf.col("_price_num")
    qty_bad = qty.isNull() | sf.isnan(qty) | (sf.abs(qty) > MAX_QUANTITY) | (qty != sf.floor(qty))
    price_bad = sf.col("_price_given") & (price.isNull() | sf.isnan(price) | (sf.abs(price) == float("inf")))
    checks: list[tuple[str, Column]] = [
        (MALFORMED_ROW, sf.col(MALFORMED).isNotNull()),
        (INVALID_ENCODING, _bad_encoding(table.columns)),
        (MISSING_USER_ID, sf.col(P_USER).isNull()),
        (MISSING_ITEM_ID, sf.col(P_ITEM).isNull()),
        (MISSING_TIMESTAMP, sf.col("_ts_missing")),
        (UNPARSABLE_TIMESTAMP, sf.col(P_TS).isNull()),
        (UNKNOWN_EVENT_TYPE, sf.coalesce(~sf.col(P_TYPE).isin(*s.EVENT_TYPES), sf.lit(True))),
        (UNPARSABLE_QUANTITY, qty_bad),
        (NON_POSITIVE_QUANTITY, qty <= 0),
        (UNPARSABLE_PRICE, price_bad),
        (NEGATIVE_PRICE, sf.col("_price_given") & (price < 0)),
    ]
    if catalog_ids is not None:
        known = catalog_ids.select(sf.col(P_ID).alias(P_ITEM), sf.lit(True).alias("_known"))
        frame = frame.join(sf.broadcast(known), on=P_ITEM, how="left")
        checks.append((UNKNOWN_ITEM, sf.col("_known").isNull()))
    frame = frame.withColumn(PRE_REASON, _first_failing(checks))
    frame = frame.withColumn(P_QTY, sf.col("_qty_num").cast("int")).withColumn(
        P_PRICE, sf.when(sf.col("_price_given"), price))
    # Exact duplicate = same parsed contract values and same extra columns, among rows that passed every
    # other check; the first in read order is kept. Rather than shuffle every (wide) row through a window,
    # rows are keyed by two independent hashes of those values (96 bits: a false match among 10^8 rows has
    # odds ~1e-13), a narrow aggregation finds the keys seen more than once and the first row of each, and
    # a broadcast join marks the later ones. Spark's hashes skip NULL inputs, so (NULL, "a") and ("a", NULL)
    # would hash alike: each value's null flag is hashed too.
    extra = [sf.col(f"`{c}`") for c in table.columns
             if c not in (*s.REQUIRED_EVENT_COLUMNS, *s.OPTIONAL_EVENT_COLUMNS)]
    values = [sf.col(P_USER), sf.col(P_ITEM), sf.col(P_TYPE), sf.col(P_TS), sf.col(P_QTY), sf.col(P_PRICE),
              sf.col(P_SESSION), *extra]
    keys = [*values, *(value.isNull() for value in values)]
    valid = sf.col(PRE_REASON).isNull()
    keep = [*[f"`{c}`" for c in table.columns], s.SOURCE_FILE, ROW_ID, P_USER, P_ITEM, P_TYPE, P_TS, P_QTY,
            P_PRICE, P_SESSION, PRE_REASON]
    parsed = cache(frame.select(*keep, sf.when(valid, sf.xxhash64(*keys)).alias(_H64),
                                sf.when(valid, sf.hash(*keys)).alias(_H32)))
    position = sf.struct(sf.col(s.SOURCE_FILE), sf.col(ROW_ID))
    repeated = cache(parsed.filter(sf.col(_H64).isNotNull()).groupBy(_H64, _H32)
                     .agg(sf.count(sf.lit(1)).alias("_copies"), sf.min(position).alias(_FIRST))
                     .filter(sf.col("_copies") > 1).select(_H64, _H32, _FIRST))
    joined = parsed.join(sf.broadcast(repeated), [_H64, _H32], "left")
    duplicate = sf.col(_FIRST).isNotNull() & (position != sf.col(_FIRST))
    reason = sf.coalesce(sf.col(PRE_REASON), sf.when(duplicate, sf.lit(DUPLICATE)))
    out = [c for c in keep if c != PRE_REASON]
    checks_done = (*[r for r, _ in checks], DUPLICATE)
    return Checked(table=table, frame=joined.select(*out, reason.alias(s.REASON)), checks=checks_done,
                   persisted=(parsed, repeated))


def check_entities(table: RawTable, id_column: str) -> Checked:
    """items/ and users/: an id is required and unique (the first row of an id in read order is kept)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    frame = table.frame.withColumn(P_ID, _clean_string(sf.col(id_column)))
    checks: list[tuple[str, Column]] = [
        (MALFORMED_ROW, sf.col(MALFORMED).isNotNull()),
        (INVALID_ENCODING, _bad_encoding(table.columns)),
        (MISSING_ID, sf.col(P_ID).isNull()),
    ]
    frame = frame.withColumn(PRE_REASON, _first_failing(checks))
    order = Window.partitionBy(sf.col(PRE_REASON), sf.col(P_ID)).orderBy(
        sf.col(s.SOURCE_FILE), sf.col(ROW_ID))
    reason = sf.coalesce(sf.col(PRE_REASON), sf.when(sf.row_number().over(order) > 1, sf.lit(DUPLICATE_ID)))
    frame = frame.withColumn(s.REASON, reason).drop(PRE_REASON, MALFORMED)
    return Checked(table=table, frame=frame, checks=(*[r for r, _ in checks], DUPLICATE_ID))


def rejected_rows(checked: Checked) -> DataFrame:
    """rejected/<table>/: every original column as a string, the reason and the source file."""
    from pyspark.sql import functions as sf

    cols = [sf.col(f"`{c}`") for c in checked.table.columns]
    return checked.frame.filter(sf.col(s.REASON).isNotNull()).select(*cols, s.REASON, s.SOURCE_FILE)


@dataclass(frozen=True)
class TableReport:
    input: int
    accepted: int
    rejected: dict[str, int]
    files: tuple[str, ...]
    last_event_us: int | None = None  # events: the latest accepted timestamp (end of the log)
    first_event_us: int | None = None  # events: the earliest accepted timestamp

    def as_json(self) -> dict[str, object]:
        return {"input": self.input, "accepted": self.accepted, "rejected": dict(self.rejected),
                "rejected_total": sum(self.rejected.values()), "files": list(self.files)}


def count_outcomes(checked: Checked, input_rows: int) -> TableReport:
    """Accepted and rejected-per-reason counts (one Spark job), checked against the input row count."""
    from pyspark.sql import functions as sf

    aggs = [sf.count(sf.lit(1)).alias("n")]
    if P_TS in checked.frame.columns:  # events: the end of the log comes with the same job
        aggs += [sf.max(sf.unix_micros(P_TS)).alias("last"), sf.min(sf.unix_micros(P_TS)).alias("first")]
    rows = checked.frame.groupBy(s.REASON).agg(*aggs).collect()
    by_reason = {r[s.REASON]: int(r["n"]) for r in rows}
    accepted_row = next((r for r in rows if r[s.REASON] is None and "last" in r), None)
    last, first = (None, None) if accepted_row is None else (accepted_row["last"], accepted_row["first"])
    accepted = by_reason.pop(None, 0)
    rejected = {reason: by_reason[reason] for reason in checked.checks if reason in by_reason}
    # Every input row ends in exactly one place; a join or window that dropped or doubled rows is a bug.
    if accepted + sum(rejected.values()) != input_rows:
        raise AssertionError(
            f"table {checked.table.name}: accepted {accepted} + rejected {sum(rejected.values())} != input "
            f"{input_rows}")
    return TableReport(input=input_rows, accepted=accepted, rejected=rejected, files=checked.table.files,
                       last_event_us=None if last is None else int(last),
                       first_event_us=None if first is None else int(first))


def raise_on_bad_encoding(checked: Checked, report: TableReport) -> None:
    """A file with bytes that are not UTF-8 cannot be read faithfully: stop, naming file and column."""
    from pyspark.sql import functions as sf

    n_bad = report.rejected.get(INVALID_ENCODING, 0)
    if not n_bad:
        return
    example = checked.frame.filter(sf.col(s.REASON) == INVALID_ENCODING).orderBy(
        s.SOURCE_FILE, ROW_ID).limit(1).collect()[0]
    column = next(c for c in checked.table.columns if REPLACEMENT_CHAR in (example[c] or ""))
    raise DataContractError(
        f"{checked.table.name}/: file {example[s.SOURCE_FILE]} is not valid UTF-8 in column {column!r} "
        f"({n_bad} row(s), e.g. {example[column]!r}); re-export it as UTF-8")


def raise_on_rejected_share(checked: Checked, report: TableReport, max_share: float) -> None:
    """Stop when a table lost more than ``max_share`` of its rows, naming the main reason and a row."""
    from pyspark.sql import functions as sf

    total_rejected = sum(report.rejected.values())
    if report.input == 0 or total_rejected / report.input <= max_share:
        return
    reason, n = max(report.rejected.items(), key=lambda kv: kv[1])
    example = (checked.frame.filter(sf.col(s.REASON) == reason).orderBy(s.SOURCE_FILE, ROW_ID)
               .limit(1).collect())
    shown = {c: example[0][c] for c in (*checked.table.columns, s.SOURCE_FILE)} if example else {}
    raise DataContractError(
        f"table {checked.table.name}: {total_rejected} of {report.input} rows rejected "
        f"({total_rejected / report.input:.1%} > max_rejected_share {max_share:.1%}); main reason {reason!r} "
        f"({n} rows), e.g. {shown}")
