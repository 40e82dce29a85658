"""The CDK app: security and wiring invariants of every stack, cdk-nag and cfn-lint.

The app is synthesized ONCE for this module (jsii makes each synth take tens of seconds), with a dummy
account and region from context, offline, the way CI runs it. No fakes: real aws-cdk-lib, real cdk-nag,
real cfn-lint; nothing is deployed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# jsii runs on the machine's Node; its end-of-life banner (per major version) is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
pytest.importorskip("aws_cdk", reason="the cdk extra is not installed")

import aws_cdk as cdk
from aws_cdk.assertions import Match, Template

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "cdk"), str(REPO / "cdk" / "rollout")]

from ecomrec_rollout import constants as c  # noqa: E402
from stacks import EcomrecApp, build, cdk_json_context, k8s, nag  # noqa: E402

from pipelines.graph import STEP_NAMES  # noqa: E402

ACCOUNT, REGION = "123456789012", "eu-west-1"


@dataclass
class Synth:
    app: cdk.App
    built: EcomrecApp
    outdir: Path

    def template(self, stack: cdk.Stack) -> Template:
        return Template.from_json(self.raw(stack))

    def raw(self, stack: cdk.Stack) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.outdir / f"{stack.stack_name}.template.json").read_text())
        return data


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir), context=cdk_json_context(account=ACCOUNT, region=REGION))
    saved = dict(os.environ)  # building the pipeline definition may set AWS_DEFAULT_REGION for the SDK
    try:
        built = build(app)  # with cdk-nag AwsSolutions: an unacknowledged finding makes synth() raise
        app.synth()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Synth(app, built, outdir)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements(template: dict[str, Any], policy_prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for logical_id, res in resources(template, "AWS::IAM::Policy").items():
        if logical_id.startswith(policy_prefix):
            out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------ data


def test_buckets_are_versioned_encrypted_private_and_logged(synth: Synth) -> None:
    raw = synth.raw(synth.built.data)
    buckets = resources(raw, "AWS::S3::Bucket")
    assert len(buckets) == 4
    log_bucket = next(k for k in buckets if k.startswith("AccessLogs"))
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        assert sse["SSEAlgorithm"] in ("AES256", "aws:kms"), logical_id
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        assert props["LifecycleConfiguration"]["Rules"], logical_id
        assert bucket["DeletionPolicy"] == "Retain", logical_id
        if logical_id != log_bucket:
            assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_bucket}, logical_id
    # Named deployment: the names the pipeline definition and the CD workflow use.
    names = {b["Properties"]["BucketName"] for b in buckets.values()}
    assert f"ecomrec-models-{ACCOUNT}-{REGION}" in names


def test_every_bucket_policy_denies_plain_http(synth: Synth) -> None:
    raw = synth.raw(synth.built.data)
    policies = resources(raw, "AWS::S3::BucketPolicy")
    covered = set()
    for policy in policies.values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if st["Effect"] == "Deny" and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert st["Action"] == "s3:*"
                covered.add(policy["Properties"]["Bucket"]["Ref"])
    assert covered == set(resources(raw, "AWS::S3::Bucket"))


def _pipeline_definition(synth: Synth) -> dict[str, Any]:
    [pipeline] = resources(synth.raw(synth.built.ml), "AWS::SageMaker::Pipeline").values()
    definition: dict[str, Any] = json.loads(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"])
    return definition


def test_processed_bucket_expires_run_outputs_only(synth: Synth) -> None:
    """Run outputs expire; the step code the pipeline definition points at (<prefix>/code/<version>/) must
    not, or a scheduled run months after the last `ecomrec pipeline upsert` finds no code."""
    raw = synth.raw(synth.built.data)
    processed_name = f"ecomrec-processed-{ACCOUNT}-{REGION}"
    [processed] = [b for b in resources(raw, "AWS::S3::Bucket").values()
                   if b["Properties"]["BucketName"] == processed_name]
    rules = processed["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if "ExpirationInDays" in r or "ExpirationDate" in r]
    assert [(r["Id"], r.get("Prefix")) for r in expiring] == [("expire-runs", "ecomrec/runs/")]
    assert expiring[0]["ExpirationInDays"] == 180
    assert "TagFilters" not in expiring[0]
    # The invariant behind the prefix, on the pipeline definition this app deploys:
    definition = _pipeline_definition(synth)
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    runs = f"s3://{processed_name}/{expiring[0]['Prefix']}"
    assert f"{defaults['OutputUri'].rstrip('/')}/".startswith(runs)  # run outputs (and bundles) expire
    body = json.dumps(definition)
    code_uris = {u for u in re.findall(rf"s3://{processed_name}/[^\"]+", body) if "/code/" in u}
    assert code_uris  # the definition does point at uploaded code in this bucket
    for uri in code_uris:
        assert not uri.startswith(runs), uri  # ... and no expiring rule covers it


# ------------------------------------------------------------------ ml


def test_ecr_repositories_scan_on_push_with_immutable_tags(synth: Synth) -> None:
    t = synth.template(synth.built.ml)
    t.resource_count_is("AWS::ECR::Repository", 2)
    for name in ("ecomrec-inference", "ecomrec-steps"):
        t.has_resource_properties(
            "AWS::ECR::Repository",
            {
                "RepositoryName": name,
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "ImageTagMutability": "IMMUTABLE",
            },
        )


def test_model_package_group_and_pipeline_from_the_step_graph(synth: Synth) -> None:
    raw = synth.raw(synth.built.ml)
    [group] = resources(raw, "AWS::SageMaker::ModelPackageGroup").values()
    assert group["Properties"]["ModelPackageGroupName"] == "ecomrec"
    [pipeline] = resources(raw, "AWS::SageMaker::Pipeline").values()
    props = pipeline["Properties"]
    assert props["PipelineName"] == "ecomrec"
    role_id = next(iter(resources(raw, "AWS::IAM::Role")))
    assert props["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    definition = json.loads(props["PipelineDefinition"]["PipelineDefinitionBody"])
    assert [step["Name"] for step in definition["Steps"]] == list(STEP_NAMES)
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert defaults["ModelPackageGroup"] == "ecomrec"
    # The definition was built for this deployment's role and bucket (concrete names, no tokens).
    body = props["PipelineDefinition"]["PipelineDefinitionBody"]
    assert f"arn:aws:iam::{ACCOUNT}:role/ecomrec-sagemaker-{REGION}" in body
    assert f"s3://ecomrec-processed-{ACCOUNT}-{REGION}/" in body


def test_sagemaker_role_is_scoped_to_our_buckets_repositories_and_group(synth: Synth) -> None:
    raw = synth.raw(synth.built.ml)
    [role] = resources(raw, "AWS::IAM::Role").values()
    assert role["Properties"]["RoleName"] == f"ecomrec-sagemaker-{REGION}"
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    sts = statements(raw, "SageMakerExecutionRole")
    assert not any(a.endswith("*") and ":" not in a for st in sts for a in as_list(st["Action"]))
    for st in sts:
        actions = as_list(st["Action"])
        if st.get("Sid") == "ReadBuiltInArtifacts":
            assert "*" not in json.dumps(st["Resource"]), st  # exact objects named by the definition
        elif any(a.startswith("s3:") for a in actions):
            text = json.dumps(st["Resource"])
            assert '*"' not in text.replace("/*", ""), st  # objects of a bucket, never any bucket
            assert "EcomrecData" in text, st  # only buckets of our data stack
        if st["Resource"] == "*":
            assert set(actions) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}, st
        if "iam:PassRole" in actions:
            assert st["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    pull = next(st for st in sts if st.get("Sid") == "PullOurImages")
    repos = {r["Fn::GetAtt"][0] for r in pull["Resource"]}
    assert repos == set(resources(raw, "AWS::ECR::Repository"))
    # The built-in images and JumpStart artifacts the definition names: exactly those, read-only.
    builtin = json.dumps(next(st for st in sts if st.get("Sid") == "PullBuiltInImages")["Resource"])
    assert "repository/sagemaker-spark-processing" in builtin
    assert "repository/pytorch-training" in builtin
    artifacts = next(st for st in sts if st.get("Sid") == "ReadBuiltInArtifacts")
    assert artifacts["Action"] == "s3:GetObject"
    text = json.dumps(artifacts["Resource"])
    assert f"jumpstart-cache-prod-{REGION}/catboost-training/" in text
    assert f"ecomrec-processed-{ACCOUNT}" not in text


def _allows(actions: list[str], wanted: str) -> bool:
    """Whether an IAM action list grants ``wanted`` (IAM matches actions case-insensitively, with wildcards)."""
    return any(fnmatch.fnmatchcase(wanted.lower(), a.lower()) for a in actions)


def test_sagemaker_role_cannot_write_or_delete_served_bundles(synth: Synth) -> None:
    """The models bucket holds what the pods serve; only the rollout function promotes bundles into it
    (models/<group>/<version>/). A pipeline job must not be able to overwrite or delete a served bundle."""
    raw = synth.raw(synth.built.ml)
    models_arn = synth.built.data.resolve(synth.built.data.models_bucket.bucket_arn)
    # How the ML template refers to the models bucket: an import of the data stack's export of its ARN.
    [export] = [o["Export"]["Name"] for o in synth.raw(synth.built.data)["Outputs"].values()
                if o["Value"] == models_arn]
    sts = statements(raw, "SageMakerExecutionRole")
    assert sts
    for st in sts:
        actions = as_list(st["Action"])
        on_models = export in json.dumps(st["Resource"]) or "ecomrec-models-" in json.dumps(st["Resource"])
        for action in ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not (st["Effect"] == "Allow" and on_models and _allows(actions, action)), st
        # Nothing in the pipeline reads there either (it reads raw and its own run outputs).
        assert not on_models, st
    # The pipeline keeps writing its run outputs and code to the processed bucket.
    writes = [st for st in sts if _allows(as_list(st["Action"]), "s3:PutObject")]
    assert writes and all("Processed" in json.dumps(st["Resource"]) for st in writes)


# ------------------------------------------------------------------ serving


def test_cluster_is_private_logged_and_needs_no_kubectl_layer(synth: Synth) -> None:
    raw = synth.raw(synth.built.serving)
    [cluster] = resources(raw, "AWS::EKS::Cluster").values()
    vpc_config = cluster["Properties"]["ResourcesVpcConfig"]
    assert vpc_config["EndpointPublicAccess"] is False
    assert vpc_config["EndpointPrivateAccess"] is True
    enabled = cluster["Properties"]["Logging"]["ClusterLogging"]["EnabledTypes"]
    assert {t["Type"] for t in enabled} == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    assert not resources(raw, "AWS::Lambda::LayerVersion")
    assert not [r for r in raw["Resources"].values() if "KubernetesResource" in r["Type"]]
    [nodegroup] = resources(raw, "AWS::EKS::Nodegroup").values()
    assert nodegroup["Properties"]["ScalingConfig"] == {"MinSize": 3, "MaxSize": 6, "DesiredSize": 3}
    assert nodegroup["Properties"]["Labels"] == k8s.NODE_POOL_LABEL


def test_inference_pod_role_reads_the_models_bucket_only(synth: Synth) -> None:
    raw = synth.raw(synth.built.serving)
    role = next(r for k, r in resources(raw, "AWS::IAM::Role").items() if k.startswith("InferencePodRole"))
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {a for st in trust for a in as_list(st["Action"])} == {"sts:AssumeRole", "sts:TagSession"}
    assert all(st["Principal"] == {"Service": "pods.eks.amazonaws.com"} for st in trust)
    sts = statements(raw, "InferencePodRole")
    assert sorted(a for st in sts for a in as_list(st["Action"])) == ["s3:GetObject", "s3:ListBucket"]
    for st in sts:
        text = json.dumps(st["Resource"])
        assert "GetAttModels" in text, st
        assert "Raw" not in text and "Processed" not in text, st
    t = synth.template(synth.built.serving)
    t.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {
            "Namespace": c.NAMESPACE,
            "ServiceAccount": c.SERVICE_ACCOUNT,
            "RoleArn": {"Fn::GetAtt": [Match.string_like_regexp("InferencePodRole"), "Arn"]},
        },
    )
    t.has_resource_properties("AWS::EKS::Addon", {"AddonName": "eks-pod-identity-agent"})


def _manifests(synth: Synth) -> list[dict[str, Any]]:
    return synth.built.serving.manifests


def test_deployment_rolls_out_without_losing_capacity(synth: Synth) -> None:
    dep = k8s.find(_manifests(synth), "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["name"] == c.CONTAINER
    # Ready = a bundle is loaded and smoke-scored; alive = the process answers (routers/health.py).
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert set(container["resources"]) == {"requests", "limits"}
    assert all(set(container["resources"][k]) == {"cpu", "memory"} for k in ("requests", "limits"))
    assert [e["name"] for e in container["env"]].count(c.MODEL_ENV_VAR) == 1
    # The rollout function patches exactly this container and this variable.
    assert c.MODEL_ENV_VAR == "ECOMREC_MODEL"
    assert pod["serviceAccountName"] == c.SERVICE_ACCOUNT
    assert pod["nodeSelector"] == k8s.NODE_POOL_LABEL
    # The service is built for a non-root, read-only container that writes to /tmp only.
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp"
    assert "emptyDir" in pod["volumes"][0]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def test_pdb_hpa_service_and_https_ingress(synth: Synth) -> None:
    manifests = _manifests(synth)
    labels = k8s.find(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = k8s.find(manifests, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == labels
    assert pdb["minAvailable"] == 2
    hpa = k8s.find(manifests, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == c.DEPLOYMENT
    assert hpa["minReplicas"] == 3
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    svc = k8s.find(manifests, "Service")["spec"]
    assert svc["selector"] == labels
    ingress = k8s.find(manifests, "Ingress")
    ann = ingress["metadata"]["annotations"]
    assert json.loads(ann["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert ann["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert ann["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    assert k8s.find(manifests, "IngressClass")["spec"]["controller"] == "eks.amazonaws.com/alb"
    # The certificate is the stack parameter, resolved by CloudFormation inside the applied manifests.
    raw = synth.raw(synth.built.serving)
    assert raw["Parameters"]["CertificateArn"]["Type"] == "String"
    [custom] = [r for r in raw["Resources"].values() if r["Type"] == "Custom::EcomrecKubernetesManifests"]
    manifests_prop = json.dumps(custom["Properties"]["Manifests"])
    assert '{"Ref": "CertificateArn"}' in manifests_prop
    assert "alb.ingress.kubernetes.io/certificate-arn" in manifests_prop


def _applied_manifests(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifests as the custom resource receives them, read back from the synthesized template.

    The property is an Fn::Join of JSON text and CloudFormation references (the certificate parameter...);
    the references sit inside JSON strings, so a placeholder in their place leaves parseable JSON.
    """
    [custom] = [r for r in raw["Resources"].values() if r["Type"] == "Custom::EcomrecKubernetesManifests"]
    prop = custom["Properties"]["Manifests"]
    if isinstance(prop, str):
        text = prop
    else:
        separator, parts = prop["Fn::Join"]
        text = separator.join(part if isinstance(part, str) else "<cfn-reference>" for part in parts)
    manifests: list[dict[str, Any]] = json.loads(text)
    return manifests


