"""The rollout function end to end, with fakes where AWS and the cluster would be.

Fakes, and only these:
- SageMaker Model Registry, SSM Parameter Store and S3: moto (in-process AWS fake) behind real boto3
  clients.
- The Kubernetes API: ``FakeKubeApi`` below, a local HTTP server on 127.0.0.1 that stores objects, applies
  strategic-merge and server-side-apply patches the way the API server does for the fields used here,
  records every request, and plays the Deployment controller (a patched pod template completes its
  rollout after a few status reads; a template of a "bad" version reports ProgressDeadlineExceeded, the
  way a bundle that never gets ready does).
Real: the rollout package (decisions, the HTTP client, the patches it sends, the waiting loop), boto3.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cdk" / "rollout"))

import contextlib

from ecomrec_rollout import constants as c
from ecomrec_rollout import handler as h
from ecomrec_rollout.kube import KubeApiError, KubeClient, deployment_path
from ecomrec_rollout.logic import RolloutError, StillProgressingError

REGION = "eu-west-1"
GROUP = "ecomrec"
LIVE_PARAM = "/ecomrec/serving/live-model"
RUNS_BUCKET = "processed-bucket"  # where the pipeline writes bundles
MODELS_BUCKET = "models-bucket"  # where approved bundles are promoted and served from
TOKEN = "k8s-aws-v1.test-token"
DEP_PATH = deployment_path(c.NAMESPACE, c.DEPLOYMENT)


# ------------------------------------------------------------------ events as SageMaker sends them

# The "Model package state change" example of the SageMaker developer guide, verbatim apart from the
# duplicated "source" key it shows (JSON keeps one): https://docs.aws.amazon.com/sagemaker/latest/dg/
# automating-sagemaker-with-eventbridge.html#eventbridge-model-package
DOC_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "844e2571-85d4-695f-b930-0153b71dcb42",
    "detail-type": "SageMaker Model Package State Change",
    "source": "aws.sagemaker",
    "account": "123456789012",
    "time": "2021-02-24T17:00:14Z",
    "region": "us-east-2",
    "resources": ["arn:aws:sagemaker:us-east-2:123456789012:model-package/versionedmp-p-idy6c3e1fiqj/2"],
    "detail": {
        "ModelPackageGroupName": "versionedmp-p-idy6c3e1fiqj",
        "ModelPackageVersion": 2,
        "ModelPackageArn": "arn:aws:sagemaker:us-east-2:123456789012:model-package/versionedmp-p-idy6c3e1fiqj/2",
        "CreationTime": "2021-02-24T17:00:14Z",
        "InferenceSpecification": {
            "Containers": [{
                "Image": "257758044811.dkr.ecr.us-east-2.amazonaws.com/sagemaker-xgboost:1.0-1-cpu-py3",
                "ImageDigest": "sha256:4dc8a7e4a010a19bb9e0a6b063f355393f6e623603361bd8b105f554d4f0c004",
                "ModelDataUrl": "s3://sagemaker-project-p-idy6c3e1fiqj/versionedmp-p-idy6c3e1fiqj/AbaloneTrain/"
                                "pipelines-4r83jejmhorv-TrainAbaloneModel-xw869y8C4a/output/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"]},
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "CertifyForMarketplace": False,
        "ModelApprovalStatus": "Rejected",
        "MetadataProperties": {"GeneratedBy": "arn:aws:sagemaker:us-east-2:123456789012:pipeline/"
                                              "versionedmp-p-idy6c3e1fiqj/execution/4r83jejmhorv"},
        "ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json",
            "S3Uri": "s3://sagemaker-project-p-idy6c3e1fiqj/versionedmp-p-idy6c3e1fiqj/"
                     "script-2021-02-24-10-55-15-413/output/evaluation/evaluation.json"}}},
        "LastModifiedTime": "2021-02-24T17:00:14Z",
    },
}


def package_event(description: dict[str, Any], status: str) -> dict[str, Any]:
    """DOC_EVENT for one of our packages: the registry's description in the detail, a fresh event id."""
    event = copy.deepcopy(DOC_EVENT)
    event.update(id=str(uuid.uuid4()), region=REGION, resources=[description["ModelPackageArn"]])
    detail = event["detail"]
    for key in ("ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn", "InferenceSpecification"):
        detail[key] = description[key]
    detail["ModelApprovalStatus"] = status
    return event


