"""The step graph is the one description of the pipeline: every entry point exists, declares the
graph's inputs, and the local runner builds each step's argv from the graph alone."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from components.config import PipelineConfig
from pipelines.graph import STEP_NAMES, STEPS, Step, get_step
from pipelines.local import step_argv


@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.name)
def test_entry_point_matches_graph(step: Step) -> None:
    module = importlib.import_module(step.entry_point)
    assert callable(module.main)
    assert tuple(module.INPUTS) == step.inputs


def test_inputs_come_from_earlier_steps() -> None:
    seen = {"raw"}
    for step in STEPS:
        assert set(step.inputs) <= seen, f"{step.name} reads a step that runs after it"
        seen.add(step.name)
    assert STEP_NAMES == ("etl", "als", "ranker_data", "train", "evaluation", "bundle", "register")


def test_local_argv_follows_graph(tmp_path: Path) -> None:
    config = PipelineConfig()
    argv = step_argv(get_step("evaluation"), tmp_path / "raw", tmp_path / "out", config)
    assert argv[argv.index("--output") + 1] == str(tmp_path / "out" / "evaluation")
    for name in ("etl", "als", "ranker_data", "train"):
        assert argv[argv.index(f"--{name}") + 1] == str(tmp_path / "out" / name)
    assert PipelineConfig.from_json_or_path(argv[argv.index("--config") + 1]) == config
    with pytest.raises(KeyError, match="unknown step"):
        get_step("deploy")


@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.name)
def test_step_declares_the_config_fields_it_reads(step: Step) -> None:
    """Resume skips a step when its declared config fields did not change, so a field read but not
    declared would let a stale output through. The entry module's source is the evidence."""
    fields = set(PipelineConfig.model_fields)
    assert set(step.config) <= fields
    source = Path(importlib.import_module(step.entry_point).__file__ or "").read_text()
    read = {name for name in re.findall(r"config\.(\w+)", source) if name in fields}
    assert read <= set(step.config), f"{step.name} reads {sorted(read - set(step.config))} undeclared"
