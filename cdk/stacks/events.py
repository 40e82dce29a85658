"""Events stack: registry approvals drive the rollout function; a schedule drives retraining.

- EventBridge rule: "SageMaker Model Package State Change" of OUR group, Approved or Rejected -> an SQS FIFO
  queue with ONE message group -> the rollout function (batch size 1). One message group means one rollout
  at a time, in arrival order ("Messages within the same message group are always processed one at a time,
  in strict order": https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/using-messagegroupid-property.html;
  for Lambda "the number of concurrent invocations is at most the number of message group IDs":
  https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html). Reserved concurrency would do the
  same but a new account (10 concurrent executions) refuses any (tests/test_aws_constraints.py); a DynamoDB
  lock would add a table and lease expiry code. A failed rollout is retried (the message becomes visible
  again), then lands in the rollout DLQ; nothing behind it overtakes it meanwhile.
- EventBridge Scheduler: starts the SageMaker pipeline with parameters (the templated
  SageMakerStartPipelineExecution target: aws-cdk-lib has no L2 target for pipelines); its own DLQ.
"""

from __future__ import annotations

import math

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct
from ecomrec_rollout import constants as c

from stacks import k8s, nag
from stacks.config import EcomrecConfig, portable_arn
from stacks.nag import acknowledge
from stacks.serving import LAMBDA_RUNTIME, lambda_log_group, rollout_code

ROLLOUT_TIMEOUT = Duration.minutes(10)
ROLLOUT_MESSAGE_GROUP = "rollouts"  # ONE group: rollouts run one at a time, in order
# One invocation's wait: the function's timeout less the restore (45 s) and the record (10 s) of
# handler.py. It must outlast the Deployment's progress deadline so that Kubernetes' failure verdict (the
# only thing that undoes a rollout) is seen within one invocation; a longer, healthy rollout (up to
# k8s.healthy_rollout_s) is resumed by the redelivered message (EventsStack._attempts, VISIBILITY_S apart).
ROLLOUT_WAIT_S = int(ROLLOUT_TIMEOUT.to_seconds()) - 45 - 10
assert ROLLOUT_WAIT_S > k8s.PROGRESS_DEADLINE_S + k8s.MIN_READY_S, "the function would not see the deadline"
VISIBILITY_S = int(ROLLOUT_TIMEOUT.to_seconds()) * 6  # the Lambda docs: >= 6 x the function timeout


class EventsStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: EcomrecConfig,
        cluster: eks.ICluster,
        cluster_security_group: ec2.ISecurityGroup,
        vpc: ec2.IVpc,
        pipeline_arn: str,
        retrain_parameters: dict[str, str],
        runs_bucket: s3.IBucket,
        models_bucket: s3.IBucket,
        env: cdk.Environment | None = None,
    ) -> None:
        super().__init__(
            scope,
            cid,
            env=env,
            description=f"{config.prefix} events: approval -> rollout, scheduled retraining",
        )
        self.config = config

        # Rollouts that failed every attempt (FIFO: a FIFO queue's dead-letter queue must be FIFO too).
        self.dlq = self._queue("RolloutDlq", fifo=True)
        # Approval events EventBridge could not put on the rollout queue (a rule target's DLQ is standard).
        self.delivery_dlq = self._queue("RolloutDeliveryDlq")
        # Scheduled retraining runs EventBridge Scheduler could not start.
        self.retrain_dlq = self._queue("RetrainDlq")
        self.rollout_queue = sqs.Queue(
            self,
            "RolloutQueue",
            fifo=True,
            # The body is the whole EventBridge event (with its id): a redelivered event is dropped as a
            # duplicate within SQS's 5-minute window; later duplicates are no-ops for the rollout rules.
            content_based_deduplication=True,
            # The Lambda docs: at least six times the function timeout (a retry waits this long).
            visibility_timeout=Duration.seconds(VISIBILITY_S),
            retention_period=Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Enough attempts to cover the longest healthy rollout (each attempt resumes the wait), + 2 for
            # real failures (API errors) before the event is dead-lettered.
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=self._attempts(), queue=self.dlq),
        )

        # The live version and the rollback history; the function owns the value after the seed.
        self.live_parameter = ssm.StringParameter(
            self,
            "LiveModel",
            parameter_name=config.live_parameter,
            string_value="{}",
            description="ecomrec: model package version live on EKS + previous ones (rollback)",
        )

        self.rollout_fn = self._rollout_function(cluster, cluster_security_group, vpc, models_bucket)
        # Promotion: copy the approved bundle from the pipeline's run outputs into the models bucket.
        self.rollout_fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadRunBundles", actions=["s3:GetObject"], resources=[runs_bucket.arn_for_objects("*")]
            )
        )
        # Without ListBucket S3 answers a missing key with 403, and an expired run output would read as a
        # permissions problem instead of handler.promote's "no longer in the run outputs".
        self.rollout_fn.add_to_role_policy(
            iam.PolicyStatement(sid="ListRunBundles", actions=["s3:ListBucket"], resources=[runs_bucket.bucket_arn])
        )
        self.rollout_fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="PromoteBundles",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[models_bucket.arn_for_objects("*")],
            )
        )
        group = config.model_package_group
        acknowledge(
            self.rollout_fn,
            {
                nag.iam4(nag.LAMBDA_BASIC): nag.LAMBDA_MANAGED_REASON,
                nag.iam4(nag.LAMBDA_VPC): nag.LAMBDA_MANAGED_REASON,
                nag.iam5(
                    f"Resource::{nag.PROCESSED_OBJECTS}"
                ): "Reads the approved bundle wherever the pipeline run wrote it in OUR processed bucket",
                nag.iam5(
                    f"Resource::{nag.MODELS_OBJECTS}"
                ): "Copies approved bundles to <group>/<version>/ keys of OUR models bucket",
                nag.iam5(
                    f"Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/{group}/*"
                ): "Describes versions of OUR model package group only",
            },
        )

        self.rule = events.Rule(
            self,
            "ModelPackageStateChange",
            description="Approved/Rejected model packages of our group -> rollout function",
            event_pattern=events.EventPattern(
                source=[c.EVENT_SOURCE],
                detail_type=[c.EVENT_DETAIL_TYPE],
                detail={
                    "ModelPackageGroupName": [config.model_package_group],
                    "ModelApprovalStatus": [c.APPROVED, c.REJECTED],
                },
            ),
        )
        self.rule.add_target(
            targets.SqsQueue(
                self.rollout_queue,
                message_group_id=ROLLOUT_MESSAGE_GROUP,
                retry_attempts=4,
                max_event_age=Duration.hours(2),
                dead_letter_queue=self.delivery_dlq,
            )
        )
        self.rollout_fn.add_event_source(event_sources.SqsEventSource(self.rollout_queue, batch_size=1))

        self.schedule = self._retraining_schedule(pipeline_arn, retrain_parameters)

        cdk.CfnOutput(self, "RolloutFunctionName", value=self.rollout_fn.function_name)
        cdk.CfnOutput(self, "RolloutDlqUrl", value=self.dlq.queue_url)
        cdk.CfnOutput(self, "RetrainDlqUrl", value=self.retrain_dlq.queue_url)
        cdk.CfnOutput(self, "LiveModelParameter", value=self.live_parameter.parameter_name)

    def _attempts(self) -> int:
        params = k8s.ManifestParams(image="", model_uri="", model_group="", certificate_arn="",
                                    load_balancer_name="", replicas=self.config.replicas,
                                    max_replicas=self.config.max_replicas)
        return 2 + math.ceil(k8s.healthy_rollout_s(params) / VISIBILITY_S)

    def _queue(self, cid: str, *, fifo: bool = False) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            cid,
            fifo=fifo or None,
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        acknowledge(queue, {"AwsSolutions-SQS3": "This queue IS a dead-letter queue (alarmed by monitoring)."})
        return queue

    def _rollout_function(
        self, cluster: eks.ICluster, cluster_sg: ec2.ISecurityGroup, vpc: ec2.IVpc, models_bucket: s3.IBucket
    ) -> lambda_.Function:
        sg = ec2.SecurityGroup(
            self,
            "RolloutSg",
            vpc=vpc,
            allow_all_outbound=True,
            description="rollout function: reaches the private EKS API",
        )
        # The rule lives here (not on the cluster's SG object) so the serving stack does not depend on us.
        ec2.CfnSecurityGroupIngress(
            self,
            "RolloutToEksApi",
            group_id=cluster_sg.security_group_id,
            source_security_group_id=sg.security_group_id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            description="rollout function to the Kubernetes API",
        )
        fn = lambda_.Function(
            self,
            "RolloutFn",
            runtime=LAMBDA_RUNTIME,
            code=rollout_code(),
            handler="ecomrec_rollout.handler.handler",
            timeout=ROLLOUT_TIMEOUT,
            memory_size=256,
            # One rollout at a time: the FIFO queue's single message group, not reserved concurrency.
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[sg],
            log_group=lambda_log_group(self, "RolloutLogs"),
            description="Approved model package -> rolling update on EKS; rejected live version -> rollback",
            environment={
                c.ENV_MODEL_PACKAGE_GROUP: self.config.model_package_group,
                c.ENV_LIVE_PARAMETER: self.live_parameter.parameter_name,
                c.ENV_CLUSTER_NAME: cluster.cluster_name,
                c.ENV_CLUSTER_ENDPOINT: cluster.cluster_endpoint,
                c.ENV_CLUSTER_CA: cluster.cluster_certificate_authority_data,
                c.ENV_NAMESPACE: c.NAMESPACE,
                c.ENV_DEPLOYMENT: c.DEPLOYMENT,
                c.ENV_ROLLOUT_TIMEOUT_S: str(ROLLOUT_WAIT_S),
                c.ENV_MODELS_BUCKET: models_bucket.bucket_name,
            },
        )
        group = self.config.model_package_group
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadPackages",
                actions=["sagemaker:DescribeModelPackage"],
                resources=[
                    portable_arn(self, service="sagemaker", resource="model-package", resource_name=f"{group}/*")
                ],
            )
        )
        self.live_parameter.grant_read(fn)
        self.live_parameter.grant_write(fn)
        assert fn.role is not None
        # Kubernetes side: edit rights in our namespace only (patch/get the Deployment).
        eks.AccessEntry(
            self,
            "RolloutAccess",
            cluster=cluster,
            principal=fn.role.role_arn,
            access_policies=[
                eks.AccessPolicy.from_access_policy_name(
                    "AmazonEKSEditPolicy",
                    access_scope_type=eks.AccessScopeType.NAMESPACE,
                    namespaces=[c.NAMESPACE],
                )
            ],
        )
        return fn

    def _retraining_schedule(self, pipeline_arn: str, parameters: dict[str, str]) -> scheduler.CfnSchedule:
        role = iam.Role(
            self,
            "RetrainSchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": self.account}}
            ),
            description="EventBridge Scheduler: start the ecomrec pipeline",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="StartPipeline", actions=["sagemaker:StartPipelineExecution"], resources=[pipeline_arn]
            )
        )
        self.retrain_dlq.grant_send_messages(role)
        self.retrain_parameters = dict(parameters)
        return scheduler.CfnSchedule(
            self,
            "Retrain",
            description="Retrain ecomrec: start the SageMaker pipeline",
            schedule_expression=self.config.retrain_schedule,
            schedule_expression_timezone=self.config.retrain_timezone,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(
                mode="FLEXIBLE", maximum_window_in_minutes=30
            ),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=pipeline_arn,
                role_arn=role.role_arn,
                sage_maker_pipeline_parameters=scheduler.CfnSchedule.SageMakerPipelineParametersProperty(
                    pipeline_parameter_list=[
                        scheduler.CfnSchedule.SageMakerPipelineParameterProperty(name=k, value=v)
                        for k, v in sorted(parameters.items())
                    ]
                )
                if parameters
                else None,
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_retry_attempts=3, maximum_event_age_in_seconds=3600
                ),
                dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(arn=self.retrain_dlq.queue_arn),
            ),
        )
