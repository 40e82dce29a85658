"""The embedded model registry: a folder with SageMaker Model Registry semantics.

Layout: ``ROOT/<group>/versions/<n>.json`` (one record per version), ``ROOT/<group>/artifacts/<n>/``
(a copy of the registered bundle, so later runs cannot change what was approved, and its evaluation
report under ``evaluation/``) and
``ROOT/<group>/events.jsonl``: one line per status change, shaped like the EventBridge
"SageMaker Model Package State Change" detail, which the inference service's watcher reads.
Writes are atomic (temp file + rename) and version numbers are taken under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from components import schema as s
from components.checksum import sha256_file
from components.errors import RegistryError
from components.registry.base import APPROVAL_STATUSES, APPROVED, PENDING, ApprovalStatus, ModelVersion, is_sha256

STATE_CHANGE_DETAIL_TYPE = "SageMaker Model Package State Change"
EVALUATION_DIR = "evaluation"  # under artifacts/<n>/: the evaluation report of that version
_RECORD = TypeAdapter(ModelVersion)  # a record's JSON checked field by field (status among the statuses)
log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class LocalRegistry:
    """File-based ``ModelRegistry``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _group_dir(self, group: str) -> Path:
        if not group or "/" in group or group.startswith("."):
            raise RegistryError(f"invalid model package group name {group!r}")
        return self.root / group

    @contextmanager
    def _locked(self, group: str) -> Iterator[Path]:
        group_dir = self._group_dir(group)
        (group_dir / "versions").mkdir(parents=True, exist_ok=True)
        with (group_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield group_dir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def register(self, group: str, model_data_url: str, metrics: dict[str, Any], *,
                 description: str = "", image_uri: str = "",
                 status: ApprovalStatus = PENDING, bundle_sha256: str = "") -> ModelVersion:
        """``bundle_sha256``, when given, is what the caller believes it registers: the copy must match."""
        source = Path(model_data_url)
        if not source.is_file():
            raise RegistryError(f"cannot register {model_data_url}: no such bundle file")
        if status not in APPROVAL_STATUSES:
            raise RegistryError(f"unknown approval status {status!r}; use one of {APPROVAL_STATUSES}")
        with self._locked(group) as group_dir:
            numbers = [int(p.stem) for p in (group_dir / "versions").glob("*.json") if p.stem.isdigit()]
            number = max(numbers, default=0) + 1
            artifact = group_dir / "artifacts" / str(number) / source.name
            artifact.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, artifact)
            digest = sha256_file(artifact)  # of the copy: the bytes that will be approved and served
            if bundle_sha256 and bundle_sha256 != digest:
                artifact.unlink()
                raise RegistryError(f"cannot register {model_data_url}: its sha256 is {digest}, the caller "
                                    f"expected {bundle_sha256} (changed while being registered?)")
            version = ModelVersion(
                group=group, version=number, status=status, model_data_url=str(artifact.resolve()),
                created_at=_now(), metrics=metrics, description=description,
                arn=f"local:{group}/{number}", image_uri=image_uri, bundle_sha256=digest,
            )
            self._save(group_dir, version)
            self._emit(group_dir, version)
        return version

    def list_versions(self, group: str) -> list[ModelVersion]:
        """Every readable version; a corrupt or mistyped record is skipped with a warning naming its file
        (one bad file must not hide the others, stop the serving watcher or break `ecomrec models list`)."""
        versions_dir = self._group_dir(group) / "versions"
        if not versions_dir.is_dir():
            return []
        versions: list[ModelVersion] = []
        for path in versions_dir.glob("*.json"):
            try:
                versions.append(self._load(path))
            except RegistryError as error:
                log.warning("skipping %s", error)
        return sorted(versions, key=lambda v: v.version)

    def describe(self, group: str, version: int) -> ModelVersion:
        path = self._group_dir(group) / "versions" / f"{version}.json"
        if not path.is_file():
            known = [v.version for v in self.list_versions(group)]
            raise RegistryError(f"model package group {group!r} has no version {version} (versions: {known})")
        return self._load(path)

    def set_status(self, group: str, version: int, status: ApprovalStatus, reason: str = "") -> ModelVersion:
        if status not in APPROVAL_STATUSES:
            raise RegistryError(f"unknown approval status {status!r}; use one of {APPROVAL_STATUSES}")
        with self._locked(group) as group_dir:
            current = self.describe(group, version)
            if current.status == status:
                return current  # idempotent, like SageMaker: no event for a no-op
            if status == APPROVED:
                self.verify_artifact(current)
            updated = replace(current, status=status,
                              description=reason or current.description)
            self._save(group_dir, updated)
            self._emit(group_dir, updated)
        return updated

    @staticmethod
    def verify_artifact(version: ModelVersion) -> None:
        """Raise RegistryError unless the artifact's bytes are the ones registered."""
        where = f"version {version.version} of group {version.group!r}"
        if not is_sha256(version.bundle_sha256):
            raise RegistryError(f"{where} has no recorded bundle digest (registered before digests were "
                                "recorded): register the bundle again")
        path = Path(version.model_data_url)
        if not path.is_file():
            raise RegistryError(f"{where}: its artifact {path} is gone")
        found = sha256_file(path)
        if found != version.bundle_sha256:
            raise RegistryError(f"{where}: its artifact {path} changed since registration (sha256 {found}, "
                                f"registered {version.bundle_sha256}); refusing to approve it")

    def latest_approved(self, group: str) -> ModelVersion | None:
        if not self.root.is_dir():  # a registry that vanished is an error, not "nothing approved"
            raise RegistryError(f"registry folder {self.root} does not exist (removed or unmounted?)")
        approved = [v for v in self.list_versions(group) if v.status == "Approved"]
        return approved[-1] if approved else None

    def changes_since(self, group: str, offset: int) -> tuple[int, set[int]] | None:
        """The versions registered or changed after byte ``offset`` of events.jsonl (every change appends
        a line there) and the offset to ask from next time; None if the log is shorter than ``offset``
        (the registry was replaced: read it all again). Lets a reader keep its parsed versions and
        re-read only these."""
        path = self._group_dir(group) / "events.jsonl"
        if not path.exists():
            return None if offset else (0, set())
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < offset:
                return None
            handle.seek(offset)
            tail = handle.read()
        complete = tail[:tail.rfind(b"\n") + 1]  # a line being appended right now is read next time
        versions = {int(json.loads(line)["detail"]["ModelPackageVersion"]) for line in complete.splitlines() if line}
        return offset + len(complete), versions

    def evaluation_dir(self, group: str, version: int) -> Path:
        """Where the version's evaluation report (report.html, its plots, evaluation.json) is kept."""
        return self._group_dir(group) / "artifacts" / str(version) / EVALUATION_DIR

    def attach_evaluation(self, group: str, version: int, source: Path) -> Path:
        """Copy the evaluation step's report files beside the version's bundle copy, so the report a
        reviewer opens is the one of this version even after the run folder is rerun or deleted."""
        target = self.evaluation_dir(group, version)
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(source).iterdir()):
            if path.is_file() and (path.suffix in (".html", ".png") or path.name == s.EVALUATION_FILE):
                shutil.copyfile(path, target / path.name)
        return target

    def events(self, group: str) -> list[dict[str, Any]]:
        path = self._group_dir(group) / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    @staticmethod
    def _save(group_dir: Path, version: ModelVersion) -> None:
        _write_atomic(group_dir / "versions" / f"{version.version}.json", json.dumps(asdict(version), indent=2))

    @staticmethod
    def _load(path: Path) -> ModelVersion:
        """The record at ``path``, its fields type-checked; RegistryError naming the file otherwise."""
        try:
            version = _RECORD.validate_json(path.read_bytes(), strict=True)
        except (OSError, ValidationError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error).replace("\n", "; ")[:500]
            raise RegistryError(f"corrupt registry record {path}: {reason}") from error
        if str(version.version) != path.stem:
            raise RegistryError(f"corrupt registry record {path}: it says version {version.version}")
        return version

    @staticmethod
    def _emit(group_dir: Path, version: ModelVersion) -> None:
        event = {
            "detail-type": STATE_CHANGE_DETAIL_TYPE,
            "source": "ecomrec.local-registry",
            "time": _now(),
            "detail": {
                "ModelPackageGroupName": version.group,
                "ModelPackageVersion": version.version,
                "ModelPackageArn": version.arn,
                "ModelApprovalStatus": version.status,
                "ModelDataUrl": version.model_data_url,
            },
        }
        with (group_dir / "events.jsonl").open("a") as handle:
            handle.write(json.dumps(event) + "\n")
