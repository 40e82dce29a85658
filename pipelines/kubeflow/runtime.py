"""What a Kubeflow task runs: each component's function body is one call into this module, so the
components carry wiring only and every step runs the same ``main(argv)`` as the local runner.

Runs in the task's process (a pod on a cluster, a subprocess under ``kfp.local``) with ecomrec importable.
"""

from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from components import schema as s
from components.config import PipelineConfig
from components.errors import QualityGateError

GATE_FILE = "gate.json"
log = logging.getLogger(__name__)


def resolve_config(base: str, settings: Mapping[str, object]) -> str:
    """The run's PipelineConfig as JSON: ``base`` (the config compiled in) with the pipeline parameters
    that set config fields applied, validated once here so a bad parameter fails the first task with the
    field's name."""
    encoded = [f"{path}={value if isinstance(value, str) else json.dumps(value)}" for path, value in settings.items()]
    return PipelineConfig.from_json_or_path(base).with_settings(encoded).to_json()


def add_image_spark_to_path() -> None:
    """Use the image's Spark (SPARK_HOME/python and its py4j zip) when pyspark is not installed: the steps
    image's venv has no pyspark (containers/steps/Dockerfile); on SageMaker spark-submit adds them, in a
    Kubeflow task (Spark in local mode in the pod) this does."""
    try:
        import pyspark  # noqa: F401
        return
    except ImportError:
        pass
    spark_home = os.environ.get("SPARK_HOME", "/usr/lib/spark")
    sys.path[:0] = [os.path.join(spark_home, "python"),
                    *sorted(glob.glob(os.path.join(spark_home, "python", "lib", "py4j-*.zip")))]


def run_step(entry_point: str, inputs: Mapping[str, str], output: str, config: str,
             extra: Sequence[str] = ()) -> None:
    """``<entry_point>.main(argv)`` with the local argv contract: ``--<input> DIR ... --output DIR --config``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    add_image_spark_to_path()  # the steps image has Spark under SPARK_HOME, not pyspark in its venv
    argv: list[str] = []
    for name, path in inputs.items():
        argv += [f"--{name}", path]
    argv += ["--output", output, "--config", config, *extra]
    log.info("running %s", entry_point)
    importlib.import_module(entry_point).main(argv)


def check_gate(evaluation: str, config: str, output: str) -> tuple[bool, str]:
    """The registry's quality gate (components.registry.gate, the rule the register step applies) on the
    evaluation's evaluation.json; the verdict is also written to ``output``/gate.json."""
    from components.registry.gate import check_gate as gate

    verdict = gate(json.loads((Path(evaluation) / s.EVALUATION_FILE).read_text()),
                   PipelineConfig.from_json_or_path(config).gate)
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / GATE_FILE).write_text(json.dumps(asdict(verdict), indent=2))
    return verdict.passed, "; ".join(verdict.reasons)


def gate_failed(reasons: str) -> None:
    """The Else branch of the gate: fail the run, as SageMaker's FailStep and the local register step do."""
    raise QualityGateError(f"quality gate failed, nothing registered: {reasons}")
