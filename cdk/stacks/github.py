"""GitHub stack: the OIDC identity provider for GitHub Actions and the role .github/workflows/cd.yml assumes.

Deployed once by hand (it is what lets CD deploy everything else; cdk/README.md step 3). The trust policy
matches how the workflow asks for the token: its deploy job runs in the `production` environment, so the
token's subject is ``repo:OWNER/REPO:environment:production`` ("If your job references an environment, the
subject claim ... repo:ORG-NAME/REPO-NAME:environment:ENVIRONMENT-NAME":
https://docs.github.com/en/actions/reference/security/oidc#example-subject-claims). A ``ref:refs/heads/main``
condition would deny every token of that job. Which branch may use the environment is the environment's
deployment-branch rule (main only) plus the job's own ``if: github.ref == 'refs/heads/main'``.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks import nag
from stacks.config import EcomrecConfig, portable_arn
from stacks.nag import acknowledge

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
AUDIENCE = "sts.amazonaws.com"  # what aws-actions/configure-aws-credentials asks for
ENVIRONMENT = "production"  # the `environment:` of cd.yml's deploy job


class GithubStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: EcomrecConfig,
        processed_bucket: s3.IBucket,
        raw_bucket: s3.IBucket,
        repositories: list[ecr.IRepository],
        sagemaker_role: iam.IRole,
        env: cdk.Environment | None = None,
    ) -> None:
        super().__init__(scope, cid, env=env, description=f"{config.prefix} GitHub Actions: OIDC provider, CD role")
        self.repo = cdk.CfnParameter(
            self,
            "GitHubRepo",
            type="String",
            allowed_pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
            description="OWNER/REPO whose CD workflow may deploy (its `production` environment only)",
        )
        if config.github_oidc_provider_arn:  # an account has one provider per URL: reuse it
            provider: iam.IOidcProvider = iam.OidcProviderNative.from_oidc_provider_arn(
                self, "GitHubOidc", config.github_oidc_provider_arn
            )
        else:
            provider = iam.OidcProviderNative(self, "GitHubOidc", url=GITHUB_OIDC_URL, client_ids=[AUDIENCE])
        self.subject = f"repo:{self.repo.value_as_string}:environment:{ENVIRONMENT}"
        self.role = iam.Role(
            self,
            "DeployRole",
            description="GitHub Actions CD of ecomrec (production environment)",
            max_session_duration=cdk.Duration.hours(2),  # cd.yml's job timeout
            assumed_by=iam.WebIdentityPrincipal(
                provider.oidc_provider_arn,
                conditions={
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": self.subject,
                    }
                },
            ),
        )
        account, region = cdk.Aws.ACCOUNT_ID, cdk.Aws.REGION
        # CDK deploys through the bootstrap roles (deploy, file and image publishing, lookup).
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="CdkBootstrapRoles",
                actions=["sts:AssumeRole"],
                resources=[f"arn:{cdk.Aws.PARTITION}:iam::{account}:role/cdk-hnb659fds-*-{account}-{region}"],
            )
        )
        self.role.add_to_policy(iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"],
                                                    resources=["*"]))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PushImages",
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:InitiateLayerUpload",
                    "ecr:UploadLayerPart",
                    "ecr:CompleteLayerUpload",
                    "ecr:PutImage",
                    "ecr:BatchGetImage",
                    "ecr:DescribeImages",
                ],
                resources=[r.repository_arn for r in repositories],
            )
        )
        # `ecomrec pipeline upsert`: step code and large definitions under <prefix>/, then the pipeline.
        prefix = f"{config.prefix}/"
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="UploadPipelineCode",
                actions=["s3:PutObject"],
                resources=[processed_bucket.arn_for_objects(f"{prefix}code/*"),
                           processed_bucket.arn_for_objects(f"{prefix}definitions/*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="UpsertPipeline",
                actions=["sagemaker:CreatePipeline", "sagemaker:UpdatePipeline", "sagemaker:DescribePipeline",
                         "sagemaker:AddTags"],
                resources=[portable_arn(self, service="sagemaker", resource="pipeline",
                                        resource_name=config.pipeline_name)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PassSageMakerRole",
                actions=["iam:PassRole"],
                resources=[sagemaker_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        # The checks CD runs before the upsert (cd.yml): `pipeline refresh-jumpstart` and the head-object of the
        # pinned URIs read the region's JumpStart bucket; the steps image is built FROM the region's SageMaker
        # Spark image (an AWS-owned registry: a cross-account pull needs this identity policy too);
        # `pipeline doctor` reads the SageMaker role, the bucket and the model package group
        # (pipelines/sagemaker/doctor.py: GetRole, SimulatePrincipalPolicy, HeadBucket, GetBucketLocation,
        # ListObjectsV2, DescribeModelPackageGroup; DescribeImages is in PushImages).
        jumpstart = f"arn:{cdk.Aws.PARTITION}:s3:::jumpstart-cache-prod-{region}"
        self.role.add_to_policy(iam.PolicyStatement(sid="ReadJumpStart", actions=["s3:GetObject", "s3:ListBucket"],
                                                    resources=[jumpstart, f"{jumpstart}/*"]))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PullSparkBaseImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[f"arn:{cdk.Aws.PARTITION}:ecr:{region}:*:repository/sagemaker-spark-processing"],
            )
        )
        self.role.add_to_policy(iam.PolicyStatement(sid="DoctorReadsRole", actions=["iam:GetRole",
                                                                                    "iam:SimulatePrincipalPolicy"],
                                                    resources=[sagemaker_role.role_arn]))
        self.role.add_to_policy(iam.PolicyStatement(sid="DoctorReadsBucket",
                                                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                                                    resources=[processed_bucket.bucket_arn]))
        # ... and lists the raw data where the retraining schedule points the runs (cd.yml --input-data-uri).
        self.role.add_to_policy(iam.PolicyStatement(sid="DoctorListsRawData", actions=["s3:ListBucket"],
                                                    resources=[raw_bucket.bucket_arn]))
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DoctorReadsGroup",
                actions=["sagemaker:DescribeModelPackageGroup"],
                resources=[portable_arn(self, service="sagemaker", resource="model-package-group",
                                        resource_name=config.model_package_group)],
            )
        )
        acknowledge(
            self.role,
            {
                nag.iam5("Resource::arn:<AWS::Partition>:s3:::jumpstart-cache-prod-<AWS::Region>/*"):
                    "Reads the region's public JumpStart bucket (the built-in CatBoost spec, script and model)",
                nag.iam5("Resource::arn:<AWS::Partition>:ecr:<AWS::Region>:*:repository/sagemaker-spark-processing"):
                    "Pulls the steps image's base, SageMaker's Spark image, whose registry account varies by region",
                nag.iam5("Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:role/"
                         "cdk-hnb659fds-*-<AWS::AccountId>-<AWS::Region>"):
                    "CDK deploys through this account's bootstrap roles (default qualifier), nothing else",
                nag.iam5("Resource::*"): "ecr:GetAuthorizationToken has no resource-level permissions",
                nag.iam5(f"Resource::{nag.PROCESSED_OBJECTS.removesuffix('/*')}/{prefix}code/*"):
                    "Uploads pipeline step code (content-versioned keys) under the code prefix only",
                nag.iam5(f"Resource::{nag.PROCESSED_OBJECTS.removesuffix('/*')}/{prefix}definitions/*"):
                    "Uploads large pipeline definitions under the definitions prefix only",
            },
        )
        cdk.CfnOutput(self, "DeployRoleArn", value=self.role.role_arn,
                      description="GitHub repository variable AWS_DEPLOY_ROLE_ARN")
        cdk.CfnOutput(self, "TrustedSubject", value=self.subject)
