"""UCI Online Retail -> the raw contract (DATA_CONTRACT.md): events/, items/, users/ as Parquet.

Nothing is dropped or repaired here: every source row becomes one event, and rows the pipeline cannot
use (no customer, non-positive quantity, fee/adjustment codes, bad dates) are left for the ETL step, which
rejects them with a reason. Mapping:

* InvoiceNo ``C...`` (a cancellation) -> ``return`` with ``quantity = abs(Quantity)``; any other row ->
  ``purchase`` with Quantity as is. ``session_id`` = InvoiceNo, ``price`` = UnitPrice.
* CustomerID ``17850.0`` -> user_id ``"17850"``; missing -> null.
* InvoiceDate -> naive ISO-8601 string (UK local time in the source; the contract reads naive as UTC).
* items/: real products only. Fee and adjustment codes (POST, DOT, M, BANK CHARGES, gift_0001_*, DCGS* ...,
  see SOURCE.md) are not products, so a strict catalog makes the ETL reject their events with a reason.
  Columns: item_id, description (most frequent), category (head noun of the description, see
  :func:`head_noun`), price (median positive unit price).
* users/: user_id, country (most frequent).

Accepts the CSV (``.csv`` / ``.csv.gz``, as in ../shared/data/online-retail), the official
``Online Retail.xlsx``, and the official ``online+retail.zip`` holding it; the format is sniffed from the
bytes, not the name.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components import schema as s
from components.data.fetch import OFFICIAL_SHA256, OFFICIAL_URL, default_cache_dir, fetch_online_retail
from components.errors import DataContractError

logger = logging.getLogger(__name__)

# Source columns, as the UCI file names them.
INVOICE = "InvoiceNo"
STOCK_CODE = "StockCode"
DESCRIPTION = "Description"
QUANTITY_COL = "Quantity"
INVOICE_DATE = "InvoiceDate"
UNIT_PRICE = "UnitPrice"
CUSTOMER = "CustomerID"
COUNTRY_COL = "Country"
SOURCE_COLUMNS = (
    INVOICE, STOCK_CODE, DESCRIPTION, QUANTITY_COL, INVOICE_DATE, UNIT_PRICE, CUSTOMER, COUNTRY_COL,
)

# Attribute columns of items/ and users/ (string -> categorical feature, numeric -> numeric feature).
DESCRIPTION_ATTR = s.ITEM_DESCRIPTION
CATEGORY_ATTR = s.ITEM_CATEGORY
COUNTRY_ATTR = s.USER_COUNTRY

# The published file (SOURCE.md); a match is reported as ``canonical`` in the ImportReport.
CANONICAL_ROWS = 541_909
CANONICAL_QUANTITY_SUM = 5_176_450

# Fees and adjustments, not products (SOURCE.md). Compared upper-cased, so ``m`` is ``M``.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B"}
)
NON_PRODUCT_PREFIXES = ("GIFT_0001_", "DCGS")

ENV_VAR = "ECOMREC_ONLINE_RETAIL"
SHARED_COPY = Path("shared/data/online-retail/online_retail.csv.gz")  # relative to the repo's parent
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_NAMES = ("online_retail.csv.gz", "online+retail.zip", "Online Retail.xlsx")

GZIP_MAGIC = b"\x1f\x8b"
TEXT = "string[pyarrow]"  # Arrow-backed strings: vectorised upper/startswith, ~5x python-backed ones
OTHER_CATEGORY = "OTHER"
PART_FILE = "part-00000.parquet"
REPORT_FILE = "_import_report.json"  # leading underscore: Spark/Hadoop readers skip it

SourceFormat = Literal["csv", "xlsx", "zip"]


@dataclass(frozen=True)
class ImportReport:
    """What one import did, per table; ``as_dict`` is what ``_import_report.json`` holds."""

    source: str
    source_format: str
    rows_in: int
    events_out: int
    items_out: int
    users_out: int
    returns: int
    purchases: int
    missing_user_rows: int
    non_product_rows: int
    non_product_codes: tuple[str, ...]
    unparsed_timestamps: int
    canonical: bool  # rows and sum(Quantity) equal the published file's
    seconds: float
    tables: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["non_product_codes"] = list(self.non_product_codes)
        return out

    def summary(self) -> list[tuple[str, str]]:
        """(label, value) rows for a CLI table or a log line."""
        return [
            ("source", f"{self.source} ({self.source_format})"),
            ("rows in", f"{self.rows_in:,}"),
            ("events out", f"{self.events_out:,}"),
            ("  purchases", f"{self.purchases:,}"),
            ("  returns (cancellations)", f"{self.returns:,}"),
            ("  without user_id", f"{self.missing_user_rows:,}"),
            ("  on non-product codes", f"{self.non_product_rows:,} ({len(self.non_product_codes)} codes)"),
            ("  timestamp not parsed", f"{self.unparsed_timestamps:,}"),
            ("items out", f"{self.items_out:,}"),
            ("users out", f"{self.users_out:,}"),
            ("canonical file", "yes" if self.canonical else "no"),
            ("seconds", f"{self.seconds:.2f}"),
        ]


# ---------------------------------------------------------------------------------------------- reading
def sniff_format(src: Path) -> SourceFormat:
    """xlsx and zip are both zip archives: an xlsx has ``[Content_Types].xml`` at its root."""
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as archive:
            return "xlsx" if "[Content_Types].xml" in archive.namelist() else "zip"
    return "csv"


def read_online_retail(src: Path) -> tuple[pd.DataFrame, SourceFormat]:
    """The source rows with the 8 UCI columns, codes as strings (null where missing), Quantity as int64,
    UnitPrice as float64 and InvoiceDate as written (string for CSV, datetime for xlsx)."""
    src = Path(src)
    if not src.is_file():
        raise DataContractError(f"Online Retail source not found: {src}")
    fmt = sniff_format(src)
    if fmt == "csv":
        frame = _read_csv(src, src.name)
    elif fmt == "xlsx":
        frame = _read_xlsx(src, src.name)
    else:
        frame = _read_zip(src)
    _require_columns(frame, src)
    return _normalise(frame[list(SOURCE_COLUMNS)], src), fmt


def _read_csv(handle: Path | io.BytesIO, name: str) -> pd.DataFrame:
    text_cols = {c: TEXT for c in (INVOICE, STOCK_CODE, DESCRIPTION, CUSTOMER, COUNTRY_COL, INVOICE_DATE)}
    try:
        # keep_default_na=False: a code or country spelled "NA" must stay a string; only empty is missing.
        return pd.read_csv(handle, dtype=text_cols, keep_default_na=False, na_values=[""],
                           compression="gzip" if _is_gzip(handle) else None)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, EOFError, gzip.BadGzipFile) as exc:
        raise DataContractError(f"{name}: cannot read as CSV: {exc}") from exc


def xlsx_engine() -> Literal["calamine", "openpyxl"]:
    """calamine reads the 23 MB official workbook in seconds, openpyxl in minutes: use it when installed."""
    try:
        import python_calamine  # noqa: F401
    except ImportError:
        return "openpyxl"
    return "calamine"


def _is_gzip(handle: Path | io.BytesIO) -> bool:
    if isinstance(handle, io.BytesIO):
        return handle.getbuffer()[:2].tobytes() == GZIP_MAGIC
    with handle.open("rb") as raw:
        return raw.read(2) == GZIP_MAGIC


def _read_xlsx(handle: Path | io.BytesIO, name: str) -> pd.DataFrame:
    try:
        return pd.read_excel(handle, engine=xlsx_engine(), sheet_name=0)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise DataContractError(f"{name}: cannot read as xlsx: {exc}") from exc


def _read_zip(src: Path) -> pd.DataFrame:
    with zipfile.ZipFile(src) as archive:
        members = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX")]
        for suffixes, reader in (((".xlsx",), _read_xlsx), ((".csv", ".csv.gz"), _read_csv)):
            found = [n for n in members if n.lower().endswith(suffixes)]
            if len(found) > 1:
                raise DataContractError(f"{src}: several candidate members {found}; unzip the one to import")
            if found:
                return reader(io.BytesIO(archive.read(found[0])), f"{src}!{found[0]}")
    raise DataContractError(f"{src}: no .xlsx or .csv member in the zip (members: {members})")


def _require_columns(frame: pd.DataFrame, src: Path) -> None:
    missing = [c for c in SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataContractError(
            f"{src}: missing column(s) {missing}; expected the UCI Online Retail columns "
            f"{list(SOURCE_COLUMNS)}, found {list(frame.columns)}"
        )


def _cell_to_code(value: object) -> object:
    # xlsx stores numeric-looking codes as numbers (536365, 17850.0): write them back as integers.
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return str(value)
    return str(value).strip() if isinstance(value, str) else str(value)


def _as_code(series: pd.Series, *, strip_float_suffix: bool) -> pd.Series:
    is_text = isinstance(series.dtype, pd.StringDtype)
    out = series.astype(TEXT) if is_text else series.map(_cell_to_code).astype(TEXT)
    if strip_float_suffix:  # CSV copies write CustomerID as 17850.0
        out = out.str.replace(r"\.0+$", "", regex=True)
    return out.where(out.str.len() > 0)


def _as_number(series: pd.Series, column: str, src: Path, *, integer: bool) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if integer:
        bad |= values.notna() & (values % 1 != 0)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataContractError(
            f"{src}: column {column} has {int(bad.sum()):,} value(s) that are not "
            f"{'integers' if integer else 'numbers'}, e.g. {series.iloc[first]!r} at data row {first + 1}"
        )
    if integer:
        return values.astype("Int64") if values.isna().any() else values.astype("int64")
    return values.astype("float64")


def _normalise(frame: pd.DataFrame, src: Path) -> pd.DataFrame:
    out = pd.DataFrame({
        INVOICE: _as_code(frame[INVOICE], strip_float_suffix=False),
        STOCK_CODE: _as_code(frame[STOCK_CODE], strip_float_suffix=False),
        DESCRIPTION: frame[DESCRIPTION].astype(TEXT),
        QUANTITY_COL: _as_number(frame[QUANTITY_COL], QUANTITY_COL, src, integer=True),
        INVOICE_DATE: frame[INVOICE_DATE],
        UNIT_PRICE: _as_number(frame[UNIT_PRICE], UNIT_PRICE, src, integer=False),
        CUSTOMER: _as_code(frame[CUSTOMER], strip_float_suffix=True),
        COUNTRY_COL: frame[COUNTRY_COL].astype(TEXT),
    })
    return out


# ---------------------------------------------------------------------------------------------- mapping
def is_non_product(codes: pd.Series) -> pd.Series:
    """True where a StockCode is a fee or adjustment (SOURCE.md), not a product."""
    upper = codes.astype(TEXT).str.upper().str.strip()
    flag = upper.isin(NON_PRODUCT_CODES)
    for prefix in NON_PRODUCT_PREFIXES:
        flag |= upper.str.startswith(prefix)
    return flag.fillna(False).astype(bool)


def iso_timestamps(values: pd.Series) -> tuple[pd.Series, int]:
    """Naive ISO-8601 strings (``2010-12-01T08:26:00``). Values that do not parse are kept as written so
    the ETL rejects them as an unparsable timestamp; returns the strings and how many did not parse."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        text = values.astype(TEXT)
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        retry = parsed.isna() & text.notna()
        if retry.any():  # the UCI xlsx display format, as some CSV exports write it: 12/1/2010 8:26
            parsed = parsed.where(~retry, pd.to_datetime(text.where(retry), format="%m/%d/%Y %H:%M",
                                                          errors="coerce"))
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    ok = parsed.notna().to_numpy()
    seconds = pa.array(parsed.to_numpy().astype("datetime64[s]"), mask=~ok)
    iso = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S")  # Arrow: ~10x numpy's datetime_as_string
    failed = ~ok & values.notna().to_numpy()
    if failed.any():
        as_written = pa.array(values.astype(object).where(values.notna(), None).to_numpy(), pa.string())
        iso = pc.if_else(pa.array(failed), as_written, iso)
    return pd.Series(pd.arrays.ArrowStringArray(iso), index=values.index), int(failed.sum())


