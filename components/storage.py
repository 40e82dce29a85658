"""Object storage port: a step sees local paths; an ``s3://`` URI is materialised through an injected
boto3 client (on SageMaker the platform downloads inputs itself, so steps mostly get paths)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import EcomrecError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


def is_s3_uri(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not is_s3_uri(uri):
        raise EcomrecError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise EcomrecError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def materialize(uri: str | Path, *, s3_client: S3Client | None = None, workdir: Path | None = None,
                max_bytes: int | None = None) -> Path:
    """Return a local path for ``uri``: the path itself, or a download of the S3 object or prefix (at most
    ``max_bytes`` in all, counted from the listing before each object is fetched)."""
    if not is_s3_uri(uri):
        path = Path(uri)
        if not path.exists():
            raise EcomrecError(f"path does not exist: {path}")
        return path
    if s3_client is None:
        raise EcomrecError(f"reading {uri} needs an S3 client; none was given")
    bucket, key = split_s3_uri(str(uri))
    target_root = Path(workdir or tempfile.mkdtemp(prefix="ecomrec-s3-"))
    paginator = s3_client.get_paginator("list_objects_v2")
    found = False
    total = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(key):].lstrip("/") or Path(obj["Key"]).name
            if ".." in Path(relative).parts:  # an S3 key may hold "..": it must not write outside the folder
                raise EcomrecError(f"s3://{bucket}/{obj['Key'][:200]}: key leaves the prefix")
            total += int(obj.get("Size", 0))
            if max_bytes is not None and total > max_bytes:
                raise EcomrecError(f"{uri}: over {max_bytes} bytes to download")
            destination = target_root / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            s3_client.download_file(bucket, obj["Key"], str(destination))
            found = True
    if not found:
        raise EcomrecError(f"nothing found at {uri}")
    single = target_root / Path(key).name
    return single if single.is_file() else target_root


def upload(path: Path, uri: str, *, s3_client: S3Client) -> None:
    """Upload a file or a directory tree to an s3:// prefix."""
    bucket, key = split_s3_uri(uri)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.name if path.is_file() else file.relative_to(path).as_posix()
        s3_client.upload_file(str(file), bucket, f"{key.rstrip('/')}/{relative}" if key else relative)
