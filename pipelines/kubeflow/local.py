"""``run_kubeflow_local()``: the compiled pipeline run by KFP's local runner (``kfp.local``), no cluster.

kfp.local's SubprocessRunner (kfp 2.17.3, kfp/local/subprocess_task_handler.py) runs each task's command
as a subprocess: with ``use_venv=True`` (its default) it creates a virtualenv per task and pip-installs
the component's packages into it; with ``use_venv=False`` it runs the command with ``sys.executable``
(``replace_python_executable``), and our components install nothing (``install_kfp_package=False``, no
``packages_to_install``): so the run is offline and uses this interpreter's ecomrec and dependencies.

KFP writes each task's outputs under ``PIPELINE_ROOT/<pipeline>-<timestamp>/<task>/<output>``
(kfp/local/executor_input_utils.py); at the end each step's output directory is moved to
``OUTPUT/<step>/``, the local runner's layout.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.config import PipelineConfig
from components.errors import EcomrecError, QualityGateError
from pipelines.graph import STEPS
from pipelines.kubeflow import pipeline as k
from pipelines.kubeflow.runtime import GATE_FILE

PIPELINE_ROOT = ".kfp"  # under OUTPUT: KFP's own layout, emptied once the outputs are moved


@contextmanager
def _this_code_on_path() -> Iterator[None]:
    """Tasks are subprocesses: make them import the ecomrec this process imported (a checkout, not
    necessarily the installed package)."""
    import pipelines

    code_root = str(Path(pipelines.__file__).resolve().parents[1])
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([code_root, *([previous] if previous else [])])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def _task_dirs() -> dict[str, str]:
    """OUTPUT/<name> for each KFP task whose output artifact is kept: every step (the register step's is
    its register-model task's), and the gate."""
    return {**{k.REGISTER_MODEL_TASK if step.kind == "register" else k.task_name(step): step.name
               for step in STEPS}, k.GATE_TASK: k.GATE_TASK}


def _collect(root: Path, output: Path) -> None:
    runs = sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    for run in runs[-1:]:
        for task, name in _task_dirs().items():
            produced = run / task / k.OUTPUT
            if produced.is_dir():
                produced.rename(output / name)
    shutil.rmtree(root, ignore_errors=True)


def run_kubeflow_local(raw: Path, output: Path, config: PipelineConfig, *, registry: Path) -> None:
    """Run the pipeline with ``kfp.local``, each step's outputs left under ``OUTPUT/<step>/``."""
    if not raw.is_dir():
        raise EcomrecError(f"--data {raw}: no such folder (the raw contract: events/, items/, users/)")
    run_locally(k.get_kfp_pipeline(k.KubeflowSettings(config=config)),
                {k.INPUT_DATA_URI: str(raw.resolve()), k.REGISTRY: str(registry.resolve())}, output)


def run_locally(pipeline: Any, arguments: dict[str, Any], output: Path) -> None:
    """Run a pipeline built here with ``kfp.local`` (SubprocessRunner, this interpreter) and move its tasks'
    outputs to ``OUTPUT/<step>/``. Raises ``QualityGateError`` when the gate stopped the run (nothing
    registered), ``EcomrecError`` naming the step for any other failure."""
    try:
        from kfp import local
    except ImportError as error:
        raise EcomrecError(f'Kubeflow Pipelines is not installed ({error}): pip install -e ".[kubeflow]"') from error
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    for name in _task_dirs().values():  # no caching locally: every step runs, stale outputs go first
        shutil.rmtree(output / name, ignore_errors=True)
    root = output / PIPELINE_ROOT
    shutil.rmtree(root, ignore_errors=True)
    local.init(local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    failure: RuntimeError | None = None
    with _this_code_on_path(), warnings.catch_warnings():
        # the steps image is not a "python" image, which the SubprocessRunner warns about; it is unused here
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        # nor do requests and limits mean anything to a subprocess (kfp/local/orchestrator/task_executor.py)
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline(**arguments)
        except RuntimeError as error:  # kfp.local: "Pipeline ... finished with status FAILURE ..."
            failure = error
        finally:
            _collect(root, output)
    if failure is None:
        return
    gate = output / k.GATE_TASK / GATE_FILE
    verdict = json.loads(gate.read_text()) if gate.exists() else {}
    if verdict.get("passed") is False:
        raise QualityGateError("quality gate failed, nothing registered: " + "; ".join(verdict["reasons"])) from failure
    failed = next((step.name for step in STEPS if not (output / step.name).is_dir()), "?")
    raise EcomrecError(f"the Kubeflow local run failed at step {failed} (its log is above): {failure}") from failure
