"""`ecomrec pipeline compile --target kubeflow`: the step graph as a Kubeflow Pipelines v2 IR YAML (offline).

`ecomrec pipeline run --kubeflow-local` (pipelines/cli/pipeline.py) runs the same pipeline with kfp.local."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from components.config import PipelineConfig
from components.errors import EcomrecError

console = Console(stderr=True)
TARGETS = ("kubeflow",)


def compile_pipeline(
    target: str = typer.Option(..., "--target", help=f"orchestrator: {', '.join(TARGETS)} (SageMaker: "
                                                     "`ecomrec pipeline definition`)"),
    output: Path = typer.Option(Path("pipeline.yaml"), "--output", "-o", help="where to write the IR YAML"),
    config: str | None = typer.Option(None, help="PipelineConfig as JSON or a JSON file (parameter defaults)"),
    image: str | None = typer.Option(None, help="the steps image, the StepsImageUri default (default: "
                                                "ecomrec-steps:latest; on EKS <account>.dkr.ecr.<region>."
                                                "amazonaws.com/ecomrec-steps:<tag>)"),
    input_data_uri: str = typer.Option("", help="the InputDataUri default (s3://... or a path the pods "
                                                "see); empty: each run must give it"),
    inference_image: str = typer.Option("", help="the InferenceImageUri default: the image of SageMaker model "
                                                 "packages when a run registers with Registry=sagemaker"),
    name: str = typer.Option("ecomrec", help="pipeline name"),
) -> None:
    """Write the pipeline's IR YAML: upload it in the KFP UI or with `kfp pipeline create`."""
    if target not in TARGETS:
        raise typer.BadParameter(f"unknown target {target!r}; known: {', '.join(TARGETS)} (for SageMaker use "
                                 "`ecomrec pipeline definition`)", param_hint="--target")
    try:
        from pipelines.kubeflow.pipeline import DEFAULT_IMAGE, KubeflowSettings
        from pipelines.kubeflow.pipeline import compile_pipeline as compile_kfp

        settings = KubeflowSettings(name=name, image=image or DEFAULT_IMAGE, input_data_uri=input_data_uri,
                                    inference_image_uri=inference_image,
                                    config=PipelineConfig.from_json_or_path(config))
        compile_kfp(settings, str(output))
    except ImportError as error:
        console.print(f'[bold red]error:[/bold red] {error}: install the kubeflow extra (pip install -e ".[kubeflow]")')
        raise typer.Exit(code=2) from error
    except (EcomrecError, ValueError) as error:
        console.print(f"[bold red]error:[/bold red] {error}")
        raise typer.Exit(code=2) from error
    console.print(f"wrote {output} (Kubeflow Pipelines v2 IR, image {settings.image})")


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_pipeline)
