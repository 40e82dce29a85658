"""`ecomrec models list | describe | approve | reject`: the model registry, local or SageMaker."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from components import schema as s
from components.errors import EcomrecError
from components.registry.base import APPROVED, REJECTED, ModelRegistry

app = typer.Typer(help="List, inspect, approve and reject registered model versions.", no_args_is_help=True)
console = Console()

GROUP = typer.Option("ecomrec", "--group", help="model package group")
REGISTRY = typer.Option(None, "--registry", help="local registry folder (default: $ECOMREC_REGISTRY_ROOT "
                                                 "or .ecomrec/registry)")
SAGEMAKER = typer.Option(False, "--sagemaker", help="use the SageMaker Model Registry (AWS credentials)")
REGION = typer.Option(None, "--region", help="AWS region for --sagemaker")


def _registry(registry: Path | None, sagemaker: bool, region: str | None) -> ModelRegistry:
    if sagemaker:
        import boto3

        from components.registry.sagemaker import SageMakerRegistry

        # with S3, describe shows the whole evaluation.json the package points to, not only its headline
        return SageMakerRegistry(boto3.client("sagemaker", region_name=region),
                                 boto3.client("s3", region_name=region))
    from components.registry.local import LocalRegistry
    from components.registry.step import default_registry_dir

    return LocalRegistry(registry or default_registry_dir())


def _ndcg(metrics: dict[str, object]) -> str:
    try:
        from components.registry.gate import metric_value

        return f"{metric_value(metrics, s.TWO_STAGE, 'ndcg', 10):.4f}"
    except EcomrecError:
        return "-"


@app.command("list")
def list_versions(group: str = GROUP, registry: Path | None = REGISTRY, sagemaker: bool = SAGEMAKER,
                  region: str | None = REGION) -> None:
    """List the versions of a model package group."""
    table = Table(title=f"model package group {group}")
    table.add_column("version", no_wrap=True)
    table.add_column("status", no_wrap=True, min_width=len("PendingManualApproval"))
    table.add_column("created", no_wrap=True)
    table.add_column("ndcg@10", no_wrap=True)
    table.add_column("model data", overflow="fold")
    try:  # a corrupt local record is skipped with a warning naming its file (LocalRegistry.list_versions)
        versions = _registry(registry, sagemaker, region).list_versions(group)
    except EcomrecError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from error
    for version in versions:
        table.add_row(str(version.version), version.status, version.created_at[:16], _ndcg(version.metrics),
                      version.model_data_url)
    console.print(table)


@app.command("describe")
def describe(version: int, group: str = GROUP, registry: Path | None = REGISTRY, sagemaker: bool = SAGEMAKER,
             region: str | None = REGION) -> None:
    """Print one version as JSON (status, artifact, metrics)."""
    try:
        record = _registry(registry, sagemaker, region).describe(group, version)
    except EcomrecError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from error
    typer.echo(json.dumps(asdict(record), indent=2))


def _set_status(version: int, status: str, reason: str, group: str, registry: Path | None, sagemaker: bool,
                region: str | None) -> None:
    try:
        updated = _registry(registry, sagemaker, region).set_status(group, version, status, reason)  # type: ignore[arg-type]
    except EcomrecError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=1) from error
    console.print(f"{group} version {updated.version}: [bold]{updated.status}[/bold]")


@app.command("approve")
def approve(version: int, reason: str = typer.Option("", help="why (kept with the version)"), group: str = GROUP,
            registry: Path | None = REGISTRY, sagemaker: bool = SAGEMAKER, region: str | None = REGION) -> None:
    """Approve a version: the inference service (watch, or the EKS rollout) picks it up."""
    _set_status(version, APPROVED, reason, group, registry, sagemaker, region)


@app.command("reject")
def reject(version: int, reason: str = typer.Option("", help="why (kept with the version)"), group: str = GROUP,
           registry: Path | None = REGISTRY, sagemaker: bool = SAGEMAKER, region: str | None = REGION) -> None:
    """Reject a version; rejecting the live one rolls serving back to the previous approved version."""
    _set_status(version, REJECTED, reason, group, registry, sagemaker, region)
