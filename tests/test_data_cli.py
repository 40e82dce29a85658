"""`ecomrec data ...` through the real typer app (in process, CliRunner)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from components import schema as s
from pipelines.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [
    ["data"], ["data", "import"], ["data", "import", "online-retail"], ["data", "fetch", "online-retail"],
    ["data", "synth"],
])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_synth_then_refuse_then_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    result = runner.invoke(app, ["data", "synth", str(dest), "--events", "3000", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "3,000" in result.output
    assert len(pd.read_parquet(dest / s.EVENTS)) == 3000

    result = runner.invoke(app, ["data", "synth", str(dest), "--events", "100"])
    assert result.exit_code == 1
    assert "not empty" in result.output

    result = runner.invoke(app, ["data", "synth", str(dest), "--events", "100", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(dest / s.EVENTS)) == 100


def test_import_online_retail(tmp_path: Path) -> None:
    src = tmp_path / "retail.csv"
    pd.DataFrame({
        "InvoiceNo": ["536365", "C536379"], "StockCode": ["85123A", "POST"],
        "Description": ["WHITE HANGING HEART T-LIGHT HOLDER", "POSTAGE"], "Quantity": [6, -1],
        "InvoiceDate": ["2010-12-01 08:26:00", "2010-12-01 09:41:00"], "UnitPrice": [2.55, 18.0],
        "CustomerID": ["17850.0", ""], "Country": ["United Kingdom", "France"],
    }).to_csv(src, index=False)
    result = runner.invoke(app, ["data", "import", "online-retail", str(src), str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    assert "returns" in result.output
    items = pd.read_parquet(tmp_path / "raw" / s.ITEMS)
    assert items[s.ITEM_ID].tolist() == ["85123A"]


def test_import_missing_file_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "import", "online-retail", str(tmp_path / "nope.xlsx"),
                                 str(tmp_path / "raw")])
    assert result.exit_code == 1
    assert "nope.xlsx" in result.output


def test_pipeline_reimports_when_another_source_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.data import online_retail
    from pipelines.cli.pipeline import _raw_input

    imported: list[Path] = []

    def fake_import(source: Path, destination: Path, *, overwrite: bool = False) -> None:
        imported.append(source)
        (destination / s.EVENTS).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(online_retail, "import_online_retail", fake_import)
    first, second = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    first.write_bytes(b"a")
    second.write_bytes(b"b")
    output = tmp_path / "run"
    for source in (first, first, None, second):
        assert _raw_input(None, "online-retail", source, output) == output / "raw"
    assert imported == [first.resolve(), second.resolve()]  # the same source, or none named: reused