def to_events(source: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One event per source row, in source order; returns the events and the unparsed-timestamp count."""
    returns = source[INVOICE].str.upper().str.startswith("C").fillna(False).to_numpy(dtype=bool)
    quantity = source[QUANTITY_COL]
    timestamps, unparsed = iso_timestamps(source[INVOICE_DATE])
    events = pd.DataFrame({
        s.USER_ID: source[CUSTOMER],
        s.ITEM_ID: source[STOCK_CODE],
        s.EVENT_TYPE: pd.Series(np.where(returns, s.RETURN, s.PURCHASE), index=source.index, dtype="string"),
        s.TIMESTAMP: timestamps,
        s.QUANTITY: quantity.where(~returns, quantity.abs()),
        s.PRICE: source[UNIT_PRICE],
        s.SESSION_ID: source[INVOICE],
    })
    return events, unparsed


def _most_frequent(frame: pd.DataFrame, key: str, value: str) -> pd.Series:
    """Per key, its most frequent non-null value; ties go to the alphabetically first (deterministic)."""
    counts = frame[[key, value]].dropna().value_counts().rename("n").reset_index()
    counts = counts.sort_values([key, "n", value], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates(key).set_index(key)[value]


# Words that qualify rather than name the product: colours, sizes, patterns, pack words, seasons.
_QUALIFIER_WORDS = (
    "PINK RED BLUE GREEN WHITE BLACK CREAM IVORY GOLD SILVER PURPLE ORANGE YELLOW BROWN GREY GRAY TURQUOISE "
    "LILAC NAVY AQUA COPPER CHROME PASTEL CLEAR NATURAL MULTICOLOUR COLOURED SMALL LARGE MEDIUM MINI JUMBO "
    "BIG GIANT TALL DESIGN DESIGNS RETROSPOT POLKADOT SPOTTY SPOT SPOTS STRIPE STRIPES PAISLEY VINTAGE "
    "ASSORTED COLOUR COLOURS STYLE SET OF THE AND NO CHRISTMAS XMAS CM SIZE"
)
_QUALIFIERS = frozenset(_QUALIFIER_WORDS.split())
_WORD = re.compile(r"[A-Z]+(?:-[A-Z]+)*")
_TRAILING_PHRASE = re.compile(r"\b(?:WITH|IN|FOR)\b")


def _singular(word: str) -> str:
    if len(word) <= 3:
        return word
    if word.endswith("IES"):
        return word[:-3] + "Y"
    if word.endswith(("XES", "CHES", "SHES", "SSES")):
        return word[:-2]
    if word.endswith("S") and not word.endswith("SS"):
        return word[:-1]
    return word


def head_noun(description: str | None) -> str | None:
    """The product's head noun: the last word of the description before any WITH/IN/FOR phrase, skipping
    colours, sizes, pattern and pack words, numbers and single letters, singularised.
    ``WHITE HANGING HEART T-LIGHT HOLDER`` -> ``HOLDER``; ``SET OF 72 PINK HEART PAPER DOILIES`` -> ``DOILY``;
    ``BLUE POLKADOT COFFEE MUG`` -> ``MUG``. Cheap and deterministic; about 3/4 of products land in a
    head noun shared by at least 5 products."""
    if description is None or description is pd.NA or not isinstance(description, str):
        return None
    text = description.upper()
    text = _TRAILING_PHRASE.split(text)[0] or text
    words = [w for w in _WORD.findall(text) if len(w) > 1 and w not in _QUALIFIERS]
    return _singular(words[-1]) if words else None


def categories(descriptions: pd.Series, *, min_items: int = 5) -> pd.Series:
    """Head noun per item; nouns shared by fewer than ``min_items`` items (and no noun) become OTHER, so
    the category is a usable categorical feature rather than hundreds of singletons."""
    heads = pd.Series([head_noun(d) for d in descriptions.astype(object)], index=descriptions.index,
                      dtype=object)
    counts = heads.value_counts()
    keep = set(counts[counts >= min_items].index)
    return pd.Series([h if h in keep else OTHER_CATEGORY for h in heads], index=heads.index, dtype="string")


def _days(source: pd.DataFrame, timestamps: pd.Series | None) -> pd.Series:
    """Each row's ISO day (NaN where the timestamp did not parse)."""
    iso = iso_timestamps(source[INVOICE_DATE])[0] if timestamps is None else timestamps
    return iso.str.slice(0, 10).where(iso.str.match(r"\d{4}-\d{2}-\d{2}T"))


def _first_day(frame: pd.DataFrame, key: str, days: pd.Series) -> pd.DataFrame:
    """The rows of each key's first day. A catalog or customer attribute taken from the whole log would
    carry later events (the evaluation's test window) into features; as first listed, it carries none."""
    day = days.loc[frame.index]
    return frame[day == day.groupby(frame[key]).transform("min")]


def to_items(
    source: pd.DataFrame, *, min_category_items: int = 5, non_product: pd.Series | None = None,
    timestamps: pd.Series | None = None,
) -> pd.DataFrame:
    """The product catalog: every StockCode that is not a fee/adjustment, sorted by item_id; description
    and price as on the item's first day in the log (its most frequent description, its median positive
    unit price)."""
    if non_product is None:
        non_product = is_non_product(source[STOCK_CODE])
    days = _days(source, timestamps)
    products = source.loc[source[STOCK_CODE].notna() & ~non_product,
                          [STOCK_CODE, DESCRIPTION, UNIT_PRICE]]
    ids = pd.Index(np.sort(products[STOCK_CODE].unique().astype(object)), name=STOCK_CODE)
    described = products[products[DESCRIPTION].notna()]
    description = _most_frequent(_first_day(described, STOCK_CODE, days), STOCK_CODE, DESCRIPTION).reindex(ids)
    positive = _first_day(products[products[UNIT_PRICE] > 0], STOCK_CODE, days)
    price = positive.groupby(STOCK_CODE)[UNIT_PRICE].median().reindex(ids)
    items = pd.DataFrame({
        s.ITEM_ID: pd.Series(ids, dtype="string"),
        DESCRIPTION_ATTR: description.to_numpy(),
        CATEGORY_ATTR: categories(description, min_items=min_category_items).to_numpy(),
        s.PRICE: price.to_numpy(dtype="float64"),
    })
    items[DESCRIPTION_ATTR] = items[DESCRIPTION_ATTR].astype("string")
    return items


def to_users(source: pd.DataFrame, *, timestamps: pd.Series | None = None) -> pd.DataFrame:
    """One row per CustomerID with its most frequent country on its first day, sorted by user_id."""
    known = source.loc[source[CUSTOMER].notna(), [CUSTOMER, COUNTRY_COL]]
    ids = pd.Index(np.sort(known[CUSTOMER].unique().astype(object)), name=CUSTOMER)
    first = _first_day(known, CUSTOMER, _days(source, timestamps))
    country = _most_frequent(first, CUSTOMER, COUNTRY_COL).reindex(ids)
    return pd.DataFrame({
        s.USER_ID: pd.Series(ids, dtype="string"),
        COUNTRY_ATTR: pd.Series(country.to_numpy(), dtype="string"),
    })


# ---------------------------------------------------------------------------------------------- writing
EVENTS_SCHEMA = pa.schema([
    (s.USER_ID, pa.string()), (s.ITEM_ID, pa.string()), (s.EVENT_TYPE, pa.string()),
    (s.TIMESTAMP, pa.string()), (s.QUANTITY, pa.int64()), (s.PRICE, pa.float64()),
    (s.SESSION_ID, pa.string()),
])
ITEMS_SCHEMA = pa.schema([
    (s.ITEM_ID, pa.string()), (DESCRIPTION_ATTR, pa.string()), (CATEGORY_ATTR, pa.string()),
    (s.PRICE, pa.float64()),
])
USERS_SCHEMA = pa.schema([(s.USER_ID, pa.string()), (COUNTRY_ATTR, pa.string())])


def prepare_table_dirs(dest: Path, tables: Iterable[str], *, overwrite: bool) -> None:
    """Refuse to mix new parts with an earlier run's, unless ``overwrite`` (then the table dirs go)."""
    for table in tables:
        folder = dest / table
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise DataContractError(
                    f"{folder} is not empty; pass overwrite=True (--overwrite) to replace it"
                )
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)


