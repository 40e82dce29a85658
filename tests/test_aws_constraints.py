"""AWS facts the stacks depend on, each from the documentation page named in its docstring, checked against
the synthesised templates (and, where a fact forbids something, against a template that breaks it, so each
check is seen to fail).

Nothing here can be run against the real services offline; the facts are written down once, with their
source, so a template that a real account would refuse fails here instead of half-way through a deploy.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20,22")
pytest.importorskip("aws_cdk", reason="the cdk extra is not installed")

import aws_cdk as cdk

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "cdk"), str(REPO / "cdk" / "rollout")]

from stacks import build, cdk_json_context  # noqa: E402

AS_OF = date(2026, 12, 4)  # the day these facts were read; refresh the calendar below when it moves on

# ------------------------------------------------------------------ the facts

# https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html ("A minor version is under
# standard support in Amazon EKS for the first 14 months after it's released", release calendar):
# version -> (EKS release, end of standard support).
EKS_STANDARD_SUPPORT = {
    "1.32": (date(2025, 1, 23), date(2026, 3, 23)),
    "1.33": (date(2025, 5, 29), date(2026, 7, 29)),
    "1.34": (date(2025, 10, 2), date(2026, 12, 2)),
    "1.35": (date(2026, 1, 27), date(2027, 3, 27)),
}

# https://docs.aws.amazon.com/eks/latest/userguide/eks-ami-build-scripts.html: "Kubernetes version 1.32 is the
# last version for which Amazon EKS will release AL2 AMIs. From version 1.33 onwards, Amazon EKS will continue
# to release AL2023 and Bottlerocket based AMIs."
LAST_AL2_VERSION = (1, 32)

# https://docs.aws.amazon.com/eks/latest/userguide/set-builtin-node-pools.html: the two built-in NodePools;
# "Enabling at least one built-in NodePool is required for EKS to provision the "default" NodeClass".
AUTO_MODE_BUILTIN_POOLS = {"system", "general-purpose"}

# https://docs.aws.amazon.com/eks/latest/userguide/auto-cluster-iam-role.html: the cluster role of an Auto Mode
# cluster carries these managed policies and its trust policy allows sts:AssumeRole and sts:TagSession.
AUTO_MODE_CLUSTER_POLICIES = {
    "AmazonEKSClusterPolicy",
    "AmazonEKSComputePolicy",
    "AmazonEKSBlockStoragePolicy",
    "AmazonEKSLoadBalancingPolicy",
    "AmazonEKSNetworkingPolicy",
}
# https://docs.aws.amazon.com/eks/latest/userguide/auto-create-node-role.html: the node role's policies.
AUTO_MODE_NODE_POLICIES = {"AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly"}

# https://docs.aws.amazon.com/eks/latest/userguide/automode.html: Auto Mode runs "compute autoscaling, pod and
# service networking, application load balancing, cluster DNS, block storage, and GPU support" as core
# components, "as opposed to add-ons"; https://docs.aws.amazon.com/eks/latest/userguide/pod-id-agent-setup.html:
# "You do not need to install the EKS Pod Identity Agent on EKS Auto Mode Clusters."
AUTO_MODE_BUILT_IN_ADDONS = {"vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent", "aws-ebs-csi-driver"}

# https://docs.aws.amazon.com/eks/latest/userguide/metrics-server.html: "The Kubernetes Metrics Server ... isn't
# deployed by default in Amazon EKS clusters" and is what a Horizontal Pod Autoscaler on resource metrics reads.
METRICS_SERVER_ADDON = "metrics-server"

# https://docs.aws.amazon.com/lambda/latest/dg/limits.html: "New AWS accounts have reduced concurrency and
# memory quotas" (Concurrent executions: default 1,000, lower for new accounts: 10 is what a new account
# gets); https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html: "You can reserve up to
# the Unreserved account concurrency value that is shown, minus 100 for functions that don't have reserved
# concurrency."
NEW_ACCOUNT_CONCURRENCY = 10
UNRESERVED_MINIMUM = 100

# https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-collector-how-to.html#AMP-collector-eks-setup:
# with the cluster's authentication mode "either API or API_AND_CONFIG_MAP", "any scrapers you create through
# the Amazon Managed Service for Prometheus API or CLI ... will automatically have the correct access entry
# policy created for you" (rules: get/list/watch on nodes, nodes/proxy, nodes/metrics, services, endpoints,
# pods, ingresses, configmaps; ingresses(/status) in extensions and networking.k8s.io; get on
# metrics.eks.amazonaws.com kcm/metrics and ksh/metrics; get on /metrics). The manual ClusterRole +
# aws-auth mapping on that page is the alternative for clusters that use the aws-auth ConfigMap.
# https://docs.aws.amazon.com/eks/latest/userguide/creating-access-entries.html: one access entry per IAM
# principal and cluster (a second CreateAccessEntry for it fails "already in use").
AMP_AUTO_ACCESS_ENTRY_MODES = {"API", "API_AND_CONFIG_MAP"}

# https://docs.aws.amazon.com/grafana/latest/APIReference/API_CreateWorkspaceServiceAccount.html: "You can only
# create service accounts for workspaces that are compatible with Grafana version 9 and above"; Amazon Managed
# Grafana's first 9.x is 9.4 ("With the release of Grafana 9.4, Amazon Managed Grafana added support for service
# accounts", https://aws.amazon.com/blogs/big-data/migrating-from-api-keys-to-service-account-tokens-in-grafana-dashboards-using-terraform).
GRAFANA_SERVICE_ACCOUNTS_SINCE = (9, 4)


# https://docs.aws.amazon.com/firehose/latest/APIReference/API_PutRecordBatch.html: "Each PutRecordBatch
# request supports up to 500 records. Each record in the request can be as large as 1,000 KB (before base64
# encoding), up to a limit of 4 MB for the entire request. These limits cannot be changed."
PUT_RECORD_BATCH_RECORDS, PUT_RECORD_BATCH_BYTES, FIREHOSE_RECORD_BYTES = 500, 4 * 1024 * 1024, 1000 * 1024

# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-kinesisfirehose-deliverystream-extendeds3destinationconfiguration.html
# (FileExtension: pattern and length, as CloudFormation's resource schema has them; cfn-lint carries the same
# schema); https://docs.aws.amazon.com/firehose/latest/dev/s3-object-name.html: the object name ends with
# "<file extension>"; s3-prefixes.html: the timestamp namespace is "in UTC" by default.
FILE_EXTENSION_PATTERN, FILE_EXTENSION_MAX = r"^$|\.[0-9a-z!\-_.*'()]+", 128

# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-elasticache-usergroup.html:
# UserIds: "A user named default must be included". https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/Clusters.RBAC.html:
# a user group of engine "valkey" holds only users that authenticate (password or IAM); a Valkey cache takes
# "redis" and "valkey" groups; RBAC is the only access control of a serverless cache.
# https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/auth-iam.html: IAM authentication needs Valkey 7.2+
# (or Redis OSS 7.0+) and TLS, and "the user id and user name properties must be identical" for an
# IAM-enabled user.
IAM_AUTH_MIN_VALKEY = (7, 2)
# https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/WorkingWithRedis.html: "ElastiCache serverless is only
# available in a cluster-mode enabled configuration" (so the service must talk to it as to a cluster).
SERVERLESS_IS_CLUSTER_MODE = True

# https://docs.aws.amazon.com/eks/latest/userguide/auto-sgp.html: security groups for individual Pods in Auto
# Mode apply "to EKS Auto Mode clusters running Kubernetes 1.36 or later"; before that a pod uses its node's
# network interface, and so the node's security groups (the built-in node class's: the cluster security
# group, https://docs.aws.amazon.com/eks/latest/userguide/create-node-class.html).
AUTO_MODE_POD_SECURITY_GROUPS_FROM = (1, 36)


# ------------------------------------------------------------------ checkers (pure, on template dicts)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v["Type"] == kind}


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def nodegroup_ami_problems(template: dict[str, Any]) -> list[str]:
    """Managed node groups whose AMI type EKS does not publish for the cluster's Kubernetes version."""
    clusters = _resources(template, "AWS::EKS::Cluster")
    problems = []
    for lid, ng in _resources(template, "AWS::EKS::Nodegroup").items():
        props = ng["Properties"]
        ref = props["ClusterName"].get("Ref") if isinstance(props["ClusterName"], dict) else None
        version = props.get("Version") or (clusters[ref]["Properties"].get("Version") if ref in clusters else None)
        ami = props.get("AmiType", "AL2_x86_64")  # EKS's default AMI type for a node group without one
        if version and ami.startswith("AL2_") and _version(version) > LAST_AL2_VERSION:
            problems.append(f"{lid}: AmiType {ami} on Kubernetes {version} (AL2 AMIs end with 1.32)")
    return problems


