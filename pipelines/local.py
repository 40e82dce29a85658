"""The embedded default: run the step graph in one process, one Spark session for the whole run.

Each step runs through the same ``main(argv)`` a SageMaker container calls; only the paths differ.
A finished step leaves ``_SUCCESS`` (with the fingerprint of its config and inputs) so a rerun resumes
after the last good step.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.config import PipelineConfig
from pipelines.graph import STEPS, Step

SUCCESS_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class StepResult:
    step: str
    seconds: float
    skipped: bool


def step_argv(step: Step, raw: Path, output: Path, config: PipelineConfig,
              extra: Sequence[str] = ()) -> list[str]:
    argv: list[str] = []
    for name in step.inputs:
        argv += [f"--{name}", str(raw if name == "raw" else output / name)]
    return [*argv, "--output", str(output / step.name), "--config", config.to_json(), *extra]


def _fingerprint(step: Step, argv: list[str], config: PipelineConfig, raw: Path, output: Path) -> str:
    """Hash of the step's argv (of its config, only the fields it reads), of the ecomrec release, and of its
    inputs' own fingerprints (the raw files' manifest for the ETL), so changing anything upstream
    invalidates everything downstream, and tuning the ranker does not rerun the ETL."""
    config_json = config.to_json()
    wiring = [arg for arg in argv if arg != config_json]
    digest = hashlib.sha256(json.dumps([wiring, config.model_dump(include=set(step.config)),
                                        _code_version()]).encode())
    for name in step.inputs:
        if name == "raw":
            digest.update(_raw_manifest(raw).encode())
            continue
        marker = output / name / SUCCESS_MARKER
        if marker.exists():
            digest.update(marker.read_bytes())
    return digest.hexdigest()


def _raw_manifest(raw: Path) -> str:
    """Every raw file's relative path, size and modification time: new or changed data reruns the ETL (the
    folder's name alone would not). Hashing the content would read gigabytes on every run; a URI has no
    local files and is known by its name (in the argv) only."""
    files = sorted(p for p in raw.rglob("*") if p.is_file()) if raw.is_dir() else []
    return json.dumps([(str(p.relative_to(raw)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def _code_version() -> str:
    """The installed ecomrec release: upgrading it reruns every step."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ecomrec")
    except PackageNotFoundError:
        return "unknown"


def run_local(
    raw: Path,
    output: Path,
    config: PipelineConfig,
    *,
    resume: bool = True,
    only: Sequence[str] | None = None,
    step_options: dict[str, list[str]] | None = None,
    on_step_start: Callable[[Step], None] | None = None,
    on_step_end: Callable[[Step, StepResult], None] | None = None,
) -> list[StepResult]:
    """Run every step in graph order (or ``only`` those). With ``resume``, a step whose ``_SUCCESS``
    fingerprint matches is skipped; the first step that runs clears its own directory first.
    ``step_options`` adds wiring flags to a step's argv (e.g. the registry location of ``register``)."""
    from components.spark import get_spark, local_input_bytes

    output.mkdir(parents=True, exist_ok=True)
    # one session; every step's get_spark() returns it
    spark = get_spark("ecomrec-local", input_bytes=local_input_bytes(raw))
    results: list[StepResult] = []
    try:
        for step in STEPS:
            if only and step.name not in only:
                continue
            argv = step_argv(step, raw, output, config, (step_options or {}).get(step.name, ()))
            fingerprint = _fingerprint(step, argv, config, raw, output)
            marker = output / step.name / SUCCESS_MARKER
            if on_step_start:
                on_step_start(step)
            if resume and marker.exists() and json.loads(marker.read_text())["fingerprint"] == fingerprint:
                result = StepResult(step.name, 0.0, skipped=True)
            else:
                shutil.rmtree(output / step.name, ignore_errors=True)
                started = time.perf_counter()
                importlib.import_module(step.entry_point).main(argv)
                result = StepResult(step.name, time.perf_counter() - started, skipped=False)
                marker.write_text(json.dumps({"fingerprint": fingerprint, "seconds": result.seconds}))
            results.append(result)
            if on_step_end:
                on_step_end(step, result)
    finally:
        del spark  # the session stays up for the caller's process; tests share it
    return results
