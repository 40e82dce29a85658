"""`ecomrec pipeline ...`: run the pipeline locally (the embedded default) or on SageMaker."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from components import schema as s
from components.config import PipelineConfig
from components.errors import EcomrecError

app = typer.Typer(help="Run the pipeline locally, or define/upsert/start it on SageMaker.", no_args_is_help=True)
# logs and CI are not terminals; rich would squeeze the evaluation table into 80 columns there
console = Console(width=None if sys.stdout.isatty() else 130)


def _raw_input(data: Path | None, dataset: str, source: Path | None, output: Path) -> Path:
    """The raw contract folder: ``--data`` as given, or a public dataset imported once under OUTPUT/raw."""
    if data is not None:
        return data
    if dataset != "online-retail":
        raise typer.BadParameter(f"unknown dataset {dataset!r}; known: online-retail", param_hint="--dataset")
    from components.data.online_retail import ensure_online_retail, import_online_retail

    raw = output / "raw"
    imported = raw / "_SUCCESS"  # names the file the import read
    if (raw / s.EVENTS).is_dir() and imported.exists() and (
            source is None or imported.read_text() == str(source.resolve())):
        return raw
    found = ensure_online_retail(source).resolve()  # a local copy when given or found, else the download
    console.print(f"importing Online Retail from [cyan]{found}[/cyan]")
    import_online_retail(found, raw, overwrite=True)
    imported.write_text(str(found))
    return raw


def print_evaluation(evaluation_dir: Path) -> None:
    evaluation = json.loads((evaluation_dir / s.EVALUATION_FILE).read_text())
    table = Table(title=f"Evaluation, warm users (test from {evaluation['split']['test_start']})")
    table.add_column("recommender")
    columns = [(m, 10) for m in ("ndcg", "map", "recall", "precision", "hit_rate", "coverage")]
    columns += [(m, 20) for m in ("ndcg", "recall")]
    for metric, k in columns:
        table.add_column(f"{metric}@{k}", justify="right")
    for name, metrics in evaluation["ranking_metrics"].items():
        table.add_row(name, *(f"{metrics[s.metric_key(m, k)]['value']:.4f}" for m, k in columns))
    console.print(table)
    two_stage = evaluation["ranking_metrics"][s.TWO_STAGE]
    if "candidate_recall" in two_stage:
        console.print(f"candidate recall {two_stage['candidate_recall']['value']:.4f} with "
                      f"{two_stage['candidates_per_user']['value']:.1f} candidates per user")
    headline = evaluation.get("headline", {})
    if headline.get("two_stage_over_strongest_baseline") is not None:
        excluded = headline.get("exclude_purchased", {}).get("two_stage_over_als")
        console.print(f"two_stage ndcg@10 = {headline['two_stage_over_strongest_baseline']:.3f}x the strongest "
                      f"baseline ({headline['strongest_baseline']}); exclude_purchased: "
                      + (f"{excluded:.3f}x als" if excluded is not None else "-"))
    users = evaluation.get("users", {})
    console.print("evaluated users: " + ", ".join(f"{k} {v}" for k, v in users.items()))
    console.print(f"report: {evaluation_dir / s.REPORT_FILE}")


@app.command("run")
def run(
    local: bool = typer.Option(True, "--local/--no-local", help="run on this machine (the embedded default)"),
    kubeflow_local: bool = typer.Option(False, "--kubeflow-local", help="run the Kubeflow pipeline with KFP's "
                                        "local runner (kfp.local, one subprocess per step; no resume)"),
    data: Path | None = typer.Option(None, help="raw contract folder (events/, items/, users/)"),
    dataset: str = typer.Option("online-retail", help="public dataset to use when --data is not given"),
    source: Path | None = typer.Option(None, help="a local copy of the dataset file (csv, csv.gz, xlsx, zip)"),
    output: Path = typer.Option(Path("runs/online-retail"), help="each step writes OUTPUT/<step>/"),
    config: str | None = typer.Option(None, help="PipelineConfig as JSON or a JSON file"),
    registry: Path | None = typer.Option(None, help="local registry folder (default: $ECOMREC_REGISTRY_ROOT "
                                                    "or .ecomrec/registry)"),
    resume: bool = typer.Option(True, help="skip steps whose inputs and config did not change"),
    only: list[str] | None = typer.Option(None, help="run only these steps (repeatable)"),
) -> None:
    """Run every step in order with one Spark session, showing progress and time per step (or, with
    --kubeflow-local, the Kubeflow pipeline under kfp.local)."""
    if not local:
        raise typer.BadParameter("use `ecomrec pipeline upsert` and `start` to run on SageMaker",
                                 param_hint="--local")
    if kubeflow_local:
        if only:
            raise typer.BadParameter("--only is not available with --kubeflow-local (KFP runs the whole graph)",
                                     param_hint="--only")
        _run_kubeflow_local(data, dataset, source, output, config, registry)
        return
    from components.registry.step import default_registry_dir
    from pipelines.graph import STEPS
    from pipelines.local import run_local

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pipeline_config = PipelineConfig.from_json_or_path(config)
    registry_dir = (registry or default_registry_dir()).resolve()
    try:
        raw = _raw_input(data, dataset, source, output)
        timings = Table(title="Steps")
        timings.add_column("step")
        timings.add_column("seconds", justify="right")
        timings.add_column("what")
        with console.status("starting Spark") as status:
            results = run_local(
                raw, output, pipeline_config, resume=resume, only=only,
                step_options={"register": ["--registry", str(registry_dir)]},
                on_step_start=lambda step: status.update(f"[bold]{step.name}[/bold]: {step.summary}"),
                on_step_end=lambda step, result: console.print(
                    f"  [green]✓[/green] {step.name:<12} "
                    + ("skipped (unchanged)" if result.skipped else f"{result.seconds:6.1f} s")),
            )
    except EcomrecError as error:
        console.print(f"[bold red]{type(error).__name__}:[/bold red] {error}")
        raise typer.Exit(code=1) from error
    summaries = {step.name: step.summary for step in STEPS}
    for result in results:
        timings.add_row(result.step, "skipped" if result.skipped else f"{result.seconds:.1f}",
                        summaries[result.step])
    console.print(timings)
    console.print(f"total {sum(r.seconds for r in results):.1f} s")
    _print_results(output, registry_dir)


def _run_kubeflow_local(data: Path | None, dataset: str, source: Path | None, output: Path, config: str | None,
                        registry: Path | None) -> None:
    from components.registry.step import default_registry_dir
    from pipelines.kubeflow.local import run_kubeflow_local

    registry_dir = (registry or default_registry_dir()).resolve()
    try:
        raw = _raw_input(data, dataset, source, output)
        run_kubeflow_local(raw, output, PipelineConfig.from_json_or_path(config), registry=registry_dir)
    except EcomrecError as error:
        console.print(f"[bold red]{type(error).__name__}:[/bold red] {error}")
        raise typer.Exit(code=1) from error
    _print_results(output, registry_dir)


def _print_results(output: Path, registry_dir: Path) -> None:
    from components.registry.step import REGISTRATION_FILE

    if (output / "evaluation" / s.EVALUATION_FILE).exists():
        print_evaluation(output / "evaluation")
    registration = output / "register" / REGISTRATION_FILE
    if registration.exists():
        registered = json.loads(registration.read_text()).get("registered")
        if registered:
            console.print(f"registered [bold]{registered['group']}[/bold] version "
                          f"[bold]{registered['version']}[/bold] as {registered['status']} in {registry_dir}; "
                          f"approve with: ecomrec models approve {registered['version']} "
                          f"--registry {registry_dir}")


# SageMaker commands (definition, upsert, start, status, refresh-jumpstart) live in their own module.
from pipelines.cli import pipeline_sagemaker  # noqa: E402

pipeline_sagemaker.register(app)
# Kubeflow: compile (run --kubeflow-local is above).
from pipelines.cli import pipeline_kubeflow  # noqa: E402

pipeline_kubeflow.register(app)
