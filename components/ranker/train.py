"""A local trainer that behaves like the built-in SageMaker CatBoost (catboost-classification-model).

Same inputs: channel directories holding CSV (no header, label in column 0) and ``categorical_index.json``
({"cat_index_list": [CSV column indices >= 1]}) in the training channel; hyperparameters under the
built-in names, as strings. Same artifact: ``model.tar.gz`` holding one native CatBoost file ``model``.
Without a validation channel it holds out 20% of the training rows at random, as the built-in does.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components import schema as s
from components.ranker.hyperparameters import catboost_params, parse_hyperparameters

log = logging.getLogger(__name__)


class _LogStream(io.TextIOBase):
    """CatBoost's progress lines, forwarded to logging instead of stdout."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._logger.info("catboost: %s", line.strip())
        return len(text)


def read_categorical_index(channel: Path) -> list[int]:
    path = channel / s.CATEGORICAL_INDEX_FILE
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if "cat_index_list" not in data:
        raise ValueError(f"{path} has no 'cat_index_list' key: {sorted(data)}")
    indices = [int(i) for i in data["cat_index_list"]]
    if any(i < 1 for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"{path}: cat_index_list must hold unique column indices >= 1 (0 is the label): "
                         f"{indices}")
    return sorted(indices)


def read_channel(channel: Path, cat_index: Sequence[int]) -> tuple[pd.DataFrame, np.ndarray]:
    """(features with CSV columns 1.., labels) from every CSV file of a channel directory."""
    files = sorted(p for p in channel.iterdir() if p.is_file() and p.suffix == ".csv")
    if not files:
        raise FileNotFoundError(f"no CSV file in channel {channel}")
    # Categorical columns stay strings: "0123" is a code, not a number, and "NA" (Namibia) or a brand
    # "None" is a value, as when scoring: only an empty field is missing.
    dtypes: dict[int, Any] = {i: "string" for i in cat_index}
    frames = [pd.read_csv(f, header=None, dtype=dtypes, keep_default_na=False, na_values=[""]) for f in files]
    data = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if data.shape[1] < 2:
        raise ValueError(f"{channel}: need a label column and at least one feature, "
                         f"got {data.shape[1]} columns")
    too_far = [i for i in cat_index if i >= data.shape[1]]
    if too_far:
        raise ValueError(f"{channel}: categorical indices {too_far} beyond the {data.shape[1]} CSV columns")
    labels = data.iloc[:, 0].to_numpy()
    if np.isnan(labels.astype(np.float64)).any():
        raise ValueError(f"{channel}: empty labels in column 0")
    features = data.iloc[:, 1:]
    features.columns = range(features.shape[1])
    for i in cat_index:
        features[i - 1] = features[i - 1].fillna(s.MISSING_CATEGORY).astype(str)
    return features, labels.astype(np.int64)


def _feature_names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) == n:
        return list(names)
    return [f"feature_{i}" for i in range(n)]


