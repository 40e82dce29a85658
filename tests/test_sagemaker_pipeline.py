"""The SageMaker pipeline definition, built offline through `ecomrec pipeline definition`.

The definition is built once per module with every non-loopback socket refused (socket.socket.connect
and name lookups are patched): any network use by the SDK or by our code fails the build or the
``test_built_without_network`` check. Nothing here talks to AWS; the definition JSON is inspected and
its run-time expressions (parameters, Std:Join) are evaluated by a small renderer with the parameter
defaults, to check the argv each container receives against the local runner's contract.
"""

from __future__ import annotations

import io
import ipaddress
import itertools
import json
import re
import socket
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from typer.testing import CliRunner

from components import schema as s
from components.config import PipelineConfig
from components.ranker.hyperparameters import PARSERS, hyperparameters_from_config, parse_hyperparameters
from components.registry.base import APPROVAL_STATUSES, PENDING
from components.registry.gate import baseline_comparison, check_gate
from pipelines.graph import STEPS
from pipelines.local import step_argv
from pipelines.sagemaker.code import CODE_ARCHIVE, LAUNCHER
from pipelines.sagemaker.jumpstart import catboost_uris
from pipelines.sagemaker.pipeline import (
    CONTAINER_INPUT,
    CONTAINER_OUTPUT,
    GATE_FAILED_STEP,
    REGISTER_MODEL_STEP,
)
from tests.sagemaker_launch import smspark_submit_command

ROLE = "arn:aws:iam::123456789012:role/EcomrecSageMaker"
BUCKET = "ecomrec-test-bucket"
REGION = "eu-west-1"
EXECUTION_ID = "exec-0001"
SDK_TYPES = {"pyspark": "Processing", "processing": "Processing", "training": "Training",
             "register": "Condition"}


