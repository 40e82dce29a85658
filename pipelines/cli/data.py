"""`ecomrec data import | fetch | synth`: data into the raw contract (DATA_CONTRACT.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from components.errors import EcomrecError

app = typer.Typer(help="Bring data into the raw contract: import, fetch, synthesise.", no_args_is_help=True)
import_app = typer.Typer(help="Convert a public dataset into the raw contract.", no_args_is_help=True)
fetch_app = typer.Typer(help="Download a public dataset, verified by checksum.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(fetch_app, name="fetch")
console = Console()

Dest = Annotated[Path, typer.Argument(help="raw data folder to write (events/, items/, users/)")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace events/, items/, users/ if present")]


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, value in rows:
        table.add_row(label, value)
    return table


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


@import_app.command("online-retail")
def import_online_retail_cmd(
    src: Annotated[Path, typer.Argument(
        help="the UCI file: online_retail.csv(.gz), Online Retail.xlsx or online+retail.zip")],
    dest: Dest,
    overwrite: Overwrite = False,
    min_category_items: Annotated[int, typer.Option(
        min=1, help="head nouns shared by fewer items become the category OTHER")] = 5,
) -> None:
    """UCI Online Retail -> the raw contract: one event per source row, products-only catalog, users."""
    from components.data.online_retail import import_online_retail

    try:
        report = import_online_retail(src, dest, overwrite=overwrite, min_category_items=min_category_items)
    except (EcomrecError, OSError) as exc:
        raise _fail(exc) from exc
    console.print(_table(f"Online Retail -> {dest}", report.summary()))


@fetch_app.command("online-retail")
def fetch_online_retail_cmd(
    dest: Annotated[Path | None, typer.Argument(
        help="folder for online+retail.zip (default: ~/.cache/ecomrec/online-retail, where the pipeline "
             "looks)", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="download again even if a verified copy is there")] = False,
) -> None:
    """Download the official UCI zip and verify its SHA-256 (a mismatch deletes it and fails)."""
    from components.data.fetch import OFFICIAL_SHA256, OFFICIAL_URL, default_cache_dir, fetch_online_retail

    try:
        path = fetch_online_retail(dest if dest is not None else default_cache_dir(), force=force)
    except (EcomrecError, OSError) as exc:
        raise _fail(exc) from exc
    console.print(_table("Online Retail download", [
        ("url", OFFICIAL_URL), ("file", str(path)), ("bytes", f"{path.stat().st_size:,}"),
        ("sha256", f"{OFFICIAL_SHA256} (verified)"),
        ("next", f"ecomrec data import online-retail '{path}' DEST"),
    ]))


@app.command("synth")
def synth_cmd(
    dest: Dest,
    events: Annotated[int, typer.Option("--events", min=1, help="number of events to write (exactly)")],
    seed: Annotated[int, typer.Option("--seed", help="random seed: same seed and options, same bytes")] = 0,
    users: Annotated[int | None, typer.Option(
        "--users", min=1, help="users (default: events/25)", show_default=False)] = None,
    items: Annotated[int | None, typer.Option(
        "--items", min=1, help="items (default: 5*sqrt(events))", show_default=False)] = None,
    days: Annotated[int, typer.Option("--days", min=7, help="length of the period in days")] = 365,
    start: Annotated[str, typer.Option("--start", help="first day of the period (UTC)")] = "2024-01-01",
    events_per_part: Annotated[int | None, typer.Option(
        "--events-per-part", min=1, show_default=False,
        help="rows per events/ part file (default: events/8, within 5k..1M)")] = None,
    noise: Annotated[float, typer.Option(
        "--noise", min=0.0, max=1.0,
        help="share of event rows given a data-quality defect (for ETL tests)")] = 0.0,
    overwrite: Overwrite = False,
) -> None:
    """A realistic synthetic shop: funnel, popularity skew, seasonality, repeat buyers, cold users."""
    from components.data.synth import SynthParams, generate_synthetic

    try:
        params = SynthParams(users=users, items=items, days=days, start=start,
                             events_per_part=events_per_part, quality_noise=noise)
        report = generate_synthetic(dest, events=events, seed=seed, params=params, overwrite=overwrite,
                                    progress=True)
    except (EcomrecError, OSError) as exc:
        raise _fail(exc) from exc
    console.print(_table(f"synthetic shop -> {dest}", report.summary()))
