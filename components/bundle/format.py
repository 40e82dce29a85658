"""Reading and checking a bundle. Serving imports this module only (no Spark, no training code)."""

from __future__ import annotations

import json
import re
import shutil
import stat
import tarfile
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components import schema as s
from components.checksum import sha256_file
from components.errors import BundleError

# 3: the manifest lists every file's size and every Parquet file's rows; 2: candidates/ is a folder of parts
FORMAT_VERSION = 3
MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few KB; a bigger one is not read
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LABEL = re.compile(r"[A-Za-z0-9._:+-]{0,128}")
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


@dataclass(frozen=True)
class BundleLimits:
    """What a bundle may cost a reader, checked from its manifest before anything is unpacked or loaded
    (the serving settings ECOMREC_MAX_BUNDLE_BYTES, ECOMREC_MAX_TABLE_ROWS, ECOMREC_LOAD_MEMORY_SHARE)."""

    max_bytes: int = 3 << 30  # every listed file together, unpacked
    max_table_rows: int = 50_000_000  # any one Parquet table or candidate part
    max_memory_bytes: int | None = None  # the load's estimated peak (estimate_load_bytes); None: not checked


def estimate_load_bytes(manifest: dict[str, Any]) -> int:
    """The memory a serving load of this bundle adds at its peak, from the manifest's row counts: the
    served model (12 bytes a candidate plus offsets, ~200 bytes per user and item id in the maps, 16 per
    purchase) plus the largest candidate part's feature frame read for scoring, counted twice (the frame
    and CatBoost's prepared copy), plus what a real-time load adds (:func:`_realtime_bytes`). Deliberately
    generous: it decides whether to try, not what is used."""
    rows = manifest["rows"]
    parts = [rows[name] for name in candidate_parts(manifest)]
    columns = len(manifest["feature_spec"]["features"]) + 2
    ids = rows[f"{s.BUNDLE_ID_MAPS}/users.parquet"] + rows[f"{s.BUNDLE_ID_MAPS}/items.parquet"]
    resident = sum(parts) * 20 + ids * 200 + rows[s.BUNDLE_PURCHASED] * 24 + rows[s.BUNDLE_ITEMS] * 200
    resident += _realtime_bytes(manifest, columns)
    return resident + max(parts, default=0) * columns * 8 * 2


# Bytes a row of a history/ table costs a real-time load (components/realtime/features.py UserHistory): the
# table is read whole as a frame (daily: ~140 bytes a row, its event type a Python string), then kept as
# arrays (~75). Other history tables (item features, item statistics): a float or an object per column.
HISTORY_ROW_BYTES: Final = {"daily.parquet": 256, "orders.parquet": 256}


def _realtime_bytes(manifest: dict[str, Any], columns: int) -> int:
    """What a real-time load adds (a bundle with history/ and the neighbours): the history tables, the
    neighbour table (read, sorted, then kept as CSR arrays) and FreshSources' copies of the item factors
    (float32, two float64 while their Gram matrix is computed, the float64 ALS copy) and that Gram matrix."""
    rows = manifest["rows"]
    total = sum(count * HISTORY_ROW_BYTES.get(PurePosixPath(name).name, columns * 16)
                for name, count in rows.items() if name.startswith(f"{s.BUNDLE_HISTORY}/"))
    if s.BUNDLE_ITEM_NEIGHBOURS in rows:
        factor_bytes = int(manifest.get("sizes", {}).get(s.BUNDLE_ITEM_FACTORS, 0))
        rank = factor_bytes // max(4 * rows[f"{s.BUNDLE_ID_MAPS}/items.parquet"], 1)  # float32 factors
        total += rows[s.BUNDLE_ITEM_NEIGHBOURS] * 64 + factor_bytes * 7 + rank * rank * 8
    return total


def confined(name: str) -> bool:
    """A relative, normalised POSIX path with no '..': it names a file inside the bundle and nothing else."""
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts and str(path) == name
            and "\\" not in name and "\x00" not in name)


