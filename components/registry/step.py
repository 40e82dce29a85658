"""Step ``register``: the quality gate, then the model registry as PendingManualApproval.

On SageMaker the same gate is a ConditionStep on evaluation.json and registration a ModelStep; locally
this step does both. A failed gate registers nothing and stops the run with the reasons.

The registry is the local one (``--registry FOLDER``) or, with ``--registry sagemaker``, the SageMaker
Model Registry behind the same port (a Kubeflow run on AWS): the package then points at the bundle's S3
copy (``--model-data-url``) and names the inference image (``--image-uri``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from components import schema as s
from components.errors import QualityGateError
from components.registry.base import ModelRegistry
from components.registry.gate import check_gate
from components.registry.local import LocalRegistry
from components.stepargs import parse_step_args
from components.storage import is_s3_uri

INPUTS = ("bundle", "evaluation")
REGISTRATION_FILE = "registration.json"
SAGEMAKER_REGISTRY = "sagemaker"
OPTIONS = {
    "registry": f"local registry folder, or {SAGEMAKER_REGISTRY!r} for the SageMaker Model Registry",
    "model-data-url": "the bundle's s3:// URI the SageMaker registry records (default: the bundle folder's file)",
    "image-uri": "the inference image of a SageMaker model package",
    "evaluation-url": "the evaluation.json's s3:// URI a SageMaker model package's ModelMetrics points to",
}
log = logging.getLogger(__name__)


def default_registry_dir() -> Path:
    return Path(os.environ.get("ECOMREC_REGISTRY_ROOT", ".ecomrec/registry"))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "register", INPUTS, options=OPTIONS)
    evaluation = json.loads((args.inputs["evaluation"] / s.EVALUATION_FILE).read_text())
    verdict = check_gate(evaluation, args.config.gate)
    record: dict[str, object] = {"gate": asdict(verdict)}
    if not verdict.passed:
        (args.output / REGISTRATION_FILE).write_text(json.dumps(record, indent=2))
        raise QualityGateError("quality gate failed, nothing registered: " + "; ".join(verdict.reasons))
    registry = _registry(args.options["registry"])
    bundle_manifest = json.loads((args.inputs["bundle"] / s.BUNDLE_MANIFEST).read_text())
    local_bundle = str(args.inputs["bundle"] / s.MODEL_ARCHIVE)
    digest = json.loads((args.inputs["bundle"] / s.BUNDLE_DIGEST_FILE).read_text())["sha256"]
    evaluation_url = args.options["evaluation-url"]
    if not isinstance(registry, LocalRegistry) and evaluation_url and is_s3_uri(evaluation_url):
        # as SageMakerRegistry reads it back: the console then shows the whole evaluation and its report
        evaluation = {**evaluation, "evaluation_uri": evaluation_url}
    version = registry.register(
        args.config.model_package_group,
        local_bundle if isinstance(registry, LocalRegistry) else args.options["model-data-url"] or local_bundle,
        evaluation,
        description=f"bundle {bundle_manifest['version']}",
        image_uri=args.options["image-uri"] or "",
        bundle_sha256=digest,  # the registry's copy must be the bytes the bundle step wrote
    )
    if isinstance(registry, LocalRegistry):  # the console shows it; a SageMaker package points at its own copy
        registry.attach_evaluation(version.group, version.version, args.inputs["evaluation"])
    record["registered"] = asdict(version) | {"metrics": "see evaluation.json"}
    (args.output / REGISTRATION_FILE).write_text(json.dumps(record, indent=2))
    log.info("registered %s version %d as %s", version.group, version.version, version.status)


def _registry(location: str | None) -> ModelRegistry:
    if location != SAGEMAKER_REGISTRY:
        return LocalRegistry(Path(location or default_registry_dir()))
    import boto3  # the region and credentials of the environment (a pod's service account on EKS)

    from components.registry.sagemaker import SageMakerRegistry

    return SageMakerRegistry(boto3.client("sagemaker"), boto3.client("s3"))


if __name__ == "__main__":
    main()
