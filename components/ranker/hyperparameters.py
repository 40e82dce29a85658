"""Hyperparameters under the built-in SageMaker CatBoost algorithm's names, as the strings it receives.

SageMaker (SDK v3 included) sends every hyperparameter as a string; the built-in training script parses
each with a fixed type. :func:`hyperparameters_from_config` produces the strings (the SageMaker pipeline
passes the same dict to the built-in estimator), :func:`parse_hyperparameters` reads them back the way
the built-in script does (strict: "500.0" is not an integer), then maps them onto CatBoost's arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from components.config import RankerConfig

AUTO: Final = "Auto"  # the built-in algorithm's "let CatBoost decide" value for text parameters


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"hyperparameter {name}={value!r} is not an integer") from None


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"hyperparameter {name}={value!r} is not a number") from None


def _text(name: str, value: str) -> str:
    if not value:
        raise ValueError(f"hyperparameter {name} is empty")
    return value


def _int_or_auto(name: str, value: str) -> int | str:
    return value if value == AUTO else _int(name, value)


# name -> parser, for every hyperparameter the built-in catboost-classification-model accepts.
PARSERS: Final[dict[str, Callable[[str, str], Any]]] = {
    "iterations": _int,
    "early_stopping_rounds": _int,
    "eval_metric": _text,
    "learning_rate": _float,
    "depth": _int,
    "l2_leaf_reg": _int,
    "random_strength": _float,
    "max_leaves": _int,
    "rsm": _float,
    "sampling_frequency": _text,
    "min_data_in_leaf": _int,
    "bagging_temperature": _float,
    "boosting_type": _text,
    "scale_pos_weight": _float,
    "max_bin": _int_or_auto,
    "grow_policy": _text,
    "random_seed": _int,
    "thread_count": _int,
    "verbose": _int,
}


def hyperparameters_from_config(config: RankerConfig, *, thread_count: int = -1, verbose: int = 100
                                ) -> dict[str, str]:
    """The built-in algorithm's hyperparameters, as strings, from the ranker config."""
    values: dict[str, object] = {
        "iterations": config.iterations,
        "early_stopping_rounds": config.early_stopping_rounds,
        "eval_metric": config.eval_metric,
        "learning_rate": config.learning_rate,
        "depth": config.depth,
        "l2_leaf_reg": config.l2_leaf_reg,
        "random_strength": config.random_strength,
        "max_leaves": config.max_leaves,
        "rsm": config.rsm,
        "min_data_in_leaf": config.min_data_in_leaf,
        "grow_policy": config.grow_policy,
        "boosting_type": config.boosting_type,
        "random_seed": config.seed,
        "thread_count": thread_count,
        "verbose": verbose,
    }
    return {name: str(value) for name, value in values.items()}


def parse_hyperparameters(hyperparameters: Mapping[str, str]) -> dict[str, Any]:
    """Typed values from the strings; an unknown name or a non-string value raises (as on SageMaker,
    where nothing but strings arrives)."""
    unknown = sorted(set(hyperparameters) - set(PARSERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; the built-in algorithm accepts "
                         f"{sorted(PARSERS)}")
    parsed: dict[str, Any] = {}
    for name, value in hyperparameters.items():
        if not isinstance(value, str):
            raise TypeError(f"hyperparameter {name} must be a string (SageMaker sends strings), "
                            f"got {value!r}")
        parsed[name] = PARSERS[name](name, value.strip())
    return parsed


def catboost_params(parsed: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """(CatBoostClassifier arguments, early_stopping_rounds) for binary classification: loss Logloss,
    as the built-in algorithm picks for two labels; "Auto" text values are left to CatBoost."""
    params: dict[str, Any] = {"loss_function": "Logloss", "allow_writing_files": False}
    early_stopping = 0
    for name, value in parsed.items():
        if name == "early_stopping_rounds":
            early_stopping = int(value)
            continue
        if value == AUTO:
            continue
        params[name] = value
    if params.get("eval_metric") is None:
        params["eval_metric"] = "AUC"  # the built-in's choice for binary classification
    grow_policy = params.get("grow_policy", "SymmetricTree")
    if grow_policy != "Lossguide":
        params.pop("max_leaves", None)  # only meaningful for Lossguide trees
    if grow_policy == "SymmetricTree":
        params.pop("min_data_in_leaf", None)  # ignored by symmetric trees
    return params, early_stopping
