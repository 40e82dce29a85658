"""A real redis-server for a test: started on a free loopback port with no persistence, stopped after
(bash .ci/setup --dev installs it; Debian's redis-server package)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """SIGSTOP: the port stays open, nothing answers (a slow store)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(timeout=10)


@contextmanager
def redis_server(workdir: Path, *, cluster: bool = False) -> Iterator[RedisServer]:
    """``cluster``: one node in cluster mode owning every slot (a cluster-mode cache behind one endpoint, as
    ElastiCache Serverless presents itself)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: run `bash .ci/setup --dev` (Debian package redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning",
         # the cluster bus defaults to port + 10000, past 65535 for an ephemeral port above 55535: its own
         *(["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-port", str(free_port())] if cluster else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, process)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    if cluster:
        import redis

        admin = redis.Redis(port=port)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        while admin.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
            if time.monotonic() > deadline + 10:
                server.kill()
                pytest.fail("redis-server in cluster mode did not reach cluster_state:ok")
            time.sleep(0.05)
        admin.close()
    try:
        yield server
    finally:
        if process.poll() is None:
            server.kill()
