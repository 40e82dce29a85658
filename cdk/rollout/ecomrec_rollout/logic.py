"""Pure rollout decisions: what an event means for the live model, and what to send to Kubernetes.

No clients here: the handler feeds in the event, the package description and the recorded live state, and
carries out what these functions return. That keeps every rule (idempotency, rollback target, which
events to ignore) testable without AWS or a cluster.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ecomrec_rollout import constants as c

MAX_HISTORY = 10  # previous live versions kept for rollback; older ones are dropped


class RolloutError(RuntimeError):
    """The rollout cannot go on; raised so the Lambda fails, retries, then lands in the DLQ (alarmed)."""


@dataclass(frozen=True)
class PackageEvent:
    group: str
    version: int
    arn: str
    status: str  # ModelApprovalStatus in the event


@dataclass(frozen=True)
class Release:
    """One model package version as the Deployment serves it."""

    version: int
    arn: str
    model_data_url: str
    image: str


@dataclass
class LiveState:
    """What is live and what was live before, newest first (recorded in an SSM parameter)."""

    live: Release | None = None
    previous: list[Release] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"live": asdict(self.live) if self.live else None,
                           "previous": [asdict(r) for r in self.previous]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> LiveState:
        if not text or not text.strip():
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RolloutError(f"live-state parameter is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            return cls()  # the stack seeds the parameter with a placeholder: nothing live yet
        live = raw.get("live")
        return cls(live=Release(**live) if live else None,
                   previous=[Release(**r) for r in raw.get("previous", [])])


@dataclass(frozen=True)
class Ignore:
    reason: str
    kind: Literal["ignore"] = "ignore"


@dataclass(frozen=True)
class AlreadyLive:
    release: Release
    kind: Literal["already_live"] = "already_live"


@dataclass(frozen=True)
class Deploy:
    release: Release
    new_state: LiveState
    reason: str
    kind: Literal["deploy"] = "deploy"


@dataclass(frozen=True)
class Rollback:
    rejected: Release
    new_state: LiveState  # live = the version to restore; candidates are checked by the handler
    kind: Literal["rollback"] = "rollback"


@dataclass(frozen=True)
class Forget:
    """A rejected version that is not live: drop it from the rollback history, deploy nothing."""

    version: int
    new_state: LiveState
    kind: Literal["forget"] = "forget"


Decision = Ignore | AlreadyLive | Deploy | Rollback | Forget


def parse_event(event: dict[str, Any]) -> PackageEvent | None:
    """The package event in an EventBridge envelope, or None when it is not one."""
    if event.get("source") != c.EVENT_SOURCE or event.get("detail-type") != c.EVENT_DETAIL_TYPE:
        return None
    detail = event.get("detail") or {}
    try:
        return PackageEvent(group=str(detail["ModelPackageGroupName"]),
                            version=int(detail["ModelPackageVersion"]),
                            arn=str(detail["ModelPackageArn"]),
                            status=str(detail["ModelApprovalStatus"]))
    except (KeyError, TypeError, ValueError):
        return None


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise RolloutError(f"model data URL {uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def promotion_target(release: Release, models_bucket: str, group: str) -> str:
    """Where an approved bundle is kept while it may be served: s3://<models>/<group>/<version>/...

    The pipeline writes bundles among its run outputs (which expire); the models bucket keeps exactly
    the approved ones, so a rollback months later still finds its bundle, and the pods read only there.
    """
    name = release.model_data_url.rsplit("/", 1)[-1] or "model.tar.gz"
    return f"s3://{models_bucket}/{group}/{release.version}/{name}"


def release_from_package(description: dict[str, Any]) -> Release:
    """A Release from describe_model_package's answer (first inference container)."""
    arn = description.get("ModelPackageArn", "?")
    containers = (description.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers or not containers[0].get("ModelDataUrl"):
        raise RolloutError(
            f"model package {arn}: InferenceSpecification.Containers[0].ModelDataUrl is missing")
    first = containers[0]
    return Release(version=int(description["ModelPackageVersion"]), arn=str(arn),
                   model_data_url=str(first["ModelDataUrl"]), image=str(first.get("Image", "")))


def decide_approved(event: PackageEvent, description: dict[str, Any], state: LiveState) -> Decision:
    """Approved: deploy it unless it is already live or no longer approved (events can arrive late)."""
    current = description.get("ModelApprovalStatus")
    if current != c.APPROVED:
        return Ignore(f"{event.arn} is {current} now (event said {event.status}): not deploying")
    release = release_from_package(description)
    if state.live is not None and state.live.version == release.version:
        return AlreadyLive(release)
    history = [state.live] if state.live else []
    history += [r for r in state.previous if r.version != release.version]
    return Deploy(release, LiveState(live=release, previous=history[:MAX_HISTORY]),
                  reason=f"version {release.version} approved")


def decide_rejected(event: PackageEvent, state: LiveState) -> Decision:
    """Rejected: roll back when it is the live version; otherwise never roll back to it later."""
    if state.live is None or state.live.version != event.version:
        remaining = [r for r in state.previous if r.version != event.version]
        if len(remaining) == len(state.previous):
            return Ignore(f"version {event.version} rejected; it is not live and not in the history")
        return Forget(event.version, LiveState(live=state.live, previous=remaining))
    return Rollback(state.live, LiveState(live=None, previous=list(state.previous)))


def plan_rollback(rejected: Release, previous: list[Release],
                  still_approved: Callable[[Release], bool]) -> tuple[Release, LiveState]:
    """The newest earlier version that the registry still calls Approved, and the state after it is live.

    Versions skipped on the way (rejected since) are dropped from the history.
    """
    for i, candidate in enumerate(previous):
        if candidate.version != rejected.version and still_approved(candidate):
            rest = [r for r in previous[i + 1:] if r.version != rejected.version]
            return candidate, LiveState(live=candidate, previous=rest)
    raise RolloutError(f"live version {rejected.version} was rejected and no earlier approved version is "
                       "recorded to roll back to; the Deployment keeps serving it")


def decide(event: PackageEvent, group: str, state: LiveState,
           description: dict[str, Any] | None) -> Decision:
    if event.group != group:
        return Ignore(f"package {event.arn} belongs to group {event.group!r}, not {group!r}")
    if event.status == c.APPROVED:
        if description is None:
            raise RolloutError(f"approved package {event.arn} could not be described")
        return decide_approved(event, description, state)
    if event.status == c.REJECTED:
        return decide_rejected(event, state)
    return Ignore(f"package {event.arn} is {event.status}: only Approved and Rejected act")


def deployment_patch(release: Release, container: str = c.CONTAINER) -> dict[str, Any]:
    """Strategic-merge patch: new image (when the package names one), model URI and version annotations.

    Changing the pod template starts a rolling update; with maxUnavailable 0 a new pod takes traffic only
    once its readiness probe passes, i.e. once it has loaded this bundle.
    """
    annotations = {c.VERSION_ANNOTATION: str(release.version), c.ARN_ANNOTATION: release.arn}
    env = [{"name": c.MODEL_ENV_VAR, "value": release.model_data_url}]
    spec: dict[str, Any] = {"name": container, "env": env}
    if release.image:
        spec["image"] = release.image
    return {"metadata": {"annotations": annotations},
            "spec": {"template": {"metadata": {"annotations": annotations}, "spec": {"containers": [spec]}}}}


RolloutStatus = Literal["done", "progressing", "failed"]


def rollout_status(deployment: dict[str, Any]) -> tuple[RolloutStatus, str]:
    """Where a Deployment's rollout stands, as `kubectl rollout status` judges it."""
    meta, spec = deployment.get("metadata", {}), deployment.get("spec", {})
    status = deployment.get("status", {})
    generation, observed = meta.get("generation", 0), status.get("observedGeneration", 0)
    if observed < generation:
        return "progressing", f"controller has seen generation {observed} of {generation}"
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"progress deadline exceeded: {cond.get('message', '')}"
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < wanted:
        return "progressing", f"{updated} of {wanted} replicas updated"
    if total > updated:
        return "progressing", f"{total - updated} old replicas pending termination"
    if available < updated:
        return "progressing", f"{available} of {updated} updated replicas available"
    return "done", f"{available} replicas available"


def _container(obj: dict[str, Any], name: str) -> dict[str, Any] | None:
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return next((ct for ct in containers if ct.get("name") == name), None)


def preserve_rollout_fields(desired: dict[str, Any], live: dict[str, Any] | None,
                            container: str = c.CONTAINER) -> dict[str, Any]:
    """The desired Deployment with the live model kept: image, model URI and version annotations.

    CDK re-applies the manifests on every deploy; without this a deploy would put back the placeholder
    image and model and undo the last approved rollout.
    """
    if not live:
        return desired
    out = copy.deepcopy(desired)
    live_ct, out_ct = _container(live, container), _container(out, container)
    if live_ct is None or out_ct is None:
        return out
    if live_ct.get("image"):
        out_ct["image"] = live_ct["image"]
    live_env = {e.get("name"): e for e in live_ct.get("env", [])}
    if c.MODEL_ENV_VAR in live_env:
        out_ct["env"] = [e for e in out_ct.get("env", []) if e.get("name") != c.MODEL_ENV_VAR]
        out_ct["env"].append(live_env[c.MODEL_ENV_VAR])
    for path in (("metadata",), ("spec", "template", "metadata")):
        src, dst = live, out
        for key in path:
            src, dst = src.get(key, {}), dst.setdefault(key, {})
        kept = {k: v for k, v in (src.get("annotations") or {}).items()
                if k in (c.VERSION_ANNOTATION, c.ARN_ANNOTATION)}
        if kept:
            dst.setdefault("annotations", {}).update(kept)
    return out
