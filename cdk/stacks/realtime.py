"""Real time on AWS (REALTIME.md): the durable event log and the online store of the inference pods.

- **Event log**: an Amazon Data Firehose delivery stream (Direct PUT) to the raw bucket, under the raw
  contract's ``events/realtime/date=YYYY-MM-DD/`` as ``*.headerless.csv`` objects the ETL reads as raw
  events (the destination's settings are ``components.realtime.firehose_log.s3_destination``, shared with
  the service and its tests); failed deliveries go to ``firehose-errors/`` outside the raw contract. The
  pods may PutRecordBatch to this stream and nothing else.
- **Online store**: ElastiCache Serverless for Valkey in the VPC's private subnets (the pods' subnets). TLS is
  always on for serverless caches; access is RBAC (the only way for serverless caches) with IAM
  authentication: a disabled ``default`` user and one IAM-enabled user whose ACL
  (``redis_store.ACCESS_STRING``) reaches the store's keys only. Only the pods' role may
  ``elasticache:Connect`` as that user; the network admits 6379 from the cluster security group only (Auto
  Mode nodes, and so their pods, carry it; per-pod security groups need Kubernetes 1.36).
- **Events token**: POST /events is on the internet-facing load balancer, so it takes a bearer token: a
  Secrets Manager secret whose string CloudFormation generates (no value in the template or the manifest).
  The pods read it once at start-up (ECOMREC_EVENTS_TOKEN_SECRET, GetSecretValue on this secret only); the
  shop's sender reads it with ``aws secretsmanager get-secret-value``.

Both live in the serving stack: the store needs the cluster's VPC and security group, and the Deployment
needs the store's endpoint and the stream's name (a stack of their own would depend on serving both ways).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from components.realtime import firehose_log
from components.realtime.redis_store import ACCESS_STRING
from stacks import nag
from stacks.config import EcomrecConfig
from stacks.nag import acknowledge

STORE_PORT = 6379  # the serverless cache's endpoint (6380, its reader endpoint, is not used)
VALKEY_MAJOR_VERSION = "8"


class Realtime(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: EcomrecConfig,
        vpc: ec2.IVpc,
        pod_security_group: ec2.ISecurityGroup,
        pod_role: iam.Role,
        raw_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, cid)
        self.stream_name = f"{config.prefix}-events"
        self.cache_name = f"{config.prefix}-store"
        self.user_name = f"{config.prefix}-inference"
        self._event_log(config, raw_bucket, pod_role)
        self._store(config, vpc, pod_security_group, pod_role)
        self._events_token(pod_role)

    def _events_token(self, pod_role: iam.Role) -> None:
        secret = secretsmanager.Secret(
            self, "EventsToken", description="ecomrec: the bearer token of POST /events (the shop's sender)",
            # A plain string (no JSON template): the service takes SecretString as the token itself.
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48, exclude_punctuation=True, include_space=False))
        self.events_token_secret_arn = secret.secret_arn
        pod_role.add_to_policy(iam.PolicyStatement(
            sid="ReadEventsToken", actions=["secretsmanager:GetSecretValue"], resources=[secret.secret_arn]))
        acknowledge(secret, {
            "AwsSolutions-SMG4": "a static token shared with the shop's sender, who must fetch each new value: "
                                 "rotated by hand (cdk/README.md, Real time: put-secret-value, then restart "
                                 "the pods), not by a rotation Lambda",
        })

    def _event_log(self, config: EcomrecConfig, raw_bucket: s3.IBucket, pod_role: iam.Role) -> None:
        destination = firehose_log.s3_destination(config.raw_prefix)
        log_group = logs.LogGroup(self, "EventLogDeliveryLogs", retention=logs.RetentionDays.THREE_MONTHS,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
        log_stream = logs.LogStream(self, "EventLogDeliveryErrors", log_group=log_group,
                                    removal_policy=cdk.RemovalPolicy.DESTROY)
        role = iam.Role(self, "EventLogDeliveryRole", assumed_by=iam.ServicePrincipal("firehose.amazonaws.com"),
                        description="Firehose: writes the event log into the raw bucket")
        # What Firehose needs on its S3 destination, on the log's and the errors' prefixes only
        # (https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html#using-iam-s3).
        events, errors = (prefix[:prefix.index("!{")].rsplit("/", 1)[0] + "/"
                          for prefix in (destination["Prefix"], destination["ErrorOutputPrefix"]))
        role.add_to_policy(iam.PolicyStatement(
            sid="WriteEventLog", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[raw_bucket.arn_for_objects(f"{events}*"), raw_bucket.arn_for_objects(f"{errors}*")]))
        role.add_to_policy(iam.PolicyStatement(
            sid="FindBucket", actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
            resources=[raw_bucket.bucket_arn]))
        log_group.grant_write(role)
        stream = firehose.CfnDeliveryStream(
            self,
            "EventLog",
            delivery_stream_name=self.stream_name,
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream.
            DeliveryStreamEncryptionConfigurationInputProperty(key_type="AWS_OWNED_CMK"),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=raw_bucket.bucket_arn,
                role_arn=role.role_arn,
                prefix=destination["Prefix"],
                error_output_prefix=destination["ErrorOutputPrefix"],
                file_extension=destination["FileExtension"],
                compression_format=destination["CompressionFormat"],
                custom_time_zone=destination["CustomTimeZone"],
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=destination["BufferingHints"]["IntervalInSeconds"],
                    size_in_m_bs=destination["BufferingHints"]["SizeInMBs"]),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True, log_group_name=log_group.log_group_name,
                    log_stream_name=log_stream.log_stream_name),
            ),
        )
        stream.node.add_dependency(role)  # the policy exists before Firehose first writes
        self.stream_arn = stream.attr_arn
        raw_objects = nag.RAW_OBJECTS.removesuffix("*")
        acknowledge(role, {
            nag.iam5(f"Resource::{raw_objects}{events}*"):
                "Firehose names its objects itself: any key under the event log's prefix, nothing else",
            nag.iam5(f"Resource::{raw_objects}{errors}*"):
                "Firehose names its failed-delivery objects itself: any key under its error prefix only",
        })
        pod_role.add_to_policy(iam.PolicyStatement(
            sid="AppendEventLog", actions=["firehose:PutRecordBatch"], resources=[stream.attr_arn]))

    def _store(self, config: EcomrecConfig, vpc: ec2.IVpc, pod_security_group: ec2.ISecurityGroup,
               pod_role: iam.Role) -> None:
        sg = ec2.SecurityGroup(self, "StoreSg", vpc=vpc, allow_all_outbound=False,
                               description="Online store (Valkey, TLS): the inference pods only")
        sg.add_ingress_rule(pod_security_group, ec2.Port.tcp(STORE_PORT),
                            "EKS Auto Mode nodes and their pods (the cluster security group) to Valkey over TLS")
        # A user group must hold a user named "default"; this one is off (no unauthenticated access). A
        # "valkey" group takes only password or IAM users, so the group and its users are "redis", which a
        # Valkey cache accepts (https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/Clusters.RBAC.html).
        default_user = elasticache.CfnUser(
            self, "StoreDefaultUser", engine="redis", user_id=f"{config.prefix}-default-off", user_name="default",
            access_string="off -@all", authentication_mode={"Type": "no-password-required"})
        user = elasticache.CfnUser(
            self, "StoreUser", engine="redis", user_id=self.user_name, user_name=self.user_name,
            access_string=ACCESS_STRING, authentication_mode={"Type": "iam"})
        group = elasticache.CfnUserGroup(
            self, "StoreUsers", engine="redis", user_group_id=f"{config.prefix}-store-users",
            user_ids=[default_user.ref, user.ref])  # Ref: the user id
        subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids
        cache = elasticache.CfnServerlessCache(
            self, "Store", serverless_cache_name=self.cache_name, engine="valkey",
            major_engine_version=VALKEY_MAJOR_VERSION, description="ecomrec online store (REALTIME.md)",
            subnet_ids=subnets, security_group_ids=[sg.security_group_id], user_group_id=group.ref)
        self.store_url = f"rediss://{self.user_name}@{cache.attr_endpoint_address}:{cache.attr_endpoint_port}"
        self.cache_arn = cache.attr_arn
        pod_role.add_to_policy(iam.PolicyStatement(
            sid="ConnectToStore", actions=["elasticache:Connect"], resources=[cache.attr_arn, user.attr_arn]))
