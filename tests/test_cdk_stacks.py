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

from components import schema as s  # noqa: E402
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
    # Retained: CD lets `ecomrec pipeline upsert` own it (pipelineInStack=false); leaving the template
    # must not delete the pipeline.
    assert pipeline["DeletionPolicy"] == "Retain"
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
        if st.get("Sid") in ("ReadBuiltInArtifacts", "ListBuiltInArtifacts"):
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
    assert "repository/pytorch-training" in builtin
    # the steps run this account's ecomrec-steps image (PullOurImages), not the stock Spark image
    assert "repository/sagemaker-spark-processing" not in builtin
    artifacts = next(st for st in sts if st.get("Sid") == "ReadBuiltInArtifacts")
    assert artifacts["Action"] == "s3:GetObject"
    text = json.dumps(artifacts["Resource"])
    assert f"jumpstart-cache-prod-{REGION}/catboost-training/" in text
    assert f"ecomrec-processed-{ACCOUNT}" not in text
    # The model channel is an S3Prefix (pipelines/sagemaker/pipeline.py): listing it needs s3:ListBucket.
    listing = next(st for st in sts if st.get("Sid") == "ListBuiltInArtifacts")
    assert listing["Action"] == "s3:ListBucket"
    assert json.dumps(listing["Resource"]).count(f"jumpstart-cache-prod-{REGION}") == 1
    prefixes = listing["Condition"]["StringLike"]["s3:prefix"]
    assert "catboost-training/train-catboost-classification-model.tar.gz" in prefixes


def test_cd_deployment_without_the_in_stack_pipeline_still_grants_the_builtin_artifacts() -> None:
    """CD deploys with ``-c ecomrec:pipelineInStack=false`` (.github/workflows/cd.yml): the pipeline leaves
    the template, but the role must still read the JumpStart script and model the upserted definition names
    (and list the model channel's S3Prefix), or the first training job is denied."""
    from stacks import pipeline_definition
    from stacks.config import EcomrecConfig
    from stacks.data import DataStack
    from stacks.ml import MlStack

    app = cdk.App(context=cdk_json_context(account=ACCOUNT, region=REGION, **{"ecomrec:pipelineInStack": "false"}))
    config = EcomrecConfig.from_context(app)
    assert not config.pipeline_in_stack
    env = cdk.Environment(account=ACCOUNT, region=REGION)
    data = DataStack(app, "EcomrecData", config=config, env=env)
    saved = dict(os.environ)
    try:  # the same call build() makes
        definition = pipeline_definition(config, bucket=config.bucket_name("processed") or "",
                                         role_arn=config.sagemaker_role_arn or "",
                                         inference_image=config.inference_image_uri or "")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    ml = MlStack(app, "EcomrecMl", config=config, raw_bucket=data.raw_bucket,
                 processed_bucket=data.processed_bucket, pipeline_definition=definition, env=env)
    raw = Template.from_stack(ml).to_json()
    assert not resources(raw, "AWS::SageMaker::Pipeline")  # `ecomrec pipeline upsert` owns it
    sids = {st.get("Sid"): st for st in statements(raw, "SageMakerExecutionRole")}
    assert f"jumpstart-cache-prod-{REGION}/catboost-training/" in json.dumps(sids["ReadBuiltInArtifacts"]["Resource"])
    assert sids["ListBuiltInArtifacts"]["Action"] == "s3:ListBucket"


