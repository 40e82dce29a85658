"""The Online Retail adapter on the real file (figures from SOURCE.md) and on small generated xlsx/zip/CSV
copies that carry the official file's quirks (numeric-looking codes stored as numbers, float CustomerID)."""

from __future__ import annotations

import json
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema as s
from components.data import online_retail as orx
from components.data.online_retail import (
    CATEGORY_ATTR,
    COUNTRY_ATTR,
    DESCRIPTION_ATTR,
    ImportReport,
    find_online_retail,
    head_noun,
    import_online_retail,
    is_non_product,
)
from components.errors import DataContractError

# SOURCE.md
ROWS, CANCELLATIONS, CUSTOMERS, MISSING_CUSTOMER = 541_909, 9_288, 4_372, 135_080
STOCK_CODES, QUANTITY_SUM, NON_POSITIVE_QUANTITY = 4_070, 5_176_450, 10_624


@pytest.fixture(scope="module")
def real_import(
    online_retail_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ImportReport, Path]:
    dest = tmp_path_factory.mktemp("online_retail_raw")
    return import_online_retail(online_retail_csv, dest), dest


@pytest.fixture(scope="module")
def real_events(real_import: tuple[ImportReport, Path]) -> pd.DataFrame:
    return pd.read_parquet(real_import[1] / s.EVENTS)


def test_real_file_every_row_becomes_one_event(real_import: tuple[ImportReport, Path],
                                               real_events: pd.DataFrame) -> None:
    report, _ = real_import
    assert report.rows_in == report.events_out == len(real_events) == ROWS
    assert report.canonical
    assert report.unparsed_timestamps == 0
    by_type = real_events[s.EVENT_TYPE].value_counts().to_dict()
    assert by_type == {s.PURCHASE: ROWS - CANCELLATIONS, s.RETURN: CANCELLATIONS}
    assert report.returns == CANCELLATIONS


def test_real_file_returns_are_cancellations_with_positive_quantity(real_events: pd.DataFrame) -> None:
    returns = real_events[real_events[s.EVENT_TYPE] == s.RETURN]
    assert returns[s.SESSION_ID].str.startswith("C").all()
    assert (returns[s.QUANTITY] > 0).all()
    purchases = real_events[real_events[s.EVENT_TYPE] == s.PURCHASE]
    # Quantity is kept as is for purchases: the non-cancelled non-positive rows stay for the ETL to reject.
    assert (purchases[s.QUANTITY] <= 0).sum() == NON_POSITIVE_QUANTITY - CANCELLATIONS
    # Nothing lost: purchases minus returned units give back the source's sum(Quantity).
    assert purchases[s.QUANTITY].sum() - returns[s.QUANTITY].sum() == QUANTITY_SUM


def test_real_file_users(real_import: tuple[ImportReport, Path], real_events: pd.DataFrame) -> None:
    report, dest = real_import
    assert real_events[s.USER_ID].isna().sum() == MISSING_CUSTOMER == report.missing_user_rows
    assert real_events[s.USER_ID].nunique() == CUSTOMERS
    assert not real_events[s.USER_ID].dropna().str.contains(r"\.").any()  # 17850.0 -> 17850
    assert "17850" in set(real_events[s.USER_ID].dropna())
    users = pd.read_parquet(dest / s.USERS)
    assert len(users) == report.users_out == CUSTOMERS
    assert users[s.USER_ID].is_unique
    assert set(users[s.USER_ID]) == set(real_events[s.USER_ID].dropna())
    assert users[COUNTRY_ATTR].notna().all()
    assert users.set_index(s.USER_ID).loc["17850", COUNTRY_ATTR] == "United Kingdom"