def auto_mode_problems(template: dict[str, Any]) -> list[str]:
    """What an Auto Mode cluster in this template lacks (or mixes in) against the EKS docs above."""
    problems = []
    roles = _resources(template, "AWS::IAM::Role")
    addons = {a["Properties"]["AddonName"] for a in _resources(template, "AWS::EKS::Addon").values()}

    def policies(role_ref: Any) -> set[str]:
        role = roles[role_ref["Fn::GetAtt"][0]]["Properties"]
        return {json.dumps(p).rsplit("/", 1)[-1].split('"')[0] for p in role.get("ManagedPolicyArns", [])}

    for lid, cluster in _resources(template, "AWS::EKS::Cluster").items():
        props = cluster["Properties"]
        compute = props.get("ComputeConfig", {})
        if not compute.get("Enabled"):
            continue
        if props.get("BootstrapSelfManagedAddons", True) is not False:
            problems.append(f"{lid}: Auto Mode with BootstrapSelfManagedAddons not false")
        if not props.get("KubernetesNetworkConfig", {}).get("ElasticLoadBalancing", {}).get("Enabled"):
            problems.append(f"{lid}: Auto Mode without its load balancing capability")
        if not props.get("StorageConfig", {}).get("BlockStorage", {}).get("Enabled"):
            problems.append(f"{lid}: Auto Mode without its block storage capability")
        pools = set(compute.get("NodePools", []))
        if not pools:
            problems.append(f"{lid}: Auto Mode with no node pool: no default NodeClass, no node ever starts")
        if pools - AUTO_MODE_BUILTIN_POOLS:
            problems.append(f"{lid}: unknown built-in node pools {sorted(pools - AUTO_MODE_BUILTIN_POOLS)}")
        if pools and "NodeRoleArn" not in compute:
            problems.append(f"{lid}: node pools without a node role")
        elif pools and not policies(compute["NodeRoleArn"]) >= AUTO_MODE_NODE_POLICIES:
            problems.append(f"{lid}: node role lacks {sorted(AUTO_MODE_NODE_POLICIES)}")
        missing = AUTO_MODE_CLUSTER_POLICIES - policies(props["RoleArn"])
        if missing:
            problems.append(f"{lid}: cluster role lacks {sorted(missing)}")
        trust = roles[props["RoleArn"]["Fn::GetAtt"][0]]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        if not any("sts:TagSession" in json.dumps(st["Action"]) for st in trust):
            problems.append(f"{lid}: cluster role trust lacks sts:TagSession")
        if _resources(template, "AWS::EKS::Nodegroup"):
            problems.append(f"{lid}: Auto Mode mixed with managed node groups (two compute models)")
        if addons & AUTO_MODE_BUILT_IN_ADDONS:
            problems.append(f"{lid}: add-ons Auto Mode runs itself: {sorted(addons & AUTO_MODE_BUILT_IN_ADDONS)}")
    return problems


