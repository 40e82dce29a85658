"""``ecomrec pipeline doctor``: checks a target account before the first run, without starting or creating
anything (read-only API calls on injected boto3 clients; the CLI creates them, tests pass moto's).

- the role: SageMaker may assume it (its trust policy), and it is allowed what the definition's jobs do
  (iam:SimulatePrincipalPolicy over the actions and resources the definition's defaults name);
- the bucket: it exists, in the pipeline's region, and the raw data prefix holds something;
- the images: the steps image is in this region's ECR (DescribeImages), the AWS-owned URIs (Spark, built-in
  CatBoost image, script and model) have this region's shape;
- the model package group exists (the pipeline's RegisterModel step adds versions to it, it does not create it).

A finding is ``ok``, ``warning``, ``blocker`` (the first run would fail) or ``not checked`` (the check itself
could not run, e.g. the caller may not call SimulatePrincipalPolicy: said, never taken as a pass).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from components.errors import EcomrecError
from components.storage import split_s3_uri
from pipelines.sagemaker import params as p
from pipelines.sagemaker.images import SPARK_REPOSITORY
from pipelines.sagemaker.jumpstart import load_pins
from pipelines.sagemaker.pipeline import PipelineSettings, parameter_defaults

Status = Literal["ok", "warning", "blocker", "not checked"]
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
_ECR_URI = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)(?::([^@]+))?(?:@(\S+))?$")


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Clients:
    iam: Any
    s3: Any
    ecr: Any
    sagemaker: Any


def _error(error: Exception) -> tuple[str, str]:
    response = getattr(error, "response", None) or {}
    details = response.get("Error", {})
    return str(details.get("Code", type(error).__name__)), str(details.get("Message", error))


def _arn_s3(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


# ---------------------------------------------------------------------------------------------- the role
def _allows_sagemaker(document: Any) -> bool:
    if isinstance(document, str):  # the raw API returns it URL-encoded; boto3 usually decodes it already
        document = json.loads(urllib.parse.unquote(document))
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        services = statement.get("Principal", {}).get("Service", []) if isinstance(
            statement.get("Principal"), dict) else []
        services = [services] if isinstance(services, str) else services
        if (statement.get("Effect") == "Allow" and SAGEMAKER_PRINCIPAL in services
                and any(a in ("sts:AssumeRole", "sts:*", "*") for a in actions)):
            return True
    return False


def check_trust(settings: PipelineSettings, iam: Any) -> Finding:
    name = settings.role.rsplit("/", 1)[-1]
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except Exception as error:  # any refusal is reported, not raised
        code, message = _error(error)
        if code == "NoSuchEntity":
            return Finding("role trust", "blocker", f"role {name} does not exist in this account")
        return Finding("role trust", "not checked", f"GetRole {name}: {code}: {message}")
    if _allows_sagemaker(role.get("AssumeRolePolicyDocument", {})):
        return Finding("role trust", "ok", f"{SAGEMAKER_PRINCIPAL} may assume {name}")
    return Finding("role trust", "blocker", f"the trust policy of {name} does not let {SAGEMAKER_PRINCIPAL} "
                                            "assume it (sts:AssumeRole for the service principal)")


Request = tuple[str, tuple[tuple[str, str], ...]]  # (resource ARN, request context)


def required_permissions(settings: PipelineSettings, defaults: p.Defaults) -> dict[Request, list[str]]:
    """{(resource ARN, request context): actions} the definition's jobs need with its default parameters
    (example keys under the run-time prefixes: a policy on ``prefix/*`` allows them, one on other keys does
    not), with the condition keys the real requests carry (the s3:prefix
    SageMaker lists, the service a role is passed to). IAM evaluates a condition on a key absent from the
    request as false, in the simulator too: without them a policy scoped by conditions, as the CDK ml stack's
    is, would be reported denied (https://docs.aws.amazon.com/IAM/latest/UserGuide/
    reference_policies_elements_condition.html)."""
    account, region, role = settings.account, settings.region, settings.role
    needed: dict[Request, list[str]] = {}

    def need(resource: str, *actions: str, context: dict[str, str] | None = None) -> None:
        listed = needed.setdefault((resource, tuple(sorted((context or {}).items()))), [])
        listed += [a for a in actions if a not in listed]

    input_bucket, input_key = split_s3_uri(defaults.input_data_uri)
    need(_arn_s3(input_bucket), "s3:ListBucket", context={"s3:prefix": input_key})  # S3Prefix inputs list it
    need(_arn_s3(input_bucket, f"{input_key.rstrip('/')}/events/part-0.parquet"), "s3:GetObject")
    output_bucket, output_key = split_s3_uri(defaults.output_uri)
    need(_arn_s3(output_bucket), "s3:ListBucket", context={"s3:prefix": output_key})
    need(_arn_s3(output_bucket, f"{output_key.rstrip('/')}/execution/etl/part-0.parquet"),
         "s3:GetObject", "s3:PutObject")
    code_bucket, code_key = split_s3_uri(settings.code.archive_uri)
    need(_arn_s3(code_bucket, code_key), "s3:GetObject")
    for uri in (defaults.catboost_script_uri, defaults.catboost_model_uri):
        bucket, key = split_s3_uri(uri)
        need(_arn_s3(bucket, key), "s3:GetObject")
    # The `model` channel is an S3Prefix channel on the JumpStart bucket: SageMaker lists it.
    model_bucket, model_key = split_s3_uri(defaults.catboost_model_uri)
    need(_arn_s3(model_bucket), "s3:ListBucket", context={"s3:prefix": model_key})
    match = _ECR_URI.match(defaults.steps_image_uri)
    if match and match.group(1) == account:
        need(f"arn:aws:ecr:{match.group(2)}:{account}:repository/{match.group(3)}",
             "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
        need("*", "ecr:GetAuthorizationToken")
    need(f"arn:aws:sagemaker:{region}:{account}:processing-job/ecomrec-etl-example", "sagemaker:CreateProcessingJob")
    need(f"arn:aws:sagemaker:{region}:{account}:training-job/ecomrec-train-example", "sagemaker:CreateTrainingJob")
    group = settings.config.model_package_group
    need(f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/1", "sagemaker:CreateModelPackage")
    need(role, "iam:PassRole", context={"iam:PassedToService": SAGEMAKER_PRINCIPAL})
    need(f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/ProcessingJobs:log-stream:example",
         "logs:CreateLogStream", "logs:PutLogEvents")
    return needed


def check_permissions(settings: PipelineSettings, defaults: p.Defaults, iam: Any) -> Finding:
    denied: list[str] = []
    checked = 0
    for (resource, context), actions in required_permissions(settings, defaults).items():
        entries = [{"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "string"}
                   for key, value in context]
        try:
            results = iam.simulate_principal_policy(PolicySourceArn=settings.role, ActionNames=actions,
                                                    ResourceArns=[resource], ContextEntries=entries
                                                    )["EvaluationResults"]
        except Exception as error:  # e.g. the caller lacks iam:SimulatePrincipalPolicy
            code, message = _error(error)
            return Finding("role permissions", "not checked",
                           f"SimulatePrincipalPolicy: {code}: {message[:160]} (needs iam:SimulatePrincipalPolicy "
                           "on the role; nothing is known about its permissions)")
        for result in results:
            checked += 1
            if result.get("EvalDecision") != "allowed":
                denied.append(f"{result.get('EvalActionName')} on {result.get('EvalResourceName', resource)} "
                              f"({result.get('EvalDecision')})")
    if denied:
        return Finding("role permissions", "blocker", "denied: " + "; ".join(denied))
    return Finding("role permissions", "ok", f"{checked} action/resource pairs the definition needs are allowed")


# ---------------------------------------------------------------------------------------------- the bucket
def check_bucket(settings: PipelineSettings, defaults: p.Defaults, s3: Any) -> list[Finding]:
    try:
        s3.head_bucket(Bucket=settings.bucket)
        location = s3.get_bucket_location(Bucket=settings.bucket).get("LocationConstraint")
    except Exception as error:
        code, message = _error(error)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return [Finding("bucket", "blocker", f"s3://{settings.bucket} does not exist")]
        return [Finding("bucket", "blocker", f"s3://{settings.bucket} is not accessible to you: {code} {message}")]
    region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
    if region != settings.region:
        return [Finding("bucket", "blocker", f"s3://{settings.bucket} is in {region}, the pipeline runs in "
                                             f"{settings.region} (processing inputs must be in the job's region)")]
    findings = [Finding("bucket", "ok", f"s3://{settings.bucket} exists in {region}")]
    bucket, key = split_s3_uri(defaults.input_data_uri)
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
        if listed.get("KeyCount", 0):
            findings.append(Finding("raw data", "ok", f"{defaults.input_data_uri} holds objects"))
        else:
            findings.append(Finding("raw data", "warning", f"nothing under {defaults.input_data_uri} yet: upload "
                                                           "events/ items/ users/ (DATA_CONTRACT.md)"))
    except Exception as error:
        code, message = _error(error)
        findings.append(Finding("raw data", "not checked", f"ListObjectsV2 {bucket}: {code}: {message}"))
    return findings


# ---------------------------------------------------------------------------------------------- the images
def _own_image(check: str, uri: str, settings: PipelineSettings, ecr: Any, missing: Status, remedy: str) -> Finding:
    match = _ECR_URI.match(uri)
    if match is None:
        return Finding(check, "blocker", f"{uri} is not an ECR image URI")
    account, region, repository, tag, digest = match.groups()
    if region != settings.region:
        return Finding(check, "blocker", f"{uri} is in {region}; SageMaker pulls from {settings.region}")
    if account != settings.account:
        return Finding(check, "ok", f"{uri} (account {account}: its own registry policy decides)")
    image_id = {"imageDigest": digest} if digest else {"imageTag": tag or "latest"}
    try:
        ecr.describe_images(registryId=account, repositoryName=repository, imageIds=[image_id])
    except Exception as error:
        code, message = _error(error)
        if code in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return Finding(check, missing, f"{uri}: {code}: {remedy}")
        return Finding(check, "not checked", f"DescribeImages {repository}: {code}: {message}")
    return Finding(check, "ok", f"{uri} is pushed")


def _aws_image(check: str, uri: str, settings: PipelineSettings, repository: str) -> Finding:
    match = _ECR_URI.match(uri)
    if match is None or match.group(2) != settings.region or match.group(3) != repository:
        return Finding(check, "blocker", f"{uri} is not a {repository} image of {settings.region}")
    return Finding(check, "ok", uri)


def check_images(settings: PipelineSettings, defaults: p.Defaults, ecr: Any) -> list[Finding]:
    findings = []
    steps_match = _ECR_URI.match(defaults.steps_image_uri)
    if steps_match and steps_match.group(3) == SPARK_REPOSITORY:  # the --pip-install opt-in
        findings.append(_aws_image("steps image", defaults.steps_image_uri, settings, SPARK_REPOSITORY))
        findings.append(Finding("pip install", "warning", "every job pip-installs its dependencies at start: the "
                                                          "jobs need internet egress (no VPC without NAT)"))
    else:
        findings.append(_own_image("steps image", defaults.steps_image_uri, settings, ecr, "blocker",
                                   "build and push containers/steps/Dockerfile (CD does; `ecomrec pipeline "
                                   "images` names the tag)"))
    findings.append(_own_image("inference image", defaults.inference_image_uri, settings, ecr, "warning",
                               "registration only names it; push it before deploying a model"))
    findings.append(_aws_image("CatBoost image", defaults.catboost_image_uri, settings, "pytorch-training"))
    pins = load_pins()
    for check, uri in (("CatBoost script", defaults.catboost_script_uri),
                       ("CatBoost model", defaults.catboost_model_uri)):
        bucket, _ = split_s3_uri(uri)
        findings.append(Finding(check, "ok", uri) if bucket == f"jumpstart-cache-prod-{settings.region}" else
                        Finding(check, "blocker", f"{uri} is not in {settings.region}'s JumpStart bucket"))
    if not pins.get("retrieved"):
        findings.append(Finding("CatBoost pins", "warning", f"{pins['model_id']} {pins['model_version']} read from the "
                                                            "SDK's record of its spec, not from JumpStart: "
                                                            "`ecomrec pipeline refresh-jumpstart` (CD does)"))
    return findings


def check_group(settings: PipelineSettings, sagemaker: Any) -> Finding:
    group = settings.config.model_package_group
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=group)
    except Exception as error:
        code, message = _error(error)
        if code == "ValidationException" or "does not exist" in message:
            return Finding("model package group", "blocker",
                           f"{group} does not exist; the RegisterModel step does not create it: deploy the CDK ml "
                           f"stack or `aws sagemaker create-model-package-group --model-package-group-name {group}`")
        return Finding("model package group", "not checked", f"DescribeModelPackageGroup {group}: {code}: {message}")
    return Finding("model package group", "ok", f"{group} exists")


def diagnose(settings: PipelineSettings, clients: Clients, input_data_uri: str | None = None) -> list[Finding]:
    """``input_data_uri``: the raw data the runs will read when it is not the definition's default (the CDK
    retraining schedule passes the raw bucket's prefix as InputDataUri): its listing and the role's read
    grants are checked there."""
    defaults = parameter_defaults(settings)
    if input_data_uri:
        try:
            split_s3_uri(input_data_uri)
        except EcomrecError:
            raise EcomrecError(f"--input-data-uri {input_data_uri!r} is not an s3://BUCKET/PREFIX/ URI") from None
        defaults = replace(defaults, input_data_uri=input_data_uri.rstrip("/") + "/")
    return [check_trust(settings, clients.iam), check_permissions(settings, defaults, clients.iam),
            *check_bucket(settings, defaults, clients.s3), *check_images(settings, defaults, clients.ecr),
            check_group(settings, clients.sagemaker)]


def blockers(findings: Iterable[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.status == "blocker"]
