"""Acknowledged means kept: a server killed with SIGKILL right after acknowledging loses no event. The
server is a real `uvicorn` process with two workers; a client posts batches from two threads and records
every acknowledgement; SIGKILL goes to the whole process group the moment the last answer arrives."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from components.realtime.log import log_folder
from components.serving.synthetic import make_synthetic_bundle
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]


def test_sigkill_after_acknowledgements_loses_no_acknowledged_event(tmp_path: Path) -> None:
    shop = make_synthetic_bundle(tmp_path / "bundle", n_users=40, n_items=30, per_user=10)
    port, raw = free_port(), tmp_path / "raw"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOMREC_MODEL": str(shop.archive),
           "ECOMREC_WORK_DIR": str(tmp_path / "work"), "ECOMREC_EVENTS_RAW_ROOT": str(raw),
           "ECOMREC_WATCH_INTERVAL_S": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "components.serving.main:app_factory", "--factory", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=tmp_path, start_new_session=True)  # its own group: SIGKILL reaches the workers too
    url = f"http://127.0.0.1:{port}"
    acknowledged: set[str] = set()
    lock = threading.Lock()
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "work" / "features").glob("*"))) < 2 or not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the server did not start")
            time.sleep(0.2)

        def post(thread: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as client:
                for batch in range(15):
                    events = [{"user_id": f"{thread}-{n}", "item_id": "SKU-00001", "event_type": "view",
                               "timestamp": "2024-05-01T10:00:00", "event_id": f"{thread}-{batch}-{n}"}
                              for n in range(100)]
                    answer = client.post("/events", json={"events": events}).json()
                    with lock:
                        acknowledged.update(events[i]["event_id"] for i in answer["accepted"])

        threads = [threading.Thread(target=post, args=(t,)) for t in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no shutdown hook, no flush: only what was on disk counts
        process.wait(timeout=30)
    assert len(acknowledged) == 3000
    logged: set[str] = set()
    for path in log_folder(raw).rglob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            logged.update(row["event_id"] for row in csv.DictReader(handle))
    assert acknowledged <= logged


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
