"""The registry port. Both implementations speak SageMaker Model Registry semantics: a model package
group holds numbered versions, each PendingManualApproval, Approved or Rejected, with metrics attached."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
PENDING: ApprovalStatus = "PendingManualApproval"
APPROVED: ApprovalStatus = "Approved"
REJECTED: ApprovalStatus = "Rejected"
APPROVAL_STATUSES: tuple[ApprovalStatus, ...] = (PENDING, APPROVED, REJECTED)
# The model package's CustomerMetadataProperties key holding ModelVersion.bundle_sha256 (the rollout
# function reads the same key: cdk/rollout/ecomrec_rollout/constants.py BUNDLE_SHA256_METADATA).
BUNDLE_SHA256_METADATA = "bundle_sha256"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


@dataclass(frozen=True)
class ModelVersion:
    group: str
    version: int
    status: ApprovalStatus
    model_data_url: str  # the bundle: a model.tar.gz path or s3:// URI
    created_at: str  # ISO-8601 UTC
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluation.json as written by the step
    description: str = ""
    arn: str = ""  # the model package ARN on SageMaker; "local:<group>/<version>" locally
    image_uri: str = ""
    # sha256 of the model.tar.gz bytes registered: approval and every load check it, so what is served is
    # exactly what was approved ("" on records made before it was recorded: those cannot be approved)
    bundle_sha256: str = ""


class ModelRegistry(Protocol):
    def register(self, group: str, model_data_url: str, metrics: dict[str, Any], *,
                 description: str = "", image_uri: str = "",
                 status: ApprovalStatus = PENDING, bundle_sha256: str = "") -> ModelVersion: ...

    def list_versions(self, group: str) -> list[ModelVersion]: ...

    def describe(self, group: str, version: int) -> ModelVersion: ...

    def set_status(self, group: str, version: int, status: ApprovalStatus,
                   reason: str = "") -> ModelVersion: ...

    def latest_approved(self, group: str) -> ModelVersion | None: ...
