"""Monitoring stack: CloudWatch alarms on what a user or the team would notice, all to one SNS topic.

- 5xx rate and p99 latency at the load balancer (the ALB the Ingress creates; its CloudWatch dimension
  ``app/<name>/<id>`` is read from the real ALB by the serving stack's manifests custom resource).
  Service-level signals (fallbacks, model loads, coverage) are Prometheus rules and Grafana panels in
  containers/monitoring/, on the names in components/serving/metric_names.py; the CloudWatch agent
  drops Prometheus histograms, so p99 here comes from the ALB.
- Pipeline execution failed: SageMaker's ExecutionFailed metric, plus the execution status event (which
  says which execution) straight to the topic.
- Rollout failed: the rollout function's errors and messages in its dead-letter queue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_aps as aps
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_grafana as grafana
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks import nag
from stacks.config import EcomrecConfig
from stacks.nag import acknowledge
from stacks.serving import LAMBDA_RUNTIME, lambda_log_group

MONITORING_ASSETS = Path(__file__).resolve().parents[2] / "containers" / "monitoring"
RULES_FILE = MONITORING_ASSETS / "prometheus-rules.yml"
DASHBOARD_FILE = MONITORING_ASSETS / "grafana-dashboard.json"
SCRAPE_INTERVAL = "30s"
GRAFANA_CODE = Path(__file__).resolve().parents[1] / "grafana"  # the provisioner's Lambda asset
GRAFANA_VERSION = "10.4"
GRAFANA_PROVISIONER_ACTIONS = (
    "CreateWorkspaceServiceAccount",
    "ListWorkspaceServiceAccounts",  # finds one left by a cut-off invocation
    "CreateWorkspaceServiceAccountToken",
    "DeleteWorkspaceServiceAccountToken",
    "DeleteWorkspaceServiceAccount",
)


def scrape_configuration() -> dict[str, Any]:
    """The managed scraper's Prometheus configuration: every pod that carries the prometheus.io/* annotations
    (stacks/k8s.py puts them on the inference pods), scraped on the annotated port and path, with the
    namespace and pod labels the alert rules group by. JSON is YAML, so this dict is the file."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": "kubernetes-pods",
            "kubernetes_sd_configs": [{"role": "pod"}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                 "action": "keep", "regex": "true"},
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                 "action": "replace", "target_label": "__metrics_path__", "regex": "(.+)"},
                {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                 "action": "replace", "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2",
                 "target_label": "__address__"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }],
    }
PIPELINE_STEP_DETAIL_TYPE = "SageMaker Model Building Pipeline Execution Step Status Change"
GATE_FAILED_STEP = "gate-failed"  # = pipelines.sagemaker.pipeline.GATE_FAILED_STEP (a test checks)


class MonitoringStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        config: EcomrecConfig,
        pipeline_arn: str,
        rollout_function: lambda_.IFunction,
        alb_full_name: str,
        cluster: eks.ICluster,
        cluster_security_group_id: str,
        subnets: list[ec2.ISubnet],
        rollout_dlq: sqs.IQueue,
        delivery_dlq: sqs.IQueue,
        retrain_dlq: sqs.IQueue,
        env: cdk.Environment | None = None,
    ) -> None:
        super().__init__(scope, cid, env=env, description=f"{config.prefix} monitoring: alarms -> SNS")
        self.config = config

        # Customer-managed key: CloudWatch alarms and EventBridge may only publish to topics whose key
        # policy lets them; the AWS-managed SNS key cannot be granted.
        key = kms.Key(
            self,
            "AlarmTopicKey",
            enable_key_rotation=True,
            description="ecomrec alarm topic",
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": self.account}},
                )
            )
        self.topic = sns.Topic(self, "Alarms", display_name="ecomrec alarms", master_key=key, enforce_ssl=True)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        action = cw_actions.SnsAction(self.topic)

        alb = {"LoadBalancer": alb_full_name}
        requests = cw.Metric(
            namespace="AWS/ApplicationELB",
            metric_name="RequestCount",
            dimensions_map=alb,
            statistic="Sum",
            period=Duration.minutes(1),
        )
        errors = cw.Metric(
            namespace="AWS/ApplicationELB",
            metric_name="HTTPCode_Target_5XX_Count",
            dimensions_map=alb,
            statistic="Sum",
            period=Duration.minutes(1),
        )
        elb_errors = cw.Metric(
            namespace="AWS/ApplicationELB",
            metric_name="HTTPCode_ELB_5XX_Count",
            dimensions_map=alb,
            statistic="Sum",
            period=Duration.minutes(1),
        )
        elb_503 = cw.Metric(
            namespace="AWS/ApplicationELB",
            metric_name="HTTPCode_ELB_503_Count",
            dimensions_map=alb,
            statistic="Sum",
            period=Duration.minutes(1),
        )
        # The 5xx counts are published only for minutes with a non-zero count, and arithmetic on a missing
        # operand gives no value for that minute (not breaching): FILL them with 0, or a minute with target
        # 5xx but no load-balancer 5xx (the usual case) would count as no data. Numerator: target 5xx (never
        # the load balancer's own) + load-balancer 5xx. Denominator: RequestCount counts the requests the load
        # balancer sent to a target, including those it then answered 502/504 (target reset or timed out), so
        # only the 503s it answered without a target (no healthy pod) join it: a total outage is 100 %, and a
        # 502/504 is counted once (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html).
        error_rate = cw.MathExpression(
            expression="IF(FILL(req, 0) + FILL(elb503, 0) > 0, "
                       "100 * (FILL(e5, 0) + FILL(elb5, 0)) / (FILL(req, 0) + FILL(elb503, 0)), 0)",
            using_metrics={"req": requests, "e5": errors, "elb5": elb_errors, "elb503": elb_503},
            label="5xx rate (%)",
            period=Duration.minutes(1),
        )
        self.alarms: dict[str, cw.Alarm] = {}
        self._alarm(
            "Http5xxRate",
            error_rate,
            threshold=config.error_rate_percent,
            periods=5,
            description=f"More than {config.error_rate_percent}% of requests answered 5xx for 5 minutes",
        )
        p99 = cw.Metric(
            namespace="AWS/ApplicationELB",
            metric_name="TargetResponseTime",
            dimensions_map=alb,
            statistic="p99",
            period=Duration.minutes(1),
        )
        self._alarm(
            "LatencyP99",
            p99,
            threshold=config.p99_budget_seconds,
            periods=5,
            datapoints=4,
            description=f"p99 target response time above {config.p99_budget_seconds}s",
        )

        # A failed step, not a failed execution: the quality gate rejects a model through its FailStep
        # ("gate-failed", pipelines/sagemaker/pipeline.py), which fails the execution (and SageMaker's
        # ExecutionFailed metric) although nothing is broken. The step event names the step
        # (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html#eventbridge-pipeline-step).
        step_failed = events.Rule(
            self,
            "PipelineStepFailedEvent",
            description="Failed ecomrec pipeline steps (not the quality gate's rejection) -> alarm topic",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=[PIPELINE_STEP_DETAIL_TYPE],
                detail={
                    "pipelineArn": [pipeline_arn],
                    "currentStepStatus": ["Failed"],
                    "stepName": [{"anything-but": [GATE_FAILED_STEP]}],
                },
            ),
            targets=[targets.SnsTopic(self.topic)],
        )
        self._alarm(
            "PipelineExecutionFailed",
            cw.Metric(
                namespace="AWS/Events",
                metric_name="TriggeredRules",
                dimensions_map={"RuleName": step_failed.rule_name},
                statistic="Sum",
                period=Duration.minutes(5),
            ),
            threshold=1,
            periods=1,
            description="A step of a SageMaker pipeline execution (retraining) failed; a quality-gate rejection "
            "is not a failure",
        )

        self._alarm(
            "RolloutFunctionErrors",
            rollout_function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            threshold=1,
            periods=1,
            description="The rollout function failed (it retries; see DLQ)",
        )
        for cid, queue, description in (
            ("RolloutDeadLetters", rollout_dlq,
             "An approval/rejection could not be rolled out after every retry: events in the rollout DLQ"),
            ("RolloutDeliveryDeadLetters", delivery_dlq,
             "EventBridge could not queue an approval/rejection for the rollout function: events in its DLQ"),
            ("RetrainDeadLetters", retrain_dlq,
             "EventBridge Scheduler could not start the scheduled retraining run: events in the retrain DLQ"),
        ):
            self._alarm(
                cid,
                queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
                threshold=1,
                periods=1,
                description=description,
            )
        for alarm in self.alarms.values():
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.topic.topic_arn)

        self._prometheus(key, cluster, cluster_security_group_id, subnets)
        self._grafana()

    def _prometheus(
        self, key: kms.IKey, cluster: eks.ICluster, cluster_sg: str, subnets: list[ec2.ISubnet]
    ) -> None:
        """Amazon Managed Service for Prometheus: a workspace, the managed scraper for the EKS cluster, the
        alert rules of containers/monitoring/ (evaluated by the workspace), alerts to the SNS topic."""
        aps_principal = iam.ServicePrincipal("aps.amazonaws.com")
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish", "sns:GetTopicAttributes"],
                principals=[aps_principal],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                principals=[aps_principal],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        # https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-alertmanager-receiver-config.html
        alertmanager = (
            "alertmanager_config: |\n"
            "  route:\n"
            "    receiver: sns\n"
            "    group_by: [alertname]\n"
            "  receivers:\n"
            "    - name: sns\n"
            "      sns_configs:\n"
            f"        - topic_arn: {self.topic.topic_arn}\n"
            "          sigv4:\n"
            f"            region: {cdk.Aws.REGION}\n"
        )
        self.workspace = aps.CfnWorkspace(
            self, "Prometheus", alias=self.config.prefix, alert_manager_definition=alertmanager
        )
        self.rules = aps.CfnRuleGroupsNamespace(
            self,
            "PrometheusRules",
            name=self.config.prefix,
            workspace=self.workspace.attr_arn,
            data=RULES_FILE.read_text(),
        )
        # https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-collector-how-to.html: subnets in two
        # zones at least (the serving VPC's scraper subnets, which the NetworkPolicy admits) and the cluster
        # security group; the configuration base64-encoded.
        self.scraper = aps.CfnScraper(
            self,
            "Scraper",
            alias=f"{self.config.prefix}-eks",
            source=aps.CfnScraper.SourceProperty(
                eks_configuration=aps.CfnScraper.EksConfigurationProperty(
                    cluster_arn=cluster.cluster_arn,
                    subnet_ids=[s.subnet_id for s in subnets],
                    security_group_ids=[cluster_sg],
                )
            ),
            destination=aps.CfnScraper.DestinationProperty(
                amp_configuration=aps.CfnScraper.AmpConfigurationProperty(workspace_arn=self.workspace.attr_arn)
            ),
            scrape_configuration=aps.CfnScraper.ScrapeConfigurationProperty(
                configuration_blob=cdk.Fn.base64(json.dumps(scrape_configuration(), indent=1))
            ),
        )
        # No access entry or RBAC of ours for the scraper: on a cluster whose authentication mode is API (the
        # serving stack's), AMP creates the scraper's access entry itself, with the read-only rules it needs
        # ("any scrapers you create through the Amazon Managed Service for Prometheus API ... will
        # automatically have the correct access entry policy created for you",
        # https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-collector-how-to.html#AMP-collector-eks-setup).
        # A second entry for the same role would fail the deploy (one access entry per principal).
        cdk.CfnOutput(self, "PrometheusWorkspaceId", value=self.workspace.attr_workspace_id)
        cdk.CfnOutput(self, "PrometheusQueryUrl", value=f"{self.workspace.attr_prometheus_endpoint}api/v1/query")

    def _grafana(self) -> None:
        """Amazon Managed Grafana, signing in through IAM Identity Center, reading the Prometheus workspace and
        CloudWatch, with the Prometheus data source and the dashboard (containers/monitoring/grafana-dashboard.json)
        put in by a custom resource (cdk/grafana/ecomrec_grafana/provision.py)."""
        role = iam.Role(
            self,
            "GrafanaRole",
            assumed_by=iam.ServicePrincipal(
                "grafana.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": self.account}}
            ),
            description="Amazon Managed Grafana: query the ecomrec Prometheus workspace and CloudWatch",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="QueryPrometheus",
                actions=["aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata",
                         "aps:DescribeWorkspace"],
                resources=[self.workspace.attr_arn],
            )
        )
        role.add_to_policy(iam.PolicyStatement(sid="ListPrometheus", actions=["aps:ListWorkspaces"], resources=["*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadCloudWatch",
                actions=["cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "cloudwatch:DescribeAlarms",
                         "logs:StartQuery", "logs:GetQueryResults", "logs:DescribeLogGroups"],
                resources=["*"],
            )
        )
        acknowledge(
            role,
            {nag.iam5("Resource::*"): "aps:ListWorkspaces and the CloudWatch read/query actions have no "
             "resource-level scope; the Prometheus queries are scoped to our workspace"},
        )
        self.grafana = grafana.CfnWorkspace(
            self,
            "Grafana",
            name=self.config.prefix,
            account_access_type="CURRENT_ACCOUNT",
            authentication_providers=["AWS_SSO"],
            permission_type="CUSTOMER_MANAGED",
            role_arn=role.role_arn,
            data_sources=["PROMETHEUS", "CLOUDWATCH"],
            # Pinned, not "the latest": service accounts (the provisioner's token) need Grafana 9 or later
            # (https://docs.aws.amazon.com/grafana/latest/APIReference/API_CreateWorkspaceServiceAccount.html),
            # and in 10.4 the core "prometheus" data source with SigV4 reads AMP, the type the dashboard names.
            grafana_version=GRAFANA_VERSION,
            description="ecomrec: service dashboard (Prometheus) and CloudWatch",
        )
        self._provision_grafana()
        cdk.CfnOutput(self, "GrafanaUrl", value=f"https://{self.grafana.attr_endpoint}")
        cdk.CfnOutput(self, "GrafanaWorkspaceId", value=self.grafana.attr_id)

    def _provision_grafana(self) -> None:
        """The custom resource that puts the data source and the dashboard into the workspace when the stack is
        created and whenever its inputs change (the dashboard file, the endpoints), with a service-account
        token that it deletes again. Its steps are upserts, so a repeated run converges."""
        workspace_arn = (f"arn:{cdk.Aws.PARTITION}:grafana:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}"
                         f":/workspaces/{self.grafana.attr_id}")
        fn = lambda_.Function(
            self,
            "GrafanaProvisionerFn",
            runtime=LAMBDA_RUNTIME,
            code=lambda_.Code.from_asset(str(GRAFANA_CODE), exclude=["**/__pycache__", "*.pyc", ".mypy_cache"]),
            handler="ecomrec_grafana.provision.handler",
            timeout=Duration.minutes(2),
            memory_size=128,
            log_group=lambda_log_group(self, "GrafanaProvisionerLogs"),
            description="Adds the Prometheus data source and the ecomrec dashboard to the Grafana workspace",
        )
        # Short-lived credentials only: a service account and a token for this invocation, both deleted.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="GrafanaServiceAccountToken",
                actions=[f"grafana:{action}" for action in GRAFANA_PROVISIONER_ACTIONS],
                resources=[workspace_arn],
            )
        )
        provider = cr.Provider(
            self,
            "GrafanaProvisionerProvider",
            on_event_handler=fn,
            log_group=lambda_log_group(self, "GrafanaProvisionerProviderLogs"),
        )
        self.grafana_provisioning = cdk.CustomResource(
            self,
            "GrafanaDashboard",
            service_token=provider.service_token,
            resource_type="Custom::EcomrecGrafanaDashboard",
            properties={
                "WorkspaceId": self.grafana.attr_id,
                "GrafanaUrl": f"https://{self.grafana.attr_endpoint}",
                "PrometheusUrl": self.workspace.attr_prometheus_endpoint,
                "Region": cdk.Aws.REGION,
                "DataSourceUid": f"{self.config.prefix}-amp",
                "DataSourceName": f"{self.config.prefix} Prometheus",
                # The file itself: a changed dashboard is a changed property, so the next deploy updates it.
                "Dashboard": DASHBOARD_FILE.read_text(),
            },
        )
        acknowledge(fn, {nag.iam4(nag.LAMBDA_BASIC): nag.LAMBDA_MANAGED_REASON})
        acknowledge(
            provider,
            {
                nag.iam4(nag.LAMBDA_BASIC): nag.LAMBDA_MANAGED_REASON,
                nag.iam5(
                    f"Resource::<{nag.logical_id(fn)}.Arn>:*"
                ): "The CDK provider framework invokes any version of OUR Grafana provisioner only",
            },
        )

    def _alarm(
        self,
        cid: str,
        metric: cw.IMetric,
        *,
        threshold: float,
        periods: int,
        description: str,
        datapoints: int | None = None,
    ) -> None:
        self.alarms[cid] = cw.Alarm(
            self,
            cid,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            datapoints_to_alarm=datapoints or periods,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
            alarm_name=f"{self.config.prefix}-{cid}",
        )
