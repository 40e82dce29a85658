"""Pure rollout rules (no clients) and the EKS token format. No fakes: plain functions and botocore's own
request signer with static test credentials (signing is local; nothing is sent)."""

from __future__ import annotations

import base64
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cdk" / "rollout"))

from ecomrec_rollout import constants as c
from ecomrec_rollout import logic
from ecomrec_rollout.kube import eks_token_provider, object_path

R1 = logic.Release(1, "arn:aws:sagemaker:eu-west-1:1:model-package/ecomrec/1", "s3://m/ecomrec/1/model.tar.gz", "img:1")
R2 = logic.Release(2, "arn:aws:sagemaker:eu-west-1:1:model-package/ecomrec/2", "s3://m/ecomrec/2/model.tar.gz", "img:2")


def event(status: str, version: int = 2, group: str = "ecomrec") -> dict[str, Any]:
    return {"source": c.EVENT_SOURCE, "detail-type": c.EVENT_DETAIL_TYPE,
            "detail": {"ModelPackageGroupName": group, "ModelPackageVersion": version,
                       "ModelPackageArn": f"arn:aws:sagemaker:eu-west-1:1:model-package/{group}/{version}",
                       "ModelApprovalStatus": status}}


def describe(version: int, status: str = "Approved") -> dict[str, Any]:
    return {"ModelPackageVersion": version, "ModelApprovalStatus": status,
            "ModelPackageArn": f"arn:aws:sagemaker:eu-west-1:1:model-package/ecomrec/{version}",
            "InferenceSpecification": {"Containers": [{"Image": f"img:{version}",
                                                       "ModelDataUrl": f"s3://runs/x/{version}/model.tar.gz"}]},
            "CustomerMetadataProperties": {c.BUNDLE_SHA256_METADATA: f"{version:064x}"}}


def test_parse_event_rejects_other_events() -> None:
    assert logic.parse_event({"source": "aws.s3", "detail-type": "x", "detail": {}}) is None
    assert logic.parse_event({"source": c.EVENT_SOURCE, "detail-type": c.EVENT_DETAIL_TYPE, "detail": {}}) is None
    parsed = logic.parse_event(event("Approved", 7))
    assert parsed is not None
    assert (parsed.group, parsed.version, parsed.status) == ("ecomrec", 7, "Approved")


def test_live_state_round_trips_and_tolerates_the_seed() -> None:
    state = logic.LiveState(live=R2, previous=[R1])
    assert logic.LiveState.from_json(state.to_json()) == state
    assert logic.LiveState.from_json("{}") == logic.LiveState()
    with pytest.raises(logic.RolloutError, match="not JSON"):
        logic.LiveState.from_json("{broken")


def test_approve_deploys_and_pushes_the_live_version_into_history() -> None:
    parsed = logic.parse_event(event("Approved", 2))
    assert parsed is not None
    decision = logic.decide(parsed, "ecomrec", logic.LiveState(live=R1), describe(2))
    assert isinstance(decision, logic.Deploy)
    assert decision.release.model_data_url == "s3://runs/x/2/model.tar.gz"
    assert decision.new_state.previous == [R1]
    again = logic.decide(parsed, "ecomrec", logic.LiveState(live=decision.release), describe(2))
    assert isinstance(again, logic.AlreadyLive)


def test_history_is_bounded() -> None:
    history = [logic.Release(v, f"arn/{v}", f"s3://m/{v}", "") for v in range(20, 0, -1)]
    parsed = logic.parse_event(event("Approved", 30))
    assert parsed is not None
    decision = logic.decide(parsed, "ecomrec", logic.LiveState(live=history[0], previous=history[1:]), describe(30))
    assert isinstance(decision, logic.Deploy)
    assert len(decision.new_state.previous) == logic.MAX_HISTORY
    assert decision.new_state.previous[0].version == 20


