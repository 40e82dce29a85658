"""`ecomrec serve`: the inference service (the same app and launcher as the container)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    model: Annotated[str | None, typer.Option(
        help="model bundle: a model.tar.gz path, a folder, or s3://... (default: $ECOMREC_MODEL, else the "
             "local registry's latest Approved version, else /opt/ml/model)")] = None,
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 to accept outside connections")]
    = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="worker processes (each loads the bundle)")] = 1,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); serve HTTPS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    registry: Annotated[Path | None, typer.Option(
        help="local model registry folder to follow (default: $ECOMREC_REGISTRY_ROOT or .ecomrec/registry)")]
    = None,
    group: Annotated[str | None, typer.Option(help="model package group in the registry")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve recommendations from a model bundle (the same app as the container).

    Without --model: the latest Approved version in the local registry (--registry, else
    $ECOMREC_REGISTRY_ROOT or .ecomrec/registry, where `ecomrec pipeline run` registers), and every version
    approved later is loaded, checked and switched in while serving."""
    import os

    from components.registry.step import default_registry_dir
    from components.serving.server import LaunchError, run

    if model is None and registry is None and not os.environ.get("ECOMREC_MODEL") \
            and not os.environ.get("ECOMREC_REGISTRY_ROOT") and default_registry_dir().is_dir():
        registry = default_registry_dir()

    try:
        run(model=model, host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key,
            registry=registry, group=group, log_level=log_level)
    except LaunchError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
