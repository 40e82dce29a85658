"""Pipeline parameters: what a SageMaker execution can change without a new definition.

Parameters that mirror a PipelineConfig field carry its path: every step receives the config as
``--set section.field=value`` arguments with those values spliced in at run time (``config_settings``),
so the steps read the execution's values through the one config model, exactly as locally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from components.config import PipelineConfig
from components.registry.base import APPROVAL_STATUSES, PENDING

ParamKind = Literal["string", "integer", "float"]

# Parameter names (the keys of `ecomrec pipeline start --param NAME=VALUE` and of the definition).
INPUT_DATA_URI = "InputDataUri"
OUTPUT_URI = "OutputUri"
STEPS_IMAGE_URI = "StepsImageUri"  # every processing step's image (PySpark and plain)
SPARK_INSTANCE_TYPE = "SparkInstanceType"
PROCESSING_INSTANCE_TYPE = "ProcessingInstanceType"
PIP_INSTALL = "PipInstall"
TRAINING_INSTANCE_TYPE = "TrainingInstanceType"
TRAINING_INSTANCE_COUNT = "TrainingInstanceCount"
MAX_RUNTIME_SECONDS = "MaxRuntimeSeconds"
SPARK_VOLUME_SIZE_GB = "SparkVolumeSizeGb"
PROCESSING_VOLUME_SIZE_GB = "ProcessingVolumeSizeGb"
TRAINING_VOLUME_SIZE_GB = "TrainingVolumeSizeGb"
CATBOOST_IMAGE_URI = "CatBoostImageUri"
CATBOOST_SCRIPT_URI = "CatBoostScriptUri"
CATBOOST_MODEL_URI = "CatBoostModelUri"
INFERENCE_IMAGE_URI = "InferenceImageUri"
MODEL_PACKAGE_GROUP = "ModelPackageGroup"
MODEL_APPROVAL_STATUS = "ModelApprovalStatus"
TEST_DAYS = "TestDays"
LABEL_DAYS = "LabelDays"
ALS_RANK = "AlsRank"
ALS_ITERATIONS = "AlsIterations"
CATBOOST_ITERATIONS = "CatBoostIterations"
CATBOOST_LEARNING_RATE = "CatBoostLearningRate"
CATBOOST_DEPTH = "CatBoostDepth"
CATBOOST_L2_LEAF_REG = "CatBoostL2LeafReg"
CATBOOST_EARLY_STOPPING_ROUNDS = "CatBoostEarlyStoppingRounds"
NDCG_AT_10_FLOOR = "NdcgAt10Floor"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: ParamKind
    default: str | int | float
    config_path: tuple[str, ...] = ()  # the PipelineConfig field it sets, if any
    hyperparameter: str = ""  # the built-in CatBoost hyperparameter it sets, if any
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Defaults:
    """Values known when the definition is built (bucket, region, pinned URIs...)."""

    input_data_uri: str
    output_uri: str
    steps_image_uri: str
    pip_install: str
    catboost_image_uri: str
    catboost_script_uri: str
    catboost_model_uri: str
    inference_image_uri: str
    spark_instance_type: str = "ml.m5.2xlarge"
    processing_instance_type: str = "ml.m5.2xlarge"
    training_instance_type: str = "ml.m5.2xlarge"
    # Each job's limit: at 10M events the whole pipeline takes ~10 minutes on 2 cores; 4 hours leaves room
    # for 10x the data on one instance and still stops a stuck job long before SageMaker's 1-day default.
    max_runtime_seconds: int = 4 * 3600
    # The EBS volume of each job, GB: inputs, outputs and Spark's shuffle; the 10M-event bundle is a few GB.
    volume_size_gb: int = 30


def _config_value(config: PipelineConfig, path: tuple[str, ...]) -> Any:
    node: Any = config
    for key in path:
        node = getattr(node, key)
    return node


def config_param_specs(config: PipelineConfig) -> list[ParamSpec]:
    """The parameters that set a PipelineConfig field (also the Kubeflow pipeline's parameters)."""
    def from_config(name: str, kind: ParamKind, *path: str, hyperparameter: str = "") -> ParamSpec:
        return ParamSpec(name, kind, _config_value(config, path), path, hyperparameter)

    return [
        from_config(MODEL_PACKAGE_GROUP, "string", "model_package_group"),
        from_config(TEST_DAYS, "integer", "etl", "test_days"),
        from_config(LABEL_DAYS, "integer", "etl", "label_days"),
        from_config(ALS_RANK, "integer", "als", "factors"),
        from_config(ALS_ITERATIONS, "integer", "als", "iterations"),
        from_config(CATBOOST_ITERATIONS, "integer", "ranker", "iterations", hyperparameter="iterations"),
        from_config(CATBOOST_LEARNING_RATE, "float", "ranker", "learning_rate",
                    hyperparameter="learning_rate"),
        from_config(CATBOOST_DEPTH, "integer", "ranker", "depth", hyperparameter="depth"),
        from_config(CATBOOST_L2_LEAF_REG, "integer", "ranker", "l2_leaf_reg", hyperparameter="l2_leaf_reg"),
        from_config(CATBOOST_EARLY_STOPPING_ROUNDS, "integer", "ranker", "early_stopping_rounds",
                    hyperparameter="early_stopping_rounds"),
        from_config(NDCG_AT_10_FLOOR, "float", "gate", "ndcg_at_10_floor"),
    ]


def param_specs(config: PipelineConfig, defaults: Defaults) -> list[ParamSpec]:
    group, *tuning = config_param_specs(config)
    return [
        ParamSpec(INPUT_DATA_URI, "string", defaults.input_data_uri),
        ParamSpec(OUTPUT_URI, "string", defaults.output_uri),
        ParamSpec(STEPS_IMAGE_URI, "string", defaults.steps_image_uri),
        ParamSpec(SPARK_INSTANCE_TYPE, "string", defaults.spark_instance_type),
        ParamSpec(PROCESSING_INSTANCE_TYPE, "string", defaults.processing_instance_type),
        ParamSpec(PIP_INSTALL, "string", defaults.pip_install),
        ParamSpec(TRAINING_INSTANCE_TYPE, "string", defaults.training_instance_type),
        ParamSpec(TRAINING_INSTANCE_COUNT, "integer", 1),
        ParamSpec(MAX_RUNTIME_SECONDS, "integer", defaults.max_runtime_seconds),
        ParamSpec(SPARK_VOLUME_SIZE_GB, "integer", defaults.volume_size_gb),
        ParamSpec(PROCESSING_VOLUME_SIZE_GB, "integer", defaults.volume_size_gb),
        ParamSpec(TRAINING_VOLUME_SIZE_GB, "integer", defaults.volume_size_gb),
        ParamSpec(CATBOOST_IMAGE_URI, "string", defaults.catboost_image_uri),
        ParamSpec(CATBOOST_SCRIPT_URI, "string", defaults.catboost_script_uri),
        ParamSpec(CATBOOST_MODEL_URI, "string", defaults.catboost_model_uri),
        ParamSpec(INFERENCE_IMAGE_URI, "string", defaults.inference_image_uri),
        group,
        ParamSpec(MODEL_APPROVAL_STATUS, "string", PENDING, enum=APPROVAL_STATUSES),
        *tuning,
    ]


def make_parameters(specs: list[ParamSpec]) -> dict[str, Any]:
    """SDK Parameter objects by name (the SDK is imported here, not at module import)."""
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    made: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "string":
            made[spec.name] = ParameterString(spec.name, default_value=str(spec.default),
                                              enum_values=list(spec.enum) or None)
        elif spec.kind == "integer":
            made[spec.name] = ParameterInteger(spec.name, default_value=int(spec.default))
        else:
            made[spec.name] = ParameterFloat(spec.name, default_value=float(spec.default))
    return made


def config_settings(config: PipelineConfig, specs: list[ParamSpec], parameters: dict[str, Any]) -> list[Any]:
    """The config as ``--set section.field=value`` arguments for :meth:`PipelineConfig.with_settings`:
    every field that differs from the defaults (the container runs the same code, so the same defaults),
    then each config-backed parameter spliced in at run time (``Std:Join``). SageMaker caps a container
    argument at 256 characters; one JSON document of the whole config is about 1,270."""
    from sagemaker.core.workflow.functions import Join

    backed = {".".join(spec.config_path): spec for spec in specs if spec.config_path}
    settings: list[Any] = []
    for path, text in config.settings().items():
        if path not in backed:
            settings += ["--set", f"{path}={text}"]
    for path, spec in sorted(backed.items()):
        settings += ["--set", Join(on="", values=[f"{path}=", parameters[spec.name]])]
    return settings
