"""`python -m pipelines.cli`: the ecomrec CLI."""

from pipelines.cli import app

app()
