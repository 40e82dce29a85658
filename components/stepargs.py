"""The argv contract every step's ``main(argv)`` shares, locally and in a SageMaker container:

    --<input> PATH ... --output PATH [--config JSON|PATH] [--set section.field=value ...]

Inputs are named after the step that wrote them (``raw`` for the raw contract)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.config import PipelineConfig


@dataclass(frozen=True)
class StepArgs:
    inputs: dict[str, Path]
    output: Path
    config: PipelineConfig
    options: dict[str, str | None]


def parse_step_args(argv: Sequence[str] | None, step: str, inputs: Sequence[str],
                    options: Mapping[str, str] | None = None) -> StepArgs:
    """``options`` maps extra optional flags of a step (wiring such as a registry location) to their help."""
    parser = argparse.ArgumentParser(prog=f"ecomrec-step-{step}")
    for name, help_text in (options or {}).items():
        parser.add_argument(f"--{name}", default=None, help=help_text)
    for name in inputs:
        parser.add_argument(f"--{name}", required=True, type=Path, help=f"the {name} directory")
    parser.add_argument("--output", required=True, type=Path, help=f"where {step} writes its files")
    parser.add_argument("--config", default=None, help="PipelineConfig as inline JSON or a JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="one config field, applied after --config (repeatable)")
    ns = parser.parse_args(argv)
    try:
        config = PipelineConfig.from_json_or_path(ns.config).with_settings(ns.set)
    except ValueError as error:  # pydantic's ValidationError included: name the field, exit 2
        parser.error(str(error))
    ns.output.mkdir(parents=True, exist_ok=True)
    return StepArgs(
        inputs={name: getattr(ns, name) for name in inputs},
        output=ns.output,
        config=config,
        options={name: getattr(ns, name.replace("-", "_")) for name in (options or {})},
    )
