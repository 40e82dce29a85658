"""The local trainer against the built-in SageMaker CatBoost formats: CSV channels written by hand (no
header, label first), categorical_index.json, hyperparameters as strings, model.tar.gz with `model`."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from catboost import CatBoostClassifier

from components import schema as s
from components.config import PipelineConfig, RankerConfig
from components.ranker import train_step
from components.ranker.hyperparameters import (
    catboost_params,
    hyperparameters_from_config,
    parse_hyperparameters,
)
from components.ranker.train import FROM_MODEL_NOTE, read_channel, report_from_model, train_catboost

HYPERPARAMETERS = {"iterations": "60", "early_stopping_rounds": "10", "eval_metric": "AUC",
                   "learning_rate": "0.2", "depth": "3", "l2_leaf_reg": "3", "random_strength": "1.0",
                   "max_leaves": "31", "rsm": "1.0", "min_data_in_leaf": "1", "random_seed": "7",
                   "thread_count": "2", "verbose": "0"}


def write_channel(directory: Path, n: int, seed: int, *, cat_index: tuple[int, ...] | None = (2,)) -> None:
    """Rows: label, x (numeric), code (categorical; numeric-looking strings), y (numeric)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    x = rng.normal(size=n)
    code = rng.choice(["007", "010", "100"], n)
    y = rng.normal(size=n)
    label = ((x + (code == "007") * 2.0 + rng.normal(scale=0.3, size=n)) > 1.0).astype(int)
    lines = [f"{lab},{a:.6f},{c},{b:.6f}" for lab, a, c, b in zip(label, x, code, y, strict=True)]
    (directory / s.CHANNEL_DATA_FILE).write_text("\n".join(lines) + "\n")
    if cat_index is not None:
        (directory / s.CATEGORICAL_INDEX_FILE).write_text(json.dumps({"cat_index_list": list(cat_index)}))


def test_trains_from_channels_and_writes_the_builtin_artifact(tmp_path: Path) -> None:
    write_channel(tmp_path / "training", 600, 1)
    write_channel(tmp_path / "validation", 200, 2)
    report = train_catboost(tmp_path / "training", tmp_path / "validation", HYPERPARAMETERS, tmp_path / "out",
                            feature_names=["x", "code", "y"])
    with tarfile.open(tmp_path / "out" / s.MODEL_ARCHIVE) as archive:
        assert archive.getnames() == [s.MODEL_FILE]
        archive.extractall(tmp_path / "unpacked", filter="data")
    model = CatBoostClassifier()
    model.load_model(str(tmp_path / "unpacked" / s.MODEL_FILE))
    assert model.get_cat_feature_indices() == [1]  # CSV column 2 = feature 1
    assert model.tree_count_ == report["tree_count"] <= 60
    assert report["validation"]["AUC"] > 0.8  # the categorical code carries the signal
    assert report["feature_importance"]["code"] > report["feature_importance"]["y"]
    assert (report["rows"]["training"], report["rows"]["validation"]) == (600, 200)
    # "007" must stay a string category, distinct from "7" or 7.0
    assert model.predict_proba([[1.0, "007", 0.0]])[0, 1] > model.predict_proba([[1.0, "100", 0.0]])[0, 1]


def test_the_model_alone_gives_the_reports_training_sections(tmp_path: Path) -> None:
    """On SageMaker the built-in algorithm leaves only the model: the evaluation reads its report from it.
    The model holds the same best iteration, trees, best scores and importances the trainer reported."""
    write_channel(tmp_path / "training", 600, 1)
    write_channel(tmp_path / "validation", 200, 2)
    report = train_catboost(tmp_path / "training", tmp_path / "validation", HYPERPARAMETERS, tmp_path / "out",
                            feature_names=["x", "code", "y"])
    from components.ranker.model import Ranker

    from_model = report_from_model(Ranker.load(tmp_path / "out" / s.MODEL_ARCHIVE).model, ["x", "code", "y"])
    assert from_model.pop("source") == FROM_MODEL_NOTE
    for scores in ("learn", "validation"):  # the model keeps them as decimal text: the last digit may differ
        assert from_model.pop(scores) == pytest.approx(report[scores], rel=1e-12)
    assert from_model == {key: report[key] for key in from_model}