def test_internet_facing_ingress_routes_only_the_public_api(synth: Synth) -> None:
    """Through the ALB: GET /recommendations only. Not /metrics (it names the model's S3 location),
    /docs, /openapi.json, /admin/*, nor a catch-all prefix that would include them."""
    applied = _applied_manifests(synth.raw(synth.built.serving))
    ingress = k8s.find(applied, "Ingress")
    assert k8s.find(applied, "IngressClassParams")["spec"]["scheme"] == "internet-facing"
    [rule] = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/recommendations", "Exact")]
    assert "defaultBackend" not in ingress["spec"]
    service = k8s.find(applied, "Service")
    for p in paths:
        assert p["backend"] == {"service": {"name": service["metadata"]["name"], "port": {"name": "http"}}}
    # The ALB still health-checks the pods on the readiness path (directly, not through these rules),
    # and Prometheus keeps scraping /metrics in the cluster.
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"
    pod_annotations = k8s.find(applied, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/path"] == "/metrics"
    # The applied objects are the stack's manifests (the CDK-side view the other tests read).
    assert k8s.find(_manifests(synth), "Ingress")["spec"] == ingress["spec"]


def test_manifests_custom_resource_runs_the_rollout_package_in_the_vpc(synth: Synth) -> None:
    raw = synth.raw(synth.built.serving)
    fn = next(f for k, f in resources(raw, "AWS::Lambda::Function").items() if k.startswith("ApplyManifestsFn"))
    assert fn["Properties"]["Handler"] == "ecomrec_rollout.handler.apply_handler"
    assert fn["Properties"]["VpcConfig"]["SubnetIds"]
    entries = resources(raw, "AWS::EKS::AccessEntry")
    assert len(entries) == 1


# ------------------------------------------------------------------ events


def test_approval_rule_matches_our_group_and_both_decisions(synth: Synth) -> None:
    raw = synth.raw(synth.built.events)
    [rule] = resources(raw, "AWS::Events::Rule").values()
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": ["ecomrec"], "ModelApprovalStatus": ["Approved", "Rejected"]},
    }
    [target] = rule["Properties"]["Targets"]
    fn_id = next(k for k in resources(raw, "AWS::Lambda::Function") if k.startswith("RolloutFn"))
    dlq_id = next(iter(resources(raw, "AWS::SQS::Queue")))
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 4
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
    t = synth.template(synth.built.events)
    t.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "MaximumRetryAttempts": 2,
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [dlq_id, "Arn"]}}},
        },
    )


