"""`ecomrec pipeline definition | upsert | start | status | refresh-jumpstart | images | doctor`: the SageMaker
side.

boto3 clients are created here (the CLI layer) and injected into pipelines/sagemaker/runner.py; the
SageMaker SDK is imported only by the commands that build a definition.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from components.config import PipelineConfig
from components.errors import EcomrecError

console = Console(stderr=True)  # stdout stays clean for `definition > pipeline.json`

ROLE = typer.Option(None, "--role", envvar="ECOMREC_SAGEMAKER_ROLE",
                    help="SageMaker execution role ARN the steps run as [env: ECOMREC_SAGEMAKER_ROLE]")
BUCKET = typer.Option(None, "--bucket", envvar="ECOMREC_BUCKET",
                      help="S3 bucket for code, raw data and outputs (name only) [env: ECOMREC_BUCKET]")
REGION = typer.Option(None, "--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the "
                                             "AWS config profile)")
PREFIX = typer.Option("ecomrec", "--prefix", help="key prefix in the bucket: code/, raw/, runs/")
NAME = typer.Option("ecomrec", "--name", help="pipeline name")
CONFIG = typer.Option(None, "--config", help="PipelineConfig as JSON or a JSON file (parameter defaults)")
INFERENCE_IMAGE = typer.Option(None, "--inference-image", help="inference image of registered models "
                                                               "(default: <account>.dkr.ecr.<region>."
                                                               "amazonaws.com/<prefix>-inference:latest)")
STEPS_IMAGE = typer.Option(None, "--steps-image", help="image of every processing step (default: <account>"
                                                        ".dkr.ecr.<region>.amazonaws.com/<prefix>-steps:<hash of "
                                                        "the code and containers/steps>; `pipeline images`)")
PIP_INSTALL = typer.Option(False, "--pip-install", help="opt-in: run the stock SageMaker Spark image and "
                                                        "pip-install the dependencies at every job's start "
                                                        "(needs internet egress; unpinned versions)")
CACHE = typer.Option("", "--cache", help="cache the job steps' results for this ISO 8601 duration (e.g. P30D); "
                                          "off by default: a cached ETL would not see new files under the raw "
                                          "prefix")
OUTPUT = typer.Option(None, "--output", "-o", help="write to a file instead of stdout")
PARAM = typer.Option(None, "--param", help="override a parameter: NAME=VALUE (repeatable)")
PIN_REGIONS = typer.Option(..., "--region", help="region to pin (repeatable)")


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code=2)


def _region(region: str | None) -> str:
    resolved = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not resolved:
        import boto3

        resolved = boto3.Session().region_name  # the AWS config profile; reads files only
    if not resolved:
        raise _fail("no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION")
    return resolved


def _quiet_sdk(region: str) -> None:
    """The SDK sets INFO/DEBUG levels on its loggers when imported: import it, then turn them down."""
    import warnings

    from pipelines.sagemaker.pipeline import _import_sdk

    _import_sdk(region)
    warnings.filterwarnings("ignore", module=r"sagemaker\..*")
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("sagemaker", "botocore", "boto3", "urllib3"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _settings(role: str | None, bucket: str | None, region: str | None, prefix: str, name: str,
              config: str | None, inference_image: str | None, steps_image: str | None = None,
              pip_install: bool = False, cache: str = "") -> object:
    from pipelines.sagemaker.pipeline import PipelineSettings

    if not role:
        raise _fail("no execution role: pass --role arn:aws:iam::<account>:role/<name> "
                    "(or set ECOMREC_SAGEMAKER_ROLE); see pipelines/sagemaker/README.md for its policies")
    if not bucket:
        raise _fail("no bucket: pass --bucket NAME (or set ECOMREC_BUCKET)")
    try:
        return PipelineSettings(role=role, bucket=bucket, region=_region(region), prefix=prefix, name=name,
                                config=PipelineConfig.from_json_or_path(config),
                                inference_image_uri=inference_image, steps_image_uri=steps_image,
                                pip_install=pip_install, cache_expire_after=cache)
    except (EcomrecError, ValueError) as error:
        raise _fail(str(error)) from error


def _parse_params(pairs: list[str] | None) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"--param {pair!r} is not NAME=VALUE")
        parsed[name.strip()] = value
    return parsed


def definition(role: str | None = ROLE, bucket: str | None = BUCKET, region: str | None = REGION,
               prefix: str = PREFIX, name: str = NAME, config: str | None = CONFIG,
               inference_image: str | None = INFERENCE_IMAGE, steps_image: str | None = STEPS_IMAGE,
               pip_install: bool = PIP_INSTALL, output: Path | None = OUTPUT, cache: str = CACHE) -> None:
    """Print the SageMaker pipeline definition JSON (built offline: no AWS call)."""
    from pipelines.sagemaker.pipeline import PipelineSettings, definition_json

    settings = _settings(role, bucket, region, prefix, name, config, inference_image, steps_image, pip_install,
                         cache)
    assert isinstance(settings, PipelineSettings)
    try:
        _quiet_sdk(settings.region)
        text = json.dumps(json.loads(definition_json(settings)), indent=2)
    except EcomrecError as error:
        raise _fail(str(error)) from error
    if output:
        output.write_text(text + "\n")
        console.print(f"definition written to {output} (code version {settings.code.version})")
    else:
        typer.echo(text)


def upsert(role: str | None = ROLE, bucket: str | None = BUCKET, region: str | None = REGION,
           prefix: str = PREFIX, name: str = NAME, config: str | None = CONFIG,
           inference_image: str | None = INFERENCE_IMAGE, steps_image: str | None = STEPS_IMAGE,
           pip_install: bool = PIP_INSTALL, cache: str = CACHE) -> None:
    """Upload the code and create or update the pipeline on SageMaker."""
    import boto3

    from pipelines.sagemaker import runner
    from pipelines.sagemaker.pipeline import PipelineSettings, definition_json

    settings = _settings(role, bucket, region, prefix, name, config, inference_image, steps_image, pip_install,
                         cache)
    assert isinstance(settings, PipelineSettings)
    try:
        _quiet_sdk(settings.region)
        with console.status("building the definition"):
            text = definition_json(settings)
        result = runner.upsert(text, settings,
                               sagemaker_client=boto3.client("sagemaker", region_name=settings.region),
                               s3_client=boto3.client("s3", region_name=settings.region))
    except EcomrecError as error:
        raise _fail(str(error)) from error
    console.print(f"{'created' if result.created else 'updated'} pipeline [bold]{settings.name}[/bold]: "
                  f"{result.pipeline_arn}\ncode: {result.code_prefix}\n"
                  f"next: ecomrec pipeline start --name {settings.name} --region {settings.region}")


def start(name: str = NAME, region: str | None = REGION,
          param: list[str] | None = PARAM,
          display_name: str = typer.Option("", "--display-name", help="execution display name"),
          wait: bool = typer.Option(False, "--wait", help="poll until the execution finishes")) -> None:
    """Start an execution of the deployed pipeline."""
    import boto3

    from pipelines.sagemaker import runner

    client = boto3.client("sagemaker", region_name=_region(region))
    overrides = _parse_params(param)
    try:
        if overrides:
            known = runner.parameter_names(name, sagemaker_client=client)
            unknown = sorted(set(overrides) - set(known))
            if unknown:
                raise EcomrecError(f"unknown parameters {unknown}; the pipeline declares {', '.join(known)}")
        arn = runner.start(name, sagemaker_client=client, parameters=overrides, display_name=display_name)
    except EcomrecError as error:
        raise _fail(str(error)) from error
    console.print(f"started {arn}\nwatch: ecomrec pipeline status --name {name} (or SageMaker Studio > "
                  "Pipelines > " + name + ")")
    if wait:
        _watch(arn, client)


def _print_status(execution: object) -> None:
    from pipelines.sagemaker.runner import ExecutionStatus

    assert isinstance(execution, ExecutionStatus)
    table = Table(title=f"{execution.arn}\n{execution.status} (started {execution.started})")
    for column in ("step", "status", "started", "ended", "failure"):
        table.add_column(column, overflow="fold")
    for step in execution.steps:
        table.add_row(step.name, step.status, step.started[:19], step.ended[:19], step.failure_reason)
    console.print(table)
    if execution.failure_reason:
        console.print(f"[red]{execution.failure_reason}[/red]")


def _watch(arn: str, client: object, every: float = 30.0) -> None:
    from pipelines.sagemaker import runner

    while True:
        execution = runner.status(arn, sagemaker_client=client)
        _print_status(execution)
        if execution.finished:
            if execution.status != "Succeeded":
                raise typer.Exit(code=1)
            return
        time.sleep(every)


def status(name: str = NAME, region: str | None = REGION,
           execution: str | None = typer.Option(None, "--execution", help="execution ARN (default: latest)"),
           watch: bool = typer.Option(False, "--watch", help="poll until it finishes")) -> None:
    """Status of an execution and of each of its steps."""
    import boto3

    from pipelines.sagemaker import runner

    client = boto3.client("sagemaker", region_name=_region(region))
    try:
        arn = execution or runner.latest_execution(name, sagemaker_client=client)
        if watch:
            _watch(arn, client)
            return
        _print_status(runner.status(arn, sagemaker_client=client))
    except EcomrecError as error:
        raise _fail(str(error)) from error


def refresh_jumpstart(region: list[str] = PIN_REGIONS,
                      model_version: str = typer.Option(None, "--model-version",
                                                        help="JumpStart model version (default: the pinned "
                                                             "one)")) -> None:
    """Re-pin the built-in CatBoost URIs with the SDK's JumpStart retrieval (needs AWS access)."""
    from pipelines.sagemaker.jumpstart import PINS_FILE, load_pins, refresh_pins

    version = model_version or str(load_pins()["model_version"])
    try:
        _quiet_sdk(region[0])
        pins = refresh_pins(region, version)
    except EcomrecError as error:
        raise _fail(str(error)) from error
    console.print(f"pinned catboost-classification-model {version} for {', '.join(region)} in {PINS_FILE}")
    typer.echo(json.dumps({r: pins["regions"][r] for r in region}, indent=2))


