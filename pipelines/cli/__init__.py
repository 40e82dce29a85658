"""``ecomrec``: one CLI, a sub-command group per resource (data, pipeline, models, serve)."""

from __future__ import annotations

import typer

from pipelines.cli import console, data, evaluate, events, models, pipeline, serve

app = typer.Typer(
    name="ecomrec",
    help="Raw shop events to live, personalised product recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(models.app, name="models")
app.add_typer(events.app, name="events")
app.add_typer(evaluate.app, name="evaluate")
app.command("serve")(serve.serve)
app.command("console")(console.console)

if __name__ == "__main__":
    app()
