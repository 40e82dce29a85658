"""Lambda entry points.

``handler``: an EventBridge "SageMaker Model Package State Change" for our group, delivered through the
rollout FIFO queue (one SQS record per invocation, its body the event). Approved -> copy the
bundle into the models bucket, patch the Deployment (image, model URI, version annotation), wait for the
rolling update, record the live version.
Rejected while live, or while the Deployment is patched to it (a rollout that did not complete) -> the
same with the newest other approved version. Everything else is logged and ignored. Duplicate events find
the version already live and patch nothing; an approval older than the live version is recorded for
rollback, not deployed (rollouts never go backwards).
A rollout Kubernetes gives up on (ProgressDeadlineExceeded) is undone: the Deployment is patched back to
the recorded live version, the failure is recorded next to it, and the function still fails (the message
is retried, then goes to the DLQ; alarms). One still progressing when the wait ends is left rolling: the
function fails without undoing it and the redelivered message resumes the wait.

``apply_handler``: the serving stack's custom resource that applies the Kubernetes manifests (server-side
apply through the same client), keeping the live model on every re-apply.

Clients come in through ``Deps``; ``handler`` only builds the real ones from the environment.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ecomrec_rollout import constants as c
from ecomrec_rollout import logic
from ecomrec_rollout.kube import KubeClient, deployment_path, eks_token_provider, object_path

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)


@dataclass
class Deps:
    sagemaker: Any  # boto3 SageMaker client
    ssm: Any  # boto3 SSM client
    kube: KubeClient
    group: str
    live_parameter: str
    s3: Any = None  # boto3 S3 client; with models_bucket set, approved bundles are promoted there
    models_bucket: str | None = None
    namespace: str = c.NAMESPACE
    deployment: str = c.DEPLOYMENT
    # One invocation's wait (cdk/stacks/events.py derives it: longer than the Deployment's progress deadline,
    # so Kubernetes' own failure verdict arrives within it; a rollout still progressing after it is resumed
    # by the redelivered event, never undone).
    timeout_s: float = 540.0
    # Waiting for the restore after a failed rollout. The old pods never went away (maxUnavailable 0), so
    # it normally completes in seconds; if it does not, the patch is in and Kubernetes finishes it after
    # the function has failed.
    restore_timeout_s: float = 45.0
    # Seconds until the runtime stops the function (the Lambda context's); None: no limit. The rollout
    # wait is cut so that the restore and the record still fit when it fails: promoting a large bundle
    # first can eat into the 600 s, and 540 + 45 s alone leaves little.
    remaining_s: Callable[[], float] | None = None
    poll_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = field(default=time.monotonic)


@dataclass(frozen=True)
class Outcome:
    action: str  # ignored | already_live | deployed | recorded | rolled_back | forgotten
    detail: str
    version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "detail": self.detail, "version": self.version}


def read_state(deps: Deps) -> logic.LiveState:
    try:
        value = deps.ssm.get_parameter(Name=deps.live_parameter)["Parameter"]["Value"]
    except deps.ssm.exceptions.ParameterNotFound:
        return logic.LiveState()
    return logic.LiveState.from_json(value)


def write_state(deps: Deps, state: logic.LiveState) -> None:
    deps.ssm.put_parameter(Name=deps.live_parameter, Value=state.to_json(), Type="String", Overwrite=True)


def _describe(deps: Deps, arn: str) -> dict[str, Any]:
    return dict(deps.sagemaker.describe_model_package(ModelPackageName=arn))


def promote(deps: Deps, release: logic.Release) -> logic.Release:
    """Copy the approved bundle into the models bucket (server-side, idempotent: same key per version)."""
    if not deps.models_bucket:
        return release
    target = logic.promotion_target(release, deps.models_bucket, deps.group)
    if release.model_data_url == target:
        return release
    from botocore.exceptions import ClientError  # with boto3 in the runtime; no client is created

    src_bucket, src_key = logic.split_s3_uri(release.model_data_url)
    dst_bucket, dst_key = logic.split_s3_uri(target)
    try:
        deps.s3.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key)
    except ClientError as exc:
        # Run outputs expire (the processed bucket's expire-runs rule): a version approved long after its
        # run has no bundle left to promote. Say so instead of a bare "HeadObject: Not Found".
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            raise logic.RolloutError(
                f"version {release.version}: its bundle {release.model_data_url} is no longer in the run "
                "outputs (they expire; see cdk/README.md): nothing to promote, retrain to get a new version"
            ) from exc
        raise
    log.info("promoted %s -> %s", release.model_data_url, target)
    return replace(release, model_data_url=target)


RESERVE_S = 10.0  # for the SSM record and the error after the last wait


def _budget(deps: Deps, wanted: float, keep: float) -> float:
    """``wanted`` seconds, or fewer so that ``keep`` seconds remain before the function is stopped."""
    if deps.remaining_s is None:
        return wanted
    return max(0.0, min(wanted, deps.remaining_s() - keep))


def roll_out(deps: Deps, release: logic.Release, timeout_s: float | None = None) -> None:
    """Patch the Deployment and wait until every replica runs the new pod template and is available."""
    timeout_s = deps.timeout_s if timeout_s is None else timeout_s
    patch = logic.deployment_patch(release)
    deps.kube.patch_deployment(deps.namespace, deps.deployment, patch, c.ROLLOUT_FIELD_MANAGER)
    log.info("patched %s/%s to version %d (%s)", deps.namespace, deps.deployment, release.version,
             release.model_data_url)
    deadline = deps.clock() + timeout_s
    path = deployment_path(deps.namespace, deps.deployment)
    while True:
        current = deps.kube.get(path)
        if current is None:
            raise logic.RolloutError(f"Deployment {deps.namespace}/{deps.deployment} disappeared mid-rollout")
        status, why = logic.rollout_status(current)
        if status == "done":
            log.info("rollout of version %d complete: %s", release.version, why)
            return
        if status == "failed":
            raise logic.RolloutError(f"rollout of version {release.version} failed: {why}")
        if deps.clock() >= deadline:
            raise logic.StillProgressingError(
                f"rollout of version {release.version} not complete after {timeout_s:.0f}s: {why}; "
                "old pods keep serving (maxUnavailable 0); still progressing, the retry waits on")
        log.info("waiting for rollout of version %d: %s", release.version, why)
        deps.sleep(deps.poll_s)


def restore(deps: Deps, failed: logic.Release, live: logic.Release | None, why: str) -> logic.FailedRollout:
    """Patch the Deployment back to ``live`` after ``failed`` did not roll out, and say how that went.

    Without this the Deployment stays patched to the failed version: its new pods never get ready, the
    next infrastructure deploy carries the failed template over (preserve_rollout_fields), and nothing in
    the record says the cluster and the record disagree.
    """
    if live is None:
        return logic.FailedRollout(failed.version, why, None, "nothing to restore: no version was live before")
    if live.version == failed.version:
        return logic.FailedRollout(failed.version, why, None, "nothing to restore: it is the live version")
    log.error("rollout of version %d failed (%s): restoring live version %d", failed.version, why, live.version)
    try:
        roll_out(deps, live, timeout_s=_budget(deps, deps.restore_timeout_s, RESERVE_S))
    except logic.RolloutError as exc:
        return logic.FailedRollout(failed.version, why, live.version,
                                   f"patched back to version {live.version}, not complete yet: {exc}")
    except Exception as exc:  # API or network error: the rollout failure is what gets raised
        log.exception("restoring version %d failed", live.version)
        return logic.FailedRollout(failed.version, why, live.version, f"patch back failed: {exc}")
    return logic.FailedRollout(failed.version, why, live.version, "complete")


def roll_out_or_restore(deps: Deps, release: logic.Release, state: logic.LiveState) -> None:
    """roll_out, and when it fails: restore the recorded live version, record the failure, raise.

    The raise keeps the failure visible (function errors, retries, then the DLQ, all alarmed); the live
    record is unchanged apart from ``failed``, because the live version is what the pods serve.
    Only RolloutError (deadline, pods not ready, Deployment gone) restores: an API error while waiting says
    nothing about the new version, and the retry picks up the rollout where it stands.
    """
    try:
        roll_out(deps, release, timeout_s=_budget(deps, deps.timeout_s, deps.restore_timeout_s + RESERVE_S))
    except logic.StillProgressingError:
        raise  # slow but healthy: the redelivered event resumes the wait; nothing to undo
    except logic.RolloutError as exc:
        failure = restore(deps, release, state.live, str(exc))
        try:
            write_state(deps, replace(state, failed=failure))
        except Exception:  # the rollout failure must be what the function raises, not this
            log.exception("could not record the failed rollout of version %d", release.version)
        raise logic.RolloutError(f"{exc}; restore: {failure.restore}") from exc


def process(event: dict[str, Any], deps: Deps) -> Outcome:
    parsed = logic.parse_event(event)
    if parsed is None:
        log.warning("ignored: not a model package state change: %s", json.dumps(event)[:300])
        return Outcome("ignored", "not a model package state change")
    state = read_state(deps)
    description = None
    deployed = None
    live_status = None
    if parsed.group == deps.group and parsed.status == c.APPROVED:
        description = _describe(deps, parsed.arn)
        older = int(description.get("ModelPackageVersion", parsed.version)) < (state.live.version if state.live else 0)
        if older and state.live is not None:
            # An older approval goes live only over a live version the registry no longer approves.
            live_status = str(_describe(deps, state.live.arn).get("ModelApprovalStatus"))
    if parsed.group == deps.group and parsed.status == c.REJECTED:
        # What the Deployment is patched to can differ from the record after a rollout that failed and
        # could not be restored; rejecting that version must still move the Deployment off it.
        deployed = logic.deployed_version(deps.kube.get(deployment_path(deps.namespace, deps.deployment)))
    decision = logic.decide(parsed, deps.group, state, description, deployed, live_status)

    if isinstance(decision, logic.Ignore):
        log.info("ignored: %s", decision.reason)
        return Outcome("ignored", decision.reason, parsed.version)
    if isinstance(decision, logic.AlreadyLive):
        log.info("version %d is already live: nothing to patch (duplicate event)", decision.release.version)
        return Outcome("already_live", "duplicate event", decision.release.version)
    if isinstance(decision, logic.Forget):
        write_state(deps, decision.new_state)
        log.info("version %d rejected; removed from the rollback history", decision.version)
        return Outcome("forgotten", "rejected version is not live", decision.version)
    if isinstance(decision, logic.Record):
        # Promoted now, like a deployed version: a rollback to it months later must find its bundle.
        release = promote(deps, decision.release)
        kept = [release if r.version == release.version else r for r in decision.new_state.previous]
        write_state(deps, replace(decision.new_state, previous=kept))
        log.info("%s", decision.reason)
        return Outcome("recorded", decision.reason, release.version)
    if isinstance(decision, logic.Deploy):
        release = promote(deps, decision.release)
        roll_out_or_restore(deps, release, state)
        write_state(deps, logic.LiveState(live=release, previous=decision.new_state.previous))
        return Outcome("deployed", decision.reason, release.version)

    # Rollback: the newest candidate the registry still calls Approved.
    def still_approved(release: logic.Release) -> bool:
        return bool(_describe(deps, release.arn).get("ModelApprovalStatus") == c.APPROVED)

    target, new_state = logic.plan_rollback(decision.rejected, decision.candidates, still_approved)
    log.warning("%s: rolling back to version %d", decision.reason, target.version)
    roll_out_or_restore(deps, target, state)
    write_state(deps, new_state)
    return Outcome("rolled_back", f"version {decision.rejected} rejected", target.version)


def _kube_from_env() -> KubeClient:
    region = os.environ["AWS_REGION"]
    return KubeClient(os.environ[c.ENV_CLUSTER_ENDPOINT],
                      eks_token_provider(os.environ[c.ENV_CLUSTER_NAME], region),
                      ca_data_b64=os.environ.get(c.ENV_CLUSTER_CA))


def events_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The EventBridge events in an invocation: the SQS records' bodies (the queue), or the event itself."""
    if "Records" not in payload:
        return [payload]
    events = []
    for record in payload["Records"]:
        try:
            events.append(json.loads(record["body"]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise logic.RolloutError(f"SQS record {record.get('messageId', '?')}: body is not an event: {exc}") from exc
    return events


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    import boto3  # in the Lambda runtime; imported here so importing this module creates no client

    deps = Deps(sagemaker=boto3.client("sagemaker"), ssm=boto3.client("ssm"), kube=_kube_from_env(),
                group=os.environ[c.ENV_MODEL_PACKAGE_GROUP], live_parameter=os.environ[c.ENV_LIVE_PARAMETER],
                s3=boto3.client("s3"), models_bucket=os.environ.get(c.ENV_MODELS_BUCKET) or None,
                namespace=os.environ.get(c.ENV_NAMESPACE, c.NAMESPACE),
                deployment=os.environ.get(c.ENV_DEPLOYMENT, c.DEPLOYMENT),
                timeout_s=float(os.environ.get(c.ENV_ROLLOUT_TIMEOUT_S, "540")),
                remaining_s=(lambda: context.get_remaining_time_in_millis() / 1000.0) if context else None)
    # Batch size 1: one event per invocation; a failure retries exactly that message.
    return {"outcomes": [process(e, deps).as_dict() for e in events_of(event)]}


# ------------------------------------------------------------------ custom resource: apply manifests

def apply_manifests(manifests: list[dict[str, Any]], kube: KubeClient) -> list[str]:
    """Server-side apply each object in order; a live Deployment keeps its rolled-out model."""
    applied = []
    for obj in manifests:
        if obj.get("kind") == "Deployment":
            obj = logic.preserve_rollout_fields(obj, kube.get(object_path(obj)))
        kube.apply(obj, c.APPLY_FIELD_MANAGER)
        applied.append(object_path(obj))
        log.info("applied %s", object_path(obj))
    return applied


def delete_manifests(manifests: list[dict[str, Any]], kube: KubeClient) -> list[str]:
    """Delete in reverse order (the namespace last); objects already gone are fine."""
    deleted = []
    for obj in reversed(manifests):
        if kube.delete(obj):
            deleted.append(object_path(obj))
    return deleted


def load_balancer_dimension(elbv2: Any, name: str, *, wait_s: float, poll_s: float = 10.0,
                            sleep: Callable[[float], None] = time.sleep,
                            clock: Callable[[], float] = time.monotonic) -> str:
    """The CloudWatch LoadBalancer dimension (app/<name>/<id>) of the ALB the Ingress makes the controller
    create, once it exists. The alarms watch this real load balancer, not a name guessed before it exists."""
    deadline = clock() + wait_s
    while True:
        try:
            [lb] = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
            arn = str(lb["LoadBalancerArn"])
            return arn.split(":loadbalancer/", 1)[1]
        except elbv2.exceptions.LoadBalancerNotFoundException:
            if clock() >= deadline:
                raise logic.RolloutError(
                    f"load balancer {name!r} of the Ingress not created after {wait_s:.0f}s: see the Ingress "
                    "events (kubectl -n ecomrec describe ingress): certificate ARN, subnet tags") from None
        log.info("waiting for the Ingress's load balancer %s", name)
        sleep(poll_s)


def on_custom_resource(event: dict[str, Any], kube: KubeClient, elbv2: Any = None,
                       wait_s: float = 420.0) -> dict[str, Any]:
    manifests = json.loads(event["ResourceProperties"]["Manifests"])
    physical_id = event.get("PhysicalResourceId") or f"ecomrec-manifests-{c.NAMESPACE}"
    if event["RequestType"] == "Delete":
        delete_manifests(manifests, kube)
        return {"PhysicalResourceId": physical_id}
    apply_manifests(manifests, kube)
    out: dict[str, Any] = {"PhysicalResourceId": physical_id}
    name = event["ResourceProperties"].get("LoadBalancerName")
    if name and elbv2 is not None:
        out["Data"] = {"AlbFullName": load_balancer_dimension(elbv2, name, wait_s=wait_s)}
    return out


def apply_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """onEvent handler for the CDK custom-resource Provider (it reports success or failure to CFN)."""
    import boto3  # in the Lambda runtime

    return on_custom_resource(event, _kube_from_env(), boto3.client("elbv2"))
