"""Download the official UCI Online Retail zip and verify it byte for byte.

The pinned SHA-256 of the 23,715,478-byte ``online+retail.zip`` is the value that several independent
public projects downloading this URL record and check (their zip holds ``Online Retail.xlsx`` with SHA-256
``XLSX_SHA256``). A mismatch deletes the download and stops with both digests, so a changed or corrupted
archive never reaches the importer. The importer also checks the content: ``ImportReport.canonical`` says
whether the rows (541,909) and sum(Quantity) (5,176,450) are the published file's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, cast

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from components.errors import EcomrecError

logger = logging.getLogger(__name__)

OFFICIAL_URL = "https://archive.ics.uci.edu/static/public/352/online+retail.zip"
OFFICIAL_SHA256 = "f5385cbb54bbebf7196389109c6b0621faab0c304e3702548165e71c84aede8b"
OFFICIAL_SIZE = 23_715_478
OFFICIAL_FILENAME = "online+retail.zip"
XLSX_MEMBER = "Online Retail.xlsx"
XLSX_SHA256 = "43465a06f2ccf7c8b5bd2892bc7defb52f97487934fe93b16ae4c3936424676d"
CHUNK = 1 << 20
TIMEOUT_SECONDS = 60.0


class FetchError(EcomrecError):
    """The download failed (HTTP/network error) or its checksum did not match."""


class _Response(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


Opener = Callable[..., AbstractContextManager[_Response]]


def default_cache_dir() -> Path:
    """Where ``ecomrec data fetch online-retail`` keeps the zip by default (``find_online_retail`` looks
    here last): ``$XDG_CACHE_HOME/ecomrec/online-retail`` or ``~/.cache/ecomrec/online-retail``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecomrec" / "online-retail"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _urlopen(url: str, timeout: float = TIMEOUT_SECONDS) -> AbstractContextManager[_Response]:
    # UCI answers some default Python user agents with 403; say who we are.
    request = urllib.request.Request(url, headers={"User-Agent": "ecomrec-data-fetch/0.1"})
    return cast(AbstractContextManager[_Response], urllib.request.urlopen(request, timeout=timeout))


def fetch_online_retail(
    dest: Path,
    *,
    url: str = OFFICIAL_URL,
    sha256: str = OFFICIAL_SHA256,
    opener: Opener = _urlopen,
    filename: str = OFFICIAL_FILENAME,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download ``url`` into ``dest/filename`` and verify its SHA-256; return the file's path.

    An existing file with the right checksum is reused (no network). The download goes to a ``.part``
    file first, so an interrupted run never leaves a file that looks complete. On a checksum mismatch the
    download is deleted and :class:`FetchError` names the expected and the actual digest.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    expected = sha256.lower()
    if target.exists() and not force:
        got = sha256_file(target)
        if got == expected:
            logger.info("reusing %s (sha256 ok)", target)
            return target
        logger.warning("%s exists but its sha256 is %s, not %s: downloading again", target, got, expected)

    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with opener(url, timeout=TIMEOUT_SECONDS) as response, part.open("wb") as out:
            total = _content_length(response)
            with Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                disable=not progress, transient=True,
            ) as bar:
                task = bar.add_task(f"download {filename}", total=total)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.advance(task, len(chunk))
    except OSError as exc:  # urllib's URLError/HTTPError and socket timeouts are all OSErrors
        part.unlink(missing_ok=True)
        raise FetchError(f"downloading {url} failed: {exc}") from exc

    got = digest.hexdigest()
    if got != expected:
        size = part.stat().st_size
        part.unlink(missing_ok=True)
        raise FetchError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {got} ({size:,} bytes); "
            "the download was deleted"
        )
    part.replace(target)
    logger.info("downloaded %s -> %s (%s bytes, sha256 ok)", url, target, f"{target.stat().st_size:,}")
    return target


def _content_length(response: object) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


__all__ = [
    "OFFICIAL_FILENAME",
    "OFFICIAL_SHA256",
    "OFFICIAL_SIZE",
    "OFFICIAL_URL",
    "XLSX_MEMBER",
    "XLSX_SHA256",
    "FetchError",
    "default_cache_dir",
    "fetch_online_retail",
    "sha256_file",
]
