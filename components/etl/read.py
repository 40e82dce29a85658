"""Read one raw table (DATA_CONTRACT.md): a folder of Parquet files, or of CSV files (optionally .gz) with a
header row, from a local path or an s3:// prefix. Under events/, a ``*.headerless.csv`` file (the durable
event log as Kinesis Data Firehose delivers it: records concatenated, no header) holds the event log's
columns (schema.EVENT_LOG_COLUMNS) in that order.

Every value is read as a string, so a bad value becomes a rejected row later instead of a crash here. What
cannot be read at all (a missing folder, an empty file, a header that is not UTF-8, a corrupt Parquet
footer, a missing required column, a Parquet column whose type cannot be taken as the contract type)
stops the run with a DataContractError naming the file and the column. Raw input is only ever read.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from components import schema as s
from components.errors import DataContractError, EcomrecError
from components.spark import local_uri
from components.storage import is_s3_uri, materialize

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

# Private columns carried next to the original ones until the clean/rejected split.
MALFORMED = "_malformed_record"  # the raw CSV line when the row has the wrong number of fields
ROW_ID = "_row_id"  # read order, so "the first of several duplicates" is well defined

CSV_SUFFIXES = (".csv", ".csv.gz")
HEADERLESS_SUFFIXES = (s.HEADERLESS_CSV_SUFFIX, s.HEADERLESS_CSV_SUFFIX + ".gz")
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq", ".parquet.gz", ".snappy.parquet")
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
PER_FILE_READS = 256  # see _with_source_file

# Contract columns and the Arrow types a Parquet file may hold them in (anything else cannot be cast).
_ID_TYPES = "string or integer"
_TIME_TYPES = "timestamp, date or ISO-8601 string"
_NUMBER_TYPES = "number or string"


def _id_ok(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)


def _time_ok(t: pa.DataType) -> bool:
    return (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t))


def _number_ok(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t))


_CONTRACT_TYPES: dict[str, tuple[Any, str]] = {
    s.USER_ID: (_id_ok, _ID_TYPES),
    s.ITEM_ID: (_id_ok, _ID_TYPES),
    s.SESSION_ID: (_id_ok, _ID_TYPES),
    s.EVENT_TYPE: (_id_ok, _ID_TYPES),
    s.TIMESTAMP: (_time_ok, _TIME_TYPES),
    s.QUANTITY: (_number_ok, _NUMBER_TYPES),
    s.PRICE: (_number_ok, _NUMBER_TYPES),
}


@dataclass(frozen=True)
class RawTable:
    """One table read as strings: ``frame`` has ``columns`` (the union over files, first-seen order), all
    StringType, plus ``source_file`` (path relative to the raw root), MALFORMED and ROW_ID."""

    name: str
    frame: DataFrame
    columns: tuple[str, ...]
    files: tuple[str, ...]
    rows: int | None = None  # from the Parquet footers when every file is Parquet (spares a count job)


def resolve_raw_root(uri: str | Path, *, s3_client: Any | None = None) -> Path:
    """A local folder for the raw contract: the path itself, or an s3:// prefix downloaded through the
    injected client (components.storage.materialize)."""
    text = str(uri)
    if text.startswith("s3:/") and not text.startswith("s3://"):
        text = "s3://" + text[len("s3:/"):]  # argparse's Path() folds "s3://" to "s3:/"
    try:
        root = materialize(text, s3_client=s3_client)
    except EcomrecError as error:
        raise DataContractError(f"raw input {text}: {error}") from error
    if not is_s3_uri(text) and not root.is_dir():
        raise DataContractError(f"raw input {root} is not a folder holding {', '.join(s.RAW_TABLES)}/")
    return root.resolve()


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(HEADERLESS_SUFFIXES):
        return "headerless"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def list_table_files(root: Path, table: str) -> list[Path]:
    """Data files of ``root/table`` (recursively, sorted; Spark/Hadoop markers and hidden files skipped)."""
    folder = root / table
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(("_", ".")) and not any(
            part.startswith((".", "_")) for part in p.relative_to(folder).parts[:-1])
    )
    unknown = [p for p in files if _suffix_kind(p) is None]
    if unknown:
        raise DataContractError(
            f"table {table}: {unknown[0]} is neither Parquet ({', '.join(PARQUET_SUFFIXES)}) nor CSV "
            f"({', '.join(CSV_SUFFIXES)})")
    if not files:
        raise DataContractError(f"table {table}: no Parquet or CSV files in {folder}")
    return files


def _open_text_head(path: Path) -> bytes:
    gz = path.name.lower().endswith(".gz")
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(1 << 20)  # the header and a bit more: enough to tell empty from not
            # A truncated gzip fails only at its end, inside a Spark job, with a Java EOFException that names
            # no file: read it through here (gzip cannot be split, so Spark decompresses it whole anyway).
            while gz and handle.read(1 << 24):
                pass
            return head
    except (OSError, EOFError, zlib.error) as error:
        raise DataContractError(f"{path}: cannot be read ({error})") from error


def csv_header(path: Path) -> tuple[list[str], bool]:
    """The header of a CSV file (UTF-8, BOM allowed) and whether any data follows it."""
    head = _open_text_head(path)
    if not head.strip():
        raise DataContractError(f"{path}: empty file (no header row)")
    first, _, rest = head.partition(b"\n")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataContractError(
            f"{path}: header row is not UTF-8 (byte {error.start}); write CSV files as UTF-8") from error
    names = [name.strip() for name in next(csv.reader(io.StringIO(text)))]
    if any(not name for name in names):
        raise DataContractError(f"{path}: header has an empty column name: {names}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataContractError(f"{path}: column {duplicated[0]!r} appears twice in the header")
    return names, bool(rest.strip())


def parquet_columns(path: Path, table: str) -> list[tuple[str, pa.DataType]]:
    """Columns of a Parquet file from its footer, type-checked against the contract."""
    if path.stat().st_size == 0:
        raise DataContractError(f"{path}: empty file")
    try:
        meta = pq.read_metadata(path)
        arrow_schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as error:
        raise DataContractError(f"{path}: not a readable Parquet file ({error})") from error
    if meta.num_rows == 0:
        raise DataContractError(f"{path}: empty file (0 rows)")
    physical = {meta.schema.column(i).name: meta.schema.column(i).physical_type
                for i in range(meta.num_columns)}
    columns: list[tuple[str, pa.DataType]] = []
    for field in arrow_schema:
        dtype = field.type
        if physical.get(field.name) == "INT96":
            dtype = pa.timestamp("us")  # legacy Spark/Hive timestamps: Spark reads these natively
        if pa.types.is_dictionary(dtype):
            dtype = dtype.value_type
        checker = _CONTRACT_TYPES.get(field.name) if table == s.EVENTS else (
            _CONTRACT_TYPES[s.USER_ID] if field.name in (s.USER_ID, s.ITEM_ID) else None)
        if checker is not None and not checker[0](dtype):
            raise DataContractError(
                f"{path}: column {field.name!r} has type {field.type}, which cannot be read as the "
                f"contract's {checker[1]}")
        if pa.types.is_nested(dtype) or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
            raise DataContractError(
                f"{path}: column {field.name!r} has type {field.type}, which cannot be read as a string")
        columns.append((field.name, dtype))
    return columns


def _source_file_column(root: Path) -> Column:
    """The data file of each row, relative to the raw root. Hadoop quotes a few characters of the path
    (space, %) in input_file_name(); "+" is literal there, so protect it before url_decode."""
    from pyspark.sql import functions as sf

    decoded = sf.url_decode(sf.regexp_replace(sf.input_file_name(), r"\+", "%2B"))
    return sf.regexp_replace(decoded, r"^.*?\Q" + str(root) + r"/\E", "")


def _read_csv_group(spark: SparkSession, files: list[Path], names: list[str], root: Path, *,
                    header: bool = True) -> DataFrame:
    from pyspark.sql import functions as sf
    from pyspark.sql.types import StringType, StructField, StructType

    struct = StructType([StructField(n, StringType()) for n in names]
                        + [StructField(MALFORMED, StringType())])
    def read(paths: list[Path]) -> DataFrame:
        return spark.read.csv(
            [local_uri(f) for f in paths], schema=struct, header=header, enforceSchema=True, mode="PERMISSIVE",
            columnNameOfCorruptRecord=MALFORMED, encoding="UTF-8", escape='"', multiLine=False,
        )

    return _with_source_file(files, root, read, lambda frame, source: frame.select(
        *[sf.col(n) for n in names], source.alias(s.SOURCE_FILE), MALFORMED))


def _read_parquet_group(spark: SparkSession, files: list[Path], columns: list[tuple[str, pa.DataType]],
                        root: Path) -> DataFrame:
    from pyspark.sql import functions as sf

    selected = []
    for name, dtype in columns:
        col = sf.col(f"`{name}`")
        if pa.types.is_timestamp(dtype) and dtype.unit == "ns":
            # Spark 3.5 cannot read TIMESTAMP(NANOS) (pandas' default); it is read as a long (see
            # NANOS_AS_LONG) holding nanoseconds since the epoch, UTC or naive wall clock (= UTC here).
            col = sf.timestamp_micros(sf.floor(col / 1000))
        selected.append(col.cast("string").alias(name))
    # The group shares one schema: infer it once (a Spark job per read otherwise), not per file.
    schema = spark.read.parquet(local_uri(files[0])).schema

    def read(paths: list[Path]) -> DataFrame:
        return spark.read.schema(schema).parquet(*[local_uri(f) for f in paths])

    return _with_source_file(files, root, read, lambda frame, source: frame.select(
        *selected, source.alias(s.SOURCE_FILE), sf.lit(None).cast("string").alias(MALFORMED)))


def _with_source_file(files: list[Path], root: Path, read: Callable[[list[Path]], DataFrame],
                      project: Callable[[DataFrame, Column], DataFrame]) -> DataFrame:
    """Read ``files`` and ``project`` them with their source_file column. Up to PER_FILE_READS files
    are read one by one with the relative path as a literal: decoding input_file_name() on every row
    was a fifth of the CPU of parsing the events; past that, one scan (a union of thousands of scans
    would be slow to plan) decodes it per row."""
    from pyspark.sql import functions as sf

    if len(files) > PER_FILE_READS:
        return project(read(files), _source_file_column(root))
    # CASE WHEN keeps the column nullable, as the decoded one is (a bare literal is NOT NULL in the schema
    # of rejected/); the test is a length check per row.
    parts = [project(read([f]), sf.when(sf.input_file_name() != "", sf.lit(str(f.relative_to(root)))))
             for f in files]
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.union(part)
    return frame


def read_table(spark: SparkSession, root: Path, table: str, required: Sequence[str]) -> RawTable:
    """Read ``root/table`` as strings. Files are grouped by identical header/schema, so differing files
    (column order, types) are each read correctly and unioned by name."""
    from pyspark.sql import functions as sf

    folder = root / table
    if not folder.is_dir():
        raise DataContractError(f"table {table}: folder {folder} does not exist")
    files = list_table_files(root, table)
    csv_groups: dict[tuple[str, ...], list[Path]] = {}
    headerless: list[Path] = []
    parquet_groups: dict[tuple[tuple[str, str], ...], list[Path]] = {}
    parquet_types: dict[tuple[tuple[str, str], ...], list[tuple[str, pa.DataType]]] = {}
    order: list[str] = []
    footer_rows: int | None = 0
    for path in files:
        kind = _suffix_kind(path)
        if kind == "headerless":
            if table != s.EVENTS:
                raise DataContractError(
                    f"{path}: a {s.HEADERLESS_CSV_SUFFIX} file holds the event log's columns; only {s.EVENTS}/ "
                    f"may have one (give {table}/ files a header row)")
            if not _open_text_head(path).strip():
                raise DataContractError(f"{path}: empty file (no rows)")
            names = list(s.EVENT_LOG_COLUMNS)
            headerless.append(path)
            footer_rows = None
        elif kind == "csv":
            names, has_rows = csv_header(path)
            if not has_rows:
                raise DataContractError(f"{path}: empty file (a header and no rows)")
            csv_groups.setdefault(tuple(names), []).append(path)
            footer_rows = None
        else:
            typed = parquet_columns(path, table)
            if footer_rows is not None:
                footer_rows += pq.read_metadata(path).num_rows
            names = [n for n, _ in typed]
            key = tuple((n, str(t)) for n, t in typed)
            parquet_groups.setdefault(key, []).append(path)
            parquet_types[key] = typed
        missing = [c for c in required if c not in names]
        if missing:
            raise DataContractError(
                f"{path}: required column {missing[0]!r} is missing (table {table} needs "
                f"{', '.join(required)}; found {', '.join(names)})")
        order += [n for n in names if n not in order]

    parts: list[DataFrame] = [_read_csv_group(spark, group, list(names), root)
                              for names, group in csv_groups.items()]
    if headerless:
        parts.append(_read_csv_group(spark, headerless, list(s.EVENT_LOG_COLUMNS), root, header=False))
    needs_nanos = any(pa.types.is_timestamp(t) and t.unit == "ns"
                      for typed in parquet_types.values() for _, t in typed)
    if needs_nanos:
        spark.conf.set(NANOS_AS_LONG, "true")  # restored by the step when it ends
    parts += [_read_parquet_group(spark, group, parquet_types[key], root)
              for key, group in parquet_groups.items()]
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.unionByName(part, allowMissingColumns=True)
    frame = frame.select(*[sf.col(f"`{c}`") for c in order], s.SOURCE_FILE, MALFORMED,
                         sf.monotonically_increasing_id().alias(ROW_ID))
    relative = tuple(str(p.relative_to(root)) for p in files)
    log.info("table %s: %d file(s), columns %s", table, len(files), ", ".join(order))
    return RawTable(name=table, frame=frame, columns=tuple(order), files=relative, rows=footer_rows)
