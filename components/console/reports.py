"""Where a version's evaluation report lives: beside its bundle copy in the local registry
(``LocalRegistry.attach_evaluation``), or beside the evaluation.json its SageMaker model package points to
(ModelMetrics.ModelQuality.Statistics, ``metrics["evaluation_uri"]``: the evaluation step writes
report.html and its plots into the same S3 folder)."""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING, Any, Final, Protocol

from components import schema as s
from components.registry.base import ModelVersion
from components.registry.local import LocalRegistry
from components.storage import is_s3_uri, split_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

# report.html and the PNGs it is drawn from; nothing else of the folder is served
REPORT_NAME: Final = re.compile(rf"^(?:{re.escape(s.REPORT_FILE)}|[a-z0-9_]{{1,64}}\.png)$")


class ReportFiles(Protocol):
    def read(self, version: ModelVersion, name: str) -> bytes | None:
        """The file ``name`` of the version's evaluation report, or None if it has none."""
        ...


class LocalReports:
    def __init__(self, registry: LocalRegistry) -> None:
        self.registry = registry

    def read(self, version: ModelVersion, name: str) -> bytes | None:
        if not REPORT_NAME.match(name):
            return None
        path = self.registry.evaluation_dir(version.group, version.version) / name
        return path.read_bytes() if path.is_file() else None


class S3Reports:
    def __init__(self, s3: S3Client) -> None:
        self.s3 = s3

    def read(self, version: ModelVersion, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        uri = str(version.metrics.get("evaluation_uri", ""))
        if not REPORT_NAME.match(name) or not is_s3_uri(uri):
            return None
        bucket, key = split_s3_uri(uri)
        try:
            body: bytes = self.s3.get_object(Bucket=bucket, Key=posixpath.join(posixpath.dirname(key), name))[
                "Body"].read()
        except (ClientError, BotoCoreError):
            return None
        return body