def test_retraining_overrides_must_name_parameters_the_pipeline_declares() -> None:
    """`-c ecomrec:retrainParameters` becomes the schedule's SageMakerPipelineParameters: a name the definition
    does not declare (e.g. SparkInstanceCount, which issue 11 removed) fails StartPipelineExecution every
    week; synth says so instead."""
    context = cdk_json_context(account=ACCOUNT, region=REGION,
                               **{"ecomrec:retrainParameters": '{"SparkInstanceCount": "2"}'})
    saved = dict(os.environ)
    try:
        with pytest.raises(ValueError, match=r"retrainParameters names \['SparkInstanceCount'\]"):
            build(cdk.App(context=context), with_nag=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
    # One compute model: Auto Mode's built-in node pools, no node group (tests/test_aws_constraints.py checks
    # the rest of what Auto Mode requires).
    assert not resources(raw, "AWS::EKS::Nodegroup")
    assert cluster["Properties"]["ComputeConfig"]["NodePools"] == ["system", "general-purpose"]


def test_vpc_egress_survives_a_zone_and_s3_skips_the_nat(synth: Synth) -> None:
    """A NAT gateway per zone (one NAT would cut the other zone's egress with its zone) and an S3 gateway
    endpoint on the private route tables (bundle downloads and ECR layers do not pay NAT processing)."""
    raw = synth.raw(synth.built.serving)
    subnets = resources(raw, "AWS::EC2::Subnet")
    nats = resources(raw, "AWS::EC2::NatGateway").values()
    assert len({n["Properties"]["SubnetId"]["Ref"] for n in nats}) == 2
    assert {json.dumps(subnets[n["Properties"]["SubnetId"]["Ref"]]["Properties"]["AvailabilityZone"]) for n in nats} \
        == {json.dumps({"Fn::Select": [i, {"Fn::GetAZs": ""}]}) for i in (0, 1)}
    [endpoint] = resources(raw, "AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    assert ".s3" in json.dumps(endpoint["Properties"]["ServiceName"])
    private_tables = {k for k, r in resources(raw, "AWS::EC2::RouteTable").items() if "private" in k}
    assert {t["Ref"] for t in endpoint["Properties"]["RouteTableIds"]} >= private_tables
    assert len(private_tables) == 2


def test_inference_pod_role_reads_the_models_bucket_only(synth: Synth) -> None:
    """S3: the models bucket, read only. Besides: the event log's stream, the store and the events token's
    secret (the next tests)."""
    raw = synth.raw(synth.built.serving)
    role = next(r for k, r in resources(raw, "AWS::IAM::Role").items() if k.startswith("InferencePodRole"))
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {a for st in trust for a in as_list(st["Action"])} == {"sts:AssumeRole", "sts:TagSession"}
    assert all(st["Principal"] == {"Service": "pods.eks.amazonaws.com"} for st in trust)
    every = statements(raw, "InferencePodRole")
    assert sorted(a for st in every for a in as_list(st["Action"])) == [
        "elasticache:Connect", "firehose:PutRecordBatch", "s3:GetObject", "s3:ListBucket",
        "secretsmanager:GetSecretValue"]
    sts = [st for st in every if all(a.startswith("s3:") for a in as_list(st["Action"]))]
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
    # Auto Mode has the Pod Identity agent built in: no add-on for it.
    assert "eks-pod-identity-agent" not in json.dumps(resources(raw, "AWS::EKS::Addon"))


def _manifests(synth: Synth) -> list[dict[str, Any]]:
    return synth.built.serving.manifests


def test_deployment_rolls_out_without_losing_capacity(synth: Synth) -> None:
    dep = k8s.find(_manifests(synth), "Deployment")
    spec = dep["spec"]
    # The HPA owns the replica count: a manifest that sets it would reset it to 3 on every `cdk deploy`
    # (server-side apply with force), against the HPA's scale-out.
    assert "replicas" not in spec
    assert k8s.find(_manifests(synth), "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
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
    assert "nodeSelector" not in pod  # Auto Mode's general-purpose pool (the system pool is tainted)
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
    """Through the ALB (HTTPS, the certificate and TLS policy of the listener): GET /recommendations and the
    shops' POST /events (REALTIME.md), exact paths. Not /metrics (it names the model's S3 location), /docs,
    /openapi.json, /admin/*, nor a catch-all prefix that would include them."""
    applied = _applied_manifests(synth.raw(synth.built.serving))
    ingress = k8s.find(applied, "Ingress")
    assert k8s.find(applied, "IngressClassParams")["spec"]["scheme"] == "internet-facing"
    [rule] = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/recommendations", "Exact"), ("/events", "Exact")]
    from components.serving.routers.events import ROUTE

    assert ROUTE == "/events"  # the service's own route
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
    assert len(entries) == 2  # this function and the operator role


def test_operator_role_from_a_parameter_gets_cluster_admin(synth: Synth) -> None:
    """The endpoint is private and only principals with an access entry get in: the operator role given as
    the OperatorRoleArn parameter gets one (cluster admin); empty (the default) creates none."""
    raw = synth.raw(synth.built.serving)
    param = raw["Parameters"]["OperatorRoleArn"]
    assert param["Default"] == ""
    assert re.fullmatch(param["AllowedPattern"], "")
    assert re.fullmatch(param["AllowedPattern"], "arn:aws:iam::123456789012:role/ops")
    assert not re.fullmatch(param["AllowedPattern"], "arn:aws:iam::123456789012:user/ops")
    entry = next(e for k, e in resources(raw, "AWS::EKS::AccessEntry").items() if k.startswith("OperatorAccess"))
    assert entry["Properties"]["PrincipalArn"] == {"Ref": "OperatorRoleArn"}
    [policy] = entry["Properties"]["AccessPolicies"]
    assert policy["AccessScope"] == {"Type": "cluster"}
    assert json.dumps(policy["PolicyArn"]).endswith('cluster-access-policy/AmazonEKSClusterAdminPolicy"]]}')
    condition = raw["Conditions"][entry["Condition"]]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OperatorRoleArn"}, ""]}]}


# ------------------------------------------------------------------ real time (stacks/realtime.py)


def _one(raw: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    [(logical, res)] = resources(raw, kind).items()
    return logical, res["Properties"]


def test_event_log_stream_delivers_where_the_etl_reads(synth: Synth) -> None:
    """The Firehose stream writes the raw bucket's <rawPrefix>events/realtime/date=<day>/*.headerless.csv,
    the settings the service's log and its moto test share (firehose_log.s3_destination); failures go
    outside the raw contract; its role writes those two prefixes only."""
    from components.realtime import firehose_log

    raw = synth.raw(synth.built.serving)
    _, stream = _one(raw, "AWS::KinesisFirehose::DeliveryStream")
    assert stream["DeliveryStreamType"] == "DirectPut"
    assert stream["DeliveryStreamName"] == "ecomrec-events"
    assert stream["DeliveryStreamEncryptionConfigurationInput"] == {"KeyType": "AWS_OWNED_CMK"}
    dest = stream["ExtendedS3DestinationConfiguration"]
    assert "GetAttRaw" in json.dumps(dest["BucketARN"])
    assert {k: dest[k] for k in firehose_log.s3_destination("raw/")} == firehose_log.s3_destination("raw/")
    config = synth.built.config
    assert dest["Prefix"].startswith(config.raw_prefix + "events/realtime/date=!{timestamp:yyyy-MM-dd}/")
    assert dest["FileExtension"] == s.HEADERLESS_CSV_SUFFIX
    assert not dest["ErrorOutputPrefix"].startswith(config.raw_prefix)
    assert dest["CloudWatchLoggingOptions"]["Enabled"] is True
    role_id = dest["RoleARN"]["Fn::GetAtt"][0]
    writes = [st for st in statements(raw, role_id[:-8]) if "s3:PutObject" in as_list(st["Action"])]  # no hash
    [write] = writes
    assert sorted(r["Fn::Join"][1][-1] for r in write["Resource"]) == [
        "/firehose-errors/events/*", "/raw/events/realtime/*"]


def test_pods_append_to_this_stream_and_connect_to_this_store_only(synth: Synth) -> None:
    raw = synth.raw(synth.built.serving)
    stream_id, _ = _one(raw, "AWS::KinesisFirehose::DeliveryStream")
    cache_id, _ = _one(raw, "AWS::ElastiCache::ServerlessCache")
    user_id = next(k for k, u in resources(raw, "AWS::ElastiCache::User").items()
                   if u["Properties"]["AuthenticationMode"]["Type"] == "iam")
    sts = {st["Sid"]: st for st in statements(raw, "InferencePodRole")}
    assert sts["AppendEventLog"]["Action"] == "firehose:PutRecordBatch"
    assert sts["AppendEventLog"]["Resource"] == {"Fn::GetAtt": [stream_id, "Arn"]}
    assert sts["ConnectToStore"]["Action"] == "elasticache:Connect"
    assert sts["ConnectToStore"]["Resource"] == [{"Fn::GetAtt": [cache_id, "ARN"]}, {"Fn::GetAtt": [user_id, "Arn"]}]


def test_store_is_serverless_valkey_in_the_pods_subnets_reachable_from_the_cluster_only(synth: Synth) -> None:
    """ElastiCache Serverless for Valkey in the cluster's private subnets; its security group admits 6379 from
    the cluster security group (Auto Mode's nodes, hence the pods) and nothing else, sends nothing; RBAC with
    a disabled default user and one IAM user whose ACL is the store's (redis_store.ACCESS_STRING, the one
    tests/test_realtime_store_iam.py runs the store under on a real redis-server)."""
    from components.realtime.redis_store import ACCESS_STRING

    raw = synth.raw(synth.built.serving)
    _, cache = _one(raw, "AWS::ElastiCache::ServerlessCache")
    assert cache["Engine"] == "valkey" and int(cache["MajorEngineVersion"]) >= 8
    [cluster] = resources(raw, "AWS::EKS::Cluster").values()
    assert sorted(map(json.dumps, cache["SubnetIds"])) == sorted(
        map(json.dumps, cluster["Properties"]["ResourcesVpcConfig"]["SubnetIds"]))
    [sg_ref] = cache["SecurityGroupIds"]
    sg_id = sg_ref["Fn::GetAtt"][0]
    sg = raw["Resources"][sg_id]["Properties"]
    assert "SecurityGroupIngress" not in sg
    assert sg["SecurityGroupEgress"][0]["Description"] == "Disallow all traffic"
    rules = [r["Properties"] for r in resources(raw, "AWS::EC2::SecurityGroupIngress").values()
             if r["Properties"]["GroupId"] == {"Fn::GetAtt": [sg_id, "GroupId"]}]
    [rule] = rules
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 6379, 6379)
    cluster_id = next(iter(resources(raw, "AWS::EKS::Cluster")))
    assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]}
    group_id, group = _one(raw, "AWS::ElastiCache::UserGroup")
    assert cache["UserGroupId"] == {"Ref": group_id}
    users = {k: u["Properties"] for k, u in resources(raw, "AWS::ElastiCache::User").items()}
    assert sorted(json.dumps(u) for u in group["UserIds"]) == sorted(json.dumps({"Ref": k}) for k in users)
    by_name = {u["UserName"]: u for u in users.values()}
    assert by_name["default"]["AccessString"].split()[0] == "off"
    app = by_name["ecomrec-inference"]
    assert app["AuthenticationMode"] == {"Type": "iam"} and app["UserId"] == app["UserName"]
    assert app["AccessString"] == ACCESS_STRING
    assert {u["Engine"] for u in users.values()} == {group["Engine"]} == {"redis"}


def test_deployment_takes_events_through_firehose_and_the_store_with_iam(synth: Synth) -> None:
    """The pods' environment names the stream, the store (rediss://, the IAM user, the cache's endpoint) and
    the cache for IAM tokens, and the service's own settings accept exactly that environment."""
    from components.serving.settings import ServingSettings

    raw = synth.raw(synth.built.serving)
    [custom] = [r for r in raw["Resources"].values() if r["Type"] == "Custom::EcomrecKubernetesManifests"]
    cache_id, cache = _one(raw, "AWS::ElastiCache::ServerlessCache")
    text = json.dumps(custom["Properties"]["Manifests"])
    assert json.dumps({"Fn::GetAtt": [cache_id, "Endpoint.Address"]}) in text
    assert json.dumps({"Fn::GetAtt": [cache_id, "Endpoint.Port"]}) in text
    [container] = k8s.find(_applied_manifests(raw), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    _, stream = _one(raw, "AWS::KinesisFirehose::DeliveryStream")
    assert env["ECOMREC_EVENTS_FIREHOSE_STREAM"] == stream["DeliveryStreamName"]
    assert env["ECOMREC_STORE_URL"] == "rediss://ecomrec-inference@<cfn-reference>:<cfn-reference>"
    assert env["ECOMREC_STORE_IAM_CACHE"] == cache["ServerlessCacheName"]
    assert env["ECOMREC_STORE_CLUSTER"] == "true"  # serverless caches are cluster-mode only
    assert env["AWS_REGION"] == "<cfn-reference>"
    assert "ECOMREC_EVENTS_RAW_ROOT" not in env
    settings = ServingSettings(**{k.removeprefix("ECOMREC_").lower(): v.replace("<cfn-reference>", "6379")
                                  for k, v in env.items() if k.startswith("ECOMREC_") and k != "ECOMREC_MODEL"},
                               model="s3://bucket/model.tar.gz")
    assert settings.events_on and settings.store_iam_cache == "ecomrec-store" and settings.store_cluster


def test_post_events_token_is_a_generated_secret_the_pods_alone_read(synth: Synth) -> None:
    """Issue #14: POST /events is public (k8s.PUBLIC_PATHS), so the pods get ECOMREC_EVENTS_TOKEN_SECRET = the
    ARN (Ref) of a Secrets Manager secret whose value CloudFormation generates (none in the template), and
    the pod role may GetSecretValue on exactly that secret."""
    from components.serving.settings import ServingSettings

    assert "/events" in k8s.PUBLIC_PATHS
    raw = synth.raw(synth.built.serving)
    secret_id, secret = _one(raw, "AWS::SecretsManager::Secret")
    assert "SecretString" not in secret and secret["GenerateSecretString"]["PasswordLength"] >= 32
    assert "SecretStringTemplate" not in secret["GenerateSecretString"]  # the string is the token itself
    # The env value, with each reference of the custom resource's Fn::Join kept as itself.
    [custom] = [r for r in raw["Resources"].values() if r["Type"] == "Custom::EcomrecKubernetesManifests"]
    _, parts = custom["Properties"]["Manifests"]["Fn::Join"]
    text = "".join(p if isinstance(p, str) else f"<ref:{i}>" for i, p in enumerate(parts))
    [container] = k8s.find(json.loads(text), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    ref = re.fullmatch(r"<ref:(\d+)>", env["ECOMREC_EVENTS_TOKEN_SECRET"])
    assert ref is not None and parts[int(ref.group(1))] == {"Ref": secret_id}
    grants = [st for policy in resources(raw, "AWS::IAM::Policy").values()
              for st in policy["Properties"]["PolicyDocument"]["Statement"]
              if any(a.startswith("secretsmanager:") for a in as_list(st["Action"]))]
    [grant] = grants  # nobody else in the stack reads secrets
    assert grant["Action"] == "secretsmanager:GetSecretValue" and grant["Resource"] == {"Ref": secret_id}
    assert grant in statements(raw, "InferencePodRole")
    # the service takes that environment (the secret is read at start-up, not by the settings)
    assert ServingSettings(events_firehose_stream="s", events_token_secret="arn:aws:secretsmanager:x",
                           model="s3://b/m.tar.gz").events_token_secret
    with pytest.raises(ValueError, match="events_token_secret"):
        k8s.ManifestParams(image="i", model_uri="", model_group="g", certificate_arn="c", load_balancer_name="n",
                           events_firehose_stream="ecomrec-events")


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
    queues = resources(raw, "AWS::SQS::Queue")
    queue_id = next(k for k in queues if k.startswith("RolloutQueue"))
    delivery_dlq = next(k for k in queues if k.startswith("RolloutDeliveryDlq"))
    assert target["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 4
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [delivery_dlq, "Arn"]}}


def test_rollouts_are_serialised_by_one_fifo_message_group(synth: Synth) -> None:
    """No reserved concurrency (a new account refuses it: tests/test_aws_constraints.py). One message group
    of a FIFO queue: "Messages within the same message group are always processed one at a time, in strict
    order" (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/using-messagegroupid-property.html),
    and for FIFO sources "the maximum number of concurrent invocations is equal to the number of message
    group IDs" (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html)."""
    raw = synth.raw(synth.built.events)
    queues = resources(raw, "AWS::SQS::Queue")
    queue_id = next(k for k in queues if k.startswith("RolloutQueue"))
    queue = queues[queue_id]["Properties"]
    assert queue["FifoQueue"] is True
    assert queue["ContentBasedDeduplication"] is True
    dlq_id = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert queues[dlq_id]["Properties"]["FifoQueue"] is True  # a FIFO queue's DLQ must be FIFO
    assert dlq_id.startswith("RolloutDlq")
    [rule] = resources(raw, "AWS::Events::Rule").values()
    [target] = rule["Properties"]["Targets"]
    assert target["SqsParameters"]["MessageGroupId"]  # one constant group for every event
    assert isinstance(target["SqsParameters"]["MessageGroupId"], str)
    fn_id, fn = next((k, f) for k, f in resources(raw, "AWS::Lambda::Function").items() if k.startswith("RolloutFn"))
    assert "ReservedConcurrentExecutions" not in fn["Properties"]
    [mapping] = resources(raw, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert mapping["Properties"]["FunctionName"] == {"Ref": fn_id}
    assert mapping["Properties"]["BatchSize"] == 1
    # The Lambda docs: visibility timeout at least six times the function timeout.
    assert queue["VisibilityTimeout"] >= 6 * fn["Properties"]["Timeout"]
    # No async invocation config left over (the function is invoked by the queue, synchronously).
    assert not resources(raw, "AWS::Lambda::EventInvokeConfig")


def test_rollout_function_configuration_and_least_privilege(synth: Synth) -> None:
    raw = synth.raw(synth.built.events)
    fn_id, fn = next((k, f) for k, f in resources(raw, "AWS::Lambda::Function").items() if k.startswith("RolloutFn"))
    props = fn["Properties"]
    assert props["Handler"] == "ecomrec_rollout.handler.handler"
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
        "s3:ListBucket",  # a missing run output reads 404 (NoSuchKey), not 403
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParameterHistory",
        "ssm:DescribeParameters",
        "ssm:PutParameter",
        # the rollout queue (event source mapping)
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
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
    # Its own DLQ, not the rollout's (a failed start is not a failed rollout; separate alarm text).
    retrain_dlq = next(k for k in resources(raw, "AWS::SQS::Queue") if k.startswith("RetrainDlq"))
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [retrain_dlq, "Arn"]}}


# ------------------------------------------------------------------ monitoring


def test_alarms_cover_errors_latency_pipeline_and_rollout_and_notify_the_topic(synth: Synth) -> None:
    raw = synth.raw(synth.built.monitoring)
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in resources(raw, "AWS::CloudWatch::Alarm").values()}
    assert set(alarms) == {
        f"ecomrec-{n}"
        for n in ("Http5xxRate", "LatencyP99", "PipelineExecutionFailed", "RolloutFunctionErrors", "RolloutDeadLetters",
                  "RolloutDeliveryDeadLetters", "RetrainDeadLetters")
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
        "HTTPCode_ELB_503_Count",
    }
    p99 = alarms["ecomrec-LatencyP99"]
    assert (p99["ExtendedStatistic"], p99["MetricName"]) == ("p99", "TargetResponseTime")
    failed = alarms["ecomrec-PipelineExecutionFailed"]
    assert (failed["Namespace"], failed["MetricName"]) == ("AWS/Events", "TriggeredRules")
    assert alarms["ecomrec-RolloutFunctionErrors"]["MetricName"] == "Errors"
    assert alarms["ecomrec-RolloutDeadLetters"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    topic = raw["Resources"][topic_id]["Properties"]
    assert "KmsMasterKeyId" in topic
    rule_id, rule = next(iter(resources(raw, "AWS::Events::Rule").items()))
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": topic_id}
    assert failed["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": rule_id}}]