def test_without_validation_channel_holds_out_part_of_training(tmp_path: Path) -> None:
    write_channel(tmp_path / "training", 500, 3)
    report = train_catboost(tmp_path / "training", None, HYPERPARAMETERS, tmp_path / "out")
    assert report["rows"]["training"] + report["rows"]["validation"] == 500
    assert 50 < report["rows"]["validation"] < 150
    assert next(iter(report["feature_importance"])).startswith("feature_")


def test_categorical_index_is_respected_and_checked(tmp_path: Path) -> None:
    write_channel(tmp_path / "training", 300, 4, cat_index=None)
    # Without categorical_index.json the code column is read as a number: 7.0, 10.0, 100.0.
    train_catboost(tmp_path / "training", None, HYPERPARAMETERS, tmp_path / "out")
    model = CatBoostClassifier()
    with tarfile.open(tmp_path / "out" / s.MODEL_ARCHIVE) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    model.load_model(str(tmp_path / "unpacked" / s.MODEL_FILE))
    assert model.get_cat_feature_indices() == []
    write_channel(tmp_path / "bad", 50, 5, cat_index=(0,))
    with pytest.raises(ValueError, match=">= 1"):
        train_catboost(tmp_path / "bad", None, HYPERPARAMETERS, tmp_path / "out2")
    write_channel(tmp_path / "far", 50, 5, cat_index=(9,))
    with pytest.raises(ValueError, match="beyond"):
        train_catboost(tmp_path / "far", None, HYPERPARAMETERS, tmp_path / "out3")


def test_hyperparameters_are_strings_parsed_like_the_builtin() -> None:
    strings = hyperparameters_from_config(RankerConfig(), thread_count=2)
    assert all(isinstance(v, str) for v in strings.values())
    parsed = parse_hyperparameters(strings)
    assert parsed["iterations"] == RankerConfig().iterations
    assert isinstance(parsed["iterations"], int)
    assert parsed["learning_rate"] == pytest.approx(RankerConfig().learning_rate)
    params, early = catboost_params(parsed)
    assert params["loss_function"] == "Logloss"
    assert early == RankerConfig().early_stopping_rounds
    assert "max_leaves" not in params  # only with Lossguide trees
    lossguide, _ = catboost_params(parse_hyperparameters({**strings, "grow_policy": "Lossguide"}))
    assert lossguide["max_leaves"] == RankerConfig().max_leaves
    with pytest.raises(ValueError, match="iterations"):
        parse_hyperparameters({"iterations": "500.0"})  # the built-in parses it as int
    with pytest.raises(ValueError, match="unknown"):
        parse_hyperparameters({"n_estimators": "5"})
    with pytest.raises(TypeError, match="string"):
        parse_hyperparameters({"iterations": 5})  # type: ignore[dict-item]
    assert parse_hyperparameters({"max_bin": "Auto"})["max_bin"] == "Auto"


def test_train_step_main(tmp_path: Path) -> None:
    data = tmp_path / "ranker_data"
    write_channel(data / s.TRAINING_CHANNEL, 400, 6)
    write_channel(data / s.VALIDATION_CHANNEL, 150, 7)
    spec = {"features": ["x", "code", "y"], "categorical": ["code"]}
    (data / s.FEATURE_SPEC_FILE).write_text(json.dumps(spec))
    config = PipelineConfig(ranker=RankerConfig(iterations=40, depth=3)).to_json()
    train_step.main(["--ranker_data", str(data), "--output", str(tmp_path / "train"), "--config", config])
    report = json.loads((tmp_path / "train" / s.TRAINING_REPORT_FILE).read_text())
    assert set(report["feature_importance"]) == {"x", "code", "y"}
    assert report["hyperparameters"]["iterations"] == "40"
    assert report["best_iteration"] < 40
    assert (tmp_path / "train" / s.MODEL_ARCHIVE).exists()


def test_categorical_values_spelled_like_missing_stay_values(tmp_path: Path) -> None:
    # "NA" is Namibia's country code: pandas' default NA strings would turn it into the missing category
    # at training while scoring (Parquet) keeps "NA".
    (tmp_path / "part-0.csv").write_text("1,NA,0.5\n0,None,\n1,null,1.5\n0,,2.0\n")
    features, labels = read_channel(tmp_path, [1])
    assert features[0].tolist() == ["NA", "None", "null", s.MISSING_CATEGORY]
    assert np.isnan(features[1].to_numpy(dtype=float)[1]) and labels.tolist() == [1, 0, 1, 0]