def check_manifest(manifest: Any, where: str, limits: BundleLimits) -> dict[str, Any]:
    """The manifest's own checks, before any file it lists is touched: format, required files, names
    confined to the bundle, sizes and rows present and within ``limits``. Returns the manifest."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: not a JSON object")
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    for key in ("version", "group"):  # they reach logs, metrics labels and answers
        value = manifest.get(key, "")
        if not (isinstance(value, str) and _LABEL.fullmatch(value) and (value or key == "group")):
            raise BundleError(f"{where}: {key} {str(value)[:80]!r} is not 1-128 letters, digits or ._:+-")
    files, sizes, rows = manifest.get("files"), manifest.get("sizes"), manifest.get("rows")
    if not (isinstance(files, dict) and isinstance(sizes, dict) and isinstance(rows, dict)):
        raise BundleError(f"{where}: files, sizes and rows must be objects")
    for name, digest in files.items():
        if not confined(name) or name == s.BUNDLE_MANIFEST:
            raise BundleError(f"{where}: file name {name[:200]!r} is not a path inside the bundle")
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise BundleError(f"{where}: {name}: checksum is not a sha256 hex digest")
        size = sizes.get(name)
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise BundleError(f"{where}: {name}: no size (bytes) in the manifest")
        if name.endswith(".parquet"):
            count = rows.get(name)
            if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
                raise BundleError(f"{where}: {name}: no row count in the manifest")
            if count > limits.max_table_rows:
                raise BundleError(f"{where}: {name} has {count} rows, over the limit of {limits.max_table_rows} "
                                  f"(ECOMREC_MAX_TABLE_ROWS)")
    if set(sizes) != set(files) or not set(rows) <= set(files):
        raise BundleError(f"{where}: sizes and rows must name the listed files only")
    for relative in REQUIRED_FILES[1:]:
        if relative not in files:
            raise BundleError(f"{where}: manifest does not list required file {relative}")
    if not candidate_parts(manifest):
        raise BundleError(f"{where}: manifest lists no {s.BUNDLE_CANDIDATES}/ part")
    total = sum(sizes.values())
    if total > limits.max_bytes:
        raise BundleError(f"{where}: {total} bytes unpacked, over the limit of {limits.max_bytes} "
                          f"(ECOMREC_MAX_BUNDLE_BYTES)")
    if limits.max_memory_bytes is not None:
        try:
            needed = estimate_load_bytes(manifest)
        except (KeyError, TypeError) as error:
            raise BundleError(f"{where}: cannot estimate the load's memory ({error!r})") from error
        if needed > limits.max_memory_bytes:
            raise BundleError(f"{where}: loading it would take about {needed >> 20} MB, more than the "
                              f"{limits.max_memory_bytes >> 20} MB this process may use now "
                              f"(ECOMREC_LOAD_MEMORY_SHARE of the memory available)")
    return manifest


def _parse_manifest(data: bytes, where: str, limits: BundleLimits) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{where}: invalid JSON ({error})") from error
    return check_manifest(manifest, where, limits)


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

    def optional_table(self, relative: str) -> pd.DataFrame | None:
        """A table the manifest may list (checked, sized and counted with the rest), or None when it does not."""
        if relative not in self.manifest["files"]:
            return None
        try:
            return pd.read_parquet(self.root / relative)
        except (OSError, ValueError) as error:
            raise BundleError(f"{self.root}: unreadable bundle table {relative} ({error})") from error

    def purchased(self, user_idx: int) -> np.ndarray:
        return self.purchased_items[self.purchased_offsets[user_idx]:self.purchased_offsets[user_idx + 1]]


def extract_bundle(archive: Path, destination: Path | None = None, limits: BundleLimits | None = None) -> Path:
    """Unpack ``model.tar.gz`` through its manifest and return the folder. The manifest must be the first
    file (write_bundle writes it first) and is checked before anything else is written; then only the
    files it lists are unpacked, each with the size it states, regular files only (no links, devices or
    sparse files), names confined to the folder. Anything else refuses the whole archive."""
    limits = limits or BundleLimits()
    target = Path(destination or tempfile.mkdtemp(prefix="ecomrec-bundle-"))
    target.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r|gz") as tar:  # a stream: members are read in order, once
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isdir() and (confined(name.rstrip("/")) or name in ("", ".")):
                    continue  # folders are made for the files in them
                if not confined(name) or not member.isreg() or member.issparse():
                    raise BundleError(f"{archive}: unsafe member {member.name[:200]!r} in bundle")
                if manifest is None:
                    if name != s.BUNDLE_MANIFEST:
                        raise BundleError(f"{archive}: the first file is {name[:200]!r}, not {s.BUNDLE_MANIFEST} "
                                          "(a bundle's manifest comes first, as write_bundle writes it)")
                    if member.size > MAX_MANIFEST_BYTES:
                        raise BundleError(f"{archive}: {s.BUNDLE_MANIFEST} of {member.size} bytes")
                    data = _member_bytes(tar, member)
                    manifest = _parse_manifest(data, f"{archive}: {s.BUNDLE_MANIFEST}", limits)
                    (target / s.BUNDLE_MANIFEST).write_bytes(data)
                    continue
                if name not in manifest["files"]:
                    raise BundleError(f"{archive}: member {name[:200]!r} is not listed in the manifest")
                if name in seen:
                    raise BundleError(f"{archive}: member {name!r} appears twice")
                if member.size != manifest["sizes"][name]:
                    raise BundleError(f"{archive}: member {name!r} is {member.size} bytes, the manifest says "
                                      f"{manifest['sizes'][name]}")
                seen.add(name)
                path = target / name
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                with source, path.open("xb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{archive}: not a readable model.tar.gz ({error})") from error
    if manifest is None:
        raise BundleError(f"{archive}: no {s.BUNDLE_MANIFEST}; not an ecomrec bundle")
    return target


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    source = tar.extractfile(member)
    assert source is not None
    with source:
        return source.read()


def candidate_parts(manifest: dict[str, Any]) -> list[str]:
    """The candidates/ parts a manifest lists, in user order (part names sort as their users do)."""
    return sorted(name for name in manifest.get("files", {}) if name.startswith(f"{s.BUNDLE_CANDIDATES}/"))


def verify_bundle(root: Path, limits: BundleLimits | None = None) -> dict[str, Any]:
    """Check the manifest (check_manifest), then every file it lists: a regular file inside ``root`` (not
    a link), of the stated size, with the stated checksum; return the manifest. Files it does not list
    are never read."""
    limits = limits or BundleLimits()
    manifest_path = root / s.BUNDLE_MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {s.BUNDLE_MANIFEST}; not an ecomrec bundle")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: {manifest_path.stat().st_size} bytes, not a manifest")
    manifest = _parse_manifest(manifest_path.read_bytes(), str(manifest_path), limits)
    real_root = root.resolve()
    for relative, expected in manifest["files"].items():
        path = root / relative
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise BundleError(f"{root}: missing bundle file {relative}") from None
        if not stat.S_ISREG(info.st_mode) or not path.resolve().is_relative_to(real_root):
            raise BundleError(f"{root}: bundle file {relative} is not a regular file inside the bundle")
        if info.st_size != manifest["sizes"][relative]:
            raise BundleError(f"{root}: {relative} is {info.st_size} bytes, the manifest says "
                              f"{manifest['sizes'][relative]}")
        if sha256_file(path) != expected:
            raise BundleError(f"{root}: checksum mismatch for {relative}")
    return manifest


def load_bundle(path: Path, limits: BundleLimits | None = None) -> Bundle:
    """Load a bundle from a ``model.tar.gz`` or an unpacked folder (e.g. SageMaker's /opt/ml/model).
    Every Parquet file's row count is read from its footer and checked against the manifest before any
    table is read; candidate parts are checked (features present) from their footers only, their rows
    read by :meth:`Bundle.iter_candidate_parts`. An archive is unpacked to a temporary folder that is
    deleted with the returned Bundle (or at exit)."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle not found: {path}")
    archive = path if path.is_file() else path / s.MODEL_ARCHIVE
    if path.is_file() or (not (path / s.BUNDLE_MANIFEST).exists() and archive.is_file()):
        # SageMaker may hand us the folder of the archive
        scratch = Path(tempfile.mkdtemp(prefix="ecomrec-bundle-"))
        try:
            bundle = _load_folder(extract_bundle(archive, scratch, limits), limits)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        weakref.finalize(bundle, shutil.rmtree, scratch, True)
        return bundle
    return _load_folder(path, limits)


def _load_folder(root: Path, limits: BundleLimits | None) -> Bundle:
    manifest = verify_bundle(root, limits)
    parts = tuple(root / part for part in candidate_parts(manifest))
    try:
        footers = [pq.read_metadata(part) for part in parts]
        for relative, expected in manifest["rows"].items():
            found = pq.read_metadata(root / relative).num_rows
            if found != expected:
                raise BundleError(f"{root}: {relative} holds {found} rows, the manifest says {expected}")
        users = pd.read_parquet(root / s.BUNDLE_ID_MAPS / "users.parquet").sort_values(s.USER_IDX)
        items_map = pd.read_parquet(root / s.BUNDLE_ID_MAPS / "items.parquet").sort_values(s.ITEM_IDX)
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