def lambda_concurrency_problems(template: dict[str, Any], account_quota: int) -> list[str]:
    """Functions whose reserved concurrency an account with ``account_quota`` concurrent executions refuses."""
    problems = []
    for lid, fn in _resources(template, "AWS::Lambda::Function").items():
        reserved = fn["Properties"].get("ReservedConcurrentExecutions")
        if reserved is not None and account_quota - int(reserved) < UNRESERVED_MINIMUM:
            problems.append(f"{lid}: ReservedConcurrentExecutions {reserved} leaves less than "
                            f"{UNRESERVED_MINIMUM} unreserved of {account_quota}")
    return problems


def scraper_access_problems(templates: dict[str, dict[str, Any]]) -> list[str]:
    """An AMP scraper on a cluster whose authentication mode does not get it an automatic access entry, or an
    access entry of ours for the scraper's role (it collides with the one AMP creates)."""
    problems: list[str] = []
    scrapers = {lid for t in templates.values() for lid in _resources(t, "AWS::APS::Scraper")}
    if not scrapers:
        return problems
    for name, template in templates.items():
        for lid, cluster in _resources(template, "AWS::EKS::Cluster").items():
            mode = cluster["Properties"].get("AccessConfig", {}).get("AuthenticationMode", "CONFIG_MAP")
            if mode not in AMP_AUTO_ACCESS_ENTRY_MODES:
                problems.append(f"{name}/{lid}: authentication mode {mode}: AMP creates no access entry")
        for lid, entry in _resources(template, "AWS::EKS::AccessEntry").items():
            principal = entry["Properties"].get("PrincipalArn")
            if isinstance(principal, dict) and principal.get("Fn::GetAtt", [None])[0] in scrapers:
                problems.append(f"{name}/{lid}: an access entry for the scraper's role (AMP creates it)")
    return problems