def train_catboost(training: Path, validation: Path | None, hyperparameters: Mapping[str, str],
                   output: Path, *, feature_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, write ``output/model.tar.gz`` (holding ``model``) and return the training report.

    ``feature_names`` only label the report's importances; the model itself is trained on anonymous
    CSV columns, exactly like the built-in algorithm's."""
    from catboost import CatBoostClassifier, Pool

    started = time.perf_counter()
    parsed = parse_hyperparameters(hyperparameters)
    params, early_stopping_rounds = catboost_params(parsed)
    cat_index = read_categorical_index(training)
    if validation is not None and (validation / s.CATEGORICAL_INDEX_FILE).exists():
        other = read_categorical_index(validation)
        if other != cat_index:
            raise ValueError(f"categorical_index.json differs between channels: {cat_index} vs {other}")
    x_train, y_train = read_channel(training, cat_index)
    if validation is not None and validation.exists():
        x_valid, y_valid = read_channel(validation, cat_index)
    else:
        rng = np.random.default_rng(int(parsed.get("random_seed", 0)))
        held_out = rng.random(len(x_train)) < 0.2
        x_valid, y_valid = x_train.loc[held_out], y_train[held_out]
        x_train, y_train = x_train.loc[~held_out], y_train[~held_out]
    if x_valid.shape[1] != x_train.shape[1]:
        raise ValueError(f"channels differ in width: training {x_train.shape[1]}, "
                         f"validation {x_valid.shape[1]}")
    labels = set(np.unique(y_train).tolist())
    if labels != {0, 1}:
        raise ValueError(f"binary classification needs labels 0 and 1 in training, found {sorted(labels)}")
    cat_features = [i - 1 for i in cat_index]
    train_pool = Pool(x_train, y_train, cat_features=cat_features)
    valid_pool = Pool(x_valid, y_valid, cat_features=cat_features)
    log.info("training on %d rows (%d positive), validating on %d rows (%d positive), %d features "
             "(%d categorical)", len(y_train), int(y_train.sum()), len(y_valid), int(y_valid.sum()),
             x_train.shape[1], len(cat_features))
    model = CatBoostClassifier(**params, custom_metric=["Logloss", "AUC"])
    stream = _LogStream(log)
    model.fit(train_pool, eval_set=valid_pool, use_best_model=True,
              early_stopping_rounds=early_stopping_rounds if early_stopping_rounds > 0 else None,
              log_cout=stream, log_cerr=stream)
    seconds = time.perf_counter() - started
    output.mkdir(parents=True, exist_ok=True)
    write_model_archive(model, output / s.MODEL_ARCHIVE)

    names = _feature_names(x_train.shape[1], feature_names)
    importance = model.get_feature_importance(type="PredictionValuesChange")
    best = model.get_best_score()
    report: dict[str, Any] = {
        "hyperparameters": dict(hyperparameters),
        "best_iteration": int(model.get_best_iteration() or 0),
        "tree_count": int(model.tree_count_),
        "validation": {k: float(v) for k, v in best.get("validation", {}).items()},
        "learn": {k: float(v) for k, v in best.get("learn", {}).items()},
        "rows": {"training": len(y_train), "validation": len(y_valid),
                 "training_positive": int(y_train.sum()), "validation_positive": int(y_valid.sum())},
        "categorical_index": cat_index,
        "feature_importance": dict(sorted(zip(names, (float(v) for v in importance), strict=True),
                                          key=lambda kv: -kv[1])),
        "seconds": round(seconds, 2),
    }
    log.info("trained %d trees (best iteration %d) in %.1f s; validation %s", report["tree_count"],
             report["best_iteration"], seconds, report["validation"])
    return report


# Where a training report read from the model comes from, and what it lacks (the report says so).
FROM_MODEL_NOTE = ("read from the model: the built-in SageMaker CatBoost writes no training report (its "
                   "rows, time and metric history are in the training job's CloudWatch log)")


def report_from_model(model: Any, feature_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The training report's sections a trained model holds by itself (best iteration and scores, trees,
    feature importance): what the evaluation shows when the trainer wrote no report, as on SageMaker."""
    importance = model.get_feature_importance(type="PredictionValuesChange")
    names = _feature_names(len(importance), feature_names)
    best = model.get_best_score()
    return {
        "source": FROM_MODEL_NOTE,
        "best_iteration": int(model.get_best_iteration() or 0),
        "tree_count": int(model.tree_count_),
        "validation": {k: float(v) for k, v in best.get("validation", {}).items()},
        "learn": {k: float(v) for k, v in best.get("learn", {}).items()},
        "feature_importance": dict(sorted(zip(names, (float(v) for v in importance), strict=True),
                                          key=lambda kv: -kv[1])),
    }


def write_model_archive(model: Any, path: Path) -> None:
    """model.tar.gz holding the native CatBoost file ``model`` at its root."""
    with tempfile.TemporaryDirectory(prefix="ecomrec-model-") as tmp:
        model_file = Path(tmp) / s.MODEL_FILE
        model.save_model(str(model_file), format="cbm")
        with tarfile.open(path, "w:gz") as archive:
            archive.add(model_file, arcname=s.MODEL_FILE)