def test_real_file_catalog_holds_products_only(real_import: tuple[ImportReport, Path],
                                               real_events: pd.DataFrame) -> None:
    report, dest = real_import
    items = pd.read_parquet(dest / s.ITEMS)
    assert items[s.ITEM_ID].is_unique
    assert {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"} <= set(report.non_product_codes)
    assert not set(report.non_product_codes) & set(items[s.ITEM_ID])
    assert not is_non_product(items[s.ITEM_ID]).any()
    assert len(items) == report.items_out == STOCK_CODES - len(report.non_product_codes)
    # Every event item is either in the catalog or a known non-product code (which the ETL rejects).
    assert set(real_events[s.ITEM_ID]) == set(items[s.ITEM_ID]) | set(report.non_product_codes)
    assert report.non_product_rows == int(real_events[s.ITEM_ID].isin(report.non_product_codes).sum())
    row = items.set_index(s.ITEM_ID).loc["85123A"]
    assert row[DESCRIPTION_ATTR] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert row[CATEGORY_ATTR] == "HOLDER"
    assert row[s.PRICE] > 0
    assert (items[s.PRICE].dropna() > 0).all()
    assert 20 < items[CATEGORY_ATTR].nunique() < 500


def test_real_file_types_and_timestamps(real_import: tuple[ImportReport, Path],
                                        real_events: pd.DataFrame) -> None:
    _, dest = real_import
    schema = pq.read_schema(next((dest / s.EVENTS).glob("*.parquet")))
    assert schema.field(s.USER_ID).type == pa.string()
    assert schema.field(s.ITEM_ID).type == pa.string()
    assert schema.field(s.SESSION_ID).type == pa.string()
    assert schema.field(s.TIMESTAMP).type == pa.string()
    assert schema.field(s.QUANTITY).type == pa.int64()
    assert schema.field(s.PRICE).type == pa.float64()
    assert real_events[s.TIMESTAMP].min() == "2010-12-01T08:26:00"
    assert real_events[s.TIMESTAMP].max() == "2011-12-09T12:50:00"
    assert pd.to_datetime(real_events[s.TIMESTAMP], format="ISO8601").notna().all()
    saved = json.loads((dest / orx.REPORT_FILE).read_text())
    assert saved["events_out"] == ROWS
    assert saved["canonical"] is True


def test_refuses_to_mix_with_an_earlier_import(online_retail_csv: Path,
                                               real_import: tuple[ImportReport, Path]) -> None:
    with pytest.raises(DataContractError, match="not empty"):
        import_online_retail(online_retail_csv, real_import[1])


# ---------------------------------------------------------------------------------------------- small files
def _official_like_rows() -> pd.DataFrame:
    """A few rows typed as in the official xlsx: numeric codes are numbers, CustomerID a float."""
    when = datetime(2010, 12, 1, 8, 26)
    return pd.DataFrame({
        "InvoiceNo": [536365, 536365, 536365, "C536379", 536380, 536381],
        "StockCode": ["85123A", 71053, "POST", "85123A", "gift_0001_20", 22633],
        "Description": ["WHITE HANGING HEART T-LIGHT HOLDER", "WHITE METAL LANTERN", "POSTAGE",
                        "WHITE HANGING HEART T-LIGHT HOLDER", "Dotcomgiftshop Gift Voucher £20.00", None],
        "Quantity": [6, 6, 1, -2, 1, 0],
        "InvoiceDate": [when, when, when, datetime(2010, 12, 1, 9, 41), datetime(2010, 12, 2, 10, 0),
                        datetime(2010, 12, 2, 11, 0)],
        "UnitPrice": [2.55, 3.39, 18.0, 2.55, 16.0, 2.1],
        "CustomerID": [17850.0, 17850.0, 17850.0, 14527.0, None, 12583.0],
        "Country": ["United Kingdom"] * 5 + ["France"],
    })


def _check_small_import(dest: Path) -> pd.DataFrame:
    events = pd.read_parquet(dest / s.EVENTS)
    assert list(events[s.SESSION_ID]) == ["536365", "536365", "536365", "C536379", "536380", "536381"]
    assert list(events[s.ITEM_ID]) == ["85123A", "71053", "POST", "85123A", "gift_0001_20", "22633"]
    assert events[s.USER_ID].tolist()[:4] == ["17850", "17850", "17850", "14527"]
    assert events[s.USER_ID].isna().tolist() == [False, False, False, False, True, False]
    assert list(events[s.EVENT_TYPE]) == [s.PURCHASE] * 3 + [s.RETURN] + [s.PURCHASE] * 2
    assert list(events[s.QUANTITY]) == [6, 6, 1, 2, 1, 0]
    assert events[s.TIMESTAMP].iloc[0] == "2010-12-01T08:26:00"
    items = pd.read_parquet(dest / s.ITEMS)
    assert sorted(items[s.ITEM_ID]) == ["22633", "71053", "85123A"]
    assert items.set_index(s.ITEM_ID).loc["22633", DESCRIPTION_ATTR] is None
    users = pd.read_parquet(dest / s.USERS)
    assert sorted(users[s.USER_ID]) == ["12583", "14527", "17850"]
    return events


@pytest.fixture
def small_xlsx(tmp_path: Path) -> Path:
    path = tmp_path / "Online Retail.xlsx"
    _official_like_rows().to_excel(path, index=False, sheet_name="Online Retail", engine="openpyxl")
    return path


@pytest.fixture(params=["calamine", "openpyxl"])
def xlsx_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openpyxl":  # hide calamine: the importer must fall back to openpyxl
        monkeypatch.setitem(sys.modules, "python_calamine", None)
    return request.param


def test_xlsx_with_numeric_codes(small_xlsx: Path, tmp_path: Path, xlsx_engine: str) -> None:
    assert orx.xlsx_engine() == xlsx_engine
    report = import_online_retail(small_xlsx, tmp_path / "raw")
    assert report.source_format == "xlsx"
    assert not report.canonical
    assert (report.rows_in, report.returns, report.non_product_rows, report.missing_user_rows) == (6, 1, 2, 1)
    _check_small_import(tmp_path / "raw")


def test_official_zip_holding_the_xlsx(small_xlsx: Path, tmp_path: Path) -> None:
    archive = tmp_path / "online+retail.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(small_xlsx, "Online Retail.xlsx")
    report = import_online_retail(archive, tmp_path / "raw")
    assert report.source_format == "zip"
    _check_small_import(tmp_path / "raw")


def test_csv_with_uci_display_dates_and_a_bad_date(tmp_path: Path) -> None:
    rows = _official_like_rows()
    rows["InvoiceDate"] = ["12/1/2010 8:26", "12/1/2010 8:26", "12/1/2010 8:26", "12/1/2010 9:41",
                           "2010-12-02 10:00:00", "yesterday"]
    rows["CustomerID"] = ["17850.0", "17850.0", "17850.0", "14527.0", None, "12583.0"]
    src = tmp_path / "retail.csv.gz"
    rows.to_csv(src, index=False)
    report = import_online_retail(src, tmp_path / "raw")
    assert report.source_format == "csv"
    events = _check_small_import(tmp_path / "raw")
    assert report.unparsed_timestamps == 1
    assert events[s.TIMESTAMP].tolist()[3:] == ["2010-12-01T09:41:00", "2010-12-02T10:00:00", "yesterday"]


@pytest.mark.parametrize("member", ["retail.csv", "retail.csv.gz"])
def test_format_is_sniffed_from_the_bytes(tmp_path: Path, member: str) -> None:
    """A gzip CSV misnamed .csv, or a zip holding a CSV (plain or gzip), imports like the CSV itself."""
    gz = tmp_path / "retail.csv"
    _official_like_rows().to_csv(gz, index=False, compression="gzip")  # gzip bytes, .csv name
    assert import_online_retail(gz, tmp_path / "a").rows_in == 6
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        if member.endswith(".gz"):
            zf.write(gz, member)
        else:
            zf.writestr(member, _official_like_rows().to_csv(index=False))
    report = import_online_retail(archive, tmp_path / "b")
    assert report.source_format == "zip"
    _check_small_import(tmp_path / "b")


def test_missing_column_is_named(tmp_path: Path) -> None:
    src = tmp_path / "retail.csv"
    _official_like_rows().drop(columns=["UnitPrice"]).to_csv(src, index=False)
    with pytest.raises(DataContractError, match=r"retail\.csv.*UnitPrice"):
        import_online_retail(src, tmp_path / "raw")


def test_non_integer_quantity_is_named(tmp_path: Path) -> None:
    rows = _official_like_rows()
    rows["Quantity"] = rows["Quantity"].astype(object)
    rows.loc[2, "Quantity"] = "six"
    src = tmp_path / "retail.csv"
    rows.to_csv(src, index=False)
    with pytest.raises(DataContractError, match=r"retail\.csv: column Quantity .*'six'"):
        import_online_retail(src, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()  # nothing half-written


def test_missing_source_file(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="not found"):
        import_online_retail(tmp_path / "nope.csv", tmp_path / "raw")


@pytest.mark.parametrize(("description", "noun"), [
    ("WHITE HANGING HEART T-LIGHT HOLDER", "HOLDER"),
    ("SET OF 72 PINK HEART PAPER DOILIES", "DOILY"),
    ("BLUE POLKADOT COFFEE MUG", "MUG"),
    ("SET 7 BABUSHKA NESTING BOXES", "BOX"),
    ("GLASS JAR WITH LID", "JAR"),
    ("PINK", None),
    (None, None),
])
def test_head_noun(description: str | None, noun: str | None) -> None:
    assert head_noun(description) == noun


def test_non_product_codes() -> None:
    codes = pd.Series(["POST", "m", "BANK CHARGES", "gift_0001_40", "DCGSSGIRL", "85123A", "22633", "C2"])
    assert is_non_product(codes).tolist() == [True, True, True, True, True, False, False, True]


# ---------------------------------------------------------------------------------------------- finding
def test_find_online_retail_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orx, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(orx.ENV_VAR, raising=False)
    deep = tmp_path / "work" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_online_retail() is None

    cached = tmp_path / "cache" / "ecomrec" / "online-retail" / "online+retail.zip"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"zip")
    assert find_online_retail() == cached

    beside_parent = tmp_path / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
    beside_parent.parent.mkdir(parents=True)
    beside_parent.write_bytes(b"csv")  # ../shared relative to tmp/work (a parent of the cwd)
    assert find_online_retail() == beside_parent

    beside_repo = tmp_path / "repo-parent"
    monkeypatch.setattr(orx, "REPO_ROOT", beside_repo / "repo")
    repo_copy = beside_repo / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
    repo_copy.parent.mkdir(parents=True)
    repo_copy.write_bytes(b"csv")
    assert find_online_retail() == repo_copy  # the repo root wins over the cwd

    from_env = tmp_path / "env.csv"
    from_env.write_bytes(b"csv")
    monkeypatch.setenv(orx.ENV_VAR, str(from_env))
    assert find_online_retail() == from_env

    explicit = tmp_path / "explicit.xlsx"
    explicit.write_bytes(b"xlsx")
    assert find_online_retail(explicit) == explicit

    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        find_online_retail(tmp_path / "missing.csv")
    monkeypatch.setenv(orx.ENV_VAR, str(tmp_path / "typo.csv"))
    with pytest.raises(FileNotFoundError, match=orx.ENV_VAR):
        find_online_retail()


def test_catalog_and_customer_attributes_are_as_first_seen() -> None:
    # A later price, description or country (say, in the evaluation's test window) must not reach the
    # attributes the ranker reads as features.
    source = pd.DataFrame({
        "InvoiceNo": ["1", "1", "2", "3", "3"],
        "StockCode": ["85123A", "85123A", "85123A", "85123A", "22633"],
        "Description": ["RED MUG", "RED MUG", "BLUE MUG", "BLUE MUG", None],
        "Quantity": [1, 1, 1, 1, 1],
        "InvoiceDate": ["2011-01-05 09:00", "2011-01-05 10:00", "2011-03-01 09:00", "2011-12-01 09:00",
                        "2011-12-01 09:00"],
        "UnitPrice": [1.0, 2.0, 5.0, 9.0, 0.0],
        "CustomerID": ["u1", "u1", "u1", "u1", "u2"],
        "Country": ["France", "France", "Germany", "Germany", "Spain"],
    })
    items = orx.to_items(source, min_category_items=1).set_index(s.ITEM_ID)
    assert items.loc["85123A", "description"] == "RED MUG" and items.loc["85123A", s.PRICE] == 1.5
    assert pd.isna(items.loc["22633", s.PRICE])  # never sold at a positive price: unknown, not 0
    users = orx.to_users(source).set_index(s.USER_ID)
    assert users.loc["u1", "country"] == "France" and users.loc["u2", "country"] == "Spain"