def test_rollback_picks_the_newest_still_approved_version() -> None:
    r3 = logic.Release(3, "arn/3", "s3://m/3", "img:3")
    target, state = logic.plan_rollback(r3.version, [R2, R1], still_approved=lambda r: r.version == 1)
    assert target == R1
    assert state == logic.LiveState(live=R1, previous=[])
    with pytest.raises(logic.RolloutError, match="no earlier approved version"):
        logic.plan_rollback(r3.version, [R2], still_approved=lambda r: False)


def test_rejected_version_the_deployment_runs_rolls_back_to_the_live_one() -> None:
    """A failed rollout that was not restored leaves the Deployment on a version the record does not
    call live; rejecting it targets the recorded live version first, then the history."""
    parsed = logic.parse_event(event("Rejected", 3))
    assert parsed is not None
    r0 = logic.Release(0, "arn/0", "s3://m/0", "img:0")
    state = logic.LiveState(live=R1, previous=[r0])
    decision = logic.decide(parsed, "ecomrec", state, None, deployed=3)
    assert isinstance(decision, logic.Rollback)
    assert (decision.rejected, decision.candidates) == (3, [R1, r0])
    target, after = logic.plan_rollback(decision.rejected, decision.candidates, still_approved=lambda r: True)
    assert (target, after) == (R1, logic.LiveState(live=R1, previous=[r0]))
    # The same event while the Deployment runs something else: not a rollback trigger.
    assert isinstance(logic.decide(parsed, "ecomrec", state, None, deployed=1), logic.Ignore)
    assert isinstance(logic.decide(parsed, "ecomrec", state, None, deployed=None), logic.Ignore)
    # The live version rejected: rollback to the history, whatever the annotation says.
    live_rejected = logic.decide(logic.PackageEvent("ecomrec", 1, "arn/1", "Rejected"), "ecomrec", state, None)
    assert isinstance(live_rejected, logic.Rollback)
    assert live_rejected.candidates == [r0]


def test_deployed_version_reads_the_version_annotation() -> None:
    patched = logic.deployment_patch(R2)
    assert logic.deployed_version(patched) == 2
    template_only = {"spec": patched["spec"]}
    assert logic.deployed_version(template_only) == 2
    assert logic.deployed_version({"metadata": {"name": "d"}}) is None
    assert logic.deployed_version(None) is None
    assert logic.deployed_version({"metadata": {"annotations": {c.VERSION_ANNOTATION: "x"}}}) is None


def test_live_state_records_a_failed_rollout_only_when_there_is_one() -> None:
    failed = logic.FailedRollout(2, "progress deadline exceeded", 1, "complete")
    state = logic.LiveState(live=R1, failed=failed)
    assert logic.LiveState.from_json(state.to_json()) == state
    assert "failed" not in json.loads(logic.LiveState(live=R1).to_json())


def test_patch_sets_image_model_and_version_annotation() -> None:
    patch = logic.deployment_patch(R2)
    [container] = patch["spec"]["template"]["spec"]["containers"]
    assert container == {"name": c.CONTAINER, "image": "img:2",
                         "env": [{"name": c.MODEL_ENV_VAR, "value": R2.model_data_url},
                                 {"name": c.MODEL_SHA256_ENV_VAR, "value": ""}]}
    assert patch["spec"]["template"]["metadata"]["annotations"][c.VERSION_ANNOTATION] == "2"
    no_image = logic.deployment_patch(logic.Release(3, "arn/3", "s3://m/3", ""))
    assert "image" not in no_image["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("status", "expected"), [
    ({"observedGeneration": 1}, "progressing"),
    ({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}, "progressing"),
    ({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}, "progressing"),
    ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}, "progressing"),
    ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}, "done"),
    ({"observedGeneration": 2, "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]},
     "failed"),
])
def test_rollout_status_follows_kubectl_rollout_status(status: dict[str, Any], expected: str) -> None:
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status}
    assert logic.rollout_status(deployment)[0] == expected


