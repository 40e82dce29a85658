"""`ecomrec serve`"""

from __future__ import annotations

import typer


def serve(
    model: str = typer.Option(..., help="model bundle: a model.tar.gz path, a directory, or s3://..."),
    port: int = typer.Option(8080, help="port to listen on"),
) -> None:
    """Serve recommendations from a model bundle (the same app as the container)."""
    raise typer.Exit(code=2)
