"""`ecomrec pipeline doctor` on moto (a fake of IAM, S3, ECR and SageMaker; read-only calls only).

moto implements GetRole, HeadBucket, GetBucketLocation, ListObjectsV2, DescribeImages and
DescribeModelPackageGroup, but not iam:SimulatePrincipalPolicy (getmoto/moto docs/docs/services/iam.rst at
commit 0af643a5dbfc98797f08ee64f5be3ef8002d56ff: "- [ ] simulate_principal_policy"; in-process it raises
NotImplementedError). So on plain moto the permission check must say "not checked", never "ok"; the
denial path is tested with a stand-in that answers in SimulatePrincipalPolicy's documented response shape
(botocore's iam service model: EvaluationResults[].EvalActionName / EvalResourceName / EvalDecision, one of
allowed | explicitDeny | implicitDeny).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from pipelines.sagemaker.images import steps_image_tag

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecomrec-sagemaker"
BUCKET = "ecomrec-doctor-bucket"
TRUST: dict[str, Any] = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """An account prepared as the CDK stacks and CD leave it: role, bucket with raw data, pushed steps image,
    model package group."""
    import boto3
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        clients: dict[str, Any] = {name: boto3.client(name, region_name=REGION)
                                   for name in ("iam", "s3", "ecr", "sagemaker")}
        clients["iam"].create_role(RoleName="ecomrec-sagemaker", AssumeRolePolicyDocument=json.dumps(TRUST))
        clients["s3"].create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        clients["s3"].put_object(Bucket=BUCKET, Key="ecomrec/raw/events/part-0.csv", Body=b"user_id\n")
        clients["ecr"].create_repository(repositoryName="ecomrec-steps")
        clients["ecr"].put_image(repositoryName="ecomrec-steps", imageTag=steps_image_tag(),
                                 imageManifest=json.dumps({"schemaVersion": 2, "layers": [], "mediaType":
                                                             "application/vnd.docker.distribution.manifest.v2+json"}))
        clients["sagemaker"].create_model_package_group(ModelPackageGroupName="ecomrec")
        yield clients


def _settings(**overrides: Any) -> Any:
    from pipelines.sagemaker.pipeline import PipelineSettings

    return PipelineSettings(**{"role": ROLE, "bucket": BUCKET, "region": REGION, **overrides})


def _diagnose(account: dict[str, Any], settings: Any = None, iam: Any = None) -> dict[str, tuple[str, str]]:
    from pipelines.sagemaker.doctor import Clients, diagnose

    clients = Clients(iam=iam or account["iam"], s3=account["s3"], ecr=account["ecr"], sagemaker=account["sagemaker"])
    return {f.check: (f.status, f.detail) for f in diagnose(settings or _settings(), clients)}


def test_a_prepared_account_has_no_blocker_and_says_what_it_could_not_check(account: dict[str, Any]) -> None:
    from pipelines.cli import app

    found = _diagnose(account)
    assert {check: status for check, (status, _) in found.items()} == {
        "role trust": "ok", "role permissions": "not checked", "bucket": "ok", "raw data": "ok",
        "steps image": "ok", "inference image": "warning", "CatBoost image": "ok", "CatBoost script": "ok",
        "CatBoost model": "ok", "CatBoost pins": "warning", "model package group": "ok"}
    assert "has not been implemented" in found["role permissions"][1]  # moto's own words, passed on
    result = CliRunner().invoke(app, ["pipeline", "doctor", "--role", ROLE, "--bucket", BUCKET, "--region", REGION])
    assert result.exit_code == 0, result.output
    assert "not checked" in result.output and "blocker" not in result.output


def test_each_missing_piece_is_a_blocker_and_the_cli_exits_non_zero(account: dict[str, Any]) -> None:
    import boto3

    from components.config import PipelineConfig
    from pipelines.cli import app

    iam = account["iam"]
    ec2_only = {**TRUST["Statement"][0], "Principal": {"Service": "ec2.amazonaws.com"}}
    iam.update_assume_role_policy(RoleName="ecomrec-sagemaker",
                                  PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [ec2_only]}))
    boto3.client("s3", region_name="us-west-2").create_bucket(
        Bucket="ecomrec-elsewhere", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    unpushed = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ecomrec-steps:nope"
    found = _diagnose(account, _settings(steps_image_uri=unpushed))
    assert found["role trust"][0] == "blocker" and "ec2" not in found["role trust"][1]
    assert found["steps image"][0] == "blocker" and "ImageNotFoundException" in found["steps image"][1]
    assert found["model package group"][0] == "ok"
    missing_group = _diagnose(account, _settings(config=PipelineConfig(model_package_group="shop-b")))
    assert missing_group["model package group"][0] == "blocker"
    assert "create-model-package-group --model-package-group-name shop-b" in missing_group["model package group"][1]
    assert _diagnose(account, _settings(bucket="ecomrec-elsewhere"))["bucket"] == (
        "blocker", "s3://ecomrec-elsewhere is in us-west-2, the pipeline runs in eu-west-1 (processing inputs "
                   "must be in the job's region)")
    assert _diagnose(account, _settings(bucket="ecomrec-missing"))["bucket"][0] == "blocker"
    assert _diagnose(account, _settings(role=f"arn:aws:iam::{ACCOUNT}:role/nobody"))["role trust"][0] == "blocker"
    other_region = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ecomrec-steps:{steps_image_tag()}"
    assert _diagnose(account, _settings(steps_image_uri=other_region))["steps image"][0] == "blocker"
    result = CliRunner().invoke(app, ["pipeline", "doctor", "--role", ROLE, "--bucket", BUCKET, "--region", REGION])
    assert result.exit_code == 1, result.output
    assert "blocker(s): the first run would fail" in " ".join(result.output.split())


def test_the_raw_data_is_looked_for_where_the_runs_will_read_it(account: dict[str, Any]) -> None:
    """CD points the doctor at the raw bucket the retraining schedule passes as InputDataUri (cd.yml
    --input-data-uri; tests/test_cdk_stacks.py checks the two agree): raw data there is found, and the same
    bucket without it under the definition's default prefix is a warning, not a silent pass."""
    from pipelines.cli import app

    raw_bucket = "ecomrec-raw-bucket"
    account["s3"].create_bucket(Bucket=raw_bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    account["s3"].delete_object(Bucket=BUCKET, Key="ecomrec/raw/events/part-0.csv")
    assert _diagnose(account)["raw data"][0] == "warning"  # nothing under s3://BUCKET/ecomrec/raw/
    account["s3"].put_object(Bucket=raw_bucket, Key="raw/events/part-0.csv", Body=b"user_id\n")
    from pipelines.sagemaker.doctor import Clients, diagnose

    clients = Clients(**{name: account[name] for name in ("iam", "s3", "ecr", "sagemaker")})
    found = {f.check: (f.status, f.detail) for f in diagnose(_settings(), clients, f"s3://{raw_bucket}/raw")}
    assert found["raw data"] == ("ok", f"s3://{raw_bucket}/raw/ holds objects")
    base = ["pipeline", "doctor", "--role", ROLE, "--bucket", BUCKET, "--region", REGION]
    result = CliRunner().invoke(app, [*base, "--input-data-uri", f"s3://{raw_bucket}/raw/"])
    assert result.exit_code == 0, result.output
    assert raw_bucket in result.output  # the table folds long cells: the row names the raw bucket
    result = CliRunner().invoke(app, [*base, "--input-data-uri", "raw-bucket/raw/"])
    assert result.exit_code == 2
    assert "--input-data-uri 'raw-bucket/raw/' is not an s3://BUCKET/PREFIX/ URI" in " ".join(result.output.split())


def test_the_pip_install_opt_in_is_checked_as_the_stock_image_and_warns_about_egress(
        account: dict[str, Any]) -> None:
    found = _diagnose(account, _settings(pip_install=True))
    assert found["steps image"] == (
        "ok", f"571004829621.dkr.ecr.{REGION}.amazonaws.com/sagemaker-spark-processing:3.5-cpu-py312-v1.3")
    assert found["pip install"][0] == "warning" and "egress" in found["pip install"][1]


Grant = tuple[str, str] | tuple[str, str, dict[str, str]]  # (action, resource pattern[, StringLike condition])


class _Simulator:
    """Stands in for IAM's SimulatePrincipalPolicy (moto has none): evaluates an allow-list of
    (action, resource pattern[, condition]) grants and answers in the API's response shape. A condition is
    ``StringLike`` on the request's ContextEntries; a key absent from the request does not match ("If the key
    that you specify in a policy condition is not present in the request context, the values do not match",
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition.html)."""

    def __init__(self, iam: Any, allowed: list[Grant]) -> None:
        self.iam, self.allowed = iam, allowed
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.iam, name)

    def _grants(self, grant: Grant, action: str, resource: str, context: dict[str, list[str]]) -> bool:
        pattern_action, pattern_resource, *condition = grant
        conditions = condition[0] if condition else {}
        return (fnmatch.fnmatchcase(action, pattern_action) and fnmatch.fnmatchcase(resource, pattern_resource)
                and all(any(fnmatch.fnmatchcase(v, want) for v in context.get(key, []))
                        for key, want in conditions.items()))

    def simulate_principal_policy(self, PolicySourceArn: str, ActionNames: list[str], ResourceArns: list[str],
                                  ContextEntries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        assert PolicySourceArn == ROLE
        context = {entry["ContextKeyName"]: entry["ContextKeyValues"] for entry in ContextEntries or []}
        results = []
        for action in ActionNames:
            for resource in ResourceArns:
                self.calls.append((action, resource))
                ok = any(self._grants(grant, action, resource, context) for grant in self.allowed)
                results.append({"EvalActionName": action, "EvalResourceName": resource,
                                "EvalDecision": "allowed" if ok else "implicitDeny"})
        return {"EvaluationResults": results, "IsTruncated": False}


# What the CDK ml stack grants (cdk/stacks/ml.py), without the S3Prefix listing of the JumpStart bucket.
CDK_LIKE: list[Grant] = [("s3:*", f"arn:aws:s3:::{BUCKET}"), ("s3:*", f"arn:aws:s3:::{BUCKET}/*"),
            ("s3:GetObject", "arn:aws:s3:::jumpstart-cache-prod-eu-west-1/*"), ("ecr:*", "*"),
            ("sagemaker:*", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:*"), ("iam:PassRole", ROLE), ("logs:*", "*")]


def test_denied_permissions_are_blockers_that_name_action_and_resource(account: dict[str, Any]) -> None:
    simulator = _Simulator(account["iam"], CDK_LIKE)
    status, detail = _diagnose(account, iam=simulator)["role permissions"]
    assert status == "blocker"
    assert detail == "denied: s3:ListBucket on arn:aws:s3:::jumpstart-cache-prod-eu-west-1 (implicitDeny)"
    asked = {action for action, _ in simulator.calls}
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "ecr:BatchGetImage", "sagemaker:CreateProcessingJob",
            "sagemaker:CreateTrainingJob", "sagemaker:CreateModelPackage", "iam:PassRole"} <= asked
    granted = _Simulator(account["iam"], [*CDK_LIKE, ("s3:ListBucket", "arn:aws:s3:::jumpstart-cache-prod-*")])
    assert _diagnose(account, iam=granted)["role permissions"][0] == "ok"


def test_the_cdk_roles_conditioned_grants_are_simulated_with_the_requests_context(account: dict[str, Any]) -> None:
    """cdk/stacks/ml.py scopes two grants by condition keys: iam:PassRole with iam:PassedToService =
    sagemaker.amazonaws.com, and the JumpStart bucket's s3:ListBucket with s3:prefix = the model key. The
    simulation must carry the keys the real requests carry, or that role is reported as denied."""
    cdk_role = [*[grant for grant in CDK_LIKE if grant[0] != "iam:PassRole"],
                ("iam:PassRole", ROLE, {"iam:PassedToService": "sagemaker.amazonaws.com"}),
                ("s3:ListBucket", "arn:aws:s3:::jumpstart-cache-prod-eu-west-1",
                 {"s3:prefix": "catboost-training/train-catboost-classification-model.tar.gz"})]
    assert _diagnose(account, iam=_Simulator(account["iam"], cdk_role))["role permissions"][0] == "ok"
    elsewhere = [*cdk_role[:-1], ("s3:ListBucket", "arn:aws:s3:::jumpstart-cache-prod-eu-west-1",
                                  {"s3:prefix": "other-model/*"})]
    status, detail = _diagnose(account, iam=_Simulator(account["iam"], elsewhere))["role permissions"]
    assert status == "blocker" and "s3:ListBucket on arn:aws:s3:::jumpstart-cache-prod-eu-west-1" in detail
