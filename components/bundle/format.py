"""Reading and checking a bundle. Serving imports this module only (no Spark, no training code)."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components import schema as s
from components.errors import BundleError

FORMAT_VERSION = 2  # 2: candidates/ is a folder of Parquet parts (was one candidates.parquet)
REQUIRED_FILES: tuple[str, ...] = (
    s.BUNDLE_MANIFEST,
    s.MODEL_FILE,
    f"{s.BUNDLE_ID_MAPS}/users.parquet",
    f"{s.BUNDLE_ID_MAPS}/items.parquet",
    s.BUNDLE_USER_FACTORS,
    s.BUNDLE_ITEM_FACTORS,
    s.BUNDLE_POPULAR,
    s.BUNDLE_ITEMS,
    s.BUNDLE_PURCHASED,
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _csr(user_idx: np.ndarray, values: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and values of rows grouped by user (input sorted by user): rows of u are
    values[offsets[u]:offsets[u + 1]]."""
    counts = np.bincount(user_idx, minlength=n_users)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, values


def ascending_after(users: np.ndarray, items: np.ndarray, last_user: int) -> bool:
    """(user, item) keys strictly ascending, and every user after ``last_user``."""
    if not len(users):
        return True
    user_step, item_step = np.diff(users), np.diff(items)
    return bool(users[0] > last_user and ((user_step > 0) | ((user_step == 0) & (item_step > 0))).all())


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle. Arrays are indexed by the dense ``user_idx`` / ``item_idx``.

    The candidate rows (every user's ~200 rows with every feature: gigabytes at scale) stay on disk:
    :meth:`iter_candidate_parts` reads them one part at a time."""

    root: Path
    manifest: dict[str, Any]
    user_ids: np.ndarray  # str per user_idx
    item_ids: np.ndarray  # str per item_idx
    candidate_part_paths: tuple[Path, ...]  # candidates/ parts in user order
    candidate_row_count: int  # rows over all parts (from the Parquet footers)
    popular_items: np.ndarray  # item_idx, best first
    popular_scores: np.ndarray
    items: pd.DataFrame  # item_idx-ordered catalog attributes
    purchased_offsets: np.ndarray  # items user u bought before the cutoff:
    purchased_items: np.ndarray  # purchased_items[off[u]:off[u + 1]]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def model_path(self) -> Path:
        return self.root / s.MODEL_FILE

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest["feature_spec"]["features"])

    @property
    def categorical(self) -> list[str]:
        return list(self.manifest["feature_spec"]["categorical"])

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {user_id: idx for idx, user_id in enumerate(self.user_ids.tolist())}

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {item_id: idx for idx, item_id in enumerate(self.item_ids.tolist())}

    @cached_property
    def user_factors(self) -> np.ndarray:
        """ALS user factors, memory-mapped (serving does not use them)."""
        return np.load(self.root / s.BUNDLE_USER_FACTORS, mmap_mode="r")

    @cached_property
    def item_factors(self) -> np.ndarray:
        return np.load(self.root / s.BUNDLE_ITEM_FACTORS, mmap_mode="r")

    def iter_candidate_parts(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """The candidate rows part by part, in user order, each sorted by (user_idx, item_idx): user_idx,
        item_idx and ``columns`` (default: every feature). Raises BundleError on a part whose rows are out
        of order, repeat a user of an earlier part, or name a user beyond the user map."""
        extra = self.feature_names if columns is None else columns
        wanted = list(dict.fromkeys([s.USER_IDX, s.ITEM_IDX, *extra]))
        last_user = -1
        for path in self.candidate_part_paths:
            frame = self._read_part(path, wanted, last_user)
            if len(frame):
                last_user = int(frame[s.USER_IDX].iat[-1])
            yield frame
            del frame  # the caller's reference is the last one: the next part is read with this one freed

    def _read_part(self, path: Path, columns: list[str], last_user: int) -> pd.DataFrame:
        try:
            frame = pd.read_parquet(path, columns=columns)
        except (OSError, ValueError) as error:
            raise BundleError(f"{path}: unreadable candidate part ({error})") from error
        users = frame[s.USER_IDX].to_numpy(np.int64)
        if not ascending_after(users, frame[s.ITEM_IDX].to_numpy(np.int64), last_user):
            raise BundleError(f"{path}: candidate rows not sorted by ({s.USER_IDX}, {s.ITEM_IDX}) "
                              f"after the previous part")
        if len(users) and users[-1] >= self.n_users:
            raise BundleError(f"{path}: {s.USER_IDX} {users[-1]} beyond the {self.n_users}-user map")
        return frame

    def purchased(self, user_idx: int) -> np.ndarray:
        return self.purchased_items[self.purchased_offsets[user_idx]:self.purchased_offsets[user_idx + 1]]


def extract_bundle(archive: Path, destination: Path | None = None) -> Path:
    """Unpack ``model.tar.gz`` safely (no absolute paths, no '..', no links) and return the folder."""
    target = Path(destination or tempfile.mkdtemp(prefix="ecomrec-bundle-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                    raise BundleError(f"{archive}: unsafe member {member.name!r} in bundle")
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{archive}: not a readable model.tar.gz ({error})") from error
    return target


def candidate_parts(manifest: dict[str, Any]) -> list[str]:
    """The candidates/ parts a manifest lists, in user order (part names sort as their users do)."""
    return sorted(name for name in manifest.get("files", {}) if name.startswith(f"{s.BUNDLE_CANDIDATES}/"))


def verify_bundle(root: Path) -> dict[str, Any]:
    """Check presence and checksums of every file the manifest lists; return the manifest."""
    manifest_path = root / s.BUNDLE_MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {s.BUNDLE_MANIFEST}; not an ecomrec bundle")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{manifest_path}: invalid JSON ({error})") from error
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: bundle format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    for relative in REQUIRED_FILES[1:]:
        if relative not in manifest.get("files", {}):
            raise BundleError(f"{manifest_path}: manifest does not list required file {relative}")
    if not candidate_parts(manifest):
        raise BundleError(f"{manifest_path}: manifest lists no {s.BUNDLE_CANDIDATES}/ part")
    for relative, expected in manifest["files"].items():
        path = root / relative
        if not path.is_file():
            raise BundleError(f"{root}: missing bundle file {relative}")
        if sha256_file(path) != expected:
            raise BundleError(f"{root}: checksum mismatch for {relative}")
    return manifest


def load_bundle(path: Path) -> Bundle:
    """Load a bundle from a ``model.tar.gz`` or an unpacked folder (e.g. SageMaker's /opt/ml/model).
    Candidate parts are checked (features present, row counts) from their Parquet footers only; their
    rows are read by :meth:`Bundle.iter_candidate_parts`."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle not found: {path}")
    root = path if path.is_dir() else extract_bundle(path)
    if path.is_dir() and not (root / s.BUNDLE_MANIFEST).exists() and (root / s.MODEL_ARCHIVE).is_file():
        root = extract_bundle(root / s.MODEL_ARCHIVE)  # SageMaker may hand us the folder of the archive
    manifest = verify_bundle(root)
    parts = tuple(root / part for part in candidate_parts(manifest))
    try:
        users = pd.read_parquet(root / s.BUNDLE_ID_MAPS / "users.parquet").sort_values(s.USER_IDX)
        items_map = pd.read_parquet(root / s.BUNDLE_ID_MAPS / "items.parquet").sort_values(s.ITEM_IDX)
        footers = [pq.read_metadata(part) for part in parts]
        popular = pd.read_parquet(root / s.BUNDLE_POPULAR)
        items = pd.read_parquet(root / s.BUNDLE_ITEMS).sort_values(s.ITEM_IDX).reset_index(drop=True)
        purchased = pd.read_parquet(root / s.BUNDLE_PURCHASED)
    except (OSError, ValueError) as error:
        raise BundleError(f"{root}: unreadable bundle table ({error})") from error
    n_users = len(users)
    if not np.array_equal(users[s.USER_IDX].to_numpy(), np.arange(n_users)):
        raise BundleError(f"{root}: user id map is not dense 0..{n_users - 1}")
    required = [s.USER_IDX, s.ITEM_IDX, *manifest["feature_spec"]["features"]]
    for part, footer in zip(parts, footers, strict=True):
        missing = [name for name in required if name not in footer.schema.names]
        if missing:
            raise BundleError(f"{root}: candidate part {part.name} lacks columns {missing}")
    purchased = purchased.sort_values([s.USER_IDX, s.ITEM_IDX], kind="stable")
    purchased_offsets, purchased_items = _csr(
        purchased[s.USER_IDX].to_numpy(), purchased[s.ITEM_IDX].to_numpy(np.int64), n_users)
    return Bundle(
        root=root,
        manifest=manifest,
        user_ids=users[s.USER_ID].astype(str).to_numpy(),
        item_ids=items_map[s.ITEM_ID].astype(str).to_numpy(),
        candidate_part_paths=parts,
        candidate_row_count=sum(footer.num_rows for footer in footers),
        popular_items=popular[s.ITEM_IDX].to_numpy(np.int64),
        popular_scores=popular[s.SCORE].to_numpy(np.float64),
        items=items,
        purchased_offsets=purchased_offsets,
        purchased_items=purchased_items,
    )
