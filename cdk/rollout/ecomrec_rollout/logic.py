"""Pure rollout decisions: what an event means for the live model, and what to send to Kubernetes.

No clients here: the handler feeds in the event, the package description and the recorded live state, and
carries out what these functions return. That keeps every rule (idempotency, rollback target, which
events to ignore) testable without AWS or a cluster.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ecomrec_rollout import constants as c

MAX_HISTORY = 10  # previous live versions kept for rollback; older ones are dropped


class RolloutError(RuntimeError):
    """The rollout cannot go on; raised so the Lambda fails, retries, then lands in the DLQ (alarmed)."""


class StillProgressingError(RolloutError):
    """The function's wait ran out while the Deployment was still making progress (a slow, healthy rollout:
    Kubernetes has not reported ProgressDeadlineExceeded). Not undone: the queue redelivers the event and
    the next attempt finds the same template patched in and waits again."""


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
    sha256: str = ""  # the bundle's registered digest; the pods refuse other bytes ("" on older records)


@dataclass(frozen=True)
class FailedRollout:
    """The last rollout that did not complete and what the function did about it (for whoever is paged).

    Kept in the live record until a later rollout completes; the live version itself is not changed by a
    failure, so ``live`` keeps saying what the serving pods run.
    """

    version: int  # the version that did not roll out
    reason: str
    restored: int | None  # the live version the Deployment was patched back to; None: nothing to restore
    restore: str  # what became of the restore, in words ("complete", "patch failed: ...", ...)


@dataclass
class LiveState:
    """What is live and what was live before, newest first (recorded in an SSM parameter)."""

    live: Release | None = None
    previous: list[Release] = field(default_factory=list)
    failed: FailedRollout | None = None

    def to_json(self) -> str:
        out: dict[str, Any] = {"live": asdict(self.live) if self.live else None,
                               "previous": [asdict(r) for r in self.previous]}
        if self.failed is not None:  # only when there is one: the record stays as small as before
            out["failed"] = asdict(self.failed)
        return json.dumps(out, sort_keys=True)

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
        live, failed = raw.get("live"), raw.get("failed")
        return cls(live=Release(**live) if live else None,
                   previous=[Release(**r) for r in raw.get("previous", [])],
                   failed=FailedRollout(**failed) if failed else None)


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
class Record:
    """An approval older than the live version: kept as a rollback candidate, not deployed."""

    release: Release
    new_state: LiveState
    reason: str
    kind: Literal["record"] = "record"


@dataclass(frozen=True)
class Rollback:
    """Move the Deployment off a rejected version: to the first candidate the registry still approves."""

    rejected: int  # the rejected version the Deployment runs
    candidates: list[Release]  # newest first; the handler checks each with the registry
    reason: str
    kind: Literal["rollback"] = "rollback"


@dataclass(frozen=True)
class Forget:
    """A rejected version that is not live: drop it from the rollback history, deploy nothing."""

    version: int
    new_state: LiveState
    kind: Literal["forget"] = "forget"


Decision = Ignore | AlreadyLive | Deploy | Record | Rollback | Forget


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
    digest = str((description.get("CustomerMetadataProperties") or {}).get(c.BUNDLE_SHA256_METADATA, ""))
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        # Without it nothing ties what is served to what was approved: not deployed.
        raise RolloutError(f"model package {arn}: no {c.BUNDLE_SHA256_METADATA} in CustomerMetadataProperties "
                           "(register bundles through ecomrec, which records the digest)")
    return Release(version=int(description["ModelPackageVersion"]), arn=str(arn),
                   model_data_url=str(first["ModelDataUrl"]), image=str(first.get("Image", "")), sha256=digest)


def _newest_first(releases: list[Release]) -> list[Release]:
    return sorted(releases, key=lambda r: r.version, reverse=True)[:MAX_HISTORY]


def decide_approved(event: PackageEvent, description: dict[str, Any], state: LiveState,
                    live_status: str | None = None) -> Decision:
    """Approved: the newest approved version wins; rollouts never go backwards.

    - no longer Approved in the registry (a late event): ignored;
    - the live version: already live (a duplicate event);
    - newer than the live version: deployed;
    - older than the live version (late, out of order or re-approved), while the registry still approves
      the live one (``live_status``): recorded as a rollback candidate, not deployed. Only when the live
      version is no longer approved (rejected, its own event not handled yet) does an older approval go
      live, and then only if no newer approved candidate is recorded (the rejection rolls back to that).
    """
    current = description.get("ModelApprovalStatus")
    if current != c.APPROVED:
        return Ignore(f"{event.arn} is {current} now (event said {event.status}): not deploying")
    release = release_from_package(description)
    live = state.live
    if live is not None and live.version == release.version:
        return AlreadyLive(release)
    others = [r for r in state.previous if r.version != release.version]
    if live is not None and release.version < live.version:
        newer_recorded = any(r.version > release.version for r in others)
        if live_status == c.APPROVED or newer_recorded:
            why = (f"version {release.version} approved, but live version {live.version} is newer and still "
                   "approved" if live_status == c.APPROVED else
                   f"version {release.version} approved, but a newer approved version is recorded to roll back to")
            if len(others) < len(state.previous):
                return Ignore(f"{why}; already recorded for rollback (duplicate event)")
            return Record(release, LiveState(live=live, previous=_newest_first([*others, release]),
                                             failed=state.failed),
                          reason=f"{why}: recorded for rollback, not deployed")
        return Deploy(release, LiveState(live=release, previous=_newest_first(others)),
                      reason=f"version {release.version} approved; live version {live.version} is {live_status}")
    history = [live] if live else []
    history += others
    return Deploy(release, LiveState(live=release, previous=_newest_first(history)),
                  reason=f"version {release.version} approved")


def deployed_version(deployment: dict[str, Any] | None) -> int | None:
    """The model package version the Deployment was last patched to (its version annotation), if any."""
    if not deployment:
        return None
    for meta in (deployment.get("metadata") or {},
                 ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}):
        value = (meta.get("annotations") or {}).get(c.VERSION_ANNOTATION)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def decide_rejected(event: PackageEvent, state: LiveState, deployed: int | None = None) -> Decision:
    """Rejected: roll back when the Deployment runs it; otherwise never roll back to it later.

    "Runs it" is either the recorded live version or the Deployment's version annotation: a rollout that
    failed and could not be restored (or was cut off) leaves the Deployment on a version that never made
    it into the record, and rejecting that version must still move the Deployment off it.
    """
    if state.live is not None and state.live.version == event.version:
        return Rollback(event.version, list(state.previous), reason=f"live version {event.version} rejected")
    if deployed == event.version:
        # The record's live version is what the old pods still serve: the first candidate to go back to.
        candidates = ([state.live] if state.live else []) + list(state.previous)
        return Rollback(event.version, candidates,
                        reason=f"version {event.version} rejected; the Deployment is patched to it "
                        "(a rollout that did not complete)")
    remaining = [r for r in state.previous if r.version != event.version]
    if len(remaining) == len(state.previous):
        return Ignore(f"version {event.version} rejected; it is not live, not deployed and not in the history")
    return Forget(event.version, LiveState(live=state.live, previous=remaining, failed=state.failed))


def plan_rollback(rejected: int, candidates: list[Release],
                  still_approved: Callable[[Release], bool]) -> tuple[Release, LiveState]:
    """The newest candidate that the registry still calls Approved, and the state after it is live.

    Versions skipped on the way (rejected since) are dropped from the history.
    """
    for i, candidate in enumerate(candidates):
        if candidate.version != rejected and still_approved(candidate):
            rest = [r for r in candidates[i + 1:] if r.version != rejected]
            return candidate, LiveState(live=candidate, previous=rest)
    raise RolloutError(f"version {rejected} was rejected and no earlier approved version is recorded to "
                       "roll back to; the Deployment keeps serving it")


def decide(event: PackageEvent, group: str, state: LiveState,
           description: dict[str, Any] | None, deployed: int | None = None,
           live_status: str | None = None) -> Decision:
    """What to do about ``event``; ``deployed`` is the Deployment's version annotation (Rejected only);
    ``live_status`` the registry's current status of the live version (Approved of an older version only)."""
    if event.group != group:
        return Ignore(f"package {event.arn} belongs to group {event.group!r}, not {group!r}")
    if event.status == c.APPROVED:
        if description is None:
            raise RolloutError(f"approved package {event.arn} could not be described")
        return decide_approved(event, description, state, live_status)
    if event.status == c.REJECTED:
        return decide_rejected(event, state, deployed)
    return Ignore(f"package {event.arn} is {event.status}: only Approved and Rejected act")


def deployment_patch(release: Release, container: str = c.CONTAINER) -> dict[str, Any]:
    """Strategic-merge patch: new image (when the package names one), model URI and version annotations.

    Changing the pod template starts a rolling update; with maxUnavailable 0 a new pod takes traffic only
    once its readiness probe passes, i.e. once it has loaded this bundle.
    """
    annotations = {c.VERSION_ANNOTATION: str(release.version), c.ARN_ANNOTATION: release.arn}
    # Both always set: env entries merge by name, so a digest left from an earlier patch would refuse this bundle.
    env = [{"name": c.MODEL_ENV_VAR, "value": release.model_data_url},
           {"name": c.MODEL_SHA256_ENV_VAR, "value": release.sha256}]
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