def test_alb_alarms_watch_the_load_balancer_the_ingress_created(synth: Synth) -> None:
    """No placeholder parameter: the LoadBalancer dimension is the manifests custom resource's AlbFullName,
    read from the real ALB after the Ingress is applied (handler.load_balancer_dimension)."""
    raw = synth.raw(synth.built.monitoring)
    assert "AlbFullName" not in raw.get("Parameters", {})
    serving = synth.raw(synth.built.serving)
    [custom_id] = [k for k, r in serving["Resources"].items() if r["Type"] == "Custom::EcomrecKubernetesManifests"]
    assert serving["Resources"][custom_id]["Properties"]["LoadBalancerName"] == "ecomrec-inference"
    export = next(o["Export"]["Name"] for o in serving["Outputs"].values()
                  if o["Value"] == {"Fn::GetAtt": [custom_id, "AlbFullName"]})
    for alarm in resources(raw, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        dims = [d for m in props.get("Metrics", []) if "MetricStat" in m
                for d in m["MetricStat"]["Metric"]["Dimensions"]]
        dims += props.get("Dimensions", [])
        for d in dims:
            if d["Name"] == "LoadBalancer":
                assert d["Value"] == {"Fn::ImportValue": export}, props["AlarmName"]
    ingress = k8s.find(_manifests(synth), "Ingress")
    assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/load-balancer-name"] == "ecomrec-inference"


def test_rollout_wait_is_derived_from_the_progress_deadline_and_the_replica_count(synth: Synth) -> None:
    """One invocation waits longer than the Deployment's progressDeadlineSeconds (Kubernetes' failure
    verdict, the only thing that undoes a rollout, arrives within it), and the queue's attempts, a visibility
    timeout apart, cover the longest healthy rolling update (maxReplicas pods, one at a time, each allowed the
    startup probe's budget + minReadySeconds): a slow healthy rollout is resumed, never rolled back."""
    raw = synth.raw(synth.built.events)
    fn = next(f for k, f in resources(raw, "AWS::Lambda::Function").items() if k.startswith("RolloutFn"))
    wait = int(fn["Properties"]["Environment"]["Variables"][c.ENV_ROLLOUT_TIMEOUT_S])
    dep = k8s.find(_manifests(synth), "Deployment")["spec"]
    hpa = k8s.find(_manifests(synth), "HorizontalPodAutoscaler")["spec"]
    startup = dep["template"]["spec"]["containers"][0]["startupProbe"]
    assert dep["progressDeadlineSeconds"] + dep["minReadySeconds"] < wait
    assert wait + 45 + 10 <= fn["Properties"]["Timeout"]  # handler.py: restore (45 s) + record (10 s)
    queue = next(q["Properties"] for k, q in resources(raw, "AWS::SQS::Queue").items() if k.startswith("RolloutQueue"))
    attempts = queue["RedrivePolicy"]["maxReceiveCount"]
    healthy = hpa["maxReplicas"] * (startup["periodSeconds"] * startup["failureThreshold"] + dep["minReadySeconds"])
    assert (attempts - 1) * queue["VisibilityTimeout"] + wait >= healthy


def test_quality_gate_rejection_does_not_fire_the_pipeline_failure_alarm(synth: Synth) -> None:
    """The gate rejects through its FailStep, which fails the execution: the alarm listens to failed steps
    other than that one (the SageMaker guide's step-status event carries stepName and currentStepStatus)."""
    from pipelines.sagemaker.pipeline import GATE_FAILED_STEP

    raw = synth.raw(synth.built.monitoring)
    [rule] = resources(raw, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["SageMaker Model Building Pipeline Execution Step Status Change"]
    detail = pattern["detail"]
    assert detail["currentStepStatus"] == ["Failed"]
    assert detail["stepName"] == [{"anything-but": [GATE_FAILED_STEP]}]

    def matches(step: str) -> bool:  # EventBridge's anything-but on the event the guide shows
        return detail["currentStepStatus"] == ["Failed"] and step not in detail["stepName"][0]["anything-but"]

    assert not matches(GATE_FAILED_STEP)
    assert matches("train-ranker")


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
    sparse = [ids["HTTPCode_Target_5XX_Count"], ids["HTTPCode_ELB_5XX_Count"], ids["HTTPCode_ELB_503_Count"]]
    for metric_id in sparse:
        filled = re.compile(rf"FILL\(\s*{metric_id}\s*,\s*0\s*\)")
        assert filled.search(text), text
        assert not re.search(rf"\b{metric_id}\b", filled.sub("", text)), text  # never used unfilled
    # Evaluated minute by minute (None = no data point that minute; FILL makes it 0, IF picks a branch):
    # no traffic is 0 %, and a total outage (no healthy pod: every request a load-balancer 503, which
    # RequestCount leaves out because no target answered) is 100 %, not "no requests".
    names = {ids["RequestCount"]: "req", ids["HTTPCode_Target_5XX_Count"]: "e5",
             ids["HTTPCode_ELB_5XX_Count"]: "elb5", ids["HTTPCode_ELB_503_Count"]: "elb503"}
    python = re.sub(r"FILL\(\s*(\w+)\s*,\s*0\s*\)", r"fill(\1)", text).replace("IF(", "when(")

    def rate(req: float | None, e5: float | None, elb5: float | None, elb503: float | None = None) -> float:
        given = {"req": req, "e5": e5, "elb5": elb5, "elb503": elb503}
        values = {metric_id: given[name] for metric_id, name in names.items()}
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(eval(python, {"fill": lambda v: np.float64(0 if v is None else v),
                                       "when": lambda c, a, b: a if c else b}, values))

    assert rate(None, None, None) == 0.0
    assert rate(1000, None, None) == 0.0
    assert rate(100, 10, None) == 10.0
    assert rate(None, None, 50, 50) == 100.0  # total outage: load-balancer 503s only
    # 502/504: the load balancer chose a target (in RequestCount) and answered 5xx itself (in ELB_5XX, not in
    # Target_5XX). 10 of 100 requests is 10 %, not 10 of 110 (the old formula counted them twice).
    assert rate(100, None, 10) == 10.0


def test_prometheus_scrapes_the_pods_and_evaluates_the_rules(synth: Synth, tmp_path: Path) -> None:
    """Monitoring that runs: an AMP workspace with containers/monitoring/prometheus-rules.yml loaded as its
    rule groups, alerts routed to the SNS topic, and AMP's managed scraper on the EKS cluster whose
    configuration keeps the pods that carry the Deployment's prometheus.io/* annotations. promtool (the real
    Prometheus config parser) accepts the configuration."""
    import base64
    import shutil

    from stacks.monitoring import RULES_FILE

    raw = synth.raw(synth.built.monitoring)
    [workspace_id] = resources(raw, "AWS::APS::Workspace")
    [rules] = resources(raw, "AWS::APS::RuleGroupsNamespace").values()
    assert rules["Properties"]["Data"] == RULES_FILE.read_text()
    assert rules["Properties"]["Workspace"] == {"Fn::GetAtt": [workspace_id, "Arn"]}
    alertmanager = json.dumps(raw["Resources"][workspace_id]["Properties"]["AlertManagerDefinition"])
    [topic_id] = resources(raw, "AWS::SNS::Topic")
    assert "sns_configs" in alertmanager and topic_id in alertmanager
    [scraper] = resources(raw, "AWS::APS::Scraper").values()
    eks_source = scraper["Properties"]["Source"]["EksConfiguration"]
    assert "Cluster" in json.dumps(eks_source["ClusterArn"])  # the serving stack's cluster
    assert len(eks_source["SubnetIds"]) >= 2  # AMP: two subnets in two zones at least
    assert scraper["Properties"]["Destination"]["AmpConfiguration"]["WorkspaceArn"] == {
        "Fn::GetAtt": [workspace_id, "Arn"]}
    # The configuration blob: base64 of a literal (no tokens inside), so it can be decoded here.
    blob = scraper["Properties"]["ScrapeConfiguration"]["ConfigurationBlob"]["Fn::Base64"]
    config = json.loads(blob if isinstance(blob, str) else base64.b64decode(blob))
    [job] = config["scrape_configs"]
    keep = job["relabel_configs"][0]
    pod_annotations = k8s.find(_manifests(synth), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    # Prometheus turns the annotation prometheus.io/scrape into this meta label (non-alphanumerics -> _).
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert keep["action"] == "keep" and re.fullmatch(keep["regex"], pod_annotations["prometheus.io/scrape"])
    assert {r.get("target_label") for r in job["relabel_configs"]} >= {"pod", "namespace", "__metrics_path__"}
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    if shutil.which("promtool"):
        # Debian's promtool is built without Kubernetes service discovery: it checks everything else (global
        # settings, relabel rules and their regexes) with the discovery swapped for a static target.
        checked = json.loads(json.dumps(config))
        checked["scrape_configs"][0].pop("kubernetes_sd_configs")
        checked["scrape_configs"][0]["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
        path = tmp_path / "scrape.yml"
        path.write_text(json.dumps(checked))
        proc = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # The scraper's cluster access is the entry AMP creates itself (tests/test_aws_constraints.py).
    assert resources(raw, "AWS::EKS::AccessEntry") == {}


def test_grafana_reads_prometheus_and_pod_logs_reach_cloudwatch(synth: Synth) -> None:
    """Amazon Managed Grafana on the workspace; the amazon-cloudwatch-observability add-on (Container Insights
    + Fluent Bit pod logs) with its agent role through Pod Identity; metrics-server, which the CPU-based HPA
    reads (Auto Mode runs none)."""
    raw = synth.raw(synth.built.monitoring)
    [ws] = resources(raw, "AWS::Grafana::Workspace").values()
    assert "PROMETHEUS" in ws["Properties"]["DataSources"]
    assert ws["Properties"]["AuthenticationProviders"] == ["AWS_SSO"]
    query = next(st for st in statements(raw, "GrafanaRole") if st.get("Sid") == "QueryPrometheus")
    [workspace_id] = resources(raw, "AWS::APS::Workspace")
    assert query["Resource"] == {"Fn::GetAtt": [workspace_id, "Arn"]}
    serving = synth.raw(synth.built.serving)
    addons = {a["Properties"]["AddonName"]: a["Properties"] for a in resources(serving, "AWS::EKS::Addon").values()}
    assert set(addons) == {"amazon-cloudwatch-observability", "metrics-server"}
    [assoc] = addons["amazon-cloudwatch-observability"]["PodIdentityAssociations"]
    assert assoc["ServiceAccount"] == "cloudwatch-agent"
    role = serving["Resources"][assoc["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    assert "CloudWatchAgentServerPolicy" in json.dumps(role["ManagedPolicyArns"])
    hpa = k8s.find(_manifests(synth), "HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"  # served by metrics-server's metrics.k8s.io


def test_grafana_gets_the_data_source_and_the_dashboard_from_the_stack(synth: Synth) -> None:
    """The custom resource of cdk/grafana (tests/test_grafana_provision.py runs its handler) is given the
    workspace, its endpoint, the AMP workspace's endpoint and the dashboard file itself (a changed file is a
    changed property: the next deploy updates the dashboard); its function may only mint and delete
    service-account tokens of that one workspace."""
    from stacks.monitoring import DASHBOARD_FILE, GRAFANA_PROVISIONER_ACTIONS

    raw = synth.raw(synth.built.monitoring)
    [grafana_id] = resources(raw, "AWS::Grafana::Workspace")
    [amp_id] = resources(raw, "AWS::APS::Workspace")
    [dashboard] = resources(raw, "Custom::EcomrecGrafanaDashboard").values()
    props = dashboard["Properties"]
    assert props["Dashboard"] == DASHBOARD_FILE.read_text()
    assert props["WorkspaceId"] == {"Fn::GetAtt": [grafana_id, "Id"]}
    assert props["PrometheusUrl"] == {"Fn::GetAtt": [amp_id, "PrometheusEndpoint"]}
    assert props["GrafanaUrl"] == {"Fn::Join": ["", ["https://", {"Fn::GetAtt": [grafana_id, "Endpoint"]}]]}
    assert props["Region"] == {"Ref": "AWS::Region"}
    # The provider framework calls our function, which runs the provisioner package.
    fns = resources(raw, "AWS::Lambda::Function")
    [(fn_id, fn)] = [(k, v) for k, v in fns.items()
                     if v["Properties"].get("Handler") == "ecomrec_grafana.provision.handler"]
    assert fn["Properties"]["Runtime"].startswith("python3.")
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [pol["Properties"] for pol in resources(raw, "AWS::IAM::Policy").values()]
    granted = [st for pol in policies if {"Ref": role_id} in pol["Roles"] for st in pol["PolicyDocument"]["Statement"]]
    [grant] = granted
    assert sorted(as_list(grant["Action"])) == sorted(f"grafana:{a}" for a in GRAFANA_PROVISIONER_ACTIONS)
    resource = json.dumps(grant["Resource"])
    assert ":grafana:" in resource and ":/workspaces/" in resource and grafana_id in resource
    assert "*" not in resource
    assert dashboard["Properties"]["ServiceToken"]["Fn::GetAtt"][0].startswith("GrafanaProvisionerProvider")
    assert fn_id.startswith("GrafanaProvisionerFn")


# ------------------------------------------------------------------ github


def test_deploy_role_trusts_the_environment_cd_yml_deploys_from(synth: Synth) -> None:
    """A job that names an environment gets the subject repo:OWNER/REPO:environment:NAME
    (https://docs.github.com/en/actions/reference/security/oidc#example-subject-claims): the trust condition
    must be exactly that for cd.yml's deploy job, or every CD run is denied."""
    import yaml

    raw = synth.raw(synth.built.github)
    [provider] = resources(raw, "AWS::IAM::OIDCProvider").values()
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    role = next(r for k, r in resources(raw, "AWS::IAM::Role").items() if k.startswith("DeployRole"))
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    cond = trust["Condition"]["StringEquals"]
    assert cond["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    cd = yaml.safe_load((REPO / ".github" / "workflows" / "cd.yml").read_text())
    environments = {job["environment"] for job in cd["jobs"].values()
                    if any(s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
                           for s in job["steps"])}
    subjects = {"".join(p if isinstance(p, str) else "OWNER/REPO" for p in cond_sub["Fn::Join"][1])
                for cond_sub in [cond["token.actions.githubusercontent.com:sub"]]}
    assert subjects == {f"repo:OWNER/REPO:environment:{env}" for env in environments}
    assert cond["token.actions.githubusercontent.com:sub"]["Fn::Join"][1][1] == {"Ref": "GitHubRepo"}
    # What CD does with it: push images, upload pipeline code, upsert the pipeline, deploy through CDK's roles.
    actions = {a for st in statements(raw, "DeployRole") for a in as_list(st["Action"])}
    assert {"sts:AssumeRole", "ecr:PutImage", "s3:PutObject", "sagemaker:UpdatePipeline", "iam:PassRole"} <= actions
    assert not any(a.endswith(":*") or a == "*" for a in actions)


def test_deploy_role_may_run_cd_ymls_checks_before_the_upsert(synth: Synth) -> None:
    """cd.yml runs, as this role: `pipeline refresh-jumpstart` and `aws s3api head-object` on the JumpStart
    pins (GetObject on the region's jumpstart-cache-prod bucket), `docker build` FROM the region's SageMaker
    Spark image (an AWS-owned ECR registry: a cross-account pull needs the identity policy to allow it too),
    and `pipeline doctor` (pipelines/sagemaker/doctor.py: iam GetRole / SimulatePrincipalPolicy on the
    SageMaker role, s3 HeadBucket (ListBucket) / GetBucketLocation / ListObjectsV2 on the bucket,
    sagemaker DescribeModelPackageGroup). A denial of HeadBucket is a doctor blocker: CD would stop there."""
    raw = synth.raw(synth.built.github)
    granted = [(set(as_list(st["Action"])), json.dumps(st["Resource"])) for st in statements(raw, "DeployRole")]

    def allowed(action: str, *resource_parts: str) -> bool:
        return any(action in actions and all(part in resources for part in resource_parts)
                   for actions, resources in granted)

    assert allowed("s3:GetObject", "jumpstart-cache-prod-")
    assert allowed("ecr:BatchGetImage", "repository/sagemaker-spark-processing")
    assert allowed("ecr:GetDownloadUrlForLayer", "repository/sagemaker-spark-processing")
    for action in ("iam:GetRole", "iam:SimulatePrincipalPolicy"):
        assert allowed(action, "ExportsOutputFnGetAttSageMakerExecutionRole"), action
    for action in ("s3:ListBucket", "s3:GetBucketLocation"):
        assert allowed(action, "ExportsOutputFnGetAttProcessed"), action
    assert allowed("sagemaker:DescribeModelPackageGroup", "model-package-group/ecomrec")


def test_cd_doctor_checks_the_raw_data_the_retraining_schedule_reads(synth: Synth) -> None:
    """cd.yml's `pipeline doctor` looks for raw data (and the role's read grants on it) where the scheduled
    runs will read it: the InputDataUri the EcomrecEvents schedule passes, the raw bucket's raw prefix (not the
    definition's default under the processed bucket). The deploy role may list that bucket."""
    import yaml

    cd = yaml.safe_load((REPO / ".github" / "workflows" / "cd.yml").read_text())
    steps = [step for job in cd["jobs"].values() for step in job["steps"]]
    doctor = next(step["run"] for step in steps if "ecomrec pipeline doctor" in step.get("run", ""))
    match = re.search(r'--input-data-uri "\$\{\{ steps\.names\.outputs\.(\w+) \}\}"', doctor)
    assert match, doctor
    names = next(step["run"] for step in steps if step.get("id") == "names")
    [template] = re.findall(rf'echo "{match.group(1)}=([^"]+)"', names)
    rendered = (template.replace("${PREFIX}", cd["env"]["PREFIX"]).replace("${account}", ACCOUNT)
                .replace("${AWS_REGION}", REGION))

    data = synth.raw(synth.built.data)

    def resolve(value: Any) -> str:
        if isinstance(value, str):
            return value
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return str(sep).join(resolve(part) for part in parts)
        if "Fn::ImportValue" in value:
            export = value["Fn::ImportValue"].split(":", 1)[1]
            ref = data["Outputs"][export]["Value"]["Ref"]
            return str(data["Resources"][ref]["Properties"]["BucketName"])
        raise AssertionError(f"cannot resolve {value}")

    [schedule] = resources(synth.raw(synth.built.events), "AWS::Scheduler::Schedule").values()
    params = schedule["Properties"]["Target"]["SageMakerPipelineParameters"]["PipelineParameterList"]
    scheduled = resolve(next(p["Value"] for p in params if p["Name"] == "InputDataUri"))
    assert rendered == scheduled == f"s3://ecomrec-raw-{ACCOUNT}-{REGION}/raw/"
    assert any(
        "s3:ListBucket" in as_list(st["Action"]) and "ExportsOutputFnGetAttRaw" in json.dumps(st["Resource"])
        for st in statements(synth.raw(synth.built.github), "DeployRole"))


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
    assert len(templates) == 6
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
    only from the ALB's public subnets and the AMP scraper's own subnets, and is enforced (Auto Mode's
    controller switch is applied with it).

    AMP's managed scraper is no pod: "An Amazon Managed Service for Prometheus collector creates an Elastic
    Network Interface (ENI) per subnet specified when creating the scraper. The collector scrapes the
    metrics through these ENIs" (https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-collector.html).
    So the policy must admit the CIDRs of exactly the subnets the monitoring stack gives the scraper, and
    those must hold no pod (the cluster's, i.e. the pods', subnets are the private ones)."""
    applied = _applied_manifests(synth.raw(synth.built.serving))
    policy = k8s.find(applied, "NetworkPolicy")
    labels = k8s.find(applied, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == c.NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": c.PORT}]
    assert all(set(source) == {"ipBlock"} for source in rule["from"])  # no namespace/pod selector
    blocks = sorted(source["ipBlock"]["cidr"] for source in rule["from"])
    serving = synth.built.serving
    raw = synth.raw(serving)
    subnets = {logical: r["Properties"] for logical, r in resources(raw, "AWS::EC2::Subnet").items()}
    public = sorted(p["CidrBlock"] for p in subnets.values() if p.get("MapPublicIpOnLaunch"))
    assert public == sorted(subnet.ipv4_cidr_block for subnet in serving.vpc.public_subnets)
    # The subnets the scraper is configured with (monitoring stack, imported from the serving stack).
    [scraper] = resources(synth.raw(synth.built.monitoring), "AWS::APS::Scraper").values()
    scraper_ids = json.dumps(scraper["Properties"]["Source"]["EksConfiguration"]["SubnetIds"])
    scraping = sorted(p["CidrBlock"] for logical, p in subnets.items() if logical in scraper_ids)
    assert len(scraping) == len(scraper["Properties"]["Source"]["EksConfiguration"]["SubnetIds"]) >= 2
    assert blocks == sorted(public + scraping) and public and scraping
    # No pod subnet: the cluster's subnets (where Auto Mode puts nodes and pods) are not admitted.
    [cluster] = resources(raw, "AWS::EKS::Cluster").values()
    cluster_ids = json.dumps(cluster["Properties"]["ResourcesVpcConfig"]["SubnetIds"])
    pods = {p["CidrBlock"] for logical, p in subnets.items() if logical in cluster_ids}
    assert pods and not pods & set(blocks)
    assert not {subnet.ipv4_cidr_block for subnet in serving.vpc.private_subnets} & set(blocks)
    controller = k8s.find(applied, "ConfigMap")
    assert controller["metadata"] == {"name": "amazon-vpc-cni", "namespace": "kube-system"}
    assert controller["data"] == {"enable-network-policy-controller": "true"}
    from ecomrec_rollout.kube import object_path

    assert object_path(policy) == f"/apis/networking.k8s.io/v1/namespaces/{c.NAMESPACE}/networkpolicies/{c.DEPLOYMENT}"
    assert object_path(controller) == "/api/v1/namespaces/kube-system/configmaps/amazon-vpc-cni"
