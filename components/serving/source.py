"""Where a bundle comes from: a local model.tar.gz, an unpacked folder (SageMaker's /opt/ml/model), or an
s3:// URI read through an injected boto3 client. Downloads and unpacked copies live in a work folder the
service owns (``$TMPDIR`` by default, so a read-only root file system is fine) and are deleted once the
bundle is in memory."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components import schema as s
from components.bundle import Bundle, load_bundle
from components.bundle.format import BundleLimits, extract_bundle
from components.checksum import sha256_file
from components.errors import BundleError, EcomrecError
from components.memory import available_memory_bytes
from components.storage import is_s3_uri, materialize

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

log = logging.getLogger(__name__)


def check_digest(local: Path, expected: str, location: str) -> None:
    """The archive must be the registered bytes: a substitute written over an approved artifact (or a
    different object at the same S3 key) is refused before it is unpacked."""
    if not local.is_file():
        raise BundleError(f"bundle {location[:300]}: a registered digest is given but this is a folder, not "
                          f"the registered {s.MODEL_ARCHIVE}")
    found = sha256_file(local)
    if found != expected:
        raise BundleError(f"bundle {location[:300]}: sha256 {found} is not the registered {expected[:64]} "
                          "(the artifact changed after registration)")


class BundleFetcher:
    """Turns a bundle location into a loaded :class:`Bundle`, cleaning up what it downloaded."""

    def __init__(self, work_dir: Path | None = None,
                 s3_client: Callable[[], S3Client] | S3Client | None = None, *,
                 limits: BundleLimits | None = None, memory_share: float | None = None,
                 available_memory: Callable[[], int | None] = available_memory_bytes) -> None:
        self.work_dir = Path(work_dir or Path(tempfile.gettempdir()) / "ecomrec-serving")
        self._s3 = s3_client
        self.limits = limits or BundleLimits()
        self.memory_share = memory_share  # None: no memory check
        self._available_memory = available_memory

    def load_limits(self) -> BundleLimits:
        """The limits for a load starting now: the memory check uses what is available at this moment
        (the serving model, if any, is already counted as used)."""
        available = self._available_memory() if self.memory_share is not None else None
        if available is None or self.memory_share is None:
            return self.limits
        return dataclasses.replace(self.limits, max_memory_bytes=int(available * self.memory_share))

    def _s3_client(self, uri: str) -> S3Client:
        client = self._s3() if callable(self._s3) else self._s3
        if client is None:
            raise BundleError(f"cannot read {uri}: no S3 client configured")
        self._s3 = client  # build a factory's client once, on first use
        return client

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="bundle-", dir=self.work_dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextmanager
    def open(self, location: str, *, expected_sha256: str | None = None) -> Iterator[Bundle]:
        """Load and verify (manifest, checksums) the bundle at ``location``; raise BundleError if it is
        missing, unreadable or corrupt, or, with ``expected_sha256`` (the registry's record), if the archive
        is not those exact bytes. Its files exist until the block ends: build what needs them (the CatBoost
        model) inside it."""
        limits = self.load_limits()
        with self._scratch() as scratch:
            if is_s3_uri(location):
                try:
                    local = materialize(location, s3_client=self._s3_client(location),
                                        workdir=scratch / "download", max_bytes=limits.max_bytes)
                except EcomrecError as error:
                    raise BundleError(f"cannot download bundle {location}: {error}") from error
                except Exception as error:  # botocore errors: the bucket, key or credentials are wrong
                    raise BundleError(
                        f"cannot download bundle {location}: {type(error).__name__}: {error}") from error
            else:
                local = Path(location)
                try:
                    found = local.exists()
                except OSError as error:  # e.g. a name too long for the file system
                    raise BundleError(f"unusable bundle path {location[:200]!r}: {error.strerror}") from error
                if not found:
                    raise BundleError(f"bundle not found: {location[:200]}")
                if not (local.is_dir() or stat.S_ISREG(local.stat().st_mode)):
                    # a FIFO or device would block the loader on its first read, forever
                    raise BundleError(f"bundle {location[:200]!r} is not a regular file or a folder")
            if local.is_dir() and not (local / s.BUNDLE_MANIFEST).exists() \
                    and (local / s.MODEL_ARCHIVE).is_file():
                local = local / s.MODEL_ARCHIVE  # a folder holding the archive (an S3 prefix, a mount)
            if expected_sha256:
                check_digest(local, expected_sha256, location)
            if local.is_file():
                local = extract_bundle(local, scratch / "unpacked", limits)
            bundle = load_bundle(local, limits)
            log.info("bundle %s read from %s", bundle.version, location)
            yield bundle
