"""The step graph on Kubeflow Pipelines v2, proven with KFP itself: its compiler writes the IR, its own
loader reads it back (``kfp.components.load_component_from_file``), and its local runner (``kfp.local``,
SubprocessRunner, kfp 2.17.3: kfp/local/subprocess_task_handler.py and orchestrator/) runs it.

The local run is compared with ``run_local`` on the same data (the session's ``tiny_run``). No ``from __future__
import annotations`` here: KFP reads a pipeline function's annotations as types."""


import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from components import schema as s
from components.checksum import sha256_file
from components.config import GateConfig, PipelineConfig
from components.errors import QualityGateError
from components.registry.base import PENDING
from components.registry.gate import baseline_comparison, check_gate
from components.registry.local import LocalRegistry
from pipelines.cli import app
from pipelines.graph import STEPS, get_step
from pipelines.kubeflow import pipeline as k
from pipelines.sagemaker.params import config_param_specs
from tests.conftest import TINY_RUN_CONFIG_GATE

runner = CliRunner()


def _compile(tmp_path: Path) -> Any:
    from google.protobuf import json_format
    from kfp import components

    path = tmp_path / "pipeline.yaml"
    result = runner.invoke(app, ["pipeline", "compile", "--target", "kubeflow", "--output", str(path)])
    assert result.exit_code == 0, result.output
    spec = components.load_component_from_file(str(path)).pipeline_spec  # KFP's own loader
    return spec, json_format.MessageToDict(spec.deployment_spec)["executors"]


def _producers(task: Any) -> dict[str, str]:
    return {name: value.task_output_artifact.producer_task for name, value in task.inputs.artifacts.items()}


def _executor(spec: Any, executors: dict[str, Any], component: str) -> dict[str, Any]:
    container: dict[str, Any] = executors[spec.components[component].executor_label]["container"]
    return container


def test_compiled_pipeline_loads_with_kfp_and_its_dag_is_the_step_graph(tmp_path: Path) -> None:
    spec, executors = _compile(tmp_path)
    tasks = spec.root.dag.tasks
    assert set(tasks) == {k.task_name(step) for step in STEPS} | {k.CONFIG_TASK, "importer"}
    for step in STEPS:
        task = tasks[k.task_name(step)]
        expected = {name: "importer" if name == "raw" else k.task_name(get_step(name)) for name in step.inputs}
        assert _producers(task) == expected, step.name
        assert task.inputs.parameters["config"].task_output_parameter.producer_task == k.CONFIG_TASK
        if step.kind != "register":  # one component per step, running the step's own main(argv)
            container = _executor(spec, executors, task.component_ref.name)
            assert f"run_step({step.entry_point!r}" in container["command"][-1], step.name
            assert container["image"] == "{{$.inputs.parameters['pipelinechannel--StepsImageUri']}}"
            assert container["resources"]["resourceMemoryRequest"] == k.DEFAULT_RESOURCES[step.kind].memory
    assert tasks["importer"].inputs.parameters["uri"].component_input_parameter == k.INPUT_DATA_URI
    # no KFP cache: it keys the raw data by its URI, and new data under the same URI must rerun the ETL
    assert not any(task.caching_options.enable_cache for task in tasks.values())
    spark_env = _executor(spec, executors, "comp-etl").get("env", [])
    assert {"name": "ECOMREC_SPARK_DRIVER_MEMORY", "value": "8g"} in spark_env  # Spark in local mode, in the pod

    # the register step: gate on the evaluation it reads, then If(passed) register-model / Else gate-failed
    register = spec.components[tasks["register"].component_ref.name].dag.tasks
    assert register["gate"].inputs.artifacts["evaluation"].component_input_artifact == "evaluation"
    (branches,) = [task for name, task in register.items() if name != "gate"]
    conditions = spec.components[branches.component_ref.name].dag.tasks.values()
    by_inner_task = {}
    for condition in conditions:
        (inner,) = spec.components[condition.component_ref.name].dag.tasks
        by_inner_task[inner] = condition.trigger_policy.condition
    passed = "inputs.parameter_values['pipelinechannel--gate-passed'] == true"
    assert by_inner_task == {k.REGISTER_MODEL_TASK: passed, k.GATE_FAILED_TASK: f"!({passed})"}
    register_model = _executor(spec, executors, "comp-register-model")["command"][-1]
    assert "run_step('components.registry.step'" in register_model
    # the SageMaker registry records the bundle artifact's URI (s3:// on a cluster), not the pod's copy
    assert "['--model-data-url', bundle.uri.rstrip('/') + '/model.tar.gz']" in register_model
    assert "['--evaluation-url', evaluation.uri.rstrip('/') + '/evaluation.json']" in register_model
    assert "check_gate(" in _executor(spec, executors, "comp-gate")["command"][-1]

    # parameters: SageMaker's config-backed ones with the same defaults, plus the data, image and registry
    parameters = spec.root.input_definitions.parameters
    for param in config_param_specs(PipelineConfig()):
        assert parameters[param.name].default_value == json_format_value(param.default), param.name
    assert not parameters[k.INPUT_DATA_URI].is_optional  # a run must say where the data is
    assert parameters[k.STEPS_IMAGE_URI].default_value.string_value == k.DEFAULT_IMAGE
    assert {k.REGISTRY, k.INFERENCE_IMAGE_URI} <= set(parameters)
    # nothing is pip-installed when a task starts (the image has it all; kfp.local runs offline)
    assert not any("pip install" in " ".join(e["container"]["command"]) for e in executors.values()
                   if "container" in e)


