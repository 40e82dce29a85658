"""ETL step: raw contract -> OUTPUT/etl/ (clean/, rejected/, id_maps/, windows.json, validation_report.json,
features.json, folds/<fold>/...). See the brief's file contract and DATA_CONTRACT.md / EVALUATION.md.

    python -m components.etl.step --raw RAW_DIR_OR_S3_URI --output OUT/etl [--config JSON|PATH]
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components import schema as s
from components.config import EtlConfig
from components.errors import DataContractError
from components.etl import features as feat
from components.etl.ids import build_id_map
from components.etl.read import NANOS_AS_LONG, RawTable, read_table, resolve_raw_root
from components.etl.validate import (
    P_ID,
    P_ITEM,
    P_PRICE,
    P_QTY,
    P_SESSION,
    P_TS,
    P_TYPE,
    P_USER,
    Checked,
    TableReport,
    check_entities,
    check_events,
    count_outcomes,
    raise_on_bad_encoding,
    raise_on_rejected_share,
    rejected_rows,
)
from components.etl.weights import DAY, TS_US, check_event_weights
from components.etl.windows import (
    DAY_MICROS,
    Windows,
    compute_windows,
    datetime_to_micros,
    micros_to_datetime,
)
from components.spark import get_spark, local_input_bytes, local_uri
from components.stepargs import parse_step_args

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

INPUTS = ("raw",)
log = logging.getLogger(__name__)

# Below this many accepted events output tables are written as few files (readers open fewer files;
# Spark's default would leave one small file per shuffle partition): one for tables of users or items,
# one per core for tables of events or pairs, whose Parquet encoding in one task was about a third of
# the executors' CPU on Online Retail (a file per core lets it use every core).
ONE_FILE_MAX_EVENTS = 1_000_000
WRITE_THREADS = 3  # see _write_all
RAW_BYTES_PER_PARTITION = 64 << 20  # compressed raw input per shuffle partition (~3.5M events of Parquet)


@dataclass(frozen=True)
class EtlResult:
    windows: Windows
    reports: dict[str, TableReport]
    features: dict[str, list[str]]
    seconds: dict[str, float]


@contextmanager
def _session_conf(spark: SparkSession, values: dict[str, str]) -> Iterator[None]:
    """Set confs for the step and restore the caller's afterwards (the local runner shares the session).
    NANOS_AS_LONG is restored too: read.py turns it on when a Parquet file holds nanosecond times."""
    keys = [*values, NANOS_AS_LONG]
    before: dict[str, str | None] = {key: spark.conf.get(key, None) for key in keys}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, previous in before.items():
            if previous is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, previous)


class _Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last = self.started
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now
        log.info("etl: %s done in %.1f s", name, self.seconds[name])


def _write(frame: DataFrame, path: Path, files: int | None) -> None:
    """Write ``frame`` as at most ``files`` Parquet files (None: one per partition)."""
    # Each job is named after what it writes, so an event log maps jobs to outputs.
    frame.sparkSession.sparkContext.setJobDescription(f"etl write {path.parent.name}/{path.name}")
    (frame if files is None else frame.coalesce(files)).write.mode("overwrite").parquet(local_uri(path))


@dataclass(frozen=True)
class _Output:
    frame: DataFrame
    path: Path
    files: int | None


def _write_all(outputs: Sequence[_Output]) -> None:
    """Write independent outputs as concurrent Spark jobs. Most ETL jobs are small: between two jobs the
    driver plans, compiles and commits for ~0.2 s (a fifth of the step's wall time on Online Retail)
    while the cores idle, and a one-file write ends in one task; with WRITE_THREADS jobs in flight that
    work overlaps other jobs' tasks. Tasks still run one per core, so memory per core is unchanged."""
    if len(outputs) <= 1:
        for out in outputs:
            _write(out.frame, out.path, out.files)
        return
    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="etl-write") as pool:
        futures = [pool.submit(_write, out.frame, out.path, out.files) for out in outputs]
        try:
            for future in futures:
                future.result()
        finally:  # a failed write stops the ones not started yet
            for future in futures:
                future.cancel()


def _read_optional(spark: SparkSession, root: Path, table: str, id_column: str) -> RawTable | None:
    if not (root / table).exists():
        log.info("etl: no %s/ table (optional)", table)
        return None
    return read_table(spark, root, table, (id_column,))


def _validate(checked: Checked) -> TableReport:
    checked.frame.sparkSession.sparkContext.setJobDescription(f"etl validate {checked.table.name}")
    input_rows = checked.table.rows if checked.table.rows is not None else checked.table.frame.count()
    report = count_outcomes(checked, input_rows)
    raise_on_bad_encoding(checked, report)
    log.info("etl: %s: %d rows, %d accepted, rejected %s", checked.table.name, report.input, report.accepted,
             report.rejected or "none")
    return report


