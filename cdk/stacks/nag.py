"""cdk-nag (3.x): the AwsSolutions pack runs on every synth; acknowledgments live next to their resource.

cdk-nag 3 uses CDK's own ``Validations`` API: an unacknowledged error fails ``app.synth()``, and each
finding (e.g. one wildcard resource of an IAM policy) is acknowledged by its exact id with a reason.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def enable(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


PACK = "AwsSolutions"

# cdk-nag names a cross-stack reference by its CloudFormation export. These come from the data stack's
# bucket ARNs (their names derive from construct paths: a rename shows up as a failing synth that prints
# the new id).
RAW_OBJECTS = "EcomrecData:ExportsOutputFnGetAttRaw72517081Arn8AABA17C/*"
PROCESSED_OBJECTS = "EcomrecData:ExportsOutputFnGetAttProcessed10BEC1CEArn5D1BE4C4/*"
MODELS_OBJECTS = "EcomrecData:ExportsOutputFnGetAttModelsC55D3500ArnC820EBA0/*"

# AWS-managed policies we accept, and why.
LAMBDA_BASIC = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
LAMBDA_VPC = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
LAMBDA_MANAGED_REASON = (
    "AWS-maintained minimal policies for a function's own logs and its VPC network "
    "interfaces (ENI actions have no resource-level scope)"
)


def iam4(policy: str) -> str:
    return f"AwsSolutions-IAM4[{policy}]"


def iam5(finding: str) -> str:
    return f"AwsSolutions-IAM5[{finding}]"


def logical_id(construct: IConstruct) -> str:
    """The CloudFormation logical id of an L2 construct's resource (as cdk-nag prints it)."""
    child = construct.node.default_child
    assert isinstance(child, cdk.CfnElement)
    stack = cdk.Stack.of(construct)
    return str(stack.resolve(stack.get_logical_id(child)))


def acknowledge(construct: IConstruct, findings: dict[str, str]) -> None:
    """Acknowledge findings on a construct (and its children): {finding id: why it is acceptable}.

    Ids are written as cdk-nag prints them (``AwsSolutions-IAM5[...]``) and recorded with the plugin
    prefix (``AwsSolutions::``) that CDK's Validations API files them under.
    """
    cdk.Validations.of(construct).acknowledge(
        *(cdk.Acknowledgment(id=f"{PACK}::{finding}", reason=reason) for finding, reason in findings.items())
    )
