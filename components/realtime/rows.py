"""Every user's candidate feature rows at the cutoff, kept on local disk for per-request scoring.

The service scores all candidates once at load and frees their features (components/serving/engine.py);
a user with fresh events needs their rows again, with some features moved to the request time. The bundle's
parts are rewritten here at load in small row groups (``ROW_GROUP_ROWS``), so one user's ~200 rows cost one
or two row-group reads (their user range comes from the row groups' statistics), with a small LRU cache.
"""

from __future__ import annotations

import os
import shutil
import threading
from bisect import bisect_right
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components import schema as s
from components.realtime.lru import BoundedLru

if TYPE_CHECKING:
    from components.bundle import Bundle

ROW_GROUP_ROWS: Final = 4096
CACHE_USERS: Final = 2048
# ~640 Online Retail users (~250 rows of ~75 columns: ~100 KB each); by count alone, 2,048 users could hold
# ~200 MB a worker
CACHE_BYTES: Final = 64 << 20


def frame_bytes(frame: pd.DataFrame) -> int:
    """A frame's memory, its object cells counted ~64 bytes each (short strings; a deep count costs more
    than the read it would cache)."""
    objects = sum(len(frame) for dtype in frame.dtypes if dtype.kind == "O")
    return int(frame.memory_usage(index=False).sum()) + 56 * objects + 1000


class FeatureRows:
    def __init__(self, folder: Path, index: list[tuple[int, int, int, int]], *, cache_users: int = CACHE_USERS,
                 cache_bytes: int = CACHE_BYTES):
        """``index``: (first user, last user, part number, row group) per row group, in user order."""
        self.folder = folder
        self._index = index
        self._starts = [first for first, _, _, _ in index]
        self._files: dict[int, pq.ParquetFile] = {}
        self._lock = threading.Lock()
        self._cache: BoundedLru[int, pd.DataFrame] = BoundedLru(cache_users, cache_bytes, frame_bytes)

    @classmethod
    def write(cls, bundle: Bundle, folder: Path) -> FeatureRows:
        """``folder`` is named ``<version>-<pid>``; earlier models' folders of this process and folders of
        processes that are gone are deleted (one copy of the rows per live worker)."""
        _prune(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index: list[tuple[int, int, int, int]] = []
        for number, frame in enumerate(bundle.iter_candidate_parts()):
            if frame.empty:
                continue
            path = folder / f"part-{number:05d}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=ROW_GROUP_ROWS)
            meta = pq.read_metadata(path)
            column = meta.schema.to_arrow_schema().get_field_index(s.USER_IDX)
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(column).statistics
                index.append((int(stats.min), int(stats.max), number, group))
        return cls(folder, index)

    def _file(self, number: int) -> pq.ParquetFile:
        handle = self._files.get(number)
        if handle is None:
            handle = self._files[number] = pq.ParquetFile(self.folder / f"part-{number:05d}.parquet")
        return handle

    def user_rows(self, user_idx: int) -> pd.DataFrame:
        """The user's rows (item_idx ascending; empty when the user has none). Do not modify: copy."""
        cached = self._cache.get(user_idx)
        if cached is not None:
            return cached
        with self._lock:
            position = bisect_right(self._starts, user_idx) - 1
            pieces = []
            # the user's rows may start in an earlier group that ends with them, and run into later ones
            while position > 0 and self._index[position - 1][1] >= user_idx:
                position -= 1
            while 0 <= position < len(self._index) and self._index[position][0] <= user_idx:
                _, last, number, group = self._index[position]
                if last >= user_idx:
                    # one thread (the request's): the row group is small, pyarrow's pool would only add
                    # threads competing with the other worker; the user's rows are picked before pandas
                    table = self._file(number).read_row_group(group, use_threads=False)
                    table = table.filter(pc.equal(table[s.USER_IDX], user_idx))
                    pieces.append(table.to_pandas(use_threads=False))
                position += 1
            rows = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
        self._cache.put(user_idx, rows)
        return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune(folder: Path) -> None:
    if not folder.parent.is_dir():
        return
    me = os.getpid()
    for sibling in folder.parent.iterdir():
        pid_text = sibling.name.rsplit("-", 1)[-1]
        if sibling == folder or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == me or not _alive(pid):
            shutil.rmtree(sibling, ignore_errors=True)