def _write(frame: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="snappy")


def import_online_retail(
    src: Path, dest: Path, *, overwrite: bool = False, min_category_items: int = 5
) -> ImportReport:
    """Write the raw contract for UCI Online Retail ``src`` (CSV, CSV.gz, xlsx or the official zip) to
    ``dest/events/``, ``dest/items/``, ``dest/users/`` (one Parquet file each) plus
    ``dest/_import_report.json``; return and log the :class:`ImportReport`."""
    started = time.perf_counter()
    src, dest = Path(src), Path(dest)
    source, fmt = read_online_retail(src)
    events, unparsed = to_events(source)
    non_product = is_non_product(source[STOCK_CODE])
    items = to_items(source, min_category_items=min_category_items, non_product=non_product,
                     timestamps=events[s.TIMESTAMP])
    users = to_users(source, timestamps=events[s.TIMESTAMP])

    prepare_table_dirs(dest, s.RAW_TABLES, overwrite=overwrite)
    paths = {name: dest / name / PART_FILE for name in s.RAW_TABLES}
    _write(events, EVENTS_SCHEMA, paths[s.EVENTS])
    _write(items, ITEMS_SCHEMA, paths[s.ITEMS])
    _write(users, USERS_SCHEMA, paths[s.USERS])

    is_return = (events[s.EVENT_TYPE] == s.RETURN).to_numpy()
    report = ImportReport(
        source=str(src),
        source_format=fmt,
        rows_in=len(source),
        events_out=len(events),
        items_out=len(items),
        users_out=len(users),
        returns=int(is_return.sum()),
        purchases=int((~is_return).sum()),
        missing_user_rows=int(events[s.USER_ID].isna().sum()),
        non_product_rows=int(non_product.sum()),
        non_product_codes=tuple(sorted(source.loc[non_product, STOCK_CODE].unique())),
        unparsed_timestamps=unparsed,
        canonical=len(source) == CANONICAL_ROWS and int(source[QUANTITY_COL].sum()) == CANONICAL_QUANTITY_SUM,
        seconds=round(time.perf_counter() - started, 3),
        tables={name: str(path) for name, path in paths.items()},
    )
    (dest / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    logger.info("online retail import: %s", ", ".join(f"{k}={v}" for k, v in report.summary()))
    return report


# ---------------------------------------------------------------------------------------------- finding
def find_online_retail(explicit: Path | None = None) -> Path | None:
    """The local copy to use, first found of: ``explicit``; ``$ECOMREC_ONLINE_RETAIL``;
    ``../shared/data/online-retail/online_retail.csv.gz`` next to the repo root, then next to the cwd and
    each of its parents; the fetch cache (``~/.cache/ecomrec/online-retail/``). An explicit path or env
    value that does not exist is an error (a typo must not silently pick another file); None if nothing
    is found."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"Online Retail file not found: {explicit}")
        return Path(explicit)
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        if not Path(from_env).is_file():
            raise FileNotFoundError(f"${ENV_VAR} points to a missing file: {from_env}")
        return Path(from_env)
    cwd = Path.cwd().resolve()
    for base in (REPO_ROOT, cwd, *cwd.parents):
        candidate = base.parent / SHARED_COPY
        if candidate.is_file():
            return candidate
    cache = default_cache_dir()
    for name in CACHE_NAMES:
        if (cache / name).is_file():
            return cache / name
    return None


def ensure_online_retail(
    explicit: Path | None = None, *, url: str = OFFICIAL_URL, sha256: str = OFFICIAL_SHA256,
    progress: bool = True,
) -> Path:
    """A local copy (:func:`find_online_retail`), or else the official zip downloaded into the fetch cache
    and checked against its published SHA-256 (needs internet; the next call finds it in the cache)."""
    found = find_online_retail(explicit)
    if found is not None:
        logger.info("using the local Online Retail copy %s", found)
        return found
    logger.info("no local Online Retail copy; downloading %s to %s", url, default_cache_dir())
    return fetch_online_retail(default_cache_dir(), url=url, sha256=sha256, progress=progress)
