"""The durable event log: acknowledged events appended to CSV files under the raw folder's events/, in the
raw contract's format, so the next ``ecomrec pipeline run --data RAW`` reads them as raw events.

Layout: ``RAW/events/realtime/date=YYYY-MM-DD/<host>-<pid>-<start>.csv`` (the UTC day of receipt). Each
worker process appends to its own file (no lock shared between processes; a file has one writer), writes
the header with its first rows (the ETL refuses a CSV file with a header and no rows), and fsyncs the file
(and, for a new file, its folders) before :meth:`EventLog.append` returns: an acknowledged event survives
a killed process or a lost machine's page cache. The columns are the contract's plus ``event_id``, an
extra column the ETL keeps in its exact-duplicate check, so a retried event written twice counts once.

Values are written as the client sent them (the raw contract keeps originals; the ETL parses them with the
same rules the intake checked). A crash in the middle of a write leaves at most one torn last line of an
unacknowledged batch; the ETL reads it as a rejected row (malformed, or a truncated value), never as an
acknowledged event lost.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from components import schema as s

REALTIME_DIR: Final = "realtime"  # under RAW/events/
EVENT_ID: Final = s.EVENT_ID  # optional client id of an event: retries with it are idempotent
LOG_COLUMNS: Final = s.EVENT_LOG_COLUMNS


class DurableLog(Protocol):
    """The durable event log port: :class:`EventLog` here (local files), and on AWS
    :class:`components.realtime.firehose_log.FirehoseEventLog` (Kinesis Data Firehose to the raw bucket)."""

    def append(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Make ``rows`` durable before returning; raise OSError (nothing acknowledged) otherwise."""

    def close(self) -> None: ...


def csv_line(row: Mapping[str, object]) -> str:
    """One row as a CSV line of LOG_COLUMNS (missing or None = empty), newline-terminated."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if row.get(c) is None else row.get(c) for c in LOG_COLUMNS])
    return buffer.getvalue()


def log_folder(raw_root: Path) -> Path:
    return raw_root / s.EVENTS / REALTIME_DIR


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EventLog:
    """Append-only, fsync'ed CSV files of one process. Thread-safe (the service's thread pool shares it)."""

    def __init__(self, raw_root: Path, *, fsync: bool = True,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.folder = log_folder(raw_root)
        self.fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._day: str | None = None
        self.path: Path | None = None

    def _open(self, day: str) -> int:
        """The file for ``day``, created on first use. A forked worker opens its own (pid in the name)."""
        if self._fd is not None and self._day == day and self._pid == os.getpid():
            return self._fd
        self.close()
        folder = self.folder / f"date={day}"
        new_folders = [p for p in (self.folder.parent, self.folder, folder) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.csv"
        self.path = folder / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self._pid, self._day = os.getpid(), day
        self._header_due = True
        if self.fsync:
            for created in (folder, *[p.parent for p in new_folders]):
                _fsync_dir(created)
        return self._fd

    def append(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Write ``rows`` (raw values by column name; missing = empty) and make them durable."""
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        with self._lock:
            fd = self._open(self._clock().strftime("%Y-%m-%d"))
            if self._header_due:
                writer.writerow(LOG_COLUMNS)
            for row in rows:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in LOG_COLUMNS])
            data = buffer.getvalue().encode("utf-8")
            view = memoryview(data)
            while view:  # a regular file takes the whole write; the loop is for the rule, not the case
                written = os.write(fd, view)
                view = view[written:]
            self._header_due = False
            if self.fsync:
                os.fsync(fd)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