def firehose_s3_problems(template: dict[str, Any]) -> list[str]:
    problems = []
    for lid, stream in _resources(template, "AWS::KinesisFirehose::DeliveryStream").items():
        dest = stream["Properties"].get("ExtendedS3DestinationConfiguration", {})
        ext = dest.get("FileExtension", "")
        if len(ext) > FILE_EXTENSION_MAX or not re.fullmatch(FILE_EXTENSION_PATTERN, ext):
            problems.append(f"{lid}: FileExtension {ext!r} does not match {FILE_EXTENSION_PATTERN}")
        if dest.get("CustomTimeZone", "UTC") != "UTC":
            problems.append(f"{lid}: days in {dest['CustomTimeZone']}, the local log's are UTC")
        if "!{timestamp:" in dest.get("Prefix", "") and "!{firehose:error-output-type}" not in dest.get(
                "ErrorOutputPrefix", ""):
            problems.append(f"{lid}: error prefix without !{{firehose:error-output-type}}")
    return problems


def elasticache_problems(template: dict[str, Any]) -> list[str]:
    problems = []
    users = _resources(template, "AWS::ElastiCache::User")
    groups = _resources(template, "AWS::ElastiCache::UserGroup")
    for lid, group in groups.items():
        members = [users[ref["Ref"]]["Properties"] for ref in group["Properties"]["UserIds"] if "Ref" in ref]
        if not any(u["UserName"] == "default" for u in members):
            problems.append(f"{lid}: no user named default")
        if group["Properties"]["Engine"] == "valkey":
            problems += [f"{lid}: valkey group with user {u['UserName']} that does not authenticate"
                         for u in members if u["AuthenticationMode"]["Type"] == "no-password-required"]
    for lid, user in users.items():
        props = user["Properties"]
        if props["AuthenticationMode"]["Type"] == "iam" and props["UserId"] != props["UserName"]:
            problems.append(f"{lid}: IAM user with UserId {props['UserId']} != UserName {props['UserName']}")
    for lid, cache in _resources(template, "AWS::ElastiCache::ServerlessCache").items():
        props = cache["Properties"]
        version = (int(props["MajorEngineVersion"]), 0)
        if props["Engine"] == "valkey" and version < IAM_AUTH_MIN_VALKEY:
            problems.append(f"{lid}: Valkey {props['MajorEngineVersion']} has no IAM authentication")
        if "UserGroupId" not in props:
            problems.append(f"{lid}: no user group: any client in the network reaches it as the default user")
    return problems


# ------------------------------------------------------------------ the app


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every stack's template, synthesised once (named, offline; no pipeline definition: not needed here)."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    context = cdk_json_context(account="123456789012", region="eu-west-1", **{"ecomrec:pipelineInStack": False})
    app = cdk.App(outdir=str(outdir), context=context)
    built = build(app, with_nag=False)
    app.synth()
    return {s.stack_name: json.loads((outdir / f"{s.stack_name}.template.json").read_text()) for s in built.stacks}