# ---------------------------------------------------------------------------------------------- offline guard
def _local(host: object) -> bool:
    if host in (None, "localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def network_attempts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[object]]:
    """Refuse (and record) every connection or lookup beyond localhost while the module runs."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(host):
            attempts.append(address)
            raise OSError(f"network disabled in this test: connect to {address}")
        real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _local(host):
            attempts.append(host)
            raise OSError(f"network disabled in this test: lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    sdk_config = tmp_path_factory.mktemp("sdk") / "config.yaml"
    sdk_config.write_text("SchemaVersion: '1.0'\n")  # no developer defaults leak into the test
    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", connect)
    patch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                        "AWS_EC2_METADATA_DISABLED": "true", "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config)
                        }.items():
        patch.setenv(name, value)
    patch.delenv("AWS_PROFILE", raising=False)
    try:
        yield attempts
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def cli_result(network_attempts: list[object]) -> Any:
    from pipelines.cli import app

    return CliRunner().invoke(app, ["pipeline", "definition", "--role", ROLE, "--bucket", BUCKET,
                                    "--region", REGION])


@pytest.fixture(scope="module")
def definition(cli_result: Any) -> dict[str, Any]:
    assert cli_result.exit_code == 0, cli_result.output
    parsed: dict[str, Any] = json.loads(cli_result.stdout)
    return parsed


@pytest.fixture(scope="module")
def defaults(definition: dict[str, Any]) -> dict[str, Any]:
    return {parameter["Name"]: parameter["DefaultValue"] for parameter in definition["Parameters"]}


@pytest.fixture(scope="module")
def steps(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["Name"]: step for step in definition["Steps"]}


# ---------------------------------------------------------------------------------------------- renderer
def render(expr: Any, parameters: dict[str, Any],
           step_ref: Callable[[str], str] = lambda ref: f"<{ref}>") -> Any:
    """Evaluate a pipeline expression the way the service does at run time (Get, Std:Join); step
    properties and JsonGet values come from ``step_ref``."""
    if isinstance(expr, str | int | float):
        return expr
    if isinstance(expr, dict) and "Get" in expr:
        ref = expr["Get"]
        if ref.startswith("Parameters."):
            return parameters[ref.removeprefix("Parameters.")]
        if ref == "Execution.PipelineExecutionId":
            return EXECUTION_ID
        return step_ref(ref)
    if isinstance(expr, dict) and "Std:JsonGet" in expr:
        return step_ref(expr["Std:JsonGet"]["Path"])
    if isinstance(expr, dict) and "Std:Join" in expr:
        join = expr["Std:Join"]
        return join["On"].join(str(render(value, parameters, step_ref)) for value in join["Values"])
    raise AssertionError(f"unexpected expression {expr!r}")


def _container_argv(step: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    """What the step's main(argv) receives. Spark steps go through smspark-submit, which shell-quotes each
    item of the spark-submit command and runs the line with /bin/sh (tests/sagemaker_launch.py cites the
    source): build the line the same way, let /bin/sh split it, and read the application's arguments."""
    app = step["Arguments"]["AppSpecification"]
    arguments = [str(render(a, parameters)) for a in app["ContainerArguments"]]
    if app["ContainerEntrypoint"][0] == "smspark-submit":
        command = smspark_submit_command(app["ContainerEntrypoint"][1:], arguments, lambda uri: uri)
        assert command.startswith("spark-submit ")
        printed = subprocess.run(["/bin/sh", "-c", "printf '%s\\0' " + command.removeprefix("spark-submit ")],
                                 capture_output=True, check=True).stdout.decode()
        words = printed.split("\0")[:-1]
        arguments = words[words.index(app["ContainerEntrypoint"][-1]) + 1:]
    return arguments


def step_config(argv: list[str]) -> PipelineConfig:
    """The config a step's main(argv) builds: defaults, then the --set settings in order."""
    return PipelineConfig().with_settings([value for flag, value in itertools.pairwise(argv) if flag == "--set"])


# ---------------------------------------------------------------------------------------------- tests
def test_built_without_network(cli_result: Any, network_attempts: list[object]) -> None:
    assert cli_result.exit_code == 0, cli_result.output
    assert network_attempts == [], f"building the definition used the network: {network_attempts}"


def test_steps_follow_the_graph(definition: dict[str, Any]) -> None:
    """Same steps, same order, one SageMaker step type per graph kind."""
    assert [(step["Name"], step["Type"]) for step in definition["Steps"]] == [
        (step.name, SDK_TYPES[step.kind]) for step in STEPS]


def test_dependencies_are_the_graph_inputs(steps: dict[str, dict[str, Any]]) -> None:
    """SageMaker orders steps by the properties they read: each step reads exactly its graph inputs."""
    for graph_step in STEPS:
        referenced = set(re.findall(r"Steps\.(\w+)\.", json.dumps(steps[graph_step.name])))
        assert referenced == set(graph_step.inputs) - {"raw"}, graph_step.name
        assert "DependsOn" not in steps[graph_step.name]


def test_same_entry_points_and_argv_as_the_local_runner(steps: dict[str, dict[str, Any]],
                                                        defaults: dict[str, Any], tmp_path: Path) -> None:
    config = PipelineConfig()
    for graph_step in STEPS:
        if graph_step.kind not in ("pyspark", "processing"):
            continue
        step = steps[graph_step.name]
        app = step["Arguments"]["AppSpecification"]
        assert app["ContainerEntrypoint"][-1] == f"{CONTAINER_INPUT}/code/{LAUNCHER}"
        module, *argv = _container_argv(step, defaults)
        assert module == graph_step.entry_point
        local = step_argv(graph_step, tmp_path / "raw", tmp_path / "out", config)
        # the same flags in the same order (the config as --set settings, not one JSON); values are
        # container paths instead of local ones
        assert [f for f in argv[::2] if f != "--set"] == [f for f in local[::2] if f != "--config"]
        assert step_config(argv) == config
        paths = {flag: value for flag, value in zip(argv[::2], argv[1::2], strict=True) if flag != "--set"}
        assert paths.pop("--output") == f"{CONTAINER_OUTPUT}/{graph_step.name}"
        assert paths == {f"--{name}": f"{CONTAINER_INPUT}/{name}" for name in graph_step.inputs}


def test_inputs_are_wired_to_the_producing_steps(steps: dict[str, dict[str, Any]]) -> None:
    kinds = {step.name: step.kind for step in STEPS}
    for graph_step in STEPS:
        step = steps[graph_step.name]
        if graph_step.kind in ("pyspark", "processing"):
            inputs = {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}
            assert set(inputs) == {*graph_step.inputs, "ecomrec-code", "code"}
            for name in graph_step.inputs:
                assert inputs[name]["LocalPath"] == f"{CONTAINER_INPUT}/{name}"
                expected = ({"Get": "Parameters.InputDataUri"} if name == "raw" else
                            {"Get": f"Steps.{name}.ModelArtifacts.S3ModelArtifacts"}
                            if kinds[name] == "training" else
                            {"Get": f"Steps.{name}.ProcessingOutputConfig.Outputs['{name}'].S3Output.S3Uri"})
                assert inputs[name]["S3Uri"] == expected
            (output,) = step["Arguments"]["ProcessingOutputConfig"]["Outputs"]
            assert output["OutputName"] == graph_step.name
            assert render(output["S3Output"]["S3Uri"], {"OutputUri": "s3://b/runs"}) == \
                f"s3://b/runs/{EXECUTION_ID}/{graph_step.name}"


def test_code_is_the_versioned_zip_and_launcher(steps: dict[str, dict[str, Any]]) -> None:
    """Every container gets the same code zip (not copies of modules) under the code version prefix."""
    archives, launchers = set(), set()
    for step in steps.values():
        if step["Type"] != "Processing":
            continue
        inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in step["Arguments"]["ProcessingInputs"]}
        archives.add(inputs["ecomrec-code"])
        launchers.add(inputs["code"])
        entrypoint = step["Arguments"]["AppSpecification"]["ContainerEntrypoint"]
        if entrypoint[0] == "smspark-submit":  # executors get the zip through --py-files
            assert entrypoint[1:3] == ["--py-files", inputs["ecomrec-code"]]
    (archive,), (launcher,) = archives, launchers
    assert archive.startswith(f"s3://{BUCKET}/ecomrec/code/")
    assert archive.endswith(f"/{CODE_ARCHIVE}")
    assert launcher == archive.replace(CODE_ARCHIVE, LAUNCHER)


