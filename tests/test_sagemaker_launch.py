"""The rendered SageMaker Pipeline definition, executed step by step as SageMaker's containers launch it
(tests/sagemaker_launch.py says how each launcher is emulated and from which upstream source), on the tiny
shop; its outputs must equal the local runner's on the same data and config (the session's ``tiny_run``).

On 6d53059 (before issue 11's fixes) this harness stops at the first step twice over: the settings reach
argparse with their quotes (``--set "'als.factors=256'"``), and, once unquoted, the ETL's scheme-less
paths resolve against the hdfs:// default file system."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
import pytest

from components import schema as s
from components.checksum import sha256_file
from components.config import GateConfig, PipelineConfig
from tests.conftest import TINY_RUN_CONFIG_GATE, make_tiny_raw
from tests.sagemaker_launch import Context, LaunchError, LaunchResult, Machine, json_get, run_definition

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROLE = "arn:aws:iam::123456789012:role/EcomrecSageMaker"
BUCKET = "ecomrec-launch"
REGION = "eu-west-1"
# What differs between two runs of the same step by design: wall-clock timings and creation times.
VOLATILE_KEYS = {"seconds", "timings", "created_at", "total_seconds"}


def _offline_env(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    config = tmp / "sdk-config.yaml"
    config.write_text("SchemaVersion: '1.0'\n")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
                        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config)}.items():
        monkeypatch.setenv(name, value)


def tiny_settings() -> Any:
    from pipelines.sagemaker.pipeline import PipelineSettings

    return PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION,
                            config=PipelineConfig(gate=GateConfig(**TINY_RUN_CONFIG_GATE)))


@pytest.fixture(scope="module")
def launched(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaunchResult, dict[str, Any]]:
    from pipelines.sagemaker.code import code_objects
    from pipelines.sagemaker.pipeline import definition_json

    root = tmp_path_factory.mktemp("launch")
    patch = pytest.MonkeyPatch()
    _offline_env(patch, root)
    try:
        settings = tiny_settings()
        definition = json.loads(definition_json(settings))
    finally:
        patch.undo()
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    # The JumpStart objects the training job reads (its script and pre-trained model): stand-ins here.
    stand_ins = {defaults["CatBoostScriptUri"]: b"stand-in for sourcedir.tar.gz",
                 defaults["CatBoostModelUri"]: b"stand-in for the JumpStart model artefact"}
    result = run_definition(definition, make_tiny_raw(root / "raw"), root, code_objects(settings.code),
                            stand_in_objects=stand_ins)
    return result, definition


# ------------------------------------------------------------------------------------------------ comparisons
def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every Parquet table under ``root`` (a folder of parts or one file) by relative path, rows sorted."""
    groups: dict[Path, list[Path]] = {}
    for file in sorted(root.rglob("*.parquet")):  # a folder of part files is one table, a named file another
        groups.setdefault(file.parent if file.name.startswith("part-") else file, []).append(file)
    tables: dict[str, pd.DataFrame] = {}
    for key, files in groups.items():
        frame = pads.dataset([str(f) for f in files], format="parquet").to_table().to_pandas()
        scalar = [c for c in frame.columns if not frame[c].map(lambda v: hasattr(v, "__len__")
                                                               and not isinstance(v, str)).any()]
        frame = frame.sort_values(scalar, kind="stable").reset_index(drop=True)
        tables[key.relative_to(root).as_posix()] = frame
    return tables


def _json_files(root: Path) -> dict[str, Any]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


# ------------------------------------------------------------------------------------------------ tests
def test_every_step_runs_and_matches_the_local_run(launched: tuple[LaunchResult, dict[str, Any]],
                                                   tiny_run: Path) -> None:
    result, definition = launched
    assert [step["Name"] for step in definition["Steps"]] == [*list(result.outputs), "register"]
    for step in ("etl", "als", "ranker_data", "evaluation", "bundle"):
        ours, local = result.local(result.outputs[step]), tiny_run / step
        tables, expected = _tables(ours), _tables(local)
        assert sorted(tables) == sorted(expected), step
        for name, frame in expected.items():
            pd.testing.assert_frame_equal(tables[name], frame, check_exact=True, obj=f"{step}/{name}")
        documents = _json_files(ours)
        for name, document in _json_files(local).items():
            if name.startswith(f"{s.CLEAN_DIR}/") or name == "_SUCCESS":
                continue
            if name == s.BUNDLE_DIGEST_FILE:  # the archive holds the manifest's created_at: each run's digest
                # is its own archive's (the contents were compared above: every table, the manifest)
                assert documents[name] == {"sha256": sha256_file(ours / s.MODEL_ARCHIVE)}, f"{step}/{name}"
                continue
            assert _strip(documents[name]) == _strip(document), f"{step}/{name}"
    evaluation = json.loads((result.local(result.outputs["evaluation"]) / s.EVALUATION_FILE).read_text())
    assert evaluation == json.loads((tiny_run / "evaluation" / s.EVALUATION_FILE).read_text())