# ------------------------------------------------------------------ EKS


def test_kubernetes_version_is_in_standard_support(templates: dict[str, dict[str, Any]]) -> None:
    """https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html: the cluster's version is
    released and in standard support on AS_OF (extended support costs extra per cluster hour)."""
    [cluster] = _resources(templates["EcomrecServing"], "AWS::EKS::Cluster").values()
    version = cluster["Properties"]["Version"]
    assert version in EKS_STANDARD_SUPPORT, f"{version} is not in the calendar above (refresh it)"
    released, end = EKS_STANDARD_SUPPORT[version]
    assert released <= AS_OF < end, f"Kubernetes {version}: standard support {released}..{end}, today {AS_OF}"


def test_node_groups_use_an_ami_type_eks_publishes_for_the_version(templates: dict[str, dict[str, Any]]) -> None:
    """https://docs.aws.amazon.com/eks/latest/userguide/eks-ami-build-scripts.html: no AL2 AMI after 1.32."""
    for name, template in templates.items():
        assert nodegroup_ami_problems(template) == [], name
    # The check itself: the node group this app had (AL2_x86_64 on 1.33) is refused.
    old: dict[str, Any] = {"Resources": {
        "C": {"Type": "AWS::EKS::Cluster", "Properties": {"Version": "1.33"}},
        "N": {"Type": "AWS::EKS::Nodegroup", "Properties": {"ClusterName": {"Ref": "C"}, "AmiType": "AL2_x86_64"}},
    }}
    assert nodegroup_ami_problems(old) == ["N: AmiType AL2_x86_64 on Kubernetes 1.33 (AL2 AMIs end with 1.32)"]
    old["Resources"]["N"]["Properties"]["AmiType"] = "AL2023_x86_64_STANDARD"
    assert nodegroup_ami_problems(old) == []


def test_auto_mode_cluster_is_whole(templates: dict[str, dict[str, Any]]) -> None:
    """Auto Mode with its built-in node pools, a node role, the cluster-role policies and TagSession trust,
    no bootstrapped self-managed add-ons (Auto Mode runs networking, DNS, kube-proxy's job and Pod Identity
    itself), no managed node group beside it: see the pages cited at AUTO_MODE_* above."""
    serving = templates["EcomrecServing"]
    [cluster] = _resources(serving, "AWS::EKS::Cluster").values()
    assert cluster["Properties"]["ComputeConfig"]["Enabled"] is True
    assert auto_mode_problems(serving) == []
    # The check itself, on the cluster this app had: Auto Mode with no node pools beside an AL2 node group.
    broken = json.loads(json.dumps(serving))
    [lid] = _resources(broken, "AWS::EKS::Cluster")
    props = broken["Resources"][lid]["Properties"]
    props["ComputeConfig"] = {"Enabled": True, "NodePools": []}
    del props["BootstrapSelfManagedAddons"]
    broken["Resources"]["Ng"] = {"Type": "AWS::EKS::Nodegroup",
                                 "Properties": {"ClusterName": {"Ref": lid}, "AmiType": "AL2_x86_64"}}
    found = "\n".join(auto_mode_problems(broken))
    assert "BootstrapSelfManagedAddons" in found
    assert "no node pool" in found
    assert "managed node groups" in found


def test_a_resource_metric_hpa_comes_with_metrics_server(templates: dict[str, dict[str, Any]]) -> None:
    """metrics-server.html: not deployed by default; the HPA's CPU target needs it (Auto Mode included)."""
    from stacks import k8s

    manifests = k8s.inference_manifests(k8s.ManifestParams(image="i", model_uri="", model_group="g",
                                                           certificate_arn="c", load_balancer_name="n"))
    hpa = k8s.find(manifests, "HorizontalPodAutoscaler")
    assert any(m["type"] == "Resource" for m in hpa["spec"]["metrics"])
    addons = {a["Properties"]["AddonName"] for a in _resources(templates["EcomrecServing"], "AWS::EKS::Addon").values()}
    assert METRICS_SERVER_ADDON in addons


# ------------------------------------------------------------------ Lambda


