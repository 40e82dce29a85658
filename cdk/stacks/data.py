"""Data stack: the raw, processed and models buckets, and the bucket their access logs go to."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import EcomrecConfig
from stacks.nag import acknowledge

RUN_OUTPUT_DAYS = 180  # pipeline run outputs (data, models, bundles, reports) in the processed bucket


def _secure_bucket(
    scope: Construct,
    cid: str,
    *,
    name: str | None,
    logs: s3.IBucket | None,
    log_prefix: str,
    lifecycle: list[s3.LifecycleRule],
) -> s3.Bucket:
    """Versioned, encrypted, TLS-only, never public: the one way this project makes a bucket."""
    return s3.Bucket(
        scope,
        cid,
        bucket_name=name,
        versioned=True,
        encryption=s3.BucketEncryption.S3_MANAGED,  # SSE-S3: the pods and jobs need no KMS grants
        enforce_ssl=True,  # bucket policy denies aws:SecureTransport=false
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=logs,
        server_access_logs_prefix=log_prefix if logs else None,
        lifecycle_rules=lifecycle,
        removal_policy=cdk.RemovalPolicy.RETAIN,  # data outlives a stack delete
    )


class DataStack(cdk.Stack):
    def __init__(
        self, scope: Construct, cid: str, *, config: EcomrecConfig, env: cdk.Environment | None = None
    ) -> None:
        super().__init__(scope, cid, env=env, description=f"{config.prefix} data: raw, processed and model buckets")
        abort_uploads = s3.LifecycleRule(
            id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
        )

        self.log_bucket = _secure_bucket(
            self,
            "AccessLogs",
            name=config.bucket_name("access-logs"),
            logs=None,
            log_prefix="",
            lifecycle=[
                abort_uploads,
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(365),
                    noncurrent_version_expiration=Duration.days(30),
                ),
            ],
        )
        acknowledge(
            self.log_bucket,
            {"AwsSolutions-S1": "This is the access-log bucket; logging it into itself would loop."},
        )

        # Raw events are the source of truth: keep them, move them to cheaper storage as they age.
        self.raw_bucket = _secure_bucket(
            self,
            "Raw",
            name=config.bucket_name("raw"),
            logs=self.log_bucket,
            log_prefix="raw/",
            lifecycle=[
                abort_uploads,
                s3.LifecycleRule(
                    id="age-raw",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=Duration.days(90),
                        ),
                        s3.Transition(
                            storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                            transition_after=Duration.days(365),
                        ),
                    ],
                    noncurrent_version_expiration=Duration.days(90),
                ),
            ],
        )
        # Run outputs can be recomputed from raw: expire them, and only them. The same bucket holds the step
        # code the pipeline definition points at (<prefix>/code/<version>/, uploaded by `ecomrec pipeline
        # upsert`) and large definitions (<prefix>/definitions/): expiring those would break the next
        # scheduled run, so the rule is scoped to the runs prefix.
        # Registered packages' ModelDataUrl points under runs/ (<prefix>/runs/<execution>/bundle/) and does
        # expire with its run. That is safe for what is served: at approval the rollout function copies the
        # bundle to the models bucket (<group>/<version>/), the pods and every later rollback read only that
        # copy, and the models bucket never expires current objects. What expiry limits: a version must be
        # approved within 180 days of its run; later, the promotion fails loudly (the rollout function
        # raises, alarmed) and the fix is a fresh run.
        self.processed_bucket = _secure_bucket(
            self,
            "Processed",
            name=config.bucket_name("processed"),
            logs=self.log_bucket,
            log_prefix="processed/",
            lifecycle=[
                abort_uploads,
                s3.LifecycleRule(
                    id="expire-runs",
                    prefix=config.runs_prefix,
                    expiration=Duration.days(RUN_OUTPUT_DAYS),
                ),
                # Overwritten or deleted objects anywhere (including the delete markers expire-runs leaves):
                # the current code and definitions are never touched by this.
                s3.LifecycleRule(id="expire-noncurrent", noncurrent_version_expiration=Duration.days(7)),
            ],
        )
        # Bundles named by registry versions: keep current ones (rollback needs them), age old versions.
        self.models_bucket = _secure_bucket(
            self,
            "Models",
            name=config.bucket_name("models"),
            logs=self.log_bucket,
            log_prefix="models/",
            lifecycle=[
                abort_uploads,
                s3.LifecycleRule(
                    id="age-noncurrent",
                    noncurrent_version_expiration=Duration.days(365),
                    noncurrent_versions_to_retain=3,
                ),
            ],
        )

        for name, bucket in (
            ("Raw", self.raw_bucket),
            ("Processed", self.processed_bucket),
            ("Models", self.models_bucket),
            ("AccessLogs", self.log_bucket),
        ):
            cdk.CfnOutput(self, f"{name}BucketName", value=bucket.bucket_name)