def test_the_gate_reads_the_produced_evaluation_and_the_package_points_at_it(
        launched: tuple[LaunchResult, dict[str, Any]]) -> None:
    result, _ = launched
    assert result.registered is not None, "the gate (floor 0, no als rule) must pass on the tiny shop"
    evaluation_uri = f"{result.outputs['evaluation']}/{s.EVALUATION_FILE}"
    metrics = result.registered["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert metrics == {"ContentType": "application/json", "S3Uri": evaluation_uri}
    (container,) = result.registered["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == f"{result.outputs['bundle']}/{s.MODEL_ARCHIVE}"
    evaluation = json.loads(result.local(evaluation_uri).read_text())
    two_stage = evaluation["ranking_metrics"][s.TWO_STAGE]["ndcg_at_10"]["value"]
    key = s.metric_json_path(s.TWO_STAGE, "ndcg", 10)
    assert math.isclose(float(result.registered["CustomerMetadataProperties"][key]), two_stage)


def test_the_report_reads_its_training_section_from_the_builtins_model(
        launched: tuple[LaunchResult, dict[str, Any]], tiny_run: Path) -> None:
    """The built-in algorithm writes the model (and CloudWatch logs), no training_report.json: the report's
    training section comes from the model and says so; its numbers are the local trainer's."""
    import html

    from components.ranker.train import FROM_MODEL_NOTE

    result, _ = launched
    with tarfile.open(result.local(result.outputs["train"])) as archive:
        assert archive.getnames() == [s.MODEL_FILE]  # what the evaluation's train input holds on SageMaker
    page = html.unescape((result.local(result.outputs["evaluation"]) / s.REPORT_FILE).read_text())
    local = json.loads((tiny_run / "train" / s.TRAINING_REPORT_FILE).read_text())
    assert f"Ranker training: best iteration {local['best_iteration']}, {local['tree_count']} trees" in page
    assert FROM_MODEL_NOTE in page
    assert FROM_MODEL_NOTE not in (tiny_run / "evaluation" / s.REPORT_FILE).read_text()


def test_a_job_that_would_pip_install_at_start_fails_the_launch(tmp_path: Path) -> None:
    """The harness runs the definition's own ECOMREC_PIP_INSTALL (PipInstall's default, "" on the steps image)
    instead of blanking it, so a definition that installs at start (no egress in a private VPC) fails here."""
    machine = Machine(tmp_path)
    assert machine.env(tmp_path / "job", {"ECOMREC_PIP_INSTALL": ""}, spark=False)["ECOMREC_PIP_INSTALL"] == ""
    with pytest.raises(LaunchError, match=r"pip-install 'numpy==2\.2\.6'"):
        machine.env(tmp_path / "job", {"ECOMREC_PIP_INSTALL": "numpy==2.2.6"}, spark=False)


def test_the_default_gates_jsonget_paths_resolve_in_the_produced_evaluation(
        launched: tuple[LaunchResult, dict[str, Any]], tmp_path: Path) -> None:
    """The launched definition is built with the tiny run's gate (no baseline rule); the default gate's
    ConditionStep (issue 17: ``gate.two_stage_over_strongest_baseline`` >= 1 + baseline_margin, and its
    FailStep message) reads more paths: each must resolve in the evaluation.json the launched steps wrote,
    and its conditions decide as components/registry/gate.py's check_gate does on that file."""
    from components.registry.gate import check_gate
    from pipelines.sagemaker.pipeline import PipelineSettings, definition_json

    result, _ = launched
    evaluation = json.loads((result.local(result.outputs["evaluation"]) / s.EVALUATION_FILE).read_text())
    patch = pytest.MonkeyPatch()
    _offline_env(patch, tmp_path)
    try:
        definition = json.loads(definition_json(PipelineSettings(role=ROLE, bucket=BUCKET, region=REGION)))
    finally:
        patch.undo()
    (register,) = [step for step in definition["Steps"] if step["Type"] == "Condition"]
    paths: list[str] = []
    # each property file the condition step reads, as the step that wrote it left it
    documents = {"evaluation": evaluation, "bundle": json.loads(
        (result.local(result.outputs["bundle"]) / s.BUNDLE_DIGEST_FILE).read_text())}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"Std:JsonGet"}:
                source = node["Std:JsonGet"]["PropertyFile"]["Get"].split(".")[1]  # Steps.<step>.PropertyFiles.<f>
                if source == "evaluation":
                    paths.append(node["Std:JsonGet"]["Path"])
                else:  # the registered package's digest metadata (issue 13): from the bundle step's file
                    json_get(documents[source], node["Std:JsonGet"]["Path"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(register["Arguments"])
    assert s.GATE_RATIO_PATH in paths and s.GATE_STRONGEST_PATH in paths
    for path in paths:
        json_get(evaluation, path)  # raises LaunchError when a path does not resolve
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    context = Context(parameters=defaults, property_files={
        f"Steps.evaluation.PropertyFiles.{prop['PropertyFileName']}": evaluation
        for step in definition["Steps"] if step["Name"] == "evaluation" for prop in step["PropertyFiles"]})
    compare = {"GreaterThanOrEqualTo": float.__ge__, "GreaterThan": float.__gt__}
    passed = all(compare[c["Type"]](float(context.render(c["LeftValue"])), float(context.render(c["RightValue"])))
                 for c in register["Arguments"]["Conditions"])
    assert passed == check_gate(evaluation, PipelineConfig().gate).passed
