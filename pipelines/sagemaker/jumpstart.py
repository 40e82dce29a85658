"""The built-in SageMaker CatBoost (JumpStart ``catboost-classification-model``): training image, training
script (sourcedir.tar.gz) and model URIs per region, pinned by model version in jumpstart_catboost.json
(its ``provenance`` and ``sources`` say where each value was read: the JumpStart spec of version 2.1.6 as the
SageMaker SDK records it, and the SDK's region_config.json for the per-region content bucket).

The pipeline takes the three URIs as parameters whose defaults come from that file, so building a
definition never asks JumpStart (no network). ``refresh_pins`` (CLI: ``ecomrec pipeline
refresh-jumpstart``) re-pins them with the SDK's JumpStart retrieval on a machine with AWS access.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.errors import EcomrecError

MODEL_ID = "catboost-classification-model"
PINS_FILE = Path(__file__).with_name("jumpstart_catboost.json")
TRAINING_ENTRY_POINT = "transfer_learning.py"  # the script inside the JumpStart sourcedir.tar.gz
DEFAULT_TRAINING_INSTANCE_TYPE = "ml.m5.xlarge"


@dataclass(frozen=True)
class CatBoostUris:
    image_uri: str
    script_uri: str
    model_uri: str


def load_pins(path: Path = PINS_FILE) -> dict[str, Any]:
    try:
        pins: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise EcomrecError(f"cannot read the pinned JumpStart CatBoost URIs {path}: {error}") from error
    if pins.get("model_id") != MODEL_ID or not isinstance(pins.get("regions"), dict):
        raise EcomrecError(f"{path} is not a {MODEL_ID} pin file (model_id, model_version, regions)")
    return pins


def catboost_uris(region: str, path: Path = PINS_FILE) -> CatBoostUris:
    pins = load_pins(path)
    entry = pins["regions"].get(region)
    if entry is None:
        raise EcomrecError(
            f"no pinned {MODEL_ID} {pins.get('model_version')} URIs for region {region!r} in {path} "
            f"(pinned: {', '.join(sorted(pins['regions']))}); run `ecomrec pipeline refresh-jumpstart "
            f"--region {region}` where AWS is reachable, or pass the three URIs as pipeline parameters")
    return CatBoostUris(image_uri=entry["image_uri"], script_uri=entry["script_uri"],
                        model_uri=entry["model_uri"])


Retriever = Callable[[str, str, str], CatBoostUris]


def retrieve_with_sdk(region: str, model_version: str, instance_type: str) -> CatBoostUris:
    """Ask JumpStart through the SDK (reads the model specs from the JumpStart S3 bucket: needs AWS)."""
    import boto3
    from sagemaker.core import image_uris, model_uris, script_uris
    from sagemaker.core.helper.session_helper import Session

    session = Session(boto_session=boto3.Session(region_name=region))
    common = {"region": region, "model_id": MODEL_ID, "model_version": model_version,
              "sagemaker_session": session}
    return CatBoostUris(
        image_uri=image_uris.retrieve(framework=None, image_scope="training", instance_type=instance_type,
                                      **common),
        script_uri=script_uris.retrieve(script_scope="training", **common),
        model_uri=model_uris.retrieve(model_scope="training", **common),
    )


def refresh_pins(regions: Iterable[str], model_version: str, *, path: Path = PINS_FILE,
                 instance_type: str = DEFAULT_TRAINING_INSTANCE_TYPE,
                 retriever: Retriever = retrieve_with_sdk) -> dict[str, Any]:
    """Re-pin ``regions`` at ``model_version``. Other regions keep their pins only when those were
    retrieved too, at the same model version (a file never mixes derived and retrieved values)."""
    current = load_pins(path) if path.exists() else {"regions": {}}
    retrieved = {region: asdict(retriever(region, model_version, instance_type)) for region in regions}
    keep_others = current.get("retrieved") is True and current.get("model_version") == model_version
    pins = {
        "model_id": MODEL_ID,
        "model_version": model_version,
        "scope": "training",
        "instance_type": instance_type,
        "provenance": f"retrieved with the SageMaker SDK's JumpStart image_uris/script_uris/model_uris "
                      f"on {datetime.now(UTC).date().isoformat()} for {', '.join(sorted(retrieved))}",
        "retrieved": True,
        "regions": ({**current["regions"], **retrieved} if keep_others else retrieved),
    }
    if "hyperparameters" in current:  # the names the built-in accepts (checked against the ranker's)
        pins["hyperparameters"] = current["hyperparameters"]
    path.write_text(json.dumps(pins, indent=2) + "\n")
    return pins