def _accepted_entities(checked: Checked, id_column: str) -> tuple[DataFrame, list[str]]:
    """Accepted items/users: the cleaned id and the raw attribute columns (strings)."""
    from pyspark.sql import functions as sf

    attributes = [c for c in checked.table.columns if c != id_column]
    frame = checked.frame.filter(sf.col(s.REASON).isNull()).select(
        sf.col(P_ID).alias(id_column), *[sf.col(f"`{c}`") for c in attributes])
    return frame, attributes


def _require_history(windows: Windows, events: TableReport, config: EtlConfig) -> None:
    """The ranker learns from the label window with features from before it: a log that starts inside
    it (or later) has nothing to learn from, which would only surface steps later as an empty fold."""
    first = events.first_event_us
    if first is None or micros_to_datetime(first) >= windows.label_start:
        span = "" if first is None else f"{micros_to_datetime(first):%Y-%m-%d} to "
        raise DataContractError(
            f"events/: the accepted events run {span}{windows.end:%Y-%m-%d}, but the label window starts "
            f"{windows.label_start:%Y-%m-%d} (test_days {config.test_days} + label_days {config.label_days} "
            "before the end) and needs events before it: give a longer log or smaller etl.test_days / "
            "etl.label_days")


def shuffle_partitions(cores: int, raw_bytes: int) -> int:
    """One shuffle partition per core, and more once the raw files pass RAW_BYTES_PER_PARTITION each, so a
    partition of the (user, item, day) tables stays a few hundred MB as the shop grows. Every extra
    partition is a task per stage: with 4 on 2 cores the small jobs of Online Retail spent more on tasks
    than on rows."""
    return max(cores, -(-raw_bytes // RAW_BYTES_PER_PARTITION))


def run_etl(spark: SparkSession, raw_root: Path, output: Path, config: EtlConfig) -> EtlResult:
    from pyspark import StorageLevel

    check_event_weights(config)
    timer = _Timer()
    cached: list[DataFrame] = []

    def cache(frame: DataFrame) -> DataFrame:
        cached.append(frame.persist(StorageLevel.MEMORY_AND_DISK))
        return frame

    # Adaptive execution re-plans every stage; the ETL's ~30 small jobs ran ~25 % faster without it
    # (Online Retail, 2 cores); partition counts are set from the input size instead. Caches
    # are short-lived and read a few times: compressing them cost more CPU than everything else in
    # validation (measured 2.5x), so they stay uncompressed (and spill to disk when memory is short).
    confs = {"spark.sql.session.timeZone": "UTC", "spark.sql.adaptive.enabled": "false",
             "spark.sql.inMemoryColumnarStorage.compressed": "false",
             "spark.sql.shuffle.partitions": str(shuffle_partitions(spark.sparkContext.defaultParallelism,
                                                                    local_input_bytes(raw_root)))}
    with _session_conf(spark, confs):
        try:
            return _run(spark, raw_root, output, config, timer, cache)
        finally:
            for frame in cached:
                frame.unpersist()


def _run(spark: SparkSession, raw_root: Path, output: Path, config: EtlConfig, timer: _Timer,
         cache: Callable[[DataFrame], DataFrame]) -> EtlResult:
    from pyspark.sql import functions as sf

    if not (raw_root / s.EVENTS).is_dir():
        raise DataContractError(f"raw input {raw_root}: the required events/ folder is missing")
    items_raw = _read_optional(spark, raw_root, s.ITEMS, s.ITEM_ID)
    users_raw = _read_optional(spark, raw_root, s.USERS, s.USER_ID)
    events_raw = read_table(spark, raw_root, s.EVENTS, s.REQUIRED_EVENT_COLUMNS)

    cores = spark.sparkContext.defaultParallelism
    # ------------------------------------------------------------------ validate: items, users, events
    checked: dict[str, Checked] = {}
    reports: dict[str, TableReport] = {}
    catalog_ids = None
    for table, raw, id_column in ((s.ITEMS, items_raw, s.ITEM_ID), (s.USERS, users_raw, s.USER_ID)):
        if raw is None:
            continue
        entity = check_entities(raw, id_column)
        entity = Checked(entity.table, cache(entity.frame), entity.checks)
        checked[table] = entity
        reports[table] = _validate(entity)
    if items_raw is not None and config.strict_catalog:
        catalog_ids = checked[s.ITEMS].frame.filter(sf.col(s.REASON).isNull()).select(P_ID)
    events = check_events(events_raw, catalog_ids, cache)
    checked[s.EVENTS] = events
    reports[s.EVENTS] = _validate(events)
    timer.lap("validate")

    # Rejected rows and the report are written before any share check, so a stopped run can be inspected.
    _write_all([_Output(rejected_rows(one), output / s.REJECTED_DIR / table, cores if table == s.EVENTS else 1)
                for table, one in checked.items()])
    report_json = {table: reports[table].as_json() for table in s.RAW_TABLES if table in reports}
    (output / s.VALIDATION_REPORT_FILE).write_text(json.dumps(report_json, indent=2))
    for table, one in checked.items():
        raise_on_rejected_share(one, reports[table], config.max_rejected_share)
    if reports[s.EVENTS].accepted == 0:
        raise DataContractError(f"table {s.EVENTS}: no accepted rows in {', '.join(events_raw.files)}")
    # files of the tables of events or pairs: one per core for small data, as computed for large data
    many = cores if reports[s.EVENTS].accepted <= ONE_FILE_MAX_EVENTS else None
    timer.lap("rejected")

    # ------------------------------------------------------------------ id maps
    accepted = events.frame.filter(sf.col(s.REASON).isNull()).select(
        sf.col(P_USER).alias(s.USER_ID), sf.col(P_ITEM).alias(s.ITEM_ID), sf.col(P_TYPE).alias(s.EVENT_TYPE),
        sf.col(P_TS).alias(s.TIMESTAMP), sf.col(P_QTY).alias(s.QUANTITY), sf.col(P_PRICE).alias(s.PRICE),
        sf.col(P_SESSION).alias(s.SESSION_ID))
    items_frame, item_attrs = (_accepted_entities(checked[s.ITEMS], s.ITEM_ID) if s.ITEMS in checked
                               else (None, []))
    users_frame, user_attrs = (_accepted_entities(checked[s.USERS], s.USER_ID) if s.USERS in checked
                               else (None, []))
    user_map = cache(build_id_map(
        [accepted.select(s.USER_ID), *([users_frame.select(s.USER_ID)] if users_frame is not None else [])],
        s.USER_ID, s.USER_IDX))
    item_map = cache(build_id_map(
        [accepted.select(s.ITEM_ID), *([items_frame.select(s.ITEM_ID)] if items_frame is not None else [])],
        s.ITEM_ID, s.ITEM_IDX))
    clean_events = accepted.join(user_map, s.USER_ID).join(item_map, s.ITEM_ID).select(
        s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID, s.USER_IDX,
        s.ITEM_IDX)
    # The maps first: clean/events reads their caches, and a job waiting on a cache being built holds a core.
    _write_all([_Output(user_map, output / s.ID_MAPS_DIR / s.USERS, 1),
                _Output(item_map, output / s.ID_MAPS_DIR / s.ITEMS, 1)])
    _write(clean_events, output / s.CLEAN_DIR / s.EVENTS, many)
    timer.lap("id_maps_clean_events")

    # ------------------------------------------------------------------ clean tables
    for frame in events.persisted:  # from here on events are read back from clean/ (columnar, pruned)
        frame.unpersist()
    ts_us = sf.unix_micros(sf.col(s.TIMESTAMP))
    events_idx = spark.read.parquet(local_uri(output / s.CLEAN_DIR / s.EVENTS)).select(
        s.USER_IDX, s.ITEM_IDX, s.EVENT_TYPE, s.QUANTITY, s.PRICE, s.SESSION_ID,
        ts_us.alias(TS_US), sf.floor(ts_us / DAY_MICROS).cast("int").alias(DAY))
    end_us = reports[s.EVENTS].last_event_us
    assert end_us is not None
    windows = compute_windows(micros_to_datetime(end_us), config.test_days, config.label_days)
    _require_history(windows, reports[s.EVENTS], config)
    (output / s.WINDOWS_FILE).write_text(windows.to_json())
    log.info("etl: windows %s", windows.as_json())

    feature_lists: dict[str, list[str]] = {"user": list(feat.USER_FEATURES), "item": list(feat.ITEM_FEATURES),
                                           "user_item": list(feat.USER_ITEM_FEATURES), "categorical": []}
    user_attr_frame = item_attr_frame = item_categories = None
    user_attr_names: list[str] = []
    item_attr_names: list[str] = []
    if users_frame is not None:
        plan = feat.plan_attributes(users_frame, user_attrs, config.max_category_share, s.USERS)
        typed = feat.typed_attributes(users_frame.join(user_map, s.USER_ID), (s.USER_ID, s.USER_IDX), plan,
                                      user_attrs)
        _write(typed, output / s.CLEAN_DIR / s.USERS, files=1)
        user_attr_frame = cache(feat.attribute_features(typed, s.USER_IDX, plan, s.USER_ATTR_PREFIX))
        user_attr_names = plan.features(s.USER_ATTR_PREFIX)
        feature_lists["user"] += user_attr_names
        feature_lists["categorical"] += plan.categorical_features(s.USER_ATTR_PREFIX)
    if items_frame is not None:
        plan = feat.plan_attributes(items_frame, item_attrs, config.max_category_share, s.ITEMS)
        typed = feat.typed_attributes(items_frame.join(item_map, s.ITEM_ID), (s.ITEM_ID, s.ITEM_IDX), plan,
                                      item_attrs)
        typed = cache(typed)
        _write(typed, output / s.CLEAN_DIR / s.ITEMS, files=1)
        item_attr_frame = cache(feat.attribute_features(typed, s.ITEM_IDX, plan, s.ITEM_ATTR_PREFIX))
        item_attr_names = plan.features(s.ITEM_ATTR_PREFIX)
        feature_lists["item"] += item_attr_names
        feature_lists["categorical"] += plan.categorical_features(s.ITEM_ATTR_PREFIX)
        if s.ITEM_CATEGORY in item_attrs and s.ITEM_CATEGORY not in plan.numeric:
            item_categories = typed.select(s.ITEM_IDX, s.ITEM_CATEGORY)
            feature_lists[s.USER_CATEGORY] = [s.UC_SHARE]
    (output / s.FEATURES_FILE).write_text(json.dumps(feature_lists, indent=2))
    timer.lap("clean")

    # ------------------------------------------------------------------ folds
    # Day-level tables over all events, built once; each fold keeps the days before its cutoff.
    daily_all = cache(feat.daily_table(events_idx, end_us, config))
    orders_all = cache(feat.orders_table(events_idx))
    # Both folds' tables are written together (see _write_all); their caches live until then.
    outputs: list[_Output] = []
    fold_caches: list[DataFrame] = []
    for fold in s.FOLDS:
        cutoff_us = datetime_to_micros(windows.cutoff(fold))
        fold_dir = output / s.FOLDS_DIR / fold
        daily = feat.fold_history(daily_all, cutoff_us)
        pairs = cache(feat.pair_table(daily, cutoff_us, end_us, config))
        day_stats = cache(feat.user_day_stats(daily, cutoff_us))
        start, stop = windows.target_window(fold)
        targets = cache(feat.targets(daily_all, datetime_to_micros(start),
                                     None if stop is None else datetime_to_micros(stop)))
        fold_caches += [pairs, day_stats, targets]
        invoices = feat.user_invoices(feat.fold_history(orders_all, cutoff_us))
        warm = pairs.select(s.USER_IDX).distinct().withColumn("_warm", sf.lit(True))
        target_users = targets.select(s.USER_IDX).distinct().join(warm, s.USER_IDX, "left").select(
            s.USER_IDX, sf.when(sf.col("_warm"), sf.lit(s.WARM)).otherwise(sf.lit(s.COLD)).alias(s.SEGMENT))
        outputs += [
            _Output(feat.interactions(pairs), fold_dir / s.INTERACTIONS, many),
            _Output(feat.user_item_features(pairs, day_stats), fold_dir / s.USER_ITEM_FEATURES, many),
            _Output(feat.user_features(pairs, day_stats, invoices, cutoff_us, user_attr_frame, user_attr_names),
                    fold_dir / s.USER_FEATURES, 1),
            _Output(feat.item_features(pairs, cutoff_us, item_attr_frame, item_attr_names),
                    fold_dir / s.ITEM_FEATURES, 1),
            *([_Output(feat.user_category_share(pairs, item_categories), fold_dir / s.USER_CATEGORY, many)]
              if item_categories is not None else []),
            _Output(targets, fold_dir / s.TARGETS, 1),
            _Output(target_users, fold_dir / s.TARGET_USERS, 1),
        ]
        if fold == s.TEST_FOLD:  # what the bundle's real-time features start from (components/realtime)
            outputs += [_Output(daily, fold_dir / s.HISTORY_DAILY, many),
                        _Output(feat.fold_history(orders_all, cutoff_us), fold_dir / s.HISTORY_ORDERS, many)]
    _write_all(outputs)
    for frame in fold_caches:
        frame.unpersist()
    timer.lap("folds")

    timer.seconds["total"] = round(time.perf_counter() - timer.started, 3)
    log.info("etl: finished in %.1f s", timer.seconds["total"])
    return EtlResult(windows=windows, reports=reports, features=feature_lists, seconds=timer.seconds)


def _s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "etl", INPUTS)
    raw = str(args.inputs["raw"])
    root = resolve_raw_root(raw, s3_client=_s3_client() if raw.startswith("s3:") else None)
    run_etl(get_spark("ecomrec-etl", input_bytes=local_input_bytes(root)), root, args.output, args.config.etl)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
