"""ML stack: ECR repositories, the SageMaker execution role, the model package group and the pipeline.

The pipeline definition is an input: ``pipelines.sagemaker`` renders it offline (app.py passes it in when
that module is importable). Without it the stack still creates everything else and the CD workflow
upserts the pipeline with the SageMaker SDK under the same name.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks import nag
from stacks.config import EcomrecConfig, portable_arn
from stacks.nag import acknowledge

_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")
_S3 = re.compile(r"^s3://([^/]+)/(.+)$")


def external_artifacts(definition: str, own_account: str | None, own_buckets: set[str]) -> tuple[set[str], set[str]]:
    """AWS-owned images and S3 objects the definition's defaults point at (the built-in Spark and CatBoost
    images, the JumpStart CatBoost script and model): ({(account, region, repository)}, {bucket/key}).

    The execution role gets read access to exactly these, not to every repository or bucket.
    """
    images: set[str] = set()
    objects: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
        elif isinstance(node, str):
            if (m := _IMAGE.match(node)) and m.group(1) != own_account:
                images.add("/".join(m.groups()))
            elif (m := _S3.match(node)) and m.group(1) not in own_buckets:
                objects.add(f"{m.group(1)}/{m.group(2)}")

    visit(json.loads(definition))
    return images, objects


def _repository(scope: Construct, cid: str, name: str) -> ecr.Repository:
    return ecr.Repository(
        scope,
        cid,
        repository_name=name,
        image_scan_on_push=True,
        # Immutable tags: a model package names its image by tag; the tag must always mean that image.
        image_tag_mutability=ecr.TagMutability.IMMUTABLE,
        encryption=ecr.RepositoryEncryption.AES_256,
        lifecycle_rules=[
            ecr.LifecycleRule(
                description="drop untagged layers of failed pushes",
                tag_status=ecr.TagStatus.UNTAGGED,
                max_image_age=Duration.days(14),
            )
        ],
        removal_policy=cdk.RemovalPolicy.RETAIN,  # approved model packages point at these images
    )


class MlStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: EcomrecConfig,
        raw_bucket: s3.IBucket,
        processed_bucket: s3.IBucket,
        pipeline_definition: str | None = None,
        env: cdk.Environment | None = None,
    ) -> None:
        super().__init__(
            scope,
            cid,
            env=env,
            description=f"{config.prefix} ML: ECR, SageMaker role, model package group, pipeline",
        )
        self.config = config
        self.inference_repo = _repository(self, "InferenceRepo", config.inference_repo)
        self.steps_repo = _repository(self, "StepsRepo", config.steps_repo)

        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=config.model_package_group,
            model_package_group_description="ecomrec recommender bundles; Approved versions go live on EKS",
        )
        self.group.apply_removal_policy(cdk.RemovalPolicy.RETAIN)  # the registry history is an audit trail

        self.role = iam.Role(
            self,
            "SageMakerExecutionRole",
            role_name=config.sagemaker_role_name,
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Runs the ecomrec pipeline's processing and training jobs",
        )
        self._grant(raw_bucket, processed_bucket)
        if pipeline_definition is not None:
            self._grant_external(pipeline_definition, config)

        self.pipeline_arn = portable_arn(
            self, service="sagemaker", resource="pipeline", resource_name=config.pipeline_name
        )
        self.pipeline: sagemaker.CfnPipeline | None = None
        if pipeline_definition is not None and config.pipeline_in_stack:
            self.pipeline = sagemaker.CfnPipeline(
                self,
                "Pipeline",
                pipeline_name=config.pipeline_name,
                role_arn=self.role.role_arn,
                pipeline_definition={"PipelineDefinitionBody": pipeline_definition},
                pipeline_description="raw events -> ETL -> ALS -> CatBoost -> evaluation -> bundle",
            )
            self.pipeline.node.add_dependency(self.role)
            # `ecomrec pipeline upsert` owns the pipeline in CD (pipelineInStack=false): switching an account
            # over must not delete it when it leaves the template.
            self.pipeline.apply_removal_policy(cdk.RemovalPolicy.RETAIN)

        cdk.CfnOutput(self, "ExecutionRoleArn", value=self.role.role_arn)
        cdk.CfnOutput(self, "InferenceRepositoryUri", value=self.inference_repo.repository_uri)
        cdk.CfnOutput(self, "StepsRepositoryUri", value=self.steps_repo.repository_uri)
        cdk.CfnOutput(self, "ModelPackageGroupName", value=config.model_package_group)
        cdk.CfnOutput(self, "PipelineName", value=config.pipeline_name)

    def _grant_external(self, definition: str, config: EcomrecConfig) -> None:
        own = {name for kind in ("raw", "processed", "models") if (name := config.bucket_name(kind))}
        images, objects = external_artifacts(definition, config.account, own)
        if images:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="PullBuiltInImages",
                    actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                    resources=[
                        f"arn:{cdk.Aws.PARTITION}:ecr:{region}:{account}:repository/{repo}"
                        for account, region, repo in (image.split("/", 2) for image in sorted(images))
                    ],
                )
            )
        if objects:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadBuiltInArtifacts",
                    actions=["s3:GetObject"],
                    resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{obj}" for obj in sorted(objects)],
                )
            )
            # The training job's JumpStart model channel is an S3Prefix: SageMaker lists the keys under it,
            # which needs s3:ListBucket on the bucket (here only for those prefixes).
            buckets = sorted({obj.split("/", 1)[0] for obj in objects})
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ListBuiltInArtifacts",
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}" for bucket in buckets],
                    conditions={"StringLike": {"s3:prefix": sorted(obj.split("/", 1)[1] for obj in objects)}},
                )
            )

    def _grant(self, raw: s3.IBucket, processed: s3.IBucket) -> None:
        """Least privilege: our buckets, our repositories, jobs and packages in this account only.

        Not the models bucket: it holds the bundles the pods serve, and only the rollout function writes
        there (it promotes an approved bundle to <group>/<version>/). The pipeline reads raw data and
        writes code, run outputs and bundles to the processed bucket; nothing in it reads the models bucket.
        """
        role, group = self.role, self.config.model_package_group
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadRaw",
                actions=["s3:GetObject", "s3:ListBucket"],
                resources=[raw.bucket_arn, raw.arn_for_objects("*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOutputs",
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:ListBucket",
                    "s3:AbortMultipartUpload",
                ],
                resources=[processed.bucket_arn, processed.arn_for_objects("*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PullOurImages",
                actions=[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                resources=[self.inference_repo.repository_arn, self.steps_repo.repository_arn],
            )
        )
        role.add_to_policy(iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        job_arns = [
            portable_arn(self, service="sagemaker", resource=kind, resource_name="*")
            for kind in ("processing-job", "training-job")
        ]
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RunPipelineJobs",
                actions=[
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=job_arns,
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RegisterModels",
                actions=[
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:ListModelPackages",
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:AddTags",
                ],
                resources=[
                    portable_arn(self, service="sagemaker", resource="model-package-group", resource_name=group),
                    portable_arn(self, service="sagemaker", resource="model-package", resource_name=f"{group}/*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PassSelfToJobs",
                actions=["iam:PassRole"],
                resources=[role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        log_group_arn = portable_arn(
            self,
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="JobLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_group_arn, f"{log_group_arn}:log-stream:*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="JobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "ecomrec/*"]}},
            )
        )
        region_arn = "arn:<AWS::Partition>:%s:<AWS::Region>:<AWS::AccountId>:%s"
        acknowledge(
            role,
            {
                nag.iam5(
                    f"Resource::{nag.RAW_OBJECTS}"
                ): "Reads any key of OUR raw bucket: the input prefix is a pipeline parameter",
                nag.iam5(
                    f"Resource::{nag.PROCESSED_OBJECTS}"
                ): "Writes run outputs and code under run-time keys of OUR processed bucket",
                nag.iam5("Resource::*"): "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no "
                "resource-level permissions (PutMetricData is limited by namespace)",
                nag.iam5(
                    "Resource::" + region_arn % ("sagemaker", "processing-job/*")
                ): "The pipeline names its processing jobs at run time; this account and region only",
                nag.iam5(
                    "Resource::" + region_arn % ("sagemaker", "training-job/*")
                ): "The pipeline names its training jobs at run time; this account and region only",
                nag.iam5(
                    "Resource::" + region_arn % ("sagemaker", f"model-package/{group}/*")
                ): "Versions of OUR model package group only; SageMaker numbers them",
                nag.iam5(
                    "Resource::" + region_arn % ("logs", "log-group:/aws/sagemaker/*")
                ): "SageMaker names the job log groups under /aws/sagemaker/",
                nag.iam5(
                    "Resource::" + region_arn % ("logs", "log-group:/aws/sagemaker/*:log-stream:*")
                ): "SageMaker names the job log streams",
            },
        )
