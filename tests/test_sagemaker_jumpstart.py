"""The pinned built-in CatBoost (JumpStart catboost-classification-model) URIs and their refresh.

The refresh tests inject a fake retriever in place of the SDK's JumpStart lookup (which needs AWS)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from components.errors import EcomrecError
from pipelines.sagemaker.jumpstart import MODEL_ID, PINS_FILE, CatBoostUris, catboost_uris, load_pins, refresh_pins


def test_pinned_file_is_complete_and_says_where_values_come_from() -> None:
    pins = load_pins()
    assert pins["model_id"] == MODEL_ID
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["model_version"]), "pin a concrete version, not '*'"
    assert pins["provenance"]
    assert isinstance(pins["retrieved"], bool)
    assert {"us-east-1", "eu-west-1", "us-west-2"} <= set(pins["regions"])
    for region, uris in pins["regions"].items():
        assert re.fullmatch(rf"\d{{12}}\.dkr\.ecr\.{region}\.amazonaws\.com/[\w.-]+:[\w.-]+", uris["image_uri"])
        for key in ("script_uri", "model_uri"):
            assert uris[key].startswith(f"s3://jumpstart-cache-prod-{region}/")
        assert uris["script_uri"].endswith("sourcedir.tar.gz")
        assert uris["model_uri"].endswith(".tar.gz")


def test_the_pins_are_the_published_spec_and_the_ranker_speaks_its_hyperparameters() -> None:
    """catboost-classification-model 2.1.6 as the SageMaker SDK records its JumpStart spec (aws/sagemaker-python-sdk
    v2.257.6, commit fc582aaa46faf7b7e16ab1e13840869712174cd0, tests/unit/sagemaker/jumpstart/constants.py):
    training_script_key .../classification/v1.2.0/sourcedir.tar.gz, training_artifact_key
    catboost-training/train-catboost-classification-model.tar.gz, m5 training image $cpu_ecr_uri_1 =
    763104351884.dkr.ecr.<region>.amazonaws.com/pytorch-training:1.9.0-cpu-py38 (us-east-1, eu-west-1), and
    its hyperparameter names, which are exactly the ones the ranker writes and parses."""
    from components.ranker.hyperparameters import PARSERS

    pins = load_pins()
    assert pins["model_version"] == "2.1.6"
    assert catboost_uris("eu-west-1") == CatBoostUris(
        image_uri="763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:1.9.0-cpu-py38",
        script_uri="s3://jumpstart-cache-prod-eu-west-1/source-directory-tarballs/catboost/transfer_learning/"
                   "classification/v1.2.0/sourcedir.tar.gz",
        model_uri="s3://jumpstart-cache-prod-eu-west-1/catboost-training/train-catboost-classification-model.tar.gz")
    assert set(pins["sources"]) >= {"image_uri", "script_uri", "model_uri", "content_bucket"}
    assert set(pins["hyperparameters"]) == set(PARSERS)


def test_unknown_region_points_to_the_refresh_command(tmp_path: Path) -> None:
    with pytest.raises(EcomrecError, match="refresh-jumpstart --region mars-north-1"):
        catboost_uris("mars-north-1")
    broken = tmp_path / "pins.json"
    broken.write_text(json.dumps({"model_id": "other"}))
    with pytest.raises(EcomrecError, match="not a catboost-classification-model pin file"):
        catboost_uris("us-east-1", broken)


def _fake(region: str, version: str, instance_type: str) -> CatBoostUris:
    return CatBoostUris(image_uri=f"111122223333.dkr.ecr.{region}.amazonaws.com/catboost:{version}",
                        script_uri=f"s3://jumpstart-cache-prod-{region}/scripts/{version}/sourcedir.tar.gz",
                        model_uri=f"s3://jumpstart-cache-prod-{region}/models/{version}/model.tar.gz")


def test_refresh_repins_and_never_mixes_derived_and_retrieved(tmp_path: Path) -> None:
    committed = PINS_FILE.read_text()
    path = tmp_path / "pins.json"
    path.write_text(committed)
    pins = refresh_pins(["eu-west-1"], "2.0.1", path=path, retriever=_fake)
    assert pins["retrieved"] is True
    assert pins["hyperparameters"] == load_pins()["hyperparameters"]
    assert pins["model_version"] == "2.0.1"
    assert set(pins["regions"]) == {"eu-west-1"}  # the derived pins of other regions are dropped
    assert catboost_uris("eu-west-1", path) == _fake("eu-west-1", "2.0.1", "")
    pins = refresh_pins(["us-east-1"], "2.0.1", path=path, retriever=_fake)
    assert set(pins["regions"]) == {"eu-west-1", "us-east-1"}  # retrieved, same version: kept
    pins = refresh_pins(["us-east-1"], "2.1.0", path=path, retriever=_fake)
    assert set(pins["regions"]) == {"us-east-1"}
    assert PINS_FILE.read_text() == committed  # only the file given was rewritten
