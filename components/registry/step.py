"""Step ``register``: the quality gate, then the local model registry as PendingManualApproval.

On SageMaker the same gate is a ConditionStep on evaluation.json and registration a ModelStep; locally
this step does both. A failed gate registers nothing and stops the run with the reasons."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from components import schema as s
from components.errors import QualityGateError
from components.registry.gate import check_gate
from components.registry.local import LocalRegistry
from components.stepargs import parse_step_args

INPUTS = ("bundle", "evaluation")
REGISTRATION_FILE = "registration.json"
log = logging.getLogger(__name__)


def default_registry_dir() -> Path:
    return Path(os.environ.get("ECOMREC_REGISTRY_ROOT", ".ecomrec/registry"))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "register", INPUTS, options={"registry": "local registry folder"})
    evaluation = json.loads((args.inputs["evaluation"] / s.EVALUATION_FILE).read_text())
    verdict = check_gate(evaluation, args.config.gate)
    record: dict[str, object] = {"gate": asdict(verdict)}
    if not verdict.passed:
        (args.output / REGISTRATION_FILE).write_text(json.dumps(record, indent=2))
        raise QualityGateError("quality gate failed, nothing registered: " + "; ".join(verdict.reasons))
    registry = LocalRegistry(Path(args.options["registry"] or default_registry_dir()))
    bundle_manifest = json.loads((args.inputs["bundle"] / s.BUNDLE_MANIFEST).read_text())
    digest = json.loads((args.inputs["bundle"] / s.BUNDLE_DIGEST_FILE).read_text())["sha256"]
    version = registry.register(
        args.config.model_package_group,
        str(args.inputs["bundle"] / s.MODEL_ARCHIVE),
        evaluation,
        description=f"bundle {bundle_manifest['version']}",
        bundle_sha256=digest,  # the registry's copy must be the bytes the bundle step wrote
    )
    record["registered"] = asdict(version) | {"metrics": "see evaluation.json"}
    (args.output / REGISTRATION_FILE).write_text(json.dumps(record, indent=2))
    log.info("registered %s version %d as %s", version.group, version.version, version.status)


if __name__ == "__main__":
    main()
