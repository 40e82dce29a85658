"""The launcher's workers share the connections: with ``--workers 2`` each worker listens on its own
SO_REUSEPORT socket (components/serving/server.py SpreadMultiprocess), so connections opened together
spread over both, where a shared socket let the first worker to wake accept them all; and a killed worker
is replaced on its socket, so no connection hashed to it is lost. Real processes, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from components.serving.synthetic import SyntheticShop, make_synthetic_bundle

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = 32


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("workers") / "out", n_users=40, n_items=30, per_user=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_workers(shop: SyntheticShop, tmp_path: Path) -> Iterator[tuple[int, psutil.Process]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path), "ECOMREC_WATCH_INTERVAL_S": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "components.serving", "--model", str(shop.archive), "--port", str(port),
         "--workers", "2", "--log-level", "warning"], env=env, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "the server exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready within 90 s"
            time.sleep(0.2)
        while len(_connections_per_worker(psutil.Process(process.pid), port)) < 2 or not _all_ready(port):
            assert time.monotonic() < deadline, "both workers not ready within 90 s"
            time.sleep(0.2)
        yield port, psutil.Process(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _all_ready(port: int) -> bool:
    """Every worker answers (new connections hash to both sockets: a few tries reach each)."""
    try:
        return all(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200 for _ in range(8))
    except httpx.TransportError:
        return False


def _open_together(port: int, timeout_s: float) -> list[socket.socket]:
    """CONNECTIONS connections opened at once (as a pool or wrk opens them), then one request on each."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=timeout_s) for _ in range(CONNECTIONS)]
    for sock in socks:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n")
    for sock in socks:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "a connection got no answer"
    return socks


def _connections_per_worker(supervisor: psutil.Process, port: int) -> dict[int, int]:
    """Per worker (a child listening on the port: not multiprocessing's resource tracker), its connections."""
    counts = {}
    for child in supervisor.children():
        listing = getattr(child, "net_connections", None) or child.connections  # psutil < 6 names it so
        mine = [c for c in listing(kind="tcp") if c.laddr.port == port]
        if any(c.status == psutil.CONN_LISTEN for c in mine):
            counts[child.pid] = sum(1 for c in mine if c.status == psutil.CONN_ESTABLISHED)
    return counts


def test_connections_opened_together_spread_over_both_workers(two_workers: tuple[int, psutil.Process]) -> None:
    port, supervisor = two_workers
    socks = _open_together(port, timeout_s=10)
    try:
        counts = _connections_per_worker(supervisor, port)
        assert len(counts) == 2 and sum(counts.values()) == CONNECTIONS, counts
        # by hash: all on one worker has odds of 2 in 2**32; a shared socket gave exactly that
        assert min(counts.values()) >= 4, counts
    finally:
        for sock in socks:
            sock.close()


def test_a_killed_worker_is_replaced_on_its_socket(two_workers: tuple[int, psutil.Process]) -> None:
    port, supervisor = two_workers
    victim = psutil.Process(next(iter(_connections_per_worker(supervisor, port))))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    # connections hashed to the dead worker's socket wait in its queue until the replacement accepts them
    socks = _open_together(port, timeout_s=90)
    try:
        counts = _connections_per_worker(supervisor, port)
        assert victim.pid not in counts and len(counts) == 2 and min(counts.values()) >= 4, counts
    finally:
        for sock in socks:
            sock.close()


def test_workers_run_blas_single_threaded(two_workers: tuple[int, psutil.Process]) -> None:
    """Each worker's fresh answers do small BLAS work (ALS scores, a fold-in solve); an OpenBLAS pool per
    worker would only fight the other worker for the cores. The launcher sets the thread counts to 1
    before it spawns the workers (unless the environment names them)."""
    _, supervisor = two_workers
    workers = [p for p in supervisor.children(recursive=True) if "python" in p.name().lower()]
    assert workers
    for worker in workers:
        environment = worker.environ()
        assert environment.get("OPENBLAS_NUM_THREADS") == "1", environment.get("OPENBLAS_NUM_THREADS")