def sqs_record(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the rollout FIFO queue hands it to the function (EventBridge puts the event JSON in the
    body): https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html (example FIFO queue message event)."""
    return {"Records": [{
        "messageId": str(uuid.uuid4()), "receiptHandle": "AQEB...", "body": json.dumps(event),
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "rollouts",
                       "MessageDeduplicationId": "content-hash", "SentTimestamp": "1573251510774"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:rollouts.fifo", "awsRegion": REGION}]}


# ------------------------------------------------------------------ fake Kubernetes API over real HTTP

def _merge(dst: Any, patch: Any) -> Any:
    """Strategic merge for what the rollout sends: maps merge, lists of named maps merge by name."""
    if isinstance(dst, dict) and isinstance(patch, dict):
        out = dict(dst)
        for k, v in patch.items():
            out[k] = _merge(dst.get(k), v) if k in dst else copy.deepcopy(v)
        return out
    if isinstance(dst, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x
                                                                 for x in dst + patch):
        by_name = {x["name"]: x for x in dst}
        out_list = [copy.deepcopy(x) for x in dst]
        for item in patch:
            if item["name"] in by_name:
                idx = next(i for i, x in enumerate(out_list) if x["name"] == item["name"])
                out_list[idx] = _merge(out_list[idx], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    query: str
    body: Any


@dataclass
class FakeKubeApi:
    polls_to_complete: int = 2  # status reads before a new pod template is fully rolled out
    fail_rollouts: bool = False  # report ProgressDeadlineExceeded instead of completing
    bad_versions: set[str] = field(default_factory=set)  # templates of these versions never get ready
    refuse_versions: set[str] = field(default_factory=set)  # PATCHes to these versions answer HTTP 500
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _pending: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def patches(self, path: str = DEP_PATH, content_type: str = "application/strategic-merge-patch+json"
                ) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PATCH" and r.path == path
                and r.content_type == content_type]

    def _bump(self, path: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        old_template = (old or {}).get("spec", {}).get("template")
        meta = obj.setdefault("metadata", {})
        meta["generation"] = (old or {}).get("metadata", {}).get("generation", 0)
        if old is None or obj.get("spec") != old.get("spec"):
            meta["generation"] += 1
        if obj.get("kind") != "Deployment":
            return
        replicas = obj.get("spec", {}).get("replicas", 1)
        if old is None or obj["spec"].get("template") != old_template:
            self._pending[path] = self.polls_to_complete
            obj["status"] = {"observedGeneration": meta["generation"], "replicas": replicas + 1,
                             "updatedReplicas": 1, "availableReplicas": replicas}
        else:
            obj["status"] = {**obj.get("status", {}), "observedGeneration": meta["generation"]}

    def _controller_tick(self, path: str, obj: dict[str, Any]) -> None:
        if path not in self._pending:
            return
        replicas = obj["spec"].get("replicas", 1)
        if self.fail_rollouts or _template_version(obj) in self.bad_versions:
            obj["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                            "reason": "ProgressDeadlineExceeded",
                                            "message": "readiness probe failed"}]
            return
        self._pending[path] -= 1
        if self._pending[path] <= 0:
            del self._pending[path]
            obj["status"].update(replicas=replicas, updatedReplicas=replicas, availableReplicas=replicas)

    def handle(self, method: str, path: str, query: str, content_type: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(Recorded(method, path, content_type, query, body))
            current = self.objects.get(path)
            if method == "GET":
                if current is None:
                    return 404, {"kind": "Status", "reason": "NotFound"}
                self._controller_tick(path, current)
                return 200, current
            if method == "DELETE":
                if current is None:
                    return 404, {"kind": "Status", "reason": "NotFound"}
                del self.objects[path]
                return 200, {"kind": "Status", "status": "Success"}
            if method == "PATCH" and content_type == "application/apply-patch+yaml":
                new = copy.deepcopy(body)
                if current is not None and "status" in current:
                    new["status"] = current["status"]
                self._bump(path, new, current)
                self.objects[path] = new
                return 200, new
            if method == "PATCH" and content_type == "application/strategic-merge-patch+json":
                if current is None:
                    return 404, {"kind": "Status", "reason": "NotFound"}
                if _template_version(body) in self.refuse_versions:
                    return 500, {"kind": "Status", "reason": "InternalError"}
                new = _merge(current, body)
                self._bump(path, new, current)
                self.objects[path] = new
                return 200, new
            return 415, {"kind": "Status", "reason": "UnsupportedMediaType"}


def _template_version(obj: dict[str, Any]) -> str | None:
    meta = obj.get("spec", {}).get("template", {}).get("metadata", {})
    return (meta.get("annotations") or {}).get(c.VERSION_ANNOTATION)


def _serve(api: FakeKubeApi) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def _do(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, {"kind": "Status", "reason": "Unauthorized"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path, _, query = self.path.partition("?")
            ctype = self.headers.get("Content-Type", "")
            status, payload = api.handle(self.command, path, query, ctype, body)
            self._send(status, payload)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = _do  # noqa: N815 (http.server's method names)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _deployment() -> dict[str, Any]:
    """The Deployment as CDK creates it before any approval (placeholder image, no model yet)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": c.DEPLOYMENT, "namespace": c.NAMESPACE},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "ecomrec"}}, "spec": {
                "containers": [{"name": c.CONTAINER, "image": "placeholder:bootstrap",
                                "env": [{"name": "ECOMREC_MODEL_GROUP", "value": GROUP},
                                        {"name": c.MODEL_ENV_VAR, "value": "s3://bootstrap/none.tar.gz"}]}]}}}}


