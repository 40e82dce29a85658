"""sha256 of a file, streamed: the bundle's member checksums and the registry's bundle digest (a light
module: the registry and the rollout path import it without numpy or pandas)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_chunks(iter(lambda: handle.read(1 << 20), b""))
