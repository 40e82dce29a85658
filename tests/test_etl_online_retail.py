"""ETL on the real Online Retail file (slow: marked `slow`).

The contract files are made here by a small stand-in for the data-in importer (components/data/ owns the
real one), so the ETL can be timed and checked against SOURCE.md's facts without waiting for it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from components import schema as s
from components.config import EtlConfig


def online_retail_to_contract(csv_gz: Path, root: Path) -> Path:
    """Online Retail -> raw contract as Parquet: C-invoices are returns (positive units), the invoice is
    the session, CustomerID "17850.0" -> "17850". Every row is kept (the ETL decides what to reject).
    Timestamps are written as pandas datetimes, i.e. Parquet TIMESTAMP(NANOS), which Spark 3.5 cannot read
    natively: the ETL must handle it."""
    raw = pd.read_csv(csv_gz, dtype=str, keep_default_na=False)
    is_return = raw["InvoiceNo"].str.startswith("C")
    quantity = pd.to_numeric(raw["Quantity"])
    customer = raw["CustomerID"].str.replace(r"\.0$", "", regex=True).replace("", None)
    events = pd.DataFrame({
        s.USER_ID: customer,
        s.ITEM_ID: raw["StockCode"],
        s.EVENT_TYPE: is_return.map({True: s.RETURN, False: s.PURCHASE}),
        s.TIMESTAMP: pd.to_datetime(raw["InvoiceDate"], format="%Y-%m-%d %H:%M:%S"),
        s.QUANTITY: quantity.where(~is_return, quantity.abs()),
        s.PRICE: pd.to_numeric(raw["UnitPrice"]),
        s.SESSION_ID: raw["InvoiceNo"],
    })
    items = (raw.assign(price=pd.to_numeric(raw["UnitPrice"])).query("price > 0")
             .groupby("StockCode", sort=True)
             .agg(description=("Description", "first"), price=("price", "median")).reset_index()
             .rename(columns={"StockCode": s.ITEM_ID}))
    listed = set(items[s.ITEM_ID])
    unlisted = sorted(set(raw["StockCode"]) - listed)  # items only ever sold at price 0: still products
    items = pd.concat([items, pd.DataFrame({s.ITEM_ID: unlisted})], ignore_index=True)
    users = (raw.assign(user_id=customer).dropna(subset=["user_id"]).groupby("user_id", sort=True)
             .agg(country=("Country", "first")).reset_index())
    for name, frame in ((s.EVENTS, events), (s.ITEMS, items), (s.USERS, users)):
        (root / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / name / "part-0.parquet", index=False)
    return root


@pytest.mark.slow
def test_online_retail_etl(spark: object, online_retail_csv: Path, tmp_path: Path) -> None:
    """The whole step on 541,909 real rows: counts match SOURCE.md, windows match EVALUATION.md."""
    from components.etl.step import run_etl

    raw = online_retail_to_contract(online_retail_csv, tmp_path / "raw")
    started = time.perf_counter()
    result = run_etl(spark, raw, tmp_path / "etl", EtlConfig())  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    report = json.loads((tmp_path / "etl" / s.VALIDATION_REPORT_FILE).read_text())
    events = report[s.EVENTS]
    assert events["input"] == 541_909
    assert events["accepted"] + events["rejected_total"] == 541_909
    assert events["rejected"]["missing_user_id"] == 135_080
    assert result.windows.as_json()["test_start"] == "2011-11-11T00:00:00Z"
    assert result.windows.as_json()["label_start"] == "2011-10-14T00:00:00Z"
    print(f"online retail ETL: {seconds:.1f} s, stages {result.seconds}")
