"""The one step graph. The local runner and ``get_pipeline()`` both read it, so they cannot drift.

Each step's entry point is a module with ``main(argv)`` and an ``INPUTS`` tuple (tests/test_graph.py
checks both against this list). A step writes all its files to one directory; a step's inputs are the
directories of earlier steps, named after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StepKind = Literal["pyspark", "processing", "training", "register"]


@dataclass(frozen=True)
class Step:
    name: str
    entry_point: str  # module with main(argv)
    kind: StepKind  # how SageMaker runs it
    inputs: tuple[str, ...]  # "raw" or names of earlier steps
    summary: str
    config: tuple[str, ...] = ()  # the PipelineConfig fields the step reads (its resume fingerprint)


STEPS: tuple[Step, ...] = (
    Step("etl", "components.etl.step", "pyspark", ("raw",),
         "validate, reject with reasons, id maps, windows, features per fold", ("etl",)),
    Step("als", "components.candidates.step", "pyspark", ("etl",),
         "implicit ALS factors and top-N candidates per user and fold", ("als", "candidates")),
    Step("ranker_data", "components.ranker.data_step", "processing", ("etl", "als"),
         "labelled candidates in the built-in CatBoost CSV format", ("ranker",)),
    Step("train", "components.ranker.train_step", "training", ("ranker_data",),
         "CatBoost ranker (the built-in SageMaker algorithm's formats)", ("ranker",)),
    Step("evaluation", "components.evaluation.step", "processing", ("etl", "als", "ranker_data", "train"),
         "EVALUATION.md: popular, repurchase, als, two_stage, tifu_knn, itemknn"),
    Step("bundle", "components.bundle.step", "processing", ("etl", "als", "ranker_data", "train", "evaluation"),
         "versioned model.tar.gz with everything serving needs", ("model_package_group", "etl")),
    Step("register", "components.registry.step", "register", ("bundle", "evaluation"),
         "quality gate, then the model registry as PendingManualApproval", ("gate", "model_package_group")),
)

STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)


def get_step(name: str) -> Step:
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"unknown step {name!r}; steps are {', '.join(STEP_NAMES)}")