def test_every_step_runs_the_steps_image_and_installs_nothing_at_start(
        steps: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> None:
    """By default no job pip-installs anything: every processing step (PySpark and plain) runs this
    account's steps image for this very code (containers/steps/Dockerfile), and PipInstall is empty."""
    from pipelines.sagemaker.images import steps_image_tag

    for graph_step in STEPS:
        if graph_step.kind in ("pyspark", "processing"):
            arguments = steps[graph_step.name]["Arguments"]
            assert arguments["AppSpecification"]["ImageUri"] == {"Get": "Parameters.StepsImageUri"}
            assert arguments["Environment"]["ECOMREC_PIP_INSTALL"] == {"Get": "Parameters.PipInstall"}
            assert render(arguments["Environment"]["ECOMREC_PIP_INSTALL"], defaults) == ""
    assert defaults["StepsImageUri"] == (
        f"123456789012.dkr.ecr.{REGION}.amazonaws.com/ecomrec-steps:{steps_image_tag()}")
    assert defaults["PipInstall"] == ""


def test_the_pip_install_is_an_explicit_opt_in_on_the_stock_spark_image(network_attempts: list[object]) -> None:
    """--pip-install: the stock Spark 3.5 py312 image (the pinned, published tag) and the core dependencies
    installed by every job at start."""
    from pipelines.cli import app
    from pipelines.sagemaker.code import runtime_requirements

    result = CliRunner().invoke(app, ["pipeline", "definition", "--role", ROLE, "--bucket", BUCKET,
                                      "--region", REGION, "--pip-install"])
    assert result.exit_code == 0, result.output
    opted_in = json.loads(result.stdout)
    opted = {x["Name"]: x["DefaultValue"] for x in opted_in["Parameters"]}
    assert opted["StepsImageUri"] == (
        f"571004829621.dkr.ecr.{REGION}.amazonaws.com/sagemaker-spark-processing:3.5-cpu-py312-v1.3")
    assert "catboost==1.2.10" in opted["PipInstall"].split()
    processing = [step for step in opted_in["Steps"] if step["Type"] == "Processing"]
    assert len(processing) == sum(step.kind in ("pyspark", "processing") for step in STEPS)
    for step in processing:  # every job installs them, within the API's 256 characters per value
        installed = render(step["Arguments"]["Environment"]["ECOMREC_PIP_INSTALL"], opted)
        assert installed == runtime_requirements() and len(installed) <= API_STRING_LIMIT
    assert network_attempts == []


def test_parameters(definition: dict[str, Any], defaults: dict[str, Any]) -> None:
    config = PipelineConfig()
    types = {parameter["Name"]: parameter["Type"] for parameter in definition["Parameters"]}
    uris = catboost_uris(REGION)
    assert defaults["InputDataUri"] == f"s3://{BUCKET}/ecomrec/raw/"  # a prefix: not raw-old/ too
    assert defaults["OutputUri"] == f"s3://{BUCKET}/ecomrec/runs"
    assert (defaults["CatBoostImageUri"], defaults["CatBoostScriptUri"], defaults["CatBoostModelUri"]) == (
        uris.image_uri, uris.script_uri, uris.model_uri)
    assert defaults["TestDays"] == config.etl.test_days
    assert types["TestDays"] == "Integer"
    assert defaults["LabelDays"] == config.etl.label_days
    assert defaults["AlsRank"] == config.als.factors
    assert defaults["AlsIterations"] == config.als.iterations
    assert defaults["CatBoostLearningRate"] == config.ranker.learning_rate
    assert types["CatBoostLearningRate"] == "Float"
    assert defaults["NdcgAt10Floor"] == config.gate.ndcg_at_10_floor
    assert defaults["ModelPackageGroup"] == config.model_package_group
    for name in ("SparkInstanceType", "ProcessingInstanceType", "TrainingInstanceType", "TrainingInstanceCount"):
        assert name in defaults
    approval = next(x for x in definition["Parameters"] if x["Name"] == "ModelApprovalStatus")
    assert approval["DefaultValue"] == PENDING
    assert approval["EnumValues"] == list(APPROVAL_STATUSES)


def test_config_parameters_reach_every_step(steps: dict[str, dict[str, Any]],
                                            defaults: dict[str, Any]) -> None:
    """Changing a parameter at start changes the --config every step parses (one config document)."""
    overridden = {**defaults, "TestDays": 14, "AlsRank": 32, "NdcgAt10Floor": 0.125,
                  "ModelPackageGroup": "shop-a"}
    for graph_step in STEPS:
        if graph_step.kind in ("pyspark", "processing"):
            config = step_config(_container_argv(steps[graph_step.name], overridden))
            assert (config.etl.test_days, config.als.factors, config.gate.ndcg_at_10_floor,
                    config.model_package_group) == (14, 32, 0.125, "shop-a")


def test_training_uses_the_builtin_catboost(steps: dict[str, dict[str, Any]],
                                            defaults: dict[str, Any]) -> None:
    args = steps["train"]["Arguments"]
    assert args["AlgorithmSpecification"]["TrainingImage"] == {"Get": "Parameters.CatBoostImageUri"}
    channels = {c["ChannelName"]: c for c in args["InputDataConfig"]}
    assert set(channels) == {s.TRAINING_CHANNEL, s.VALIDATION_CHANNEL, "model"}
    for name in s.CHANNELS:
        uri = channels[name]["DataSource"]["S3DataSource"]["S3Uri"]
        assert render(uri, defaults, lambda ref: "s3://b/run/ranker_data") == f"s3://b/run/ranker_data/{name}/"
        assert "Steps.ranker_data.ProcessingOutputConfig" in json.dumps(uri)
    assert channels["model"]["DataSource"]["S3DataSource"]["S3Uri"] == {"Get": "Parameters.CatBoostModelUri"}
    hyper = args["HyperParameters"]
    assert hyper["sagemaker_program"] == "transfer_learning.py"
    assert hyper["sagemaker_submit_directory"] == {"Get": "Parameters.CatBoostScriptUri"}
    algorithm = {name: render(value, defaults) for name, value in hyper.items()
                 if not name.startswith("sagemaker_")}
    # every value reaches the container as a string under a name the built-in algorithm knows, and the
    # ranker's strict parser (the built-in script's types) reads back the configured values
    assert set(algorithm) <= set(PARSERS)
    assert all(isinstance(value, str) for value in algorithm.values())
    expected = hyperparameters_from_config(PipelineConfig().ranker)
    assert parse_hyperparameters(algorithm) == parse_hyperparameters(expected)


def test_quality_gate_reads_what_the_evaluation_writes(steps: dict[str, dict[str, Any]]) -> None:
    """The JsonGet paths are schema.metric_json_path, and they resolve in an evaluation.json laid out by
    the evaluation code itself (recompute_metrics, the writer's metric blocks) on a tiny example."""
    from components.evaluation.recompute import recompute_metrics

    truth = pd.DataFrame({s.USER_ID: ["u1", "u1", "u2"], s.ITEM_ID: ["a", "b", "c"], s.SEGMENT: [s.WARM] * 3})
    rows = [{s.RECOMMENDER: r, s.USER_ID: u, s.RANK: rank, s.ITEM_ID: item, s.SCORE: 1.0 / rank}
            for r in s.RECOMMENDERS for u in ("u1", "u2") for rank, item in enumerate("abcd", start=1)]
    evaluation = recompute_metrics(truth, pd.DataFrame(rows), catalog_items=4)
    evaluation["gate"] = baseline_comparison(evaluation["ranking_metrics"])  # as the evaluation step writes it

    register = steps["register"]["Arguments"]
    gets = [condition["LeftValue"]["Std:JsonGet"] for condition in register["Conditions"]]
    gets.append(register["Conditions"][1]["RightValue"]["Std:JsonGet"])
    assert [g["Path"] for g in gets] == [s.metric_json_path(s.TWO_STAGE, "ndcg", 10),
                                         s.metric_json_path(s.TWO_STAGE, "ndcg", 10),
                                         s.GATE_RATIO_PATH,
                                         s.metric_json_path(s.ALS, "ndcg", 10)]
    assert {g["PropertyFile"]["Get"] for g in gets} == {"Steps.evaluation.PropertyFiles.EvaluationReport"}
    assert [c["Type"] for c in register["Conditions"]] == ["GreaterThanOrEqualTo", "GreaterThan",
                                                           "GreaterThanOrEqualTo"]
    assert register["Conditions"][0]["RightValue"] == {"Get": "Parameters.NdcgAt10Floor"}
    assert register["Conditions"][2]["RightValue"] == 1.0 + PipelineConfig().gate.baseline_margin
    for get in gets:
        node: Any = evaluation
        for key in get["Path"].split("."):
            node = node[key]
        assert isinstance(node, float)


def _conditions_hold(conditions: list[dict[str, Any]], evaluation: dict[str, Any], floor: float) -> bool:
    """A ConditionStep's verdict as the service computes it: every condition holds, JsonGet resolving its
    path in the property file (https://docs.aws.amazon.com/sagemaker/latest/dg/
    build-and-manage-steps-types.html#step-type-condition)."""
    def value(expr: Any) -> float:
        if isinstance(expr, dict) and "Std:JsonGet" in expr:
            node: Any = evaluation
            for key in expr["Std:JsonGet"]["Path"].split("."):
                node = node[key]
            return float(node)
        return float(render(expr, {"NdcgAt10Floor": floor}))

    compare = {"GreaterThanOrEqualTo": lambda a, b: a >= b, "GreaterThan": lambda a, b: a > b}
    return all(compare[c["Type"]](value(c["LeftValue"]), value(c["RightValue"])) for c in conditions)


def test_sagemaker_gate_follows_the_local_rule(steps: dict[str, dict[str, Any]]) -> None:
    """One rule (components/registry/gate.py): the ConditionStep passes exactly when check_gate does."""
    conditions = steps["register"]["Arguments"]["Conditions"]
    gate = PipelineConfig().gate
    cases = [(0.40, 0.30, 0.35), (0.34, 0.30, 0.35), (0.35, 0.30, 0.35), (0.40, 0.41, 0.35), (0.01, 0.0, 0.0)]
    verdicts = []
    for two_stage, als, tifu_knn in cases:
        ranking = {name: {"ndcg_at_10": {"value": value}} for name, value in
                   {s.TWO_STAGE: two_stage, s.ALS: als, s.TIFU_KNN: tifu_knn, s.POPULAR: 0.1}.items()}
        evaluation = {"ranking_metrics": ranking, "gate": baseline_comparison(ranking)}
        local = check_gate(evaluation, gate).passed
        assert _conditions_hold(conditions, evaluation, gate.ndcg_at_10_floor) == local, (two_stage, als, tifu_knn)
        verdicts.append(local)
    assert verdicts == [True, False, True, False, False]
    (property_file,) = steps["evaluation"]["PropertyFiles"]
    assert property_file == {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation",
                             "FilePath": s.EVALUATION_FILE}


def test_registration_when_the_gate_passes_else_fail(steps: dict[str, dict[str, Any]],
                                                     defaults: dict[str, Any]) -> None:
    register = steps["register"]["Arguments"]
    (model_step,) = register["IfSteps"]
    (fail_step,) = register["ElseSteps"]
    assert (model_step["Name"], model_step["Type"]) == (REGISTER_MODEL_STEP, "RegisterModel")
    assert (fail_step["Name"], fail_step["Type"]) == (GATE_FAILED_STEP, "Fail")
    package = model_step["Arguments"]
    assert package["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert package["ModelPackageGroupName"] == {"Get": "Parameters.ModelPackageGroup"}
    (container,) = package["InferenceSpecification"]["Containers"]
    assert container["Image"] == {"Get": "Parameters.InferenceImageUri"}
    assert defaults["InferenceImageUri"] == (
        f"123456789012.dkr.ecr.{REGION}.amazonaws.com/ecomrec-inference:latest")
    assert render(container["ModelDataUrl"], defaults, lambda ref: "s3://b/run/bundle") == \
        f"s3://b/run/bundle/{s.MODEL_ARCHIVE}"
    assert "Steps.bundle.ProcessingOutputConfig" in json.dumps(container["ModelDataUrl"])
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert render(statistics["S3Uri"], defaults, lambda ref: "s3://b/run/evaluation") == \
        f"s3://b/run/evaluation/{s.EVALUATION_FILE}"
    metadata = package["CustomerMetadataProperties"]
    assert s.metric_json_path(s.TWO_STAGE, "ndcg", 10) in metadata
    # the bundle's digest (finding 5 of issue 13): read from the bundle step's bundle_digest.json
    (digest,) = [v["Std:JsonGet"] for v in metadata["bundle_sha256"]["Std:Join"]["Values"]]
    assert digest["Path"] == "sha256"
    assert digest["PropertyFile"]["Get"] == "Steps.bundle.PropertyFiles.BundleDigest"
    assert steps["bundle"]["PropertyFiles"] == [{"PropertyFileName": "BundleDigest", "OutputName": "bundle",
                                                 "FilePath": s.BUNDLE_DIGEST_FILE}]
    assert len(metadata) <= 50
    message = render(fail_step["Arguments"]["ErrorMessage"], defaults, lambda ref: "0.01")
    assert message.startswith("quality gate failed, nothing registered: two_stage ndcg_at_10")
    assert "the strongest baseline" in message
    assert str(defaults["NdcgAt10Floor"]) in message


def test_cli_errors_name_what_is_missing(network_attempts: list[object]) -> None:
    from pipelines.cli import app

    runner = CliRunner()
    cases = [
        (["--bucket", BUCKET, "--region", REGION], "no execution role"),
        (["--role", ROLE, "--region", REGION], "no bucket"),
        (["--role", "EcomrecSageMaker", "--bucket", BUCKET, "--region", REGION], "not an IAM role ARN"),
        (["--role", ROLE, "--bucket", "s3://x/y", "--region", REGION], "not an S3 bucket name"),
        (["--role", ROLE, "--bucket", BUCKET, "--region", "ap-southeast-7"], "refresh-jumpstart"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, ["pipeline", "definition", *arguments],
                               env={"ECOMREC_SAGEMAKER_ROLE": None, "ECOMREC_BUCKET": None})
        assert result.exit_code == 2, (arguments, result.output)
        assert message in " ".join(result.output.split()), (arguments, result.output)
    result = runner.invoke(app, ["pipeline", "definition", "--role", ROLE, "--bucket", BUCKET],
                           env={"AWS_REGION": None, "AWS_DEFAULT_REGION": None, "AWS_PROFILE": None,
                                "AWS_CONFIG_FILE": "/nonexistent"})
    assert result.exit_code == 2
    assert "no AWS region" in result.output


# ---------------------------------------------------------------------------------------------- runner, moto
class _RecordedSteps:
    """moto has no ListPipelineExecutionSteps: this stands in for its paginator with a response recorded
    in the shape of the SageMaker API reference (a fake, like moto itself)."""

    PAGES: ClassVar[list[dict[str, Any]]] = [{"PipelineExecutionSteps": [
        {"StepName": "etl", "StepStatus": "Succeeded", "StartTime": datetime(2025, 1, 1, 10, tzinfo=UTC),
         "EndTime": datetime(2025, 1, 1, 10, 20, tzinfo=UTC),
         "Metadata": {"ProcessingJob": {"Arn": "arn:aws:sagemaker:eu-west-1:123456789012:processing-job/e"}}},
        {"StepName": "als", "StepStatus": "Failed", "FailureReason": "AlgorithmError: out of memory",
         "StartTime": datetime(2025, 1, 1, 10, 21, tzinfo=UTC)},
    ]}]

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_paginator(self, operation: str) -> Any:
        if operation != "list_pipeline_execution_steps":
            return self.client.get_paginator(operation)
        pages = self.PAGES

        class Paginator:
            def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
                return pages

        return Paginator()


@pytest.fixture
def moto_clients(network_attempts: list[object]) -> Iterator[tuple[Any, Any]]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield boto3.client("sagemaker", region_name=REGION), s3


def _for_current_code(definition: dict[str, Any]) -> tuple[Any, str]:
    """Settings and definition text for the code as it is now (other work may have changed files since
    the module's definition was built; the version is the only difference that makes)."""
    from pipelines.sagemaker.pipeline import PipelineSettings

    settings = PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION)
    text = json.dumps(definition)
    built_for = text.split(f"s3://{BUCKET}/ecomrec/code/")[1].split("/")[0]
    assert settings.code_version is not None
    return settings, text.replace(built_for, settings.code_version)


def test_upsert_start_and_status_on_moto(definition: dict[str, Any], moto_clients: tuple[Any, Any]) -> None:
    """moto stands in for SageMaker and S3 (a fake)."""
    from pipelines.sagemaker import runner

    sagemaker, s3 = moto_clients
    settings, text = _for_current_code(definition)
    created = runner.upsert(text, settings, sagemaker_client=sagemaker, s3_client=s3)
    assert created.created
    assert created.definition_s3_uri == ""
    # the code the definition points at is there: the package zip and the launcher
    archive = s3.get_object(Bucket=BUCKET, Key=f"ecomrec/code/{settings.code.version}/{CODE_ARCHIVE}")["Body"]
    with zipfile.ZipFile(io.BytesIO(archive.read())) as handle:
        names = set(handle.namelist())
    assert {"components/stepargs.py", "pipelines/graph.py", "pipelines/sagemaker/entry.py"} <= names
    assert {step.entry_point.replace(".", "/") + ".py" for step in STEPS} <= names
    launcher = s3.get_object(Bucket=BUCKET, Key=f"ecomrec/code/{settings.code.version}/{LAUNCHER}")["Body"]
    assert launcher.read() == (Path(runner.__file__).parent / LAUNCHER).read_bytes()

    updated = runner.upsert(text, settings, sagemaker_client=sagemaker, s3_client=s3)
    assert not updated.created
    assert updated.pipeline_arn == created.pipeline_arn
    assert sagemaker.describe_pipeline(PipelineName="ecomrec")["PipelineDefinition"] == text
    names_declared = runner.parameter_names("ecomrec", sagemaker_client=sagemaker)
    assert names_declared == [parameter["Name"] for parameter in definition["Parameters"]]

    arn = runner.start("ecomrec", sagemaker_client=sagemaker, parameters={"TestDays": "14"}, display_name="t1")
    given = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert given == [{"Name": "TestDays", "Value": "14"}]
    assert runner.latest_execution("ecomrec", sagemaker_client=sagemaker) == arn
    execution = runner.status(arn, sagemaker_client=_RecordedSteps(sagemaker))
    assert execution.arn == arn
    assert execution.status == sagemaker.describe_pipeline_execution(
        PipelineExecutionArn=arn)["PipelineExecutionStatus"]
    assert [(step.name, step.status) for step in execution.steps] == [("etl", "Succeeded"), ("als", "Failed")]
    assert execution.steps[0].job_arn.endswith("processing-job/e")
    assert execution.steps[1].failure_reason == "AlgorithmError: out of memory"


def test_large_definitions_go_through_s3(definition: dict[str, Any], moto_clients: tuple[Any, Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """moto stands in for SageMaker and S3 (a fake)."""
    from pipelines.sagemaker import runner

    sagemaker, s3 = moto_clients
    monkeypatch.setattr(runner, "INLINE_DEFINITION_LIMIT", 1000)
    settings, text = _for_current_code(definition)
    result = runner.upsert(text, settings, sagemaker_client=sagemaker, s3_client=s3)
    assert result.definition_s3_uri.startswith(f"s3://{BUCKET}/ecomrec/definitions/ecomrec/")
    key = result.definition_s3_uri.removeprefix(f"s3://{BUCKET}/")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() == text
    # moto read it from there (its describe returns the parsed dict's repr, so only presence is checked)
    assert sagemaker.describe_pipeline(PipelineName="ecomrec")["PipelineDefinition"]


def test_start_errors_are_explicit(definition: dict[str, Any], moto_clients: tuple[Any, Any]) -> None:
    """moto stands in for SageMaker (a fake); the CLI creates its clients inside mock_aws."""
    from components.errors import EcomrecError
    from pipelines.cli import app
    from pipelines.sagemaker import runner

    sagemaker, s3 = moto_clients
    with pytest.raises(EcomrecError, match="upsert"):
        runner.start("missing", sagemaker_client=sagemaker)
    settings, text = _for_current_code(definition)
    runner.upsert(text, settings, sagemaker_client=sagemaker, s3_client=s3)
    result = CliRunner().invoke(app, ["pipeline", "start", "--region", REGION, "--param", "TestDay=14"])
    assert result.exit_code == 2
    assert "unknown parameters ['TestDay']" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["pipeline", "start", "--region", REGION, "--param", "TestDays=14"])
    assert result.exit_code == 0, result.output
    assert "started arn:aws:sagemaker:" in " ".join(result.output.split())


def test_settings_reach_spark_steps_verbatim_through_the_shell_line(network_attempts: list[object]) -> None:
    """smspark-submit quotes each argument for its /bin/sh line, so a setting holding shell syntax (a quote,
    a space, $) arrives unchanged; a step that quoted it again would receive the quotes."""
    from components.config import RankerConfig
    from pipelines.sagemaker.pipeline import PipelineSettings, get_pipeline

    config = PipelineConfig(ranker=RankerConfig(eval_metric="AUC' $HOME \"x"))
    definition = json.loads(get_pipeline(PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION,
                                                          config=config)).definition())
    parameters = {x["Name"]: x["DefaultValue"] for x in definition["Parameters"]}
    for step in definition["Steps"]:
        if step["Type"] == "Processing":
            assert step_config(_container_argv(step, parameters)).ranker.eval_metric == "AUC' $HOME \"x"
    assert network_attempts == []


# SageMaker's CreateProcessingJob caps each ContainerArguments item and each Environment value at 256
# characters (botocore only checks minimum lengths, so nothing offline would refuse a longer one).
API_STRING_LIMIT = 256


def test_every_container_argument_and_environment_value_fits_the_api_limits(
        steps: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> None:
    checked = 0
    for step in steps.values():
        arguments = step["Arguments"]
        app = arguments.get("AppSpecification")
        if app is None:
            continue
        for value in [*app["ContainerArguments"], *arguments.get("Environment", {}).values()]:
            text = str(render(value, defaults))
            assert len(text) <= API_STRING_LIMIT, (step["Name"], len(text), text[:80])
            checked += 1
    assert checked > 40


def test_a_non_default_config_reaches_the_steps_as_settings(network_attempts: list[object]) -> None:
    from components.config import RankerConfig
    from pipelines.sagemaker.pipeline import PipelineSettings, get_pipeline

    config = PipelineConfig(ranker=RankerConfig(eval_metric="NDCG:top=10", negatives_per_user=20))
    settings = PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION, config=config)
    definition = json.loads(get_pipeline(settings).definition())
    parameters = {x["Name"]: x["DefaultValue"] for x in definition["Parameters"]}
    for step in definition["Steps"]:
        if step["Type"] == "Processing":
            assert step_config(_container_argv(step, parameters)) == config, step["Name"]
    assert network_attempts == []


def test_plain_steps_run_the_images_python_3_12_and_channels_take_only_their_folder(
        steps: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> None:
    from pipelines.sagemaker.pipeline import PROCESSING_PYTHON

    kinds = {step.name: step.kind for step in STEPS}
    for name, step in steps.items():
        if kinds.get(name) == "processing":  # /usr/bin/python3 in the Spark image is the OS's 3.9
            assert step["Arguments"]["AppSpecification"]["ContainerEntrypoint"][0] == PROCESSING_PYTHON
    [training] = [step for step in steps.values() if step["Type"] == "Training"]
    uris = {c["ChannelName"]: str(render(c["DataSource"]["S3DataSource"]["S3Uri"], defaults))
            for c in training["Arguments"]["InputDataConfig"] if c["ChannelName"] != "model"}
    assert set(uris) == {"training", "validation"}
    assert all(uri.endswith(f"/{name}/") for name, uri in uris.items()), uris  # not validation_ranking/


# https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-retry-policy.html: the exception types a retry
# policy can name; Processing, Training and RegisterModel steps take them, Condition and Fail steps do not.
SERVICE_ERRORS = {"Step.SERVICE_FAULT", "Step.THROTTLING"}
JOB_ERRORS = {"SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT", "SageMaker.JOB_INTERNAL_ERROR"}


def test_steps_that_call_sagemaker_retry_throttling_and_capacity_errors(steps: dict[str, dict[str, Any]]) -> None:
    for name, step in steps.items():
        if step["Type"] not in ("Processing", "Training"):
            assert "RetryPolicies" not in step, name
            continue
        covered = {t for policy in step["RetryPolicies"] for t in policy["ExceptionType"]}
        assert covered == SERVICE_ERRORS | JOB_ERRORS, name
        for policy in step["RetryPolicies"]:
            assert 1 < policy["MaxAttempts"] <= 5 and policy["BackoffRate"] >= 1, (name, policy)
    (model_step,) = steps["register"]["Arguments"]["IfSteps"]
    assert {t for p in model_step["RetryPolicies"] for t in p["ExceptionType"]} == SERVICE_ERRORS


def test_runtime_and_volumes_are_parameters_and_jobs_run_on_one_processing_instance(
        steps: dict[str, dict[str, Any]], defaults: dict[str, Any]) -> None:
    """Each step writes its outputs to local files that SageMaker uploads: with more processing instances
    Spark's executors would write them to the workers' disks. So no *InstanceCount parameter but the
    training one, and every processing job asks for 1 instance."""
    assert [name for name in defaults if name.endswith("InstanceCount")] == ["TrainingInstanceCount"]
    assert 3600 <= defaults["MaxRuntimeSeconds"] <= 24 * 3600
    kinds = {step.name: step.kind for step in STEPS}
    for name, step in steps.items():
        arguments = step["Arguments"]
        if step["Type"] == "Processing":
            cluster = arguments["ProcessingResources"]["ClusterConfig"]
            assert cluster["InstanceCount"] == 1, name
            volume = "SparkVolumeSizeGb" if kinds[name] == "pyspark" else "ProcessingVolumeSizeGb"
            assert cluster["VolumeSizeInGB"] == {"Get": f"Parameters.{volume}"}, name
        elif step["Type"] == "Training":
            assert arguments["ResourceConfig"]["VolumeSizeInGB"] == {"Get": "Parameters.TrainingVolumeSizeGb"}
        else:
            continue
        assert arguments["StoppingCondition"] == {"MaxRuntimeInSeconds": {"Get": "Parameters.MaxRuntimeSeconds"}}
    assert all(defaults[f"{kind}VolumeSizeGb"] >= 30 for kind in ("Spark", "Processing", "Training"))


def test_step_caching_is_off_unless_asked_for(steps: dict[str, dict[str, Any]],
                                              network_attempts: list[object]) -> None:
    from components.errors import EcomrecError
    from pipelines.sagemaker.pipeline import PipelineSettings, get_pipeline

    assert all("CacheConfig" not in step for step in steps.values())
    cached = json.loads(get_pipeline(PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION,
                                                      cache_expire_after="P7D")).definition())
    configs = {step["Name"]: step.get("CacheConfig") for step in cached["Steps"]}
    assert configs.pop("register") is None
    assert set(map(json.dumps, configs.values())) == {json.dumps({"Enabled": True, "ExpireAfter": "P7D"})}
    with pytest.raises(EcomrecError, match="ISO 8601"):
        PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION, cache_expire_after="7 days")
    assert network_attempts == []