def images(region: str | None = REGION, prefix: str = PREFIX,
           account: str = typer.Option(..., "--account", help="AWS account of the steps image's repository"),
           ) -> None:
    """Print the images and URIs a definition would use in REGION, as JSON (offline; CD builds from it)."""
    from dataclasses import asdict

    from pipelines.sagemaker.images import spark_image, steps_image_tag, steps_image_uri, steps_repository
    from pipelines.sagemaker.jumpstart import catboost_uris, load_pins

    resolved = _region(region)
    try:
        _quiet_sdk(resolved)
        pins = load_pins()
        listing = {
            "region": resolved,
            "spark_image": spark_image(resolved),
            "steps_repository": steps_repository(prefix),
            "steps_tag": steps_image_tag(),
            "steps_image": steps_image_uri(account, resolved, prefix),
            "catboost": {**asdict(catboost_uris(resolved)), "model_version": pins["model_version"],
                         "retrieved": pins["retrieved"]},
        }
    except EcomrecError as error:
        raise _fail(str(error)) from error
    typer.echo(json.dumps(listing, indent=2))


def doctor(role: str | None = ROLE, bucket: str | None = BUCKET, region: str | None = REGION,
           prefix: str = PREFIX, config: str | None = CONFIG, inference_image: str | None = INFERENCE_IMAGE,
           steps_image: str | None = STEPS_IMAGE, pip_install: bool = PIP_INSTALL,
           input_data_uri: str | None = typer.Option(
               None, "--input-data-uri", help="raw data the runs read when it is not the definition's default "
                                              "s3://BUCKET/PREFIX/raw/ (CD: the raw bucket the retraining "
                                              "schedule passes)")) -> None:
    """Check the account before the first run (role, bucket, images, model package group); starts nothing.

    Exit code 1 when a check finds a blocker (the first run would fail)."""
    import boto3

    from pipelines.sagemaker.doctor import Clients, blockers, diagnose
    from pipelines.sagemaker.pipeline import PipelineSettings

    settings = _settings(role, bucket, region, prefix, "ecomrec", config, inference_image, steps_image, pip_install)
    assert isinstance(settings, PipelineSettings)
    clients = Clients(**{name: boto3.client(name, region_name=settings.region)
                         for name in ("iam", "s3", "ecr", "sagemaker")})
    try:
        _quiet_sdk(settings.region)
        findings = diagnose(settings, clients, input_data_uri)
    except EcomrecError as error:
        raise _fail(str(error)) from error
    colours = {"ok": "green", "warning": "yellow", "blocker": "bold red", "not checked": "magenta"}
    table = Table(title=f"{settings.role} / s3://{settings.bucket} / {settings.region}")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        table.add_row(finding.check, f"[{colours[finding.status]}]{finding.status}[/]", finding.detail)
    console.print(table)
    if blockers(findings):
        console.print(f"[bold red]{len(blockers(findings))} blocker(s): the first run would fail[/bold red]")
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the SageMaker commands to the `ecomrec pipeline` group."""
    app.command("definition")(definition)
    app.command("upsert")(upsert)
    app.command("start")(start)
    app.command("status")(status)
    app.command("refresh-jumpstart")(refresh_jumpstart)
    app.command("images")(images)
    app.command("doctor")(doctor)