def test_no_function_reserves_concurrency_a_new_account_cannot_give(templates: dict[str, dict[str, Any]]) -> None:
    """https://docs.aws.amazon.com/lambda/latest/dg/limits.html (new accounts: reduced concurrency quota) and
    configuration-concurrency.html (100 must stay unreserved): on a 10-execution account any reserved
    concurrency is refused, so no function may set it (rollouts are serialised by a FIFO queue instead)."""
    for name, template in templates.items():
        assert lambda_concurrency_problems(template, NEW_ACCOUNT_CONCURRENCY) == [], name
        assert "ReservedConcurrentExecutions" not in json.dumps(template), name
    one = {"Resources": {"F": {"Type": "AWS::Lambda::Function", "Properties": {"ReservedConcurrentExecutions": 1}}}}
    assert lambda_concurrency_problems(one, NEW_ACCOUNT_CONCURRENCY)
    assert lambda_concurrency_problems(one, 1000) == []


# ------------------------------------------------------------------ Amazon Managed Service for Prometheus, Grafana


def test_the_scraper_gets_its_cluster_access_from_amp(templates: dict[str, dict[str, Any]]) -> None:
    """AMP-collector-how-to.html (see AMP_AUTO_ACCESS_ENTRY_MODES): the cluster's authentication mode makes AMP
    create the scraper's access entry with the read-only rules above, so the stacks create none of their own
    (the monitoring stack had one, which would have failed the deploy on the entry AMP had just made) and no
    ClusterRole for it (the manual path is for aws-auth clusters)."""
    assert scraper_access_problems(templates) == []
    applied = json.dumps(templates["EcomrecServing"])
    assert "aps-collector" not in applied
    # The check itself, on the entry the monitoring stack had.
    broken = json.loads(json.dumps(templates))
    [scraper] = _resources(broken["EcomrecMonitoring"], "AWS::APS::Scraper")
    broken["EcomrecMonitoring"]["Resources"]["ScraperAccess"] = {"Type": "AWS::EKS::AccessEntry", "Properties": {
        "ClusterName": "c", "PrincipalArn": {"Fn::GetAtt": [scraper, "RoleArn"]}, "Username": "aps-collector-user"}}
    [cluster] = _resources(broken["EcomrecServing"], "AWS::EKS::Cluster")
    broken["EcomrecServing"]["Resources"][cluster]["Properties"]["AccessConfig"]["AuthenticationMode"] = "CONFIG_MAP"
    found = "\n".join(scraper_access_problems(broken))
    assert "ScraperAccess: an access entry for the scraper's role" in found
    assert "authentication mode CONFIG_MAP" in found


def test_the_grafana_workspace_allows_service_accounts(templates: dict[str, dict[str, Any]]) -> None:
    """API_CreateWorkspaceServiceAccount.html: service accounts (the dashboard provisioner's token) need Grafana
    9.4 or later in Amazon Managed Grafana; the workspace pins a version that has them."""
    [workspace] = _resources(templates["EcomrecMonitoring"], "AWS::Grafana::Workspace").values()
    assert _version(workspace["Properties"]["GrafanaVersion"]) >= GRAFANA_SERVICE_ACCOUNTS_SINCE


# ------------------------------------------------------------------ real time: Firehose and ElastiCache


def test_the_firehose_log_cuts_calls_within_put_record_batch_limits() -> None:
    """API_PutRecordBatch.html: the log's batches are cut at the documented limits (the batching itself is
    tested in tests/test_realtime_firehose.py)."""
    from components.realtime import firehose_log as fl

    assert (fl.MAX_RECORDS_PER_CALL, fl.MAX_BYTES_PER_CALL, fl.MAX_RECORD_BYTES) == (
        PUT_RECORD_BATCH_RECORDS, PUT_RECORD_BATCH_BYTES, FIREHOSE_RECORD_BYTES)


