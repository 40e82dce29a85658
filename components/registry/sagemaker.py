"""The SageMaker Model Registry behind the registry port (components/registry/base.py).

A model package group holds numbered versions; approving or rejecting one is UpdateModelPackage, which
makes SageMaker emit the EventBridge "SageMaker Model Package State Change" event the rollout listens
to. The boto3 SageMaker client is injected (``boto3.client("sagemaker")`` in the CLI layer).

Metrics: the headline ranking metrics are kept on the package as CustomerMetadataProperties keyed by
their evaluation.json path (``schema.metric_json_path``), so listing needs no S3 access; with an S3
client, ``describe`` returns the whole evaluation.json the package's ModelMetrics points to.

Integrity: the sha256 of the registered model.tar.gz is kept in the same metadata (``bundle_sha256``);
approving re-reads the object from S3 and refuses it if its bytes changed, and the rollout and the serving
pods check it again before serving (cdk/rollout, components/serving/source.py).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from components import schema as s
from components.checksum import sha256_chunks
from components.errors import RegistryError
from components.registry.base import (
    APPROVAL_STATUSES,
    APPROVED,
    BUNDLE_SHA256_METADATA,
    PENDING,
    ApprovalStatus,
    ModelVersion,
    is_sha256,
)
from components.storage import is_s3_uri, split_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient
else:
    S3Client = Any
    SageMakerClient = Any

log = logging.getLogger(__name__)

# The metrics copied onto a package (CustomerMetadataProperties holds at most 50 entries).
METADATA_METRICS: Final = tuple((recommender, metric, 10) for recommender in s.RECOMMENDERS
                                for metric in s.METRICS)
CONTENT_TYPES: Final = ["application/json"]


def metrics_to_metadata(evaluation: dict[str, Any]) -> dict[str, str]:
    """``{"ranking_metrics.two_stage.ndcg_at_10.value": "0.1234", ...}`` for the metrics present."""
    metadata: dict[str, str] = {}
    for recommender, metric, k in METADATA_METRICS:
        node: Any = evaluation
        path = s.metric_json_path(recommender, metric, k)
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int | float):
            metadata[path] = repr(float(node))
    return metadata


def metadata_to_metrics(metadata: dict[str, str]) -> dict[str, Any]:
    """The evaluation.json shape back from the metadata (only the metrics that were copied)."""
    ranking: dict[str, dict[str, dict[str, float]]] = {}
    for recommender, metric, k in METADATA_METRICS:
        value = metadata.get(s.metric_json_path(recommender, metric, k))
        if value is None:
            continue
        try:
            ranking.setdefault(recommender, {})[s.metric_key(metric, k)] = {"value": float(value)}
        except ValueError:
            log.warning("model package metadata %s=%r is not a number", metric, value)
    return {"ranking_metrics": ranking} if ranking else {}


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value or "")


def _error_message(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message", error))


class SageMakerRegistry:
    """``ModelRegistry`` on the SageMaker Model Registry."""

    def __init__(self, sagemaker_client: SageMakerClient, s3_client: S3Client | None = None) -> None:
        self.client = sagemaker_client
        self.s3 = s3_client

    # ---------------------------------------------------------------- port
    def register(self, group: str, model_data_url: str, metrics: dict[str, Any], *,
                 description: str = "", image_uri: str = "",
                 status: ApprovalStatus = PENDING, bundle_sha256: str = "") -> ModelVersion:
        """``bundle_sha256``: the archive's digest; without it the object is read from S3 to compute it."""
        if not is_s3_uri(model_data_url):
            raise RegistryError(f"cannot register {model_data_url}: the SageMaker Model Registry needs the "
                                "bundle in S3 (s3://...)")
        if not image_uri:
            raise RegistryError("a SageMaker model package needs the inference image URI (image_uri)")
        self._check_status(status)
        self._ensure_group(group)
        request: dict[str, Any] = {
            "ModelPackageGroupName": group,
            "ModelApprovalStatus": status,
            "InferenceSpecification": {
                "Containers": [{"Image": image_uri, "ModelDataUrl": model_data_url}],
                "SupportedContentTypes": CONTENT_TYPES,
                "SupportedResponseMIMETypes": CONTENT_TYPES,
            },
        }
        if description:
            request["ModelPackageDescription"] = description[:1000]
        digest = self._s3_sha256(model_data_url)
        if bundle_sha256 and digest != bundle_sha256:
            raise RegistryError(f"cannot register {model_data_url}: its sha256 is {digest}, the caller expected "
                                f"{bundle_sha256}")
        evaluation_uri = str(metrics.get("evaluation_uri", ""))
        if is_s3_uri(evaluation_uri):  # what _describe_arn reads back (and the console's report beside it)
            request["ModelMetrics"] = {"ModelQuality": {"Statistics": {"ContentType": CONTENT_TYPES[0],
                                                                       "S3Uri": evaluation_uri}}}
        request["CustomerMetadataProperties"] = {**metrics_to_metadata(metrics), BUNDLE_SHA256_METADATA: digest}
        arn = self._call("create_model_package", **request)["ModelPackageArn"]
        return self._describe_arn(arn)

    def list_versions(self, group: str) -> list[ModelVersion]:
        return [self._describe_arn(summary["ModelPackageArn"]) for summary in self._summaries(group)]

    def describe(self, group: str, version: int) -> ModelVersion:
        for summary in self._summaries(group):
            if summary.get("ModelPackageVersion") == version:
                return self._describe_arn(summary["ModelPackageArn"])
        known = [summary.get("ModelPackageVersion") for summary in self._summaries(group)]
        raise RegistryError(f"model package group {group!r} has no version {version} (versions: {known})")

    def set_status(self, group: str, version: int, status: ApprovalStatus, reason: str = "") -> ModelVersion:
        self._check_status(status)
        current = self.describe(group, version)
        if current.status == status:
            return current  # idempotent: SageMaker emits no state change event for a no-op either
        if status == APPROVED:
            self.verify_artifact(current)
        request: dict[str, Any] = {"ModelPackageArn": current.arn, "ModelApprovalStatus": status}
        if reason:
            request["ApprovalDescription"] = reason[:1000]
        self._call("update_model_package", **request)
        return self._describe_arn(current.arn)

    def latest_approved(self, group: str) -> ModelVersion | None:
        approved = [v for v in self._summaries(group) if v.get("ModelApprovalStatus") == APPROVED]
        if not approved:
            return None
        latest = max(approved, key=lambda summary: summary.get("ModelPackageVersion", 0))
        return self._describe_arn(latest["ModelPackageArn"])

    def verify_artifact(self, version: ModelVersion) -> None:
        """Raise RegistryError unless the S3 object's bytes are the ones registered."""
        where = f"model package {version.arn or version.version}"
        if not is_sha256(version.bundle_sha256):
            raise RegistryError(f"{where} carries no {BUNDLE_SHA256_METADATA} in its CustomerMetadataProperties "
                                "(registered outside ecomrec, or before digests were recorded): register it again")
        found = self._s3_sha256(version.model_data_url)
        if found != version.bundle_sha256:
            raise RegistryError(f"{where}: {version.model_data_url} changed since registration (sha256 {found}, "
                                f"registered {version.bundle_sha256}); refusing to approve it")

    # ---------------------------------------------------------------- helpers
    def _s3_sha256(self, uri: str) -> str:
        """sha256 of an S3 object, streamed (a bundle can be gigabytes)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.s3 is None:
            raise RegistryError(f"checking the digest of {uri} needs an S3 client; none was given")
        bucket, key = split_s3_uri(uri)
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            return sha256_chunks(body.iter_chunks(1 << 20))
        except (ClientError, BotoCoreError) as error:
            raise RegistryError(f"cannot read {uri} to check its digest: {_error_message(error)}") from error

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in APPROVAL_STATUSES:
            raise RegistryError(f"unknown approval status {status!r}; use one of {APPROVAL_STATUSES}")

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise RegistryError(f"SageMaker {operation} failed: {_error_message(error)}") from error

    def _ensure_group(self, group: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.describe_model_package_group(ModelPackageGroupName=group)
            return
        except ClientError as error:
            if "does not exist" not in _error_message(error):
                raise RegistryError(f"SageMaker describe_model_package_group {group!r} failed: "
                                    f"{_error_message(error)}") from error
        self._call("create_model_package_group", ModelPackageGroupName=group,
                   ModelPackageGroupDescription="ecomrec recommender bundles (created by ecomrec)")
        log.info("created model package group %s", group)

    def _summaries(self, group: str) -> list[dict[str, Any]]:
        """Versions of the group, oldest first (an unknown group has none, as locally)."""
        from botocore.exceptions import ClientError

        summaries: list[dict[str, Any]] = []
        try:
            paginator = self.client.get_paginator("list_model_packages")
            for page in paginator.paginate(ModelPackageGroupName=group, ModelPackageType="Versioned"):
                summaries += page.get("ModelPackageSummaryList", [])
        except ClientError as error:
            if "does not exist" in _error_message(error):
                return []
            raise RegistryError(f"SageMaker list_model_packages {group!r} failed: "
                                f"{_error_message(error)}") from error
        return sorted(summaries, key=lambda summary: summary.get("ModelPackageVersion", 0))

    def _describe_arn(self, arn: str) -> ModelVersion:
        package = self._call("describe_model_package", ModelPackageName=arn)
        containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
        metadata = package.get("CustomerMetadataProperties") or {}
        evaluation_uri = (package.get("ModelMetrics", {}).get("ModelQuality", {})
                          .get("Statistics", {}).get("S3Uri", ""))
        metrics = self._evaluation(evaluation_uri) or metadata_to_metrics(metadata)
        if evaluation_uri:
            metrics = {**metrics, "evaluation_uri": evaluation_uri}
        return ModelVersion(
            group=package.get("ModelPackageGroupName", ""),
            version=int(package.get("ModelPackageVersion", 0)),
            status=package.get("ModelApprovalStatus", PENDING),
            model_data_url=containers[0].get("ModelDataUrl", "") if containers else "",
            created_at=_iso(package.get("CreationTime")),
            metrics=metrics,
            description=package.get("ApprovalDescription") or package.get("ModelPackageDescription", ""),
            arn=arn,
            image_uri=containers[0].get("Image", "") if containers else "",
            bundle_sha256=str(metadata.get(BUNDLE_SHA256_METADATA, "")),
        )

    def _evaluation(self, uri: str) -> dict[str, Any]:
        """evaluation.json from the package's ModelMetrics, when an S3 client was given."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.s3 is None or not is_s3_uri(uri):
            return {}
        bucket, key = split_s3_uri(uri)
        try:
            loaded = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (ClientError, BotoCoreError, json.JSONDecodeError) as error:
            # best effort: the metrics kept on the package are the fallback
            log.warning("cannot read %s (%s); using the metrics kept on the model package", uri, error)
            return {}
        return loaded if isinstance(loaded, dict) else {}
