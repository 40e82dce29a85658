"""Everything a deployment can change, read once from CDK context (cdk.json defaults, `-c key=value`).

Synthesis never looks anything up in an account: with no `account`/`region` context the stacks are
environment-agnostic, and with them the VPC gets its availability zones from context, not a lookup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import aws_cdk as cdk
from constructs import Construct

PREFIX = "ecomrec:"


@dataclass(frozen=True)
class EcomrecConfig:
    prefix: str = "ecomrec"  # resource-name prefix
    account: str | None = None
    region: str | None = None
    # Empty: the first two zones CloudFormation's Fn::GetAZs lists at deploy time (no lookup at synth, no
    # guessed names); set it (`-c ecomrec:availabilityZones=eu-west-1a,eu-west-1c`) to pin zones.
    availability_zones: tuple[str, ...] = ()
    # ml
    model_package_group: str = "ecomrec"
    pipeline_name: str = "ecomrec"  # lowercase: SageMaker lowercases pipeline ARNs; = the CLI's default
    pipeline_in_stack: bool = True  # CfnPipeline from pipelines.sagemaker (needs account + region)
    image_tag: str = "bootstrap"  # inference image tag the CD workflow just pushed (git SHA)
    raw_prefix: str = "raw/"  # the raw contract (events/, items/, users/) in the raw bucket
    # serving
    # In EKS standard support until 27 Mar 2027 (tests/test_aws_constraints.py holds the calendar).
    kubernetes_version: str = "1.35"
    nat_gateways: int = 2  # one per zone: losing a zone does not cut the other zone's egress
    replicas: int = 3
    max_replicas: int = 12
    # events: retraining
    retrain_schedule: str = "cron(0 3 ? * MON *)"
    retrain_timezone: str = "UTC"
    retrain_parameters: dict[str, str] = field(default_factory=dict)  # pipeline parameter overrides
    # monitoring
    p99_budget_seconds: float = 0.1  # at the load balancer: service p99 (20 ms budget) + network
    error_rate_percent: float = 5.0
    alarm_email: str = ""  # optional e-mail subscription of the alarm topic
    # github: an existing token.actions.githubusercontent.com provider (an account holds one per URL)
    github_oidc_provider_arn: str = ""

    @property
    def inference_repo(self) -> str:
        return f"{self.prefix}-inference"

    @property
    def steps_repo(self) -> str:
        return f"{self.prefix}-steps"

    @property
    def named(self) -> bool:
        """Account and region known: buckets and the SageMaker role get fixed names (the pipeline
        definition and the CD workflow refer to them by name)."""
        return bool(self.account and self.region)

    def bucket_name(self, kind: str) -> str | None:
        return f"{self.prefix}-{kind}-{self.account}-{self.region}" if self.named else None

    @property
    def sagemaker_role_name(self) -> str | None:
        return f"{self.prefix}-sagemaker-{self.region}" if self.named else None

    @property
    def sagemaker_role_arn(self) -> str | None:
        return f"arn:aws:iam::{self.account}:role/{self.sagemaker_role_name}" if self.named else None

    @property
    def inference_image_uri(self) -> str | None:
        if not self.named:
            return None
        return f"{self.account}.dkr.ecr.{self.region}.amazonaws.com/{self.inference_repo}:{self.image_tag}"

    @property
    def runs_prefix(self) -> str:
        """Where the pipeline writes its run outputs in the processed bucket (OutputUri's default,
        pipelines/sagemaker/pipeline.py: s3://<processed>/<prefix>/runs/<execution>/<step>/)."""
        return f"{self.prefix}/runs/"

    @property
    def live_parameter(self) -> str:
        return f"/{self.prefix}/serving/live-model"

    @property
    def load_balancer_name(self) -> str:
        return f"{self.prefix}-inference"

    @classmethod
    def from_context(cls, scope: Construct) -> EcomrecConfig:
        """Context keys are `ecomrec:<camelCase field>`; `account` and `region` also without the prefix."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            camel = f.name.split("_")[0] + "".join(p.title() for p in f.name.split("_")[1:])
            raw = scope.node.try_get_context(PREFIX + camel)
            if raw is None and f.name in ("account", "region"):
                raw = scope.node.try_get_context(f.name)
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, raw, cls.__dataclass_fields__[f.name].default)
        return cls(**values)


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """`-c` values arrive as strings; cdk.json values as JSON types."""
    if name == "retrain_parameters":
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    if name == "availability_zones":
        return tuple(raw.split(",")) if isinstance(raw, str) else tuple(raw)
    if isinstance(default, bool):
        return raw if isinstance(raw, bool) else str(raw).lower() == "true"
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return str(raw)


def portable_arn(
    stack: cdk.Stack,
    *,
    service: str,
    resource: str,
    resource_name: str,
    arn_format: cdk.ArnFormat = cdk.ArnFormat.SLASH_RESOURCE_NAME,
) -> str:
    """An ARN in this stack's account and region written with the pseudo parameters, so the template (and
    the cdk-nag finding ids acknowledged by the stacks) are the same with and without account context."""
    return stack.format_arn(
        service=service,
        resource=resource,
        resource_name=resource_name,
        partition=cdk.Aws.PARTITION,
        region=cdk.Aws.REGION,
        account=cdk.Aws.ACCOUNT_ID,
        arn_format=arn_format,
    )
