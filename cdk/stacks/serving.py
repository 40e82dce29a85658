"""Serving stack: VPC, EKS Auto Mode cluster (native ``aws_eks_v2``, built-in node pools), pod identity for
the inference pods, and the Kubernetes objects applied by a small custom resource.

No kubectl Lambda layer: EKS Auto Mode's built-in load balancing serves the Ingress, EKS Pod Identity
replaces the IRSA OIDC plumbing, and the manifests go through ``ecomrec_rollout.handler.apply_handler``,
the same HTTP client the rollout function uses. The cluster endpoint is private; both functions run in
the VPC.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import custom_resources as cr
from constructs import Construct
from ecomrec_rollout import constants as c

from stacks import k8s, nag
from stacks.config import EcomrecConfig
from stacks.nag import acknowledge
from stacks.realtime import Realtime

# Auto Mode's built-in NodePools (https://docs.aws.amazon.com/eks/latest/userguide/set-builtin-node-pools.html):
# "system" (CriticalAddonsOnly taint) for cluster add-ons, "general-purpose" for the inference pods.
AUTO_MODE_NODE_POOLS = ("system", "general-purpose")
AUTO_MODE_NODE_POLICIES = ("AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly")
ROLLOUT_CODE = Path(__file__).resolve().parents[1] / "rollout"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14  # cdk-nag L1: the latest
# AMP's managed scraper is no pod: it scrapes from ENIs it creates in the subnets it is given
# (https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-collector.html). Its own subnets (no pod
# lands there) let the NetworkPolicy admit it by CIDR without admitting every pod of the private subnets.
SCRAPER_SUBNETS = "scraper"


def rollout_code() -> lambda_.Code:
    """The Lambda asset: cdk/rollout (the ecomrec_rollout package, standard library + boto3 only)."""
    return lambda_.Code.from_asset(str(ROLLOUT_CODE), exclude=["**/__pycache__", "*.pyc", ".mypy_cache"])


def lambda_log_group(scope: Construct, cid: str) -> logs.LogGroup:
    return logs.LogGroup(
        scope, cid, retention=logs.RetentionDays.THREE_MONTHS, removal_policy=cdk.RemovalPolicy.DESTROY
    )


class ServingStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: EcomrecConfig,
        models_bucket: s3.IBucket,
        raw_bucket: s3.IBucket,
        inference_repo: ecr.IRepository,
        env: cdk.Environment | None = None,
    ) -> None:
        super().__init__(scope, cid, env=env, description=f"{config.prefix} serving: EKS, inference Deployment")
        self.config = config
        self.certificate_arn = cdk.CfnParameter(
            self,
            "CertificateArn",
            type="String",
            allowed_pattern=r"^arn:aws[a-z-]*:acm:.+",
            description="ACM certificate ARN for the HTTPS listener of the inference Ingress",
        )
        self.image_tag = cdk.CfnParameter(
            self,
            "InitialImageTag",
            type="String",
            default="bootstrap",
            description="Inference image tag for a new Deployment; approved packages set it afterwards",
        )

        self.operator_role_arn = cdk.CfnParameter(
            self,
            "OperatorRoleArn",
            type="String",
            default="",
            allowed_pattern=r"^$|^arn:aws[a-z-]*:iam::\d{12}:role/.+",
            description="IAM role whose sessions get cluster-admin kubectl access (empty: none); "
            "cdk/README.md: Operator access",
        )

        self.vpc = self._vpc()
        # One compute model: EKS Auto Mode with its built-in node pools. Auto Mode runs pod networking,
        # cluster DNS, kube-proxy's job, the load balancer controller, Pod Identity and node autoscaling
        # itself (https://docs.aws.amazon.com/eks/latest/userguide/automode.html), so nothing is bootstrapped:
        # no self-managed vpc-cni/kube-proxy/CoreDNS, no node group, no add-ons for those.
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            version=eks.KubernetesVersion.of(config.kubernetes_version),
            vpc=self.vpc,
            vpc_subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
            endpoint_access=eks.EndpointAccess.PRIVATE,
            default_capacity_type=eks.DefaultCapacityType.AUTOMODE,
            compute=eks.ComputeConfig(node_pools=list(AUTO_MODE_NODE_POOLS), node_role=self._node_role()),
            bootstrap_self_managed_addons=False,
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
        )

        self.pod_role = self._pod_role(models_bucket)
        association = eks.CfnPodIdentityAssociation(
            self,
            "InferencePodIdentity",
            cluster_name=self.cluster.cluster_name,
            namespace=c.NAMESPACE,
            service_account=c.SERVICE_ACCOUNT,
            role_arn=self.pod_role.role_arn,
        )
        association.node.add_dependency(self.cluster)

        self._observability_addons()
        self._operator_access()
        # Auto Mode's nodes carry the cluster security group, and pods use their node's network interfaces
        # (per-pod security groups need Kubernetes 1.36: https://docs.aws.amazon.com/eks/latest/userguide/auto-sgp.html).
        self.realtime = Realtime(self, "Realtime", config=config, vpc=self.vpc,
                                 pod_security_group=self.cluster.cluster_security_group, pod_role=self.pod_role,
                                 raw_bucket=raw_bucket)

        params = k8s.ManifestParams(
            image=f"{inference_repo.repository_uri}:{self.image_tag.value_as_string}",
            model_uri="",
            model_group=config.model_package_group,
            certificate_arn=self.certificate_arn.value_as_string,
            load_balancer_name=config.load_balancer_name,
            replicas=config.replicas,
            max_replicas=config.max_replicas,
            load_balancer_cidrs=tuple(subnet.ipv4_cidr_block for subnet in self.vpc.public_subnets),
            scraper_cidrs=tuple(subnet.ipv4_cidr_block for subnet in self.scraper_subnets),
            events_firehose_stream=self.realtime.stream_name,
            events_token_secret=self.realtime.events_token_secret_arn,
            store_url=self.realtime.store_url,
            store_iam_cache=self.realtime.cache_name,
            store_cluster=True,  # ElastiCache Serverless is cluster-mode only
            region=cdk.Aws.REGION,
        )
        self.manifests = k8s.inference_manifests(params)
        self._apply_manifests(association)

        eks_managed = "EKS requires these AWS-managed policies on its cluster and node roles"
        acknowledge(
            self,
            {
                nag.iam4(f"Policy::arn:<AWS::Partition>:iam::aws:policy/{name}"): eks_managed
                for name in (
                    "AmazonEKSClusterPolicy",
                    "AmazonEKSComputePolicy",
                    "AmazonEKSBlockStoragePolicy",
                    "AmazonEKSLoadBalancingPolicy",
                    "AmazonEKSNetworkingPolicy",
                    "AmazonEKSWorkerNodeMinimalPolicy",
                    "AmazonEC2ContainerRegistryPullOnly",
                )
            },
        )
        cdk.CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        cdk.CfnOutput(self, "PodRoleArn", value=self.pod_role.role_arn)
        # The secret's ARN, not its value: the shop's sender reads the token with get-secret-value.
        cdk.CfnOutput(self, "EventsTokenSecretArn", value=self.realtime.events_token_secret_arn)

    @property
    def availability_zones(self) -> list[str]:
        """The zones the VPC spans, never looked up at synth.

        aws-cdk-lib's Stack looks zones up in the account (a context provider: credentials at synth) as soon
        as account and region are known, and ec2.Vpc reads this property even when given zones. Default:
        the first two zones of ``Fn::GetAZs``, resolved by CloudFormation at deploy time in the account
        (only zones it can use), as CDK does for an environment-agnostic stack.
        """
        if self.config.availability_zones:
            return list(self.config.availability_zones)
        return [cdk.Fn.select(i, cdk.Fn.get_azs()) for i in range(2)]

    @property
    def scraper_subnets(self) -> list[ec2.ISubnet]:
        """Where AMP's managed scraper puts its ENIs (the monitoring stack), the only private addresses the
        NetworkPolicy admits."""
        return self.vpc.select_subnets(subnet_group_name=SCRAPER_SUBNETS).subnets

    @property
    def icluster(self) -> eks.ICluster:
        """The cluster as its interface (jsii's Python stubs miss a protocol member on Cluster)."""
        return cast(eks.ICluster, self.cluster)

    def _vpc(self) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            availability_zones=self.availability_zones,
            nat_gateways=self.config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
                # Last, so the other groups keep their CIDRs. Isolated: the scraper reaches only the pods and
                # the cluster endpoint inside the VPC and writes to AMP through the service's own endpoint.
                # One per zone: AMP wants subnets in two zones at least.
                ec2.SubnetConfiguration(
                    name=SCRAPER_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=28
                ),
            ],
        )
        # S3 traffic (bundle downloads, image layers from ECR's S3) skips the NAT gateways: free and private.
        vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                logs.LogGroup(
                    self,
                    "FlowLogGroup",
                    retention=logs.RetentionDays.ONE_MONTH,
                    removal_policy=cdk.RemovalPolicy.DESTROY,
                )
            ),
        )
        # The ALB (internet-facing) finds its public subnets by these tags.
        for subnet in vpc.public_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/elb", "1")
        for subnet in vpc.private_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")
        return vpc

    def _operator_access(self) -> None:
        """The private endpoint admits only principals with an access entry: the operator role (a parameter)
        gets one with cluster admin, so `aws eks update-kubeconfig --role-arn ...` + kubectl work from inside
        the VPC. Without the parameter nothing is created."""
        given = cdk.CfnCondition(
            self, "HasOperatorRole", expression=cdk.Fn.condition_not(
                cdk.Fn.condition_equals(self.operator_role_arn.value_as_string, ""))
        )
        entry = eks.CfnAccessEntry(
            self,
            "OperatorAccess",
            cluster_name=self.cluster.cluster_name,
            principal_arn=self.operator_role_arn.value_as_string,
            access_policies=[
                eks.CfnAccessEntry.AccessPolicyProperty(
                    policy_arn=f"arn:{cdk.Aws.PARTITION}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                    access_scope=eks.CfnAccessEntry.AccessScopeProperty(type="cluster"),
                )
            ],
        )
        entry.cfn_options.condition = given

    def _observability_addons(self) -> None:
        """Container Insights and pod logs to CloudWatch, and the resource metrics the HPA scales on.

        - ``amazon-cloudwatch-observability`` (CloudWatch agent + Fluent Bit): Container Insights metrics
          and every container's stdout/stderr in /aws/containerinsights/<cluster>/application; its agent
          gets CloudWatchAgentServerPolicy through Pod Identity (service account cloudwatch-agent in
          amazon-cloudwatch): https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/install-CloudWatch-Observability-EKS-addon.html
        - ``metrics-server`` (EKS community add-on): the metrics.k8s.io API a CPU-based HPA reads. "It isn't
          deployed by default in Amazon EKS clusters" (https://docs.aws.amazon.com/eks/latest/userguide/metrics-server.html),
          and Auto Mode's components do not include it; without it the HPA never scales:
          https://docs.aws.amazon.com/eks/latest/userguide/community-addons.html
        """
        agent_role = iam.Role(
            self,
            "CloudWatchAgentRole",
            assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com"),
            description="CloudWatch observability add-on agent (EKS Pod Identity)",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("CloudWatchAgentServerPolicy")],
        )
        assert agent_role.assume_role_policy is not None
        agent_role.assume_role_policy.add_statements(
            iam.PolicyStatement(actions=["sts:TagSession"], principals=[iam.ServicePrincipal("pods.eks.amazonaws.com")])
        )
        acknowledge(
            agent_role,
            {nag.iam4("Policy::arn:<AWS::Partition>:iam::aws:policy/CloudWatchAgentServerPolicy"):
             "The policy the CloudWatch observability add-on documents for its agent"},
        )
        cloudwatch = eks.CfnAddon(
            self,
            "CloudWatchObservability",
            cluster_name=self.cluster.cluster_name,
            addon_name="amazon-cloudwatch-observability",
            resolve_conflicts="OVERWRITE",
            pod_identity_associations=[
                eks.CfnAddon.PodIdentityAssociationProperty(
                    service_account="cloudwatch-agent", role_arn=agent_role.role_arn
                )
            ],
        )
        metrics_server = eks.CfnAddon(
            self, "MetricsServer", cluster_name=self.cluster.cluster_name, addon_name="metrics-server",
            resolve_conflicts="OVERWRITE",
        )
        for addon in (cloudwatch, metrics_server):
            addon.node.add_dependency(self.cluster)
        self.addons = [cloudwatch, metrics_server]

    def _node_role(self) -> iam.Role:
        """The Auto Mode node role with the two policies the EKS docs name for it (aws-cdk-lib's default
        role carries the broader AmazonEKSWorkerNodePolicy and ECR ReadOnly):
        https://docs.aws.amazon.com/eks/latest/userguide/auto-create-node-role.html"""
        return iam.Role(
            self,
            "AutoModeNodeRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="EKS Auto Mode nodes of the ecomrec cluster",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(name) for name in AUTO_MODE_NODE_POLICIES
            ],
        )

    def _pod_role(self, models_bucket: s3.IBucket) -> iam.Role:
        """The inference pods read bundles from the models bucket: nothing else, no writes."""
        role = iam.Role(
            self,
            "InferencePodRole",
            assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com"),
            description="ecomrec inference pods (EKS Pod Identity): read model bundles",
        )
        assert role.assume_role_policy is not None
        # Pod identity also tags the session with the pod's cluster/namespace/service account.
        role.assume_role_policy.add_statements(
            iam.PolicyStatement(actions=["sts:TagSession"], principals=[iam.ServicePrincipal("pods.eks.amazonaws.com")])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadBundles", actions=["s3:GetObject"], resources=[models_bucket.arn_for_objects("*")]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(sid="ListBundles", actions=["s3:ListBucket"], resources=[models_bucket.bucket_arn])
        )
        acknowledge(
            role,
            {
                nag.iam5(
                    f"Resource::{nag.MODELS_OBJECTS}"
                ): "Reads any bundle (key = group/version/...) of the models bucket, nothing else"
            },
        )
        return role

    def _apply_manifests(self, after: Construct) -> None:
        sg = ec2.SecurityGroup(
            self,
            "ApplyManifestsSg",
            vpc=self.vpc,
            allow_all_outbound=True,
            description="Kubernetes manifests custom resource: reaches the EKS API",
        )
        self.cluster.cluster_security_group.add_ingress_rule(
            sg, ec2.Port.tcp(443), "manifests custom resource to the Kubernetes API"
        )
        fn = lambda_.Function(
            self,
            "ApplyManifestsFn",
            runtime=LAMBDA_RUNTIME,
            code=rollout_code(),
            handler="ecomrec_rollout.handler.apply_handler",
            timeout=Duration.minutes(10),  # applies, then waits up to 7 minutes for the Ingress's ALB
            memory_size=256,
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[sg],
            log_group=lambda_log_group(self, "ApplyManifestsLogs"),
            description="Server-side applies the ecomrec Kubernetes manifests (keeps the live model)",
            environment={
                c.ENV_CLUSTER_NAME: self.cluster.cluster_name,
                c.ENV_CLUSTER_ENDPOINT: self.cluster.cluster_endpoint,
                c.ENV_CLUSTER_CA: self.cluster.cluster_certificate_authority_data,
            },
        )
        assert fn.role is not None
        # It creates a namespace and cluster-scoped IngressClass objects: cluster admin, like kubectl would.
        access = eks.AccessEntry(
            self,
            "ApplyManifestsAccess",
            cluster=self.icluster,
            principal=fn.role.role_arn,
            access_policies=[
                eks.AccessPolicy.from_access_policy_name(
                    "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                )
            ],
        )
        provider = cr.Provider(
            self,
            "ApplyManifestsProvider",
            on_event_handler=fn,
            log_group=lambda_log_group(self, "ApplyManifestsProviderLogs"),
        )
        resource = cdk.CustomResource(
            self,
            "InferenceManifests",
            service_token=provider.service_token,
            resource_type="Custom::EcomrecKubernetesManifests",
            properties={
                "Manifests": cdk.Stack.of(self).to_json_string(self.manifests),
                "LoadBalancerName": self.config.load_balancer_name,
            },
        )
        # The alarms' LoadBalancer dimension, read from the ALB the Ingress created (monitoring stack).
        self.alb_full_name = resource.get_att_string("AlbFullName")
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="FindLoadBalancer", actions=["elasticloadbalancing:DescribeLoadBalancers"], resources=["*"]
            )
        )
        for dep in (access, after):
            resource.node.add_dependency(dep)
        acknowledge(
            fn,
            {
                nag.iam4(nag.LAMBDA_BASIC): nag.LAMBDA_MANAGED_REASON,
                nag.iam4(nag.LAMBDA_VPC): nag.LAMBDA_MANAGED_REASON,
                nag.iam5("Resource::*"): "elasticloadbalancing:DescribeLoadBalancers has no resource-level scope",
            },
        )
        acknowledge(
            provider,
            {
                nag.iam4(nag.LAMBDA_BASIC): nag.LAMBDA_MANAGED_REASON,
                nag.iam5(
                    f"Resource::<{nag.logical_id(fn)}.Arn>:*"
                ): "The CDK provider framework invokes any version of OUR apply function only",
            },
        )
        self.apply_function = fn
        self.apply_provider = provider