def test_rollout_function_configuration_and_least_privilege(synth: Synth) -> None:
    raw = synth.raw(synth.built.events)
    fn_id, fn = next((k, f) for k, f in resources(raw, "AWS::Lambda::Function").items() if k.startswith("RolloutFn"))
    props = fn["Properties"]
    assert props["Handler"] == "ecomrec_rollout.handler.handler"
    assert props["ReservedConcurrentExecutions"] == 1  # one rollout at a time
    env = props["Environment"]["Variables"]
    assert env[c.ENV_MODEL_PACKAGE_GROUP] == "ecomrec"
    assert env[c.ENV_NAMESPACE] == c.NAMESPACE
    assert env[c.ENV_DEPLOYMENT] == c.DEPLOYMENT
    assert "RefModels" in json.dumps(env[c.ENV_MODELS_BUCKET])  # the models bucket name
    sts = statements(raw, "RolloutFnServiceRole")
    actions = {a for st in sts for a in as_list(st["Action"])}
    assert actions == {
        "sagemaker:DescribeModelPackage",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParameterHistory",
        "ssm:DescribeParameters",
        "ssm:PutParameter",
        # on-failure destination: the DLQ
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    put = next(st for st in sts if "s3:PutObject" in as_list(st["Action"]))
    assert "GetAttModels" in json.dumps(put["Resource"])
    [entry] = resources(raw, "AWS::EKS::AccessEntry").values()
    [policy] = entry["Properties"]["AccessPolicies"]
    assert policy["AccessScope"] == {"Type": "namespace", "Namespaces": [c.NAMESPACE]}
    assert json.dumps(policy["PolicyArn"]).endswith(':eks::aws:cluster-access-policy/AmazonEKSEditPolicy"]]}')
    assert fn_id


def test_retraining_schedule_starts_the_pipeline_with_parameters(synth: Synth) -> None:
    raw = synth.raw(synth.built.events)
    [schedule] = resources(raw, "AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == "cron(0 3 ? * MON *)"
    target = props["Target"]
    assert ":sagemaker:" in json.dumps(target["Arn"])
    assert json.dumps(target["Arn"]).endswith(':pipeline/ecomrec"]]}')
    params = {p["Name"]: p["Value"] for p in target["SageMakerPipelineParameters"]["PipelineParameterList"]}
    assert params["ModelPackageGroup"] == "ecomrec"
    assert "RefRaw" in json.dumps(params["InputDataUri"])  # the raw bucket of the data stack
    # Every scheduled parameter exists in the pipeline definition.
    definition = json.loads(
        next(iter(resources(synth.raw(synth.built.ml), "AWS::SageMaker::Pipeline").values()))["Properties"][
            "PipelineDefinition"
        ]["PipelineDefinitionBody"]
    )
    assert set(params) <= {p["Name"] for p in definition["Parameters"]}
    assert target["RoleArn"]["Fn::GetAtt"][0].startswith("RetrainSchedulerRole")
    sts = statements(raw, "RetrainSchedulerRole")
    start = next(st for st in sts if st["Action"] == "sagemaker:StartPipelineExecution")
    assert "pipeline/ecomrec" in json.dumps(start["Resource"])
    assert "DeadLetterConfig" in target


# ------------------------------------------------------------------ monitoring


def test_alarms_cover_errors_latency_pipeline_and_rollout_and_notify_the_topic(synth: Synth) -> None:
    raw = synth.raw(synth.built.monitoring)
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in resources(raw, "AWS::CloudWatch::Alarm").values()}
    assert set(alarms) == {
        f"ecomrec-{n}"
        for n in ("Http5xxRate", "LatencyP99", "PipelineExecutionFailed", "RolloutFunctionErrors", "RolloutDeadLetters")
    }
    [topic_id] = resources(raw, "AWS::SNS::Topic")
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
    rate = alarms["ecomrec-Http5xxRate"]
    assert rate["Threshold"] == 5
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in rate["Metrics"] if "MetricStat" in m} == {
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
    }
    p99 = alarms["ecomrec-LatencyP99"]
    assert (p99["ExtendedStatistic"], p99["MetricName"]) == ("p99", "TargetResponseTime")
    failed = alarms["ecomrec-PipelineExecutionFailed"]
    assert (failed["Namespace"], failed["MetricName"]) == ("AWS/Sagemaker/ModelBuildingPipeline", "ExecutionFailed")
    assert failed["Dimensions"] == [{"Name": "PipelineName", "Value": "ecomrec"}]
    assert alarms["ecomrec-RolloutFunctionErrors"]["MetricName"] == "Errors"
    assert alarms["ecomrec-RolloutDeadLetters"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    topic = raw["Resources"][topic_id]["Properties"]
    assert "KmsMasterKeyId" in topic
    [rule] = resources(raw, "AWS::Events::Rule").values()
    assert rule["Properties"]["EventPattern"]["detail"]["currentPipelineExecutionStatus"] == ["Failed"]
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": topic_id}


def test_5xx_rate_counts_minutes_where_only_one_kind_of_5xx_was_reported(synth: Synth) -> None:
    """ALB 5xx counts are published only for minutes with a non-zero count, and metric-math arithmetic
    gives no value for a minute where an operand has no data point (missing = not breaching here). So each
    5xx count must be FILLed with 0: otherwise the alarm needs target AND load-balancer 5xx in one minute."""
    raw = synth.raw(synth.built.monitoring)
    [alarm] = [a["Properties"] for a in resources(raw, "AWS::CloudWatch::Alarm").values()
               if a["Properties"]["AlarmName"] == "ecomrec-Http5xxRate"]
    ids = {m["MetricStat"]["Metric"]["MetricName"]: m["Id"] for m in alarm["Metrics"] if "MetricStat" in m}
    [expression] = [m for m in alarm["Metrics"] if "Expression" in m]
    assert expression.get("ReturnData", True) is True
    assert all(m.get("ReturnData") is False for m in alarm["Metrics"] if "MetricStat" in m)
    text = expression["Expression"]
    sparse = [ids["HTTPCode_Target_5XX_Count"], ids["HTTPCode_ELB_5XX_Count"]]
    for metric_id in sparse:
        filled = re.compile(rf"FILL\(\s*{metric_id}\s*,\s*0\s*\)")
        assert filled.search(text), text
        assert not re.search(rf"\b{metric_id}\b", filled.sub("", text)), text  # never used unfilled
    # Evaluated minute by minute (None = no data point that minute; FILL makes it 0, IF picks a branch):
    # no traffic is 0 %, and a total outage (no healthy pod: every request a load-balancer 503, which
    # RequestCount leaves out because no target answered) is 100 %, not "no requests".
    names = {ids["RequestCount"]: "req", ids["HTTPCode_Target_5XX_Count"]: "e5",
             ids["HTTPCode_ELB_5XX_Count"]: "elb5"}
    python = re.sub(r"FILL\(\s*(\w+)\s*,\s*0\s*\)", r"fill(\1)", text).replace("IF(", "when(")

    def rate(req: float | None, e5: float | None, elb5: float | None) -> float:
        values = {metric_id: {"req": req, "e5": e5, "elb5": elb5}[name] for metric_id, name in names.items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(eval(python, {"fill": lambda v: np.float64(0 if v is None else v),
                                       "when": lambda c, a, b: a if c else b}, values))

    assert rate(None, None, None) == 0.0
    assert rate(1000, None, None) == 0.0
    assert rate(100, 10, None) == 10.0
    assert rate(None, None, 50) == 100.0


# ------------------------------------------------------------------ cdk-nag and cfn-lint


def test_cdk_nag_runs_and_every_acknowledgment_has_a_reason(synth: Synth) -> None:
    # synth() above passed with the AwsSolutions pack on: zero unacknowledged errors. Each
    # acknowledgment must say why.
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    acks: dict[str, str] = {}
    for node in synth.app.node.find_all():
        for entry in node.node.metadata:
            if entry.type == key:
                acks.update(
                    {
                        f"{node.node.path}: {rule}": reason
                        for rule, reason in entry.data.items()
                        if rule.startswith("AwsSolutions")
                    }
                )
    assert len(acks) >= 20
    for rule, reason in acks.items():
        assert ": AwsSolutions::AwsSolutions-" in rule, rule
        assert len(reason) >= 20, rule


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    """The same `nag.enable` the app uses turns a non-compliant bucket into a failed synth."""
    from aws_cdk import aws_s3 as s3

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Insecure")
    s3.Bucket(stack, "Plain")
    nag.enable(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_cfn_lint_finds_no_errors_in_the_templates(synth: Synth) -> None:
    templates = sorted(synth.outdir.glob("*.template.json"))
    assert len(templates) == 5
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run(
        [str(cfn_lint), "--format", "json", *map(str, templates)], capture_output=True, text=True, timeout=300
    )
    findings = json.loads(proc.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], json.dumps(errors, indent=1)[:3000]
    assert proc.returncode in (0, 4, 8, 12), proc.stderr[-2000:]  # warnings/informational only


def test_network_policy_lets_only_the_load_balancer_and_the_scraper_reach_the_pods(synth: Synth) -> None:
    """Issue 13, finding 1: nothing kept other pods in the cluster away from the service (admin,
    /invocations, /metrics). The policy selects the Deployment's pods, allows ingress on the serving port
    only from the ALB's public subnets and the monitoring namespace, and is enforced (Auto Mode's
    controller switch is applied with it)."""
    applied = _applied_manifests(synth.raw(synth.built.serving))
    policy = k8s.find(applied, "NetworkPolicy")
    labels = k8s.find(applied, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == c.NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": c.PORT}]
    blocks = [source["ipBlock"]["cidr"] for source in rule["from"] if "ipBlock" in source]
    public = sorted(subnet.ipv4_cidr_block for subnet in synth.built.serving.vpc.public_subnets)
    private = [subnet.ipv4_cidr_block for subnet in synth.built.serving.vpc.private_subnets]
    assert sorted(blocks) == public and public and not set(blocks) & set(private)
    raw = synth.raw(synth.built.serving)
    subnets = {r["Properties"]["CidrBlock"] for r in resources(raw, "AWS::EC2::Subnet").values()
               if r["Properties"].get("MapPublicIpOnLaunch")}
    assert set(blocks) == subnets  # exactly the subnets the internet-facing ALB lives in
    selectors = [source["namespaceSelector"] for source in rule["from"] if "namespaceSelector" in source]
    assert selectors == [{"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}]
    assert all(set(source) <= {"ipBlock", "namespaceSelector"} for source in rule["from"])
    controller = k8s.find(applied, "ConfigMap")
    assert controller["metadata"] == {"name": "amazon-vpc-cni", "namespace": "kube-system"}
    assert controller["data"] == {"enable-network-policy-controller": "true"}
    from ecomrec_rollout.kube import object_path

    assert object_path(policy) == f"/apis/networking.k8s.io/v1/namespaces/{c.NAMESPACE}/networkpolicies/{c.DEPLOYMENT}"
    assert object_path(controller) == "/api/v1/namespaces/kube-system/configmaps/amazon-vpc-cni"
