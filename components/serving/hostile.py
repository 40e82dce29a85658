"""Hostile clients against a running service, for tests/test_serving_hostile.py and
benchmarks/serving_hostile.py: slow and huge headers, idle connections, huge and abandoned bodies, each
kind on its own connections, reconnecting whenever the server cuts one, while a well-behaved client keeps
asking GET /recommendations and the server's resident memory is sampled. Bounded by a duration and fixed
connection counts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Attack:
    slow_headers: int = 16  # a header byte every 0.2 s, never finished
    idle: int = 16  # connect, say nothing
    huge_headers: int = 4  # 256 KB header chunks until cut
    huge_bodies: int = 4  # chunked /invocations bodies of endless spaces (read up to the body limit)
    declared_bodies: int = 4  # 64 MB declared to /invocations and /admin/reload, 64 KB sent
    abandoned_bodies: int = 8  # half a declared body, then the client leaves
    seconds: float = 5.0

    @property
    def connections(self) -> int:
        return (self.slow_headers + self.idle + self.huge_headers + self.huge_bodies + self.declared_bodies
                + self.abandoned_bodies)


@dataclass
class Outcome:
    cut_by_server: dict[str, int] = field(default_factory=dict)  # connections ended per kind (mostly cut by the server)
    probe_status: dict[int, int] = field(default_factory=dict)  # GET /recommendations answers by status
    probe_errors: list[str] = field(default_factory=list)
    probe_latency_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # the server's resident memory, sampled

    @property
    def peak_rss_mb(self) -> float:
        return max(self.rss_mb, default=0.0)

    def latency_quantile(self, q: float) -> float:
        values = sorted(self.probe_latency_s)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), from /proc."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def _until_cut(address: tuple[str, int], deadline: float, opening: bytes, then: Callable[[socket.socket], None],
               ) -> int:
    """Open, send ``opening``, run ``then`` until the server closes; reconnect until ``deadline``. Returns
    how many connections the server cut."""
    cuts = 0
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=2) as sock:
                sock.sendall(opening)
                then(sock)
        except (OSError, TimeoutError):
            pass
        cuts += 1
        time.sleep(0.05)
    return cuts


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def run_attack(host: str, port: int, users: Sequence[str], attack: Attack, *, server_pid: int | None = None,
               probe_interval_s: float = 0.02) -> Outcome:
    address = (host, port)
    deadline = time.monotonic() + attack.seconds
    outcome = Outcome()
    lock = threading.Lock()

    def trickle(sock: socket.socket) -> None:
        while time.monotonic() < deadline and not _closed(sock):
            sock.sendall(b"a")
            time.sleep(0.2)

    def wait(sock: socket.socket) -> None:
        while time.monotonic() < deadline and not _closed(sock):
            time.sleep(0.1)

    def flood(chunk: bytes) -> Callable[[socket.socket], None]:
        def send(sock: socket.socket) -> None:
            while time.monotonic() < deadline:
                sock.sendall(chunk)
        return send

    def leave(sock: socket.socket) -> None:
        time.sleep(0.1)  # the app is reading the body when the client goes

    kinds: list[tuple[str, int, bytes, Callable[[socket.socket], None]]] = [
        ("slow_header", attack.slow_headers, b"GET /recommendations?user_id=1 HTTP/1.1\r\nHost: h\r\nX-Slow: ",
         trickle),
        ("idle", attack.idle, b"", wait),
        ("huge_header", attack.huge_headers, b"GET /healthz HTTP/1.1\r\nHost: h\r\nX-Big: ", flood(b"a" * (256 << 10))),
        ("huge_body", attack.huge_bodies, b"POST /invocations HTTP/1.1\r\nHost: h\r\nContent-Type: text/csv\r\n"
                                          b"Transfer-Encoding: chunked\r\n\r\n",
         flood(b"40000\r\n" + b" " * 0x40000 + b"\r\n")),
        ("declared_body", attack.declared_bodies, b"POST /admin/reload HTTP/1.1\r\nHost: h\r\nContent-Length: "
                                                  b"67108864\r\n\r\n" + b"{" * 65536, wait),
        ("abandoned_body", attack.abandoned_bodies, b"POST /invocations HTTP/1.1\r\nHost: h\r\nContent-Type: "
                                                    b"application/json\r\nContent-Length: 200000\r\n\r\n"
                                                    + b" " * 100_000, leave),
    ]

    def attacker(kind: str, opening: bytes, then: Callable[[socket.socket], None]) -> None:
        cuts = _until_cut(address, deadline, opening, then)
        with lock:
            outcome.cut_by_server[kind] = outcome.cut_by_server.get(kind, 0) + cuts

    def probe() -> None:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=5) as client:
            i = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    status = client.get("/recommendations", params={"user_id": users[i % len(users)]}).status_code
                    outcome.probe_latency_s.append(time.perf_counter() - started)
                    outcome.probe_status[status] = outcome.probe_status.get(status, 0) + 1
                except httpx.HTTPError as error:
                    outcome.probe_errors.append(f"{type(error).__name__}: {error}")
                i += 1
                time.sleep(probe_interval_s)

    def sample() -> None:
        while time.monotonic() < deadline + 0.5:
            if server_pid is not None:
                outcome.rss_mb.append(rss_mb(server_pid))
            time.sleep(0.05)

    threads = [threading.Thread(target=attacker, args=(kind, opening, then), daemon=True)
               for kind, count, opening, then in kinds for _ in range(count)]
    threads += [threading.Thread(target=probe, daemon=True), threading.Thread(target=sample, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=attack.seconds + 30)
    return outcome
