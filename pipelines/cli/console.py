"""`ecomrec console`: the local web console (registry, approve / reject, recommendation explorer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def console(
    registry: Annotated[Path | None, typer.Option(
        help="local model registry folder (default: $ECOMREC_REGISTRY_ROOT or .ecomrec/registry)")] = None,
    group: Annotated[str, typer.Option(help="model package group")] = "ecomrec",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
    host: Annotated[str, typer.Option(
        help="address to bind; the console has no login, so keep it on this machine")] = "127.0.0.1",
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="a further host name the browser may use to reach the console (repeatable); the default "
             "accepts only 127.0.0.1, localhost and ::1 (no DNS-rebound name)")] = None,
    sagemaker: Annotated[bool, typer.Option(help="use the SageMaker Model Registry (AWS credentials)")] = False,
    region: Annotated[str | None, typer.Option(help="AWS region for --sagemaker")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Open the model registry and a recommendation explorer in the browser: http://127.0.0.1:8090."""
    import logging

    import uvicorn

    from components.console.app import LOCAL_HOSTS, ConsoleConfig, create_console_app
    from components.console.reports import LocalReports, ReportFiles, S3Reports
    from components.registry.base import ModelRegistry
    from components.serving.source import BundleFetcher

    if not 0 < port < 65536:
        typer.echo(f"error: --port must be within 1..65535, got {port}", err=True)
        raise typer.Exit(code=2)
    reports: ReportFiles
    registry_port: ModelRegistry
    if sagemaker:
        import boto3

        from components.registry.sagemaker import SageMakerRegistry

        s3 = boto3.client("s3", region_name=region)
        registry_port = SageMakerRegistry(boto3.client("sagemaker", region_name=region), s3)
        reports, fetcher = S3Reports(s3), BundleFetcher(s3_client=s3)
        where = f"SageMaker Model Registry ({s3.meta.region_name})"
        hint = "ecomrec pipeline upsert && ecomrec pipeline start"
    else:
        from components.registry.local import LocalRegistry
        from components.registry.step import default_registry_dir

        folder = (registry or default_registry_dir()).resolve()
        if folder.exists() and not folder.is_dir():
            typer.echo(f"error: --registry {folder} is not a folder", err=True)
            raise typer.Exit(code=2)
        local = LocalRegistry(folder)
        registry_port, reports, fetcher = local, LocalReports(local), BundleFetcher()
        where = str(folder)
        hint = f"ecomrec pipeline run --local --output runs/online-retail --registry {folder}"
    hosts = (*LOCAL_HOSTS, *([] if host in ("0.0.0.0", "::") else [host]), *(allowed_host or []))
    app = create_console_app(registry_port, reports, fetcher,
                             ConsoleConfig(group=group, where=where, create_hint=hint, allowed_hosts=hosts))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"ecomrec console on http://{host}:{port}/ (group {group}, {where})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False)