def json_format_value(value: object) -> Any:
    from google.protobuf import struct_pb2

    proto = struct_pb2.Value()
    if isinstance(value, str):
        proto.string_value = value
    else:
        proto.number_value = float(value)  # type: ignore[arg-type]
    return proto


def test_compile_rejects_an_unknown_target(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pipeline", "compile", "--target", "sagemaker", "--output", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "ecomrec pipeline definition" in result.output
    assert not (tmp_path / "p").exists()


def test_a_bad_parameter_fails_the_config_task_naming_the_field() -> None:
    from pipelines.kubeflow.runtime import resolve_config

    with pytest.raises(ValueError, match=r"etl\.test_days"):
        resolve_config(PipelineConfig().to_json(), {"etl.test_days": 0})
    resolved = PipelineConfig.model_validate_json(resolve_config(PipelineConfig().to_json(), {
        "etl.test_days": 14, "model_package_group": "shop-a", "gate.ndcg_at_10_floor": 0.2}))
    assert (resolved.etl.test_days, resolved.model_package_group, resolved.gate.ndcg_at_10_floor) == (14, "shop-a", 0.2)


@pytest.mark.spark
def test_kubeflow_local_run_matches_run_local(tiny_run: Path, tmp_path: Path) -> None:
    """`ecomrec pipeline run --kubeflow-local` on tiny_run's raw data: every step under OUTPUT/<step>/, the
    same evaluation.json value for value, and the same bundle registered as PendingManualApproval."""
    output, registry = tmp_path / "run", tmp_path / "registry"
    config = PipelineConfig(gate=GateConfig(**TINY_RUN_CONFIG_GATE)).to_json()
    result = runner.invoke(app, ["pipeline", "run", "--kubeflow-local", "--data", str(tiny_run.parent / "raw"),
                                 "--output", str(output), "--registry", str(registry), "--config", config])
    assert result.exit_code == 0, result.output[-3000:]
    assert {path.name for path in output.iterdir()} == {step.name for step in STEPS} | {k.GATE_TASK}
    evaluation = json.loads((output / "evaluation" / s.EVALUATION_FILE).read_text())
    assert evaluation == json.loads((tiny_run / "evaluation" / s.EVALUATION_FILE).read_text())
    manifest = json.loads((output / "bundle" / s.BUNDLE_MANIFEST).read_text())
    assert manifest["version"] == json.loads((tiny_run / "bundle" / s.BUNDLE_MANIFEST).read_text())["version"]
    (version,) = LocalRegistry(registry).list_versions("ecomrec")
    (local_version,) = LocalRegistry(tiny_run.parent / "registry").list_versions("ecomrec")
    assert (version.status, version.description) == (PENDING, local_version.description)
    assert version.description == f"bundle {manifest['version']}"
    assert "registered ecomrec version 1 as PendingManualApproval" in " ".join(result.output.split())


def _register_only(tiny_run: Path) -> Any:
    """The pipeline's register step (its production sub-pipeline) fed tiny_run's bundle and evaluation, so
    the gate's two branches run in seconds instead of a whole pipeline each."""
    from kfp import dsl

    step = get_step("register")
    register = k.register_component(step, k.KubeflowSettings())

    @dsl.pipeline(name="register-only")
    def register_only(config: str, registry: str) -> None:
        inputs = {name: dsl.importer(artifact_uri=str(tiny_run / name), artifact_class=dsl.Artifact).output
                  for name in step.inputs}
        register(**inputs, config=config, registry=registry)

    return register_only


@pytest.mark.spark
def test_a_failed_gate_stops_before_registration(tiny_run: Path, tmp_path: Path) -> None:
    from pipelines.kubeflow.local import run_locally

    evaluation = json.loads((tiny_run / "evaluation" / s.EVALUATION_FILE).read_text())
    two_stage = evaluation["ranking_metrics"][s.TWO_STAGE]["ndcg_at_10"]["value"]
    # the tiny run's gate (no als or baseline rule: repurchase leads on the tiny shop) with a floor above it
    failing = GateConfig(**{**TINY_RUN_CONFIG_GATE, "ndcg_at_10_floor": two_stage + 0.01})
    verdict = check_gate(evaluation, failing)  # the registry's rule, which the gate task must apply
    assert not verdict.passed
    arguments = {"config": PipelineConfig(gate=failing).to_json(), "registry": str(tmp_path / "registry")}
    with pytest.raises(QualityGateError, match="nothing registered") as raised:
        run_locally(_register_only(tiny_run), arguments, tmp_path / "out")
    assert str(raised.value).endswith("; ".join(verdict.reasons))
    assert json.loads((tmp_path / "out" / k.GATE_TASK / "gate.json").read_text()) == asdict(verdict)
    assert not (tmp_path / "out" / "register").exists()
    assert LocalRegistry(tmp_path / "registry").list_versions("ecomrec") == []

    # the same sub-pipeline with a gate the evaluation passes registers: the test above can tell them apart
    passing = PipelineConfig(gate=GateConfig(**{**TINY_RUN_CONFIG_GATE, "ndcg_at_10_floor": two_stage - 0.01}))
    run_locally(_register_only(tiny_run), {**arguments, "config": passing.to_json()}, tmp_path / "out")
    assert [v.status for v in LocalRegistry(tmp_path / "registry").list_versions("ecomrec")] == [PENDING]
    assert (tmp_path / "out" / "register" / "registration.json").exists()


def _fake_run(root: Path) -> tuple[Path, Path]:
    """A bundle and an evaluation folder as the register step reads them; two_stage beats every baseline."""
    bundle, evaluation = root / "bundle", root / "evaluation"
    bundle.mkdir(parents=True)
    evaluation.mkdir()
    (bundle / s.BUNDLE_MANIFEST).write_text(json.dumps({"version": "2011-11-09-abc"}))
    (bundle / s.MODEL_ARCHIVE).write_bytes(b"bundle")
    # the digest the bundle step writes beside the archive (registration records it: issue 13)
    (bundle / s.BUNDLE_DIGEST_FILE).write_text(json.dumps({"sha256": sha256_file(bundle / s.MODEL_ARCHIVE)}))
    ranking = {r: {s.metric_key(m, n): {"value": 0.1} for m in s.METRICS for n in s.KS} for r in s.RECOMMENDERS}
    ranking[s.TWO_STAGE][s.metric_key("ndcg", 10)] = {"value": 0.5}
    document = {"ranking_metrics": ranking, "gate": baseline_comparison(ranking)}  # as the evaluation writes it
    (evaluation / s.EVALUATION_FILE).write_text(json.dumps(document))
    return bundle, evaluation


def test_the_register_step_registers_into_sagemaker_through_the_same_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--registry sagemaker` (a Kubeflow run on AWS): the SageMaker Model Registry (moto's) gets a
    PendingManualApproval package pointing at the bundle's S3 URI with the inference image, and at the
    evaluation's (ModelMetrics), so the registry port, hence the console, reads the whole evaluation.json."""
    import boto3
    from moto import mock_aws

    from components.errors import RegistryError
    from components.registry import step as register_step
    from components.registry.sagemaker import SageMakerRegistry

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    bundle, evaluation = _fake_run(tmp_path)
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ecomrec-inference:1"
    argv = ["--bundle", str(bundle), "--evaluation", str(evaluation), "--output", str(tmp_path / "register"),
            "--set", "gate.ndcg_at_10_floor=0.0", "--registry", "sagemaker", "--image-uri", image]
    evaluation_url = "s3://runs/exec-1/evaluation/evaluation.json"
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="runs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="runs", Key="exec-1/evaluation/evaluation.json",
                      Body=(evaluation / s.EVALUATION_FILE).read_bytes())
        s3.put_object(Bucket="runs", Key="exec-1/bundle/model.tar.gz", Body=(bundle / s.MODEL_ARCHIVE).read_bytes())
        with pytest.raises(RegistryError, match="needs the bundle in S3"):  # the pod's copy is not enough
            register_step.main(argv)
        register_step.main([*argv, "--model-data-url", "s3://runs/exec-1/bundle/model.tar.gz",
                            "--evaluation-url", evaluation_url])
        (version,) = SageMakerRegistry(boto3.client("sagemaker"), s3).list_versions("ecomrec")
    assert (version.status, version.model_data_url, version.image_uri) == (
        PENDING, "s3://runs/exec-1/bundle/model.tar.gz", image)
    assert version.metrics["evaluation_uri"] == evaluation_url
    assert version.metrics["gate"] == json.loads((evaluation / s.EVALUATION_FILE).read_text())["gate"]
    assert version.description == "bundle 2011-11-09-abc"


@pytest.mark.slow
@pytest.mark.spark
def test_kubeflow_local_run_matches_run_local_on_online_retail(online_retail_run: Path, tmp_path: Path) -> None:
    """The session's Online Retail run (run_local) against the Kubeflow pipeline under kfp.local on the
    same imported log: the same evaluation.json and bundle version, registered PendingManualApproval."""
    from pipelines.kubeflow.local import run_kubeflow_local

    raw = online_retail_run.parent / "raw"
    if not raw.is_dir():  # ECOMREC_RUN_DIR may name a run folder without its raw/ beside it
        pytest.skip(f"no imported Online Retail at {raw}")
    run_kubeflow_local(raw, tmp_path / "run", PipelineConfig(), registry=tmp_path / "registry")
    evaluation = json.loads((tmp_path / "run" / "evaluation" / s.EVALUATION_FILE).read_text())
    assert evaluation == json.loads((online_retail_run / "evaluation" / s.EVALUATION_FILE).read_text())
    manifest = json.loads((tmp_path / "run" / "bundle" / s.BUNDLE_MANIFEST).read_text())
    assert manifest["version"] == json.loads((online_retail_run / "bundle" / s.BUNDLE_MANIFEST).read_text())["version"]
    (version,) = LocalRegistry(tmp_path / "registry").list_versions("ecomrec")
    assert (version.status, version.description) == (PENDING, f"bundle {manifest['version']}")


def test_a_task_runs_its_steps_main_with_the_local_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What every component body calls (pipelines/kubeflow/runtime.py run_step), without kfp: the step's
    main(argv) gets the local runner's argv. It once imported a helper the SageMaker launcher had dropped,
    so every Kubeflow task failed before its step ran."""
    from pipelines.kubeflow.runtime import run_step

    (tmp_path / "probe_step.py").write_text(
        "import json, sys\n"
        "def main(argv):\n"
        f"    open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(argv))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_step("probe_step", {"bundle": "/in/bundle", "evaluation": "/in/evaluation"}, "/out", "{}",
             ["--registry", "sagemaker"])
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "--bundle", "/in/bundle", "--evaluation", "/in/evaluation", "--output", "/out", "--config", "{}",
        "--registry", "sagemaker"]


def test_a_task_without_pyspark_gets_the_images_spark_on_its_path(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps image's venv has no pyspark (containers/steps/Dockerfile): a task puts SPARK_HOME/python and
    its py4j zip on sys.path (the helper lives in the runtime every task imports)."""
    import builtins
    import sys

    from pipelines.kubeflow import runtime

    (tmp_path / "python" / "lib").mkdir(parents=True)
    (tmp_path / "python" / "lib" / "py4j-0.10.9.7-src.zip").write_bytes(b"")
    real_import = builtins.__import__

    def no_pyspark(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pyspark":
            raise ImportError("no pyspark in this venv")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    runtime.add_image_spark_to_path()
    assert sys.path[:2] == [str(tmp_path / "python"), str(tmp_path / "python" / "lib" / "py4j-0.10.9.7-src.zip")]