def test_reapply_keeps_the_rolled_out_model_but_takes_other_changes() -> None:
    desired = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 5, "template": {"spec": {
        "containers": [{"name": c.CONTAINER, "image": "placeholder", "env": [
            {"name": c.MODEL_ENV_VAR, "value": ""}, {"name": "OTHER", "value": "new"}]}]}}}}
    live = {"metadata": {"annotations": {c.VERSION_ANNOTATION: "2", "unrelated": "x"}},
            "spec": {"replicas": 3, "template": {"metadata": {"annotations": {c.VERSION_ANNOTATION: "2"}}, "spec": {
                "containers": [{"name": c.CONTAINER, "image": "img:2", "env": [
                    {"name": c.MODEL_ENV_VAR, "value": R2.model_data_url}, {"name": "OTHER", "value": "old"}]}]}}}}
    out = logic.preserve_rollout_fields(desired, live)
    ct = out["spec"]["template"]["spec"]["containers"][0]
    assert ct["image"] == "img:2"
    assert {"name": c.MODEL_ENV_VAR, "value": R2.model_data_url} in ct["env"]
    assert {"name": "OTHER", "value": "new"} in ct["env"]
    assert out["spec"]["replicas"] == 5
    assert out["metadata"]["annotations"] == {c.VERSION_ANNOTATION: "2"}
    assert logic.preserve_rollout_fields(desired, None) is desired


def test_promotion_target_is_per_group_and_version() -> None:
    assert logic.promotion_target(R2, "models-bucket", "ecomrec") == "s3://models-bucket/ecomrec/2/model.tar.gz"
    assert logic.split_s3_uri("s3://b/k/x.tar.gz") == ("b", "k/x.tar.gz")
    with pytest.raises(logic.RolloutError, match="not an s3://"):
        logic.split_s3_uri("/local/model.tar.gz")


def test_object_paths_for_every_manifest_kind() -> None:
    assert object_path({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}) == "/api/v1/namespaces/n"
    assert object_path({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                        "metadata": {"name": "i", "namespace": "n"}}) == \
        "/apis/networking.k8s.io/v1/namespaces/n/ingresses/i"
    with pytest.raises(ValueError, match=r"not in kube\.RESOURCES"):
        object_path({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"}})


def test_eks_token_is_a_presigned_sts_call_bound_to_the_cluster() -> None:
    boto3 = pytest.importorskip("boto3")
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                    region_name="eu-west-1")
    provide = eks_token_provider("ecomrec-cluster", "eu-west-1", session=session)
    token = provide()
    assert token.startswith("k8s-aws-v1.")
    body = token.removeprefix("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    assert parsed.netloc == "sts.eu-west-1.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0]
    assert query["X-Amz-Expires"] == ["60"]
    assert provide() == token  # cached for its lifetime


def test_a_package_without_the_bundle_digest_is_not_deployed_and_the_digest_reaches_the_pods() -> None:
    """Finding 5, the rollout side: the digest registration recorded (components/registry) goes to the
    pods as ECOMREC_MODEL_SHA256, and the serving app refuses other bytes (tests/test_serving_watch.py)."""
    from components.registry.base import BUNDLE_SHA256_METADATA
    from components.serving.settings import ServingSettings

    assert c.BUNDLE_SHA256_METADATA == BUNDLE_SHA256_METADATA
    assert f"{ServingSettings.model_config['env_prefix']}MODEL_SHA256" == c.MODEL_SHA256_ENV_VAR
    parsed = logic.parse_event(event("Approved", 2))
    assert parsed is not None
    decision = logic.decide(parsed, "ecomrec", logic.LiveState(live=R1), describe(2))
    assert isinstance(decision, logic.Deploy) and decision.release.sha256 == f"{2:064x}"
    env = logic.deployment_patch(decision.release)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": c.MODEL_SHA256_ENV_VAR, "value": f"{2:064x}"} in env
    unsigned = describe(2)
    del unsigned["CustomerMetadataProperties"]
    with pytest.raises(logic.RolloutError, match="no bundle_sha256"):
        logic.decide(parsed, "ecomrec", logic.LiveState(live=R1), unsigned)
