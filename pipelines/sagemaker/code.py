"""The project's code as SageMaker containers receive it: one zip of the ``components`` and ``pipelines``
packages (the very modules the local runner imports) plus the small launcher ``entry.py``.

Both live under ``s3://BUCKET/PREFIX/code/<version>/``, where the version is a hash of the package files,
so a definition always points at the code it was built from and older executions keep theirs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import EcomrecError
from components.storage import split_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines")
CODE_ARCHIVE = "ecomrec-code.zip"
LAUNCHER = "entry.py"
LAUNCHER_PATH = Path(__file__).with_name(LAUNCHER)
# Provided by the SageMaker Spark image (its own Spark 3.5) or not needed inside a container.
_NOT_INSTALLED_IN_CONTAINERS = {"pyspark"}
_FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # same bytes for the same files, whatever their mtimes


@dataclass(frozen=True)
class CodeLocation:
    version: str
    prefix: str  # s3://BUCKET/PREFIX/code/<version>

    @property
    def archive_uri(self) -> str:
        return f"{self.prefix}/{CODE_ARCHIVE}"

    @property
    def launcher_uri(self) -> str:
        return f"{self.prefix}/{LAUNCHER}"


def code_files(root: Path = REPO_ROOT) -> list[Path]:
    files: list[Path] = []
    for package in PACKAGES:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise EcomrecError(f"package {package!r} not found under {root}")
        files += [p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in {".pyc", ".pyo"}]
    return sorted(files)


def code_version(root: Path = REPO_ROOT) -> str:
    digest = hashlib.sha256()
    for path in code_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def code_location(bucket: str, prefix: str, version: str) -> CodeLocation:
    parts = (f"s3://{bucket}", prefix, "code", version)
    base = "/".join(part.strip("/") for part in parts if part.strip("/"))
    return CodeLocation(version=version, prefix=base)


def build_code_archive(root: Path = REPO_ROOT) -> bytes:
    """A deterministic zip of the packages: importable as Spark ``--py-files`` (zipimport) and
    extractable by the launcher (so package data files are plain files again)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in code_files(root):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_objects(location: CodeLocation, root: Path = REPO_ROOT) -> dict[str, bytes]:
    """{s3 URI: bytes} of what a definition built for ``location`` expects to find (upsert uploads them;
    a CDK stack can deploy the same objects next to the definition)."""
    archive = build_code_archive(root)
    if code_version(root) != location.version:
        raise EcomrecError(f"the code changed since the definition was built for version {location.version} "
                           f"(now {code_version(root)}); build the definition again")
    return {location.archive_uri: archive, location.launcher_uri: LAUNCHER_PATH.read_bytes()}


def upload_code(location: CodeLocation, s3_client: S3Client, root: Path = REPO_ROOT) -> None:
    """Upload the archive and the launcher to the versioned prefix (idempotent: same version, same bytes)."""
    for uri, body in code_objects(location, root).items():
        bucket, key = split_s3_uri(uri)
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)


def runtime_requirements(root: Path = REPO_ROOT) -> str:
    """The core dependencies the containers install at start (space separated, as the launcher reads
    ``ECOMREC_PIP_INSTALL``), from pyproject.toml (the one source), else the installed package metadata."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        core = list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    else:
        try:
            requires = importlib.metadata.requires("ecomrec") or []
        except importlib.metadata.PackageNotFoundError as error:
            raise EcomrecError("neither pyproject.toml nor an installed ecomrec package lists the "
                               "dependencies the SageMaker containers install") from error
        core = [r.split(";")[0].strip() for r in requires if "extra ==" not in r]
    keep = [r for r in core if re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower()
            not in _NOT_INSTALLED_IN_CONTAINERS]
    return " ".join(r.replace(" ", "") for r in keep)
