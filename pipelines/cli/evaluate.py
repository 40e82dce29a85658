"""`ecomrec evaluate replay`: REALTIME.md's replay protocol through the service's own code path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from components.errors import EcomrecError

app = typer.Typer(help="Evaluate a model bundle beyond the offline evaluation step.", no_args_is_help=True)
console = Console()


@app.command("replay")
def replay_cmd(
    bundle: Annotated[Path, typer.Option(help="the bundle: model.tar.gz or its unpacked folder")],
    data: Annotated[Path, typer.Option(help="the `ecomrec pipeline run` output folder the bundle came from "
                                            "(its etl/ holds the cleaned events and the test window)")],
    output: Annotated[Path, typer.Option(help="folder for replay.json, replay_truth.parquet, "
                                              "replay_recommendations.parquet and replay.html")],
) -> None:
    """Replay the test window basket by basket: static, realtime, repurchase_realtime and popular."""
    from components.realtime.replay import replay, replay_table, write_replay

    if not bundle.exists():
        console.print(f"[red]error:[/red] --bundle {bundle}: no such file or folder")
        raise typer.Exit(code=1)
    try:
        with console.status("replaying the test window"):
            result = replay(bundle, data)
    except EcomrecError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=1) from error
    write_replay(result, output)
    console.print(replay_table(result.metrics), markup=False)
    console.print(f"written to {output}")