# ------------------------------------------------------------------ fixtures

@pytest.fixture
def kube_api() -> Iterator[tuple[FakeKubeApi, KubeClient]]:
    api = FakeKubeApi()
    server, url = _serve(api)
    client = KubeClient(url, lambda: TOKEN, timeout_s=5)
    client.apply(_deployment(), c.APPLY_FIELD_MANAGER)
    api.requests.clear()
    yield api, client
    server.shutdown()
    server.server_close()


@dataclass
class World:
    api: FakeKubeApi
    deps: h.Deps
    sm: Any
    ssm: Any
    s3: Any

    def register(self, n: int, group: str = GROUP) -> str:
        with contextlib.suppress(self.sm.exceptions.ClientError):
            self.sm.create_model_package_group(ModelPackageGroupName=group)
        arns = []
        for _ in range(n):
            listed = self.sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
            version = len(listed) + 1
            bundle_key = f"runs/exec-{group}-{version}/bundle/model.tar.gz"
            body = f"bundle {version}".encode()
            self.s3.put_object(Bucket=RUNS_BUCKET, Key=bundle_key, Body=body)
            arns.append(self.sm.create_model_package(
                ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
                CustomerMetadataProperties={c.BUNDLE_SHA256_METADATA: hashlib.sha256(body).hexdigest()},
                InferenceSpecification={"Containers": [{
                    "Image": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/ecomrec-inference:v{version}",
                    "ModelDataUrl": f"s3://{RUNS_BUCKET}/{bundle_key}"}],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"])
        return arns[-1]

    def set_status(self, arn: str, status: str, group: str = GROUP) -> dict[str, Any]:
        """Change the status in the (fake) registry and return the event SageMaker would emit.

        The package's metadata is sent again: UpdateModelPackage keeps the properties it is not given
        (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateModelPackage.html: removal is
        CustomerMetadataPropertiesToRemove), but moto 5.2.5 (moto/sagemaker/models.py, update_model_package)
        replaces them with the request's value, None when absent."""
        kept = self.sm.describe_model_package(ModelPackageName=arn).get("CustomerMetadataProperties") or {}
        self.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status,
                                     **({"CustomerMetadataProperties": kept} if kept else {}))
        return package_event(self.sm.describe_model_package(ModelPackageName=arn), status)

    def live(self) -> dict[str, Any]:
        return json.loads(self.ssm.get_parameter(Name=LIVE_PARAM)["Parameter"]["Value"])

    def served_uri(self) -> str:
        ct = self.api.objects[DEP_PATH]["spec"]["template"]["spec"]["containers"][0]
        return next(e["value"] for e in ct["env"] if e["name"] == c.MODEL_ENV_VAR)

    def deployed(self) -> tuple[str, str, str]:
        """(version annotation of the Deployment, of its pod template, container image)."""
        dep = self.api.objects[DEP_PATH]
        return (dep["metadata"]["annotations"][c.VERSION_ANNOTATION],
                dep["spec"]["template"]["metadata"]["annotations"][c.VERSION_ANNOTATION],
                dep["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.fixture
def world(kube_api: tuple[FakeKubeApi, KubeClient], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    api, kube = kube_api
    with mock_aws():
        sm, ssm = boto3.client("sagemaker", region_name=REGION), boto3.client("ssm", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (RUNS_BUCKET, MODELS_BUCKET):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        # The events stack seeds the parameter with this placeholder.
        ssm.put_parameter(Name=LIVE_PARAM, Value="{}", Type="String")
        sleeps: list[float] = []
        deps = h.Deps(sagemaker=sm, ssm=ssm, kube=kube, group=GROUP, live_parameter=LIVE_PARAM,
                      s3=s3, models_bucket=MODELS_BUCKET, poll_s=0.01, sleep=sleeps.append)
        yield World(api, deps, sm, ssm, s3)


def uri(version: int) -> str:
    """The promoted copy the pods load (models bucket), not the run output the package points at."""
    return f"s3://{MODELS_BUCKET}/{GROUP}/{version}/model.tar.gz"


# ------------------------------------------------------------------ tests

def test_approve_patches_deployment_with_the_new_model_and_records_it(world: World) -> None:
    arn = world.register(1)
    out = h.process(world.set_status(arn, "Approved"), world.deps)

    assert out.action == "deployed"
    assert out.version == 1
    [patch] = world.api.patches()
    assert "fieldManager=ecomrec-rollout" in patch.query
    ct = patch.body["spec"]["template"]["spec"]["containers"][0]
    assert ct["name"] == c.CONTAINER
    assert ct["env"] == [{"name": c.MODEL_ENV_VAR, "value": uri(1)},
                         {"name": c.MODEL_SHA256_ENV_VAR, "value": hashlib.sha256(b"bundle 1").hexdigest()}]
    assert ct["image"].endswith("ecomrec-inference:v1")
    assert patch.body["spec"]["template"]["metadata"]["annotations"][c.VERSION_ANNOTATION] == "1"
    # The fake controller needed status reads before the rollout completed: the function waited.
    gets = [r for r in world.api.requests if r.method == "GET" and r.path == DEP_PATH]
    assert len(gets) >= world.api.polls_to_complete
    assert world.served_uri() == uri(1)
    promoted = world.s3.get_object(Bucket=MODELS_BUCKET, Key=f"{GROUP}/1/model.tar.gz")["Body"].read()
    assert promoted == b"bundle 1"
    # Other env vars of the container survive the patch (strategic merge by name).
    env = world.api.objects[DEP_PATH]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ECOMREC_MODEL_GROUP", "value": GROUP} in env
    assert world.live()["live"]["version"] == 1
    assert world.live()["previous"] == []


def test_duplicate_approved_event_does_not_roll_out_again(world: World) -> None:
    arn = world.register(1)
    event = world.set_status(arn, "Approved")
    h.process(event, world.deps)
    out = h.process(event, world.deps)  # EventBridge delivers at least once

    assert out.action == "already_live"
    assert len(world.api.patches()) == 1


def test_second_approval_keeps_the_first_for_rollback(world: World) -> None:
    first = world.register(1)
    h.process(world.set_status(first, "Approved"), world.deps)
    second = world.register(1)
    h.process(world.set_status(second, "Approved"), world.deps)

    assert world.served_uri() == uri(2)
    state = world.live()
    assert state["live"]["version"] == 2
    assert [r["version"] for r in state["previous"]] == [1]


def test_rejecting_the_live_version_redeploys_the_previous_approved_one(world: World) -> None:
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    v2 = world.register(1)
    h.process(world.set_status(v2, "Approved"), world.deps)

    out = h.process(world.set_status(v2, "Rejected"), world.deps)

    assert out.action == "rolled_back"
    assert out.version == 1
    last = world.api.patches()[-1].body
    assert last["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == uri(1)
    assert last["spec"]["template"]["metadata"]["annotations"][c.VERSION_ANNOTATION] == "1"
    assert world.served_uri() == uri(1)
    assert world.live() == {"live": world.live()["live"], "previous": []}
    assert world.live()["live"]["version"] == 1
    # The same Rejected event again: version 2 is no longer live, nothing is patched.
    _rejected_again_patches_nothing(world, v2)


def _rejected_again_patches_nothing(world: World, version: str) -> None:
    """EventBridge delivers at least once: a repeated Rejected event must be a no-op."""
    n = len(world.api.patches())
    assert h.process(world.set_status(version, "Rejected"), world.deps).action == "ignored"
    assert len(world.api.patches()) == n


def test_rollback_skips_versions_rejected_since(world: World) -> None:
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    v2 = world.register(1)
    h.process(world.set_status(v2, "Approved"), world.deps)
    v3 = world.register(1)
    h.process(world.set_status(v3, "Approved"), world.deps)
    # v2 is rejected in the registry while v3 is live: it must never come back.
    assert h.process(world.set_status(v2, "Rejected"), world.deps).action == "forgotten"

    out = h.process(world.set_status(v3, "Rejected"), world.deps)

    assert (out.action, out.version) == ("rolled_back", 1)
    assert world.served_uri() == uri(1)


def test_rejecting_the_only_version_fails_loudly_and_keeps_serving(world: World) -> None:
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    with pytest.raises(RolloutError, match="no earlier approved version"):
        h.process(world.set_status(v1, "Rejected"), world.deps)
    assert world.served_uri() == uri(1)
    assert len(world.api.patches()) == 1


def test_foreign_group_and_unapproved_packages_are_ignored_with_a_log_line(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    other = world.register(1, group="someone-else")
    caplog.set_level("INFO", logger=h.__name__)
    out = h.process(world.set_status(other, "Approved", group="someone-else"), world.deps)
    assert out.action == "ignored"
    assert "someone-else" in caplog.text

    pending = world.register(1)
    event = world.set_status(pending, "PendingManualApproval")
    assert h.process(event, world.deps).action == "ignored"
    assert "PendingManualApproval" in caplog.text
    # An "Approved" event for a package the registry no longer calls Approved (late delivery).
    late = world.set_status(pending, "Approved")
    world.sm.update_model_package(ModelPackageArn=pending, ModelApprovalStatus="Rejected")
    assert h.process(late, world.deps).action == "ignored"

    assert world.api.patches() == []
    assert world.live() == {}


def test_failed_rollout_raises_and_does_not_record_the_version(world: World) -> None:
    world.api.fail_rollouts = True
    arn = world.register(1)
    with pytest.raises(RolloutError, match="progress deadline exceeded"):
        h.process(world.set_status(arn, "Approved"), world.deps)
    state = world.live()
    assert (state["live"], state["previous"]) == (None, [])
    # Nothing was live before the first approval: nothing to patch back to, and the record says so.
    assert state["failed"]["version"] == 1
    assert state["failed"]["restored"] is None
    assert len(world.api.patches()) == 1


def test_slow_but_healthy_rollout_is_not_undone_and_the_retry_resumes_it(world: World) -> None:
    """The function's wait runs out while the Deployment still progresses (Kubernetes has not said
    ProgressDeadlineExceeded): no patch back, nothing recorded as failed, an error that makes the queue
    redeliver the event; the redelivered event finds the same template in and waits until it completes."""
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    world.api.polls_to_complete = 10**6
    clock = iter(range(0, 10**6, 100))
    world.deps.clock = lambda: float(next(clock))
    world.deps.timeout_s = 300
    v2 = world.register(1)
    event = world.set_status(v2, "Approved")
    with pytest.raises(StillProgressingError, match="not complete after 300s"):
        h.process(event, world.deps)
    assert world.served_uri() == uri(2)  # left rolling forward, not patched back
    assert len(world.api.patches()) == 2
    assert world.live()["live"]["version"] == 1
    assert "failed" not in world.live()

    world.api._pending[DEP_PATH] = 1  # the controller finishes the rollout meanwhile
    assert h.process(event, world.deps).action == "deployed"
    assert world.live()["live"]["version"] == 2
    assert world.served_uri() == uri(2)


# Fakes in the tests below: moto for SageMaker/SSM/S3 and FakeKubeApi (the local fake Kubernetes API
# server above) playing the Deployment controller; the rollout package and its HTTP client are real.

def test_failed_rollout_is_patched_back_to_the_live_version_recorded_and_still_fails(world: World) -> None:
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    world.api.bad_versions = {"2"}  # version 2's pods never get ready: the deadline passes
    v2 = world.register(1)

    with pytest.raises(RolloutError, match=r"progress deadline exceeded.*restore: complete"):
        h.process(world.set_status(v2, "Approved"), world.deps)

    # The Deployment is back on version 1 (model, image, annotations), not left on the failed version.
    assert world.served_uri() == uri(1)
    assert world.deployed()[:2] == ("1", "1")
    assert world.deployed()[2].endswith(":v1")
    restore_patch = world.api.patches()[-1]
    assert "fieldManager=ecomrec-rollout" in restore_patch.query
    assert restore_patch.body["spec"]["template"]["metadata"]["annotations"][c.VERSION_ANNOTATION] == "1"
    # ... and the function waited for the restore to complete (status reads after that patch).
    after = world.api.requests[world.api.requests.index(restore_patch) + 1:]
    assert [r for r in after if r.method == "GET" and r.path == DEP_PATH]
    # The record: version 1 still live, history untouched, the failure and the restore written down.
    state = world.live()
    assert state["live"]["version"] == 1
    assert state["previous"] == []
    assert state["failed"]["version"] == 2
    assert state["failed"]["restored"] == 1
    assert state["failed"]["restore"] == "complete"
    assert "progress deadline exceeded" in state["failed"]["reason"]

    # Version 3 is fine: it goes live, and the record forgets the old failure.
    v3 = world.register(1)
    assert h.process(world.set_status(v3, "Approved"), world.deps).action == "deployed"
    assert "failed" not in world.live()
    assert [r["version"] for r in world.live()["previous"]] == [1]


def test_rollout_wait_leaves_time_to_restore_before_the_function_is_stopped(world: World) -> None:
    """The Lambda context says 120 s remain (e.g. a slow promotion came first): the wait for the new
    version is cut to 120 - 45 (restore) - 10 (record) s; when Kubernetes fails the new version, the
    restore still happens within the 45 s and is recorded."""
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    world.api.polls_to_complete = 10**6  # neither the new version nor the restore completes
    clock = iter(range(0, 10**6, 5))
    world.deps.clock = lambda: float(next(clock))
    world.deps.remaining_s = lambda: 120.0
    v2 = world.register(1)
    with pytest.raises(StillProgressingError, match="not complete after 65s"):
        h.process(world.set_status(v2, "Approved"), world.deps)

    world.api.bad_versions = {"2"}  # now Kubernetes gives up on it: ProgressDeadlineExceeded
    with pytest.raises(RolloutError, match="progress deadline exceeded"):
        h.process(world.set_status(v2, "Approved"), world.deps)

    assert world.served_uri() == uri(1)  # the patch back went in
    failed = world.live()["failed"]
    assert (failed["version"], failed["restored"]) == (2, 1)
    assert failed["restore"].startswith("patched back to version 1, not complete yet")
    assert "not complete after 45s" in failed["restore"]


def test_rejecting_the_version_a_failed_rollout_left_on_the_deployment_moves_it_back(world: World) -> None:
    """The restore itself can fail (API error; or the function is cut off mid-rollout): the Deployment
    keeps the failed version although the record says otherwise. Rejecting that version is the way out."""
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    world.api.bad_versions = {"2"}
    world.api.refuse_versions = {"1"}  # the patch back to version 1 answers HTTP 500
    v2 = world.register(1)
    with pytest.raises(RolloutError, match="restore: patch back failed"):
        h.process(world.set_status(v2, "Approved"), world.deps)
    assert world.served_uri() == uri(2)  # stuck on the failed version
    assert world.live()["live"]["version"] == 1
    assert world.live()["failed"]["restore"].startswith("patch back failed")
    world.api.refuse_versions = set()

    out = h.process(world.set_status(v2, "Rejected"), world.deps)

    assert (out.action, out.version) == ("rolled_back", 1)
    assert world.served_uri() == uri(1)
    assert world.deployed()[:2] == ("1", "1")
    assert world.live()["live"]["version"] == 1
    assert "failed" not in world.live()
    # Rejected again (at-least-once delivery): the Deployment no longer runs it, nothing is patched.
    _rejected_again_patches_nothing(world, v2)


def test_rejecting_a_version_that_is_neither_live_nor_deployed_patches_nothing(world: World) -> None:
    v1 = world.register(1)
    h.process(world.set_status(v1, "Approved"), world.deps)
    pending = world.register(1)  # version 2: registered, never approved, never deployed
    n = len(world.api.patches())
    assert h.process(world.set_status(pending, "Rejected"), world.deps).action == "ignored"
    assert len(world.api.patches()) == n
    assert world.served_uri() == uri(1)


def test_approving_a_version_whose_run_output_expired_fails_clearly_and_patches_nothing(world: World) -> None:
    """moto S3: the processed bucket's lifecycle rule expires run outputs, bundles included."""
    arn = world.register(1)
    world.s3.delete_object(Bucket=RUNS_BUCKET, Key=f"runs/exec-{GROUP}-1/bundle/model.tar.gz")
    with pytest.raises(RolloutError, match="no longer in the run outputs"):
        h.process(world.set_status(arn, "Approved"), world.deps)
    assert world.api.patches() == []
    assert world.live() == {}


def test_wrong_token_is_rejected_by_the_api(kube_api: tuple[FakeKubeApi, KubeClient]) -> None:
    _, good = kube_api
    bad = KubeClient(good.server, lambda: "k8s-aws-v1.wrong")
    with pytest.raises(KubeApiError, match="401"):
        bad.get(DEP_PATH)


# ------------------------------------------------------------------ the manifests custom resource

def _cr_event(request_type: str, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return {"RequestType": request_type, "ResourceProperties": {"Manifests": json.dumps(manifests)}}


def test_reapplying_manifests_keeps_the_rolled_out_model(world: World) -> None:
    """A `cdk deploy` after an approval must not put the placeholder model back."""
    arn = world.register(1)
    h.process(world.set_status(arn, "Approved"), world.deps)
    desired = _deployment()
    desired["spec"]["replicas"] = 4  # an infrastructure change that should land

    h.on_custom_resource(_cr_event("Update", [desired]), world.deps.kube)

    applied = world.api.patches(content_type="application/apply-patch+yaml")[-1]
    assert "fieldManager=ecomrec-cdk" in applied.query
    assert "force=true" in applied.query
    live = world.api.objects[DEP_PATH]
    assert live["spec"]["replicas"] == 4
    assert world.served_uri() == uri(1)
    assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1")
    assert live["metadata"]["annotations"][c.VERSION_ANNOTATION] == "1"


def test_manifests_create_in_order_and_delete_in_reverse(kube_api: tuple[FakeKubeApi, KubeClient]) -> None:
    api, kube = kube_api
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"ports": [{"port": 80}]}}
    h.on_custom_resource(_cr_event("Create", [ns, svc]), kube)
    assert [r.path for r in api.requests if r.method == "PATCH"] == [
        "/api/v1/namespaces/shop", "/api/v1/namespaces/shop/services/web"]

    api.requests.clear()
    out = h.on_custom_resource(_cr_event("Delete", [ns, svc]), kube)
    assert [r.path for r in api.requests if r.method == "DELETE"] == [
        "/api/v1/namespaces/shop/services/web", "/api/v1/namespaces/shop"]
    assert out["PhysicalResourceId"].startswith("ecomrec-manifests")
    # Deleting again (CloudFormation retries) finds nothing and does not fail.
    h.on_custom_resource(_cr_event("Delete", [ns, svc]), kube)


# ------------------------------------------------------------------ never backwards: order and duplicates


def test_doc_example_event_is_parsed() -> None:
    """The documentation's example event itself (a Rejected of another group) parses field by field."""
    from ecomrec_rollout import logic

    parsed = logic.parse_event(DOC_EVENT)
    assert parsed == logic.PackageEvent(group="versionedmp-p-idy6c3e1fiqj", version=2,
                                        arn=DOC_EVENT["detail"]["ModelPackageArn"], status="Rejected")


def test_approvals_delivered_out_of_order_never_roll_back(world: World) -> None:
    """v1 and v2 approved; EventBridge delivers v2's event first. v1's event, arriving after, is recorded for
    rollback (its bundle promoted) and does not replace v2: one rollout in all."""
    v1 = world.register(1)
    e1 = world.set_status(v1, "Approved")
    v2 = world.register(1)
    e2 = world.set_status(v2, "Approved")

    assert h.process(e2, world.deps).action == "deployed"
    out = h.process(e1, world.deps)

    assert (out.action, out.version) == ("recorded", 1)
    assert len(world.api.patches()) == 1
    assert world.deployed()[0] == "2"
    state = world.live()
    assert state["live"]["version"] == 2
    assert [r["version"] for r in state["previous"]] == [1]
    assert state["previous"][0]["model_data_url"] == uri(1)  # promoted: a rollback can use it
    assert world.s3.get_object(Bucket=MODELS_BUCKET, Key=f"{GROUP}/1/model.tar.gz")["Body"].read() == b"bundle 1"
    # And rejecting v2 now goes back to v1, the recorded candidate.
    assert h.process(world.set_status(v2, "Rejected"), world.deps).version == 1
    assert world.deployed()[0] == "1"


def test_late_duplicate_of_an_older_approval_does_not_redeploy_it(world: World) -> None:
    """The issue's probe: v1 live, then v2 live; a late (redelivered) Approved for v1 arrives. v2 stays."""
    v1 = world.register(1)
    e1 = world.set_status(v1, "Approved")
    h.process(e1, world.deps)
    v2 = world.register(1)
    h.process(world.set_status(v2, "Approved"), world.deps)
    patches = len(world.api.patches())
    before = world.live()

    out = h.process(json.loads(sqs_record(e1)["Records"][0]["body"]), world.deps)  # through the queue's body

    assert out.action == "ignored"
    assert "already recorded" in out.detail
    assert len(world.api.patches()) == patches
    assert world.live() == before
    assert world.deployed()[0] == "2"


def test_duplicate_approvals_through_the_queue_roll_out_once(world: World) -> None:
    """At-least-once delivery: the same event twice in a row (two SQS messages, as after a dedup window)."""
    arn = world.register(1)
    event = world.set_status(arn, "Approved")
    outs = [h.process(e, world.deps) for e in h.events_of(sqs_record(event)) + h.events_of(sqs_record(event))]

    assert [o.action for o in outs] == ["deployed", "already_live"]
    assert len(world.api.patches()) == 1


def test_older_approval_goes_live_when_the_live_version_is_rejected_meanwhile(world: World) -> None:
    """v2 live and then rejected in the registry, its Rejected event not handled yet; an Approved for v1
    arrives: the newest approved version is v1, so it goes live (nothing newer is approved)."""
    v1 = world.register(1)
    v2 = world.register(1)
    e1 = world.set_status(v1, "Approved")
    h.process(world.set_status(v2, "Approved"), world.deps)
    world.sm.update_model_package(ModelPackageArn=v2, ModelApprovalStatus="Rejected")

    out = h.process(e1, world.deps)

    assert (out.action, out.version) == ("deployed", 1)
    assert world.deployed()[0] == "1"
    assert world.live()["live"]["version"] == 1
    assert [r["version"] for r in world.live()["previous"]] == []  # the rejected v2 is not a candidate


def test_sqs_record_without_an_event_body_fails_clearly() -> None:
    with pytest.raises(RolloutError, match="body is not an event"):
        h.events_of({"Records": [{"messageId": "m-1", "body": "not json"}]})


# ------------------------------------------------------------------ the alarms' load balancer


def test_manifests_resource_returns_the_real_load_balancer_dimension(
        kube_api: tuple[FakeKubeApi, KubeClient], monkeypatch: pytest.MonkeyPatch) -> None:
    """After applying the manifests the custom resource waits for the ALB the Ingress makes the controller
    create and returns its CloudWatch dimension (app/<name>/<id>, from the real ARN: moto's ELBv2), which the
    monitoring stack's alarms use. Before the ALB exists it waits; it never returns a placeholder."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    _, kube = kube_api
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        elbv2 = boto3.client("elbv2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")
                   ["Subnet"]["SubnetId"] for i, z in enumerate("ab")]
        created: list[str] = []

        def controller_creates_it(_: float) -> None:  # the "sleep" during which the ALB appears
            if not created:
                lb = elbv2.create_load_balancer(Name="ecomrec-inference", Subnets=subnets, Type="application")
                created.append(lb["LoadBalancers"][0]["LoadBalancerArn"])

        dimension = h.load_balancer_dimension(elbv2, "ecomrec-inference", wait_s=60, sleep=controller_creates_it)
        assert created and dimension == created[0].split(":loadbalancer/")[1]
        assert re.fullmatch(r"app/ecomrec-inference/[0-9a-f]+", dimension)

        event = {"RequestType": "Create", "ResourceProperties": {
            "Manifests": json.dumps([_deployment()]), "LoadBalancerName": "ecomrec-inference"}}
        out = h.on_custom_resource(event, kube, elbv2)
        assert out["Data"] == {"AlbFullName": dimension}

        with pytest.raises(RolloutError, match="not created after 0s"):
            h.load_balancer_dimension(elbv2, "no-such-alb", wait_s=0, sleep=lambda _: None)