def test_event_log_stream_is_a_valid_s3_destination_the_etl_reads(templates: dict[str, dict[str, Any]]) -> None:
    """The FileExtension CloudFormation accepts, UTC days, an error prefix that names the error type; and
    the extension is exactly what the ETL takes as header-less CSV."""
    from components import schema as s
    from components.etl.read import _suffix_kind

    serving = templates["EcomrecServing"]
    assert firehose_s3_problems(serving) == []
    [stream] = _resources(serving, "AWS::KinesisFirehose::DeliveryStream").values()
    ext = stream["Properties"]["ExtendedS3DestinationConfiguration"]["FileExtension"]
    assert ext == s.HEADERLESS_CSV_SUFFIX
    assert _suffix_kind(Path(f"ecomrec-events-1-2026-12-04-10-00-00-uuid{ext}")) == "headerless"
    broken = json.loads(json.dumps(serving))
    [lid] = _resources(broken, "AWS::KinesisFirehose::DeliveryStream")
    dest = broken["Resources"][lid]["Properties"]["ExtendedS3DestinationConfiguration"]
    dest.update(FileExtension=".Headerless.CSV", CustomTimeZone="Europe/Paris", ErrorOutputPrefix="errors/")
    assert len(firehose_s3_problems(broken)) == 3


def test_store_rbac_and_iam_authentication_are_what_elasticache_accepts(
        templates: dict[str, dict[str, Any]]) -> None:
    serving = templates["EcomrecServing"]
    assert elasticache_problems(serving) == []
    broken = json.loads(json.dumps(serving))
    users = _resources(broken, "AWS::ElastiCache::User")
    for lid, user in users.items():
        if user["Properties"]["AuthenticationMode"]["Type"] == "iam":
            broken["Resources"][lid]["Properties"]["UserId"] = "another-id"
    [group] = _resources(broken, "AWS::ElastiCache::UserGroup")
    broken["Resources"][group]["Properties"]["Engine"] = "valkey"
    [cache] = _resources(broken, "AWS::ElastiCache::ServerlessCache")
    broken["Resources"][cache]["Properties"]["MajorEngineVersion"] = "7"
    found = "\n".join(elasticache_problems(broken))
    assert "UserId another-id" in found and "does not authenticate" in found and "no IAM authentication" in found


def test_store_admits_the_pods_by_the_cluster_security_group(templates: dict[str, dict[str, Any]]) -> None:
    """auto-sgp.html: before Kubernetes 1.36 an Auto Mode pod has no security group of its own, so the
    store's only source is the cluster security group the nodes carry (not a pod-level group)."""
    serving = templates["EcomrecServing"]
    [(cluster_id, cluster)] = _resources(serving, "AWS::EKS::Cluster").items()
    assert _version(cluster["Properties"]["Version"]) < AUTO_MODE_POD_SECURITY_GROUPS_FROM, \
        "Kubernetes 1.36: give the inference pods a security group of their own (SecurityGroupPolicy)"
    [cache] = _resources(serving, "AWS::ElastiCache::ServerlessCache").values()
    [sg] = cache["Properties"]["SecurityGroupIds"]
    sources = [r["Properties"].get("SourceSecurityGroupId") for r in
               _resources(serving, "AWS::EC2::SecurityGroupIngress").values() if r["Properties"]["GroupId"] == sg]
    assert sources == [{"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]}]


def test_the_pods_talk_to_the_serverless_cache_as_to_a_cluster(templates: dict[str, dict[str, Any]]) -> None:
    """WorkingWithRedis.html: serverless caches are cluster-mode only; the Deployment tells the service so
    (ECOMREC_STORE_CLUSTER, redis-py's cluster client: tests/test_realtime_store_iam.py runs it on a
    cluster-mode redis-server)."""
    serving = templates["EcomrecServing"]
    assert _resources(serving, "AWS::ElastiCache::ServerlessCache") and SERVERLESS_IS_CLUSTER_MODE
    [custom] = _resources(serving, "Custom::EcomrecKubernetesManifests").values()
    separator, parts = custom["Properties"]["Manifests"]["Fn::Join"]  # JSON text with references inside strings
    manifests = json.loads(separator.join(p if isinstance(p, str) else "<ref>" for p in parts))
    [deployment] = [m for m in manifests if m["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ECOMREC_STORE_CLUSTER"] == "true" and env["ECOMREC_STORE_URL"].startswith("rediss://")
