"""SageMakerRegistry (the registry port on the SageMaker Model Registry) against moto's SageMaker and S3.

moto stands in for AWS here (a fake, in process). It does not emit the EventBridge "SageMaker Model
Package State Change" event on approval, so these tests check the status the registry reports, not the
event the EKS rollout reacts to; the local registry's events.jsonl covers that shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components import schema as s
from components.errors import RegistryError
from components.registry.base import APPROVED, PENDING, REJECTED
from components.registry.gate import metric_value
from components.registry.sagemaker import SageMakerRegistry, metadata_to_metrics, metrics_to_metadata

REGION = "eu-west-1"
GROUP = "ecomrec-test"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ecomrec-inference:1"


def _evaluation(two_stage: float, als: float) -> dict[str, Any]:
    ranking = {r: {s.metric_key(m, k): {"value": 0.01 * (i + 1)} for m in s.METRICS for k in s.KS}
               for i, r in enumerate(s.RECOMMENDERS)}
    ranking[s.TWO_STAGE][s.metric_key("ndcg", 10)] = {"value": two_stage}
    ranking[s.ALS][s.metric_key("ndcg", 10)] = {"value": als}
    return {"ranking_metrics": ranking, "users": {"warm": 10}}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": REGION})  # type: ignore[typeddict-item]
        for key in [*(f"runs/{run}/bundle/model.tar.gz" for run in range(1, 4)), "m.tar.gz"]:
            s3.put_object(Bucket="bucket", Key=key, Body=f"bundle bytes of {key}".encode())
        yield boto3.client("sagemaker", region_name=REGION), s3


def test_metrics_metadata_round_trip() -> None:
    evaluation = _evaluation(0.2, 0.1)
    metadata = metrics_to_metadata(evaluation)
    assert len(metadata) <= 50  # CustomerMetadataProperties' limit
    assert metadata[s.metric_json_path(s.TWO_STAGE, "ndcg", 10)] == "0.2"
    back = metadata_to_metrics(metadata)
    for recommender in s.RECOMMENDERS:
        for metric in s.METRICS:
            expected = metric_value(evaluation, recommender, metric, 10)
            assert metric_value(back, recommender, metric, 10) == expected


def test_register_versions_and_list(aws: tuple[Any, Any]) -> None:
    client, s3 = aws
    registry = SageMakerRegistry(client, s3)
    assert registry.list_versions(GROUP) == []
    first = registry.register(GROUP, "s3://bucket/runs/1/bundle/model.tar.gz", _evaluation(0.2, 0.1),
                              description="bundle 1", image_uri=IMAGE)
    second = registry.register(GROUP, "s3://bucket/runs/2/bundle/model.tar.gz", _evaluation(0.3, 0.1),
                               image_uri=IMAGE)
    assert client.describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupName"] == GROUP
    assert (first.version, second.version) == (1, 2)
    assert first.status == PENDING
    assert first.group == GROUP
    assert first.image_uri == IMAGE
    assert first.model_data_url == "s3://bucket/runs/1/bundle/model.tar.gz"
    assert first.arn.startswith(f"arn:aws:sagemaker:{REGION}:")
    assert first.description == "bundle 1"
    assert first.created_at
    listed = registry.list_versions(GROUP)
    assert [v.version for v in listed] == [1, 2]
    assert metric_value(listed[1].metrics, s.TWO_STAGE, "ndcg", 10) == 0.3
    assert registry.describe(GROUP, 2) == listed[1]


def test_approve_reject_and_latest_approved(aws: tuple[Any, Any]) -> None:
    client, s3 = aws
    registry = SageMakerRegistry(client, s3)
    for run in (1, 2, 3):
        registry.register(GROUP, f"s3://bucket/runs/{run}/bundle/model.tar.gz", _evaluation(0.2, 0.1),
                          image_uri=IMAGE)
    assert registry.latest_approved(GROUP) is None
    approved = registry.set_status(GROUP, 1, APPROVED, reason="offline metrics reviewed")
    assert approved.status == APPROVED
    assert approved.description == "offline metrics reviewed"
    registry.set_status(GROUP, 2, APPROVED)
    latest = registry.latest_approved(GROUP)
    assert latest is not None
    assert latest.version == 2
    rejected = registry.set_status(GROUP, 2, REJECTED, reason="bad canary")
    assert rejected.status == REJECTED
    latest = registry.latest_approved(GROUP)
    assert latest is not None
    assert latest.version == 1  # rejecting the live version falls back to the previous approved one
    assert registry.describe(GROUP, 3).status == PENDING
    package = client.describe_model_package(ModelPackageName=rejected.arn)
    assert package["ModelApprovalStatus"] == REJECTED


def test_set_status_is_idempotent_and_validated(aws: tuple[Any, Any]) -> None:
    client, s3 = aws
    registry = SageMakerRegistry(client, s3)
    registry.register(GROUP, "s3://bucket/m.tar.gz", {}, image_uri=IMAGE)
    before = registry.describe(GROUP, 1)
    assert registry.set_status(GROUP, 1, PENDING) == before
    with pytest.raises(RegistryError, match="unknown approval status"):
        registry.set_status(GROUP, 1, "Live")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.describe(GROUP, 7)


def test_register_needs_s3_bundle_and_image(aws: tuple[Any, Any]) -> None:
    client, s3 = aws
    registry = SageMakerRegistry(client, s3)
    with pytest.raises(RegistryError, match="needs the bundle in S3"):
        registry.register(GROUP, "/tmp/model.tar.gz", {}, image_uri=IMAGE)
    with pytest.raises(RegistryError, match="inference image"):
        registry.register(GROUP, "s3://bucket/m.tar.gz", {})


def test_describe_reads_evaluation_from_model_metrics(aws: tuple[Any, Any]) -> None:
    """A package registered by the pipeline carries ModelMetrics -> evaluation.json in S3: with an S3
    client the registry returns that whole document."""
    client, s3 = aws
    s3.create_bucket(Bucket="runs", CreateBucketConfiguration={"LocationConstraint": REGION})
    evaluation = _evaluation(0.25, 0.2)
    s3.put_object(Bucket="runs", Key="exec/evaluation/evaluation.json", Body=json.dumps(evaluation).encode())
    client.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = client.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=PENDING,
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://runs/exec/bundle/m.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": "s3://runs/exec/evaluation/evaluation.json"}}},
    )["ModelPackageArn"]
    version = SageMakerRegistry(client, s3).describe(GROUP, 1)
    assert version.arn == arn
    assert version.metrics["users"] == {"warm": 10}
    assert metric_value(version.metrics, s.TWO_STAGE, "ndcg", 10) == 0.25
    assert version.metrics["evaluation_uri"] == "s3://runs/exec/evaluation/evaluation.json"
    # without S3 access the same package still describes, with what the package itself holds
    assert SageMakerRegistry(client).describe(GROUP, 1).metrics == {
        "evaluation_uri": "s3://runs/exec/evaluation/evaluation.json"}


def test_models_cli_on_the_sagemaker_registry(aws: tuple[Any, Any]) -> None:
    """`ecomrec models ... --sagemaker` (the CLI creates its boto3 client inside moto's mock)."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    client, s3 = aws
    registry = SageMakerRegistry(client, s3)
    registry.register(GROUP, "s3://bucket/runs/1/bundle/model.tar.gz", _evaluation(0.2, 0.1), image_uri=IMAGE)
    runner = CliRunner()
    common = ["--sagemaker", "--region", REGION, "--group", GROUP]
    listed = runner.invoke(app, ["models", "list", *common])
    assert listed.exit_code == 0, listed.output
    assert PENDING in listed.output
    assert "0.2000" in listed.output  # two_stage ndcg@10 read back from the package metadata
    approved = runner.invoke(app, ["models", "approve", "1", *common, "--reason", "looks good"])
    assert approved.exit_code == 0, approved.output
    assert registry.describe(GROUP, 1).status == APPROVED
    described = runner.invoke(app, ["models", "describe", "1", *common])
    assert described.exit_code == 0, described.output
    assert json.loads(described.stdout)["status"] == APPROVED
    missing = runner.invoke(app, ["models", "reject", "9", *common])
    assert missing.exit_code == 1
    assert "no version 9" in missing.output


def test_registration_records_the_digest_and_approval_checks_it(aws: tuple[Any, Any]) -> None:
    """Finding 5: overwriting a registered artifact, then approving, served the substitute. The digest is
    kept on the package (CustomerMetadataProperties, as the rollout function reads it) and approving
    re-reads the object."""
    import hashlib

    client, s3 = aws
    registry = SageMakerRegistry(client, s3)
    uri = "s3://bucket/runs/1/bundle/model.tar.gz"
    version = registry.register(GROUP, uri, {}, image_uri=IMAGE)
    expected = hashlib.sha256(b"bundle bytes of runs/1/bundle/model.tar.gz").hexdigest()
    assert version.bundle_sha256 == expected
    package = client.describe_model_package(ModelPackageName=version.arn)
    assert package["CustomerMetadataProperties"]["bundle_sha256"] == expected
    s3.put_object(Bucket="bucket", Key="runs/1/bundle/model.tar.gz", Body=b"a substitute")
    with pytest.raises(RegistryError, match="changed since registration"):
        registry.set_status(GROUP, 1, APPROVED)
    assert registry.describe(GROUP, 1).status == PENDING
    with pytest.raises(RegistryError, match="expected"):
        registry.register(GROUP, uri, {}, image_uri=IMAGE, bundle_sha256=expected)
    # a package made outside ecomrec (no digest) is not approved either
    client.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=PENDING,
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": uri}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})
    with pytest.raises(RegistryError, match="carries no bundle_sha256"):
        registry.set_status(GROUP, 2, APPROVED)
