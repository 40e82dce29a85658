"""`ecomrec events send`: a file of events to a running service's POST /events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from components.errors import EcomrecError

app = typer.Typer(help="Send shop events to a running service (POST /events).", no_args_is_help=True)
console = Console()


def _count_rows(path: Path) -> int | None:
    if path.name.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    return None  # counting a CSV means reading it twice: the bar shows rows sent without a total


@app.command("send")
def send(
    file: Annotated[Path, typer.Argument(help="events in the raw contract: .csv[.gz], .parquet or .jsonl")],
    url: Annotated[str, typer.Option(help="the service's base URL, e.g. http://localhost:8080")],
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="events per request")] = 100,
    retries: Annotated[int, typer.Option(min=0, help="resends of a batch after a network error or 5xx")] = 3,
    token: Annotated[str | None, typer.Option(envvar="ECOMREC_EVENTS_TOKEN", show_default=False,
                                              help="the service's events token (sent as a bearer token)")] = None,
) -> None:
    from components.realtime.send import send_events

    total = _count_rows(file) if file.is_file() else None
    try:
        with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("events", total=total)
            report = send_events(file, url, batch_size=batch_size, retries=retries, token=token,
                                 progress=lambda n: bar.advance(task, n))
    except EcomrecError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=1) from error
    table = Table(title=f"{file.name} -> {url}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = report.sent / report.seconds if report.seconds else 0.0
    table.add_row("sent", f"{report.sent:,} in {report.seconds:.1f} s ({rate:,.0f}/s)")
    table.add_row("accepted", f"{report.accepted:,}")
    table.add_row("already received (retries)", f"{report.already_received:,}")
    for reason, n in sorted(report.rejected.items()):
        table.add_row(f"rejected: {reason}", f"{n:,}")
    if report.degraded_batches:
        table.add_row("degraded batches (store down)", f"{report.degraded_batches:,}")
    if report.retries:
        table.add_row("resent batches", f"{report.retries:,}")
    console.print(table)
