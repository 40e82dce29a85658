"""Start the service with uvicorn: the one launcher behind ``ecomrec serve`` and the container's
``serve`` entry point (``python -m components.serving``)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from functools import cache
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from components.serving.settings import ServerLimits, ServingSettings

log = logging.getLogger(__name__)
PROTOCOL = "components.serving.server:GuardedHttpToolsProtocol"


@cache
def _env_limits() -> ServerLimits:
    return ServerLimits()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus what it lacks (uvicorn 0.55, protocols/http/httptools_impl.py):
    its only timer is the keep-alive one, armed after an answer and cancelled by the next byte, so a
    connection that never completes a request head (sent nothing after connecting or after the TLS
    handshake, or trickles a header) or a body is held forever; and httptools buffers a header of any
    size. Here the request head must arrive within ``header_timeout_s`` and be at most
    ``max_header_bytes`` (else 431 and close), and the body within ``body_timeout_s`` of the head.

    Limits come from the uvicorn Config's ``ecomrec_limits`` attribute (tests, serve_in_thread) or from
    the ECOMREC_* environment (``uvicorn --workers N`` spawns processes that import this class by name)."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ServerLimits = getattr(config, "ecomrec_limits", None) or _env_limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0

    def _arm(self, seconds: float, handler: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._deadline is None:  # the first byte after an answer: the keep-alive timer just ended
                self._arm(self.limits.header_timeout_s, self._head_timed_out)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._disarm()
            self._close_with(431, "Request header fields too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout_s, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # an answer is being made: after it, uvicorn's keep-alive timer takes over
        if not self.transport.is_closing():
            self._close_with(408, "Request head not received in time")

    def _body_timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing a connection whose request body did not arrive within %.0f s",
                     self.limits.body_timeout_s)
            self.transport.close()  # the app sees http.disconnect (routers treat it as the client's end)

    def _close_with(self, status: int, message: str) -> None:
        body = message.encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body]))
        self.transport.close()


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """The uvicorn options every server of this service runs with (the launcher and serve_in_thread)."""
    return {"http": PROTOCOL, "loop": "uvloop", "timeout_keep_alive": limits.keep_alive_s,
            "limit_concurrency": limits.max_connections, "h11_max_incomplete_event_size": limits.max_header_bytes,
            "access_log": False, "server_header": False}


class LaunchError(ValueError):
    """Bad launch options; the message names the option."""


def check_options(*, port: int, workers: int, tls_cert: Path | None, tls_key: Path | None) -> None:
    if not 0 < port < 65536:
        raise LaunchError(f"--port must be within 1..65535, got {port}")
    if workers < 1:
        raise LaunchError(f"--workers must be >= 1, got {workers}")
    if (tls_cert is None) != (tls_key is None):
        raise LaunchError("--tls-cert and --tls-key go together: give both or neither")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not path.is_file():
            raise LaunchError(f"{flag}: no such file: {path}")
    if tls_cert is not None and tls_key is not None:
        check_tls(tls_cert, tls_key)


def _no_passphrase() -> str:
    raise LaunchError("is encrypted; give an unencrypted key (the server cannot ask for a passphrase)")


def check_tls(cert: Path, key: Path) -> None:
    """Load the pair as the server will, so a bad pair fails here with a message, not a traceback (or,
    for an encrypted key, OpenSSL's passphrase prompt on a terminal nobody watches)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=_no_passphrase)
    except LaunchError as error:
        raise LaunchError(f"--tls-key {key} {error}") from None
    except ssl.SSLError as error:
        what = ("does not match the certificate" if "KEY_VALUES_MISMATCH" in str(error)
                else f"cannot be read with the certificate ({error.reason or error})")
        raise LaunchError(f"--tls-key {key} {what} {cert}") from None


def spread_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to one address with SO_REUSEPORT (not yet listening: each worker listens)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SpreadMultiprocess(Multiprocess):
    """uvicorn's worker supervisor (uvicorn 0.55, supervisors/multiprocess.py) with one SO_REUSEPORT
    socket per worker instead of one socket shared by all: the kernel then spreads new connections over
    the workers. On a shared socket whichever worker wakes first accepts every connection waiting, so a
    client that opens its connections together (a load balancer's pool, wrk) lands on one worker while the
    other idles (measured: 16 connections, all on one of two workers). A worker that dies is replaced on
    its own socket, which the supervisor keeps open, so connections hashed to it wait rather than fail."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=[])
        self.worker_sockets = sockets
        self.processes_num = len(sockets)

    def init_processes(self) -> None:
        for sock in self.worker_sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        # the parent's version, but a replacement takes its predecessor's socket
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app or the socket is broken: restarts would fail too
                log.error("worker [%s] failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            log.info("worker [%s] died; starting another", process.pid)
            replacement = Process(self.config, [self.worker_sockets[idx]])
            replacement.start()
            self.processes[idx] = replacement

    def restart_all(self) -> None:  # SIGHUP: one worker at a time, each on its own socket
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = Process(self.config, [self.worker_sockets[idx]])
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                return
            old.terminate()
            old.join()
            self.processes[idx] = new

    def handle_ttin(self) -> None:
        # a worker more would need a socket more, and one fewer would leave its socket's queue unserved
        log.warning("SIGTTIN ignored: the worker count is fixed at %d (one socket each)", len(self.processes))

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the worker count is fixed at %d (one socket each)", len(self.processes))


def run(*, model: str | None = None, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
        tls_cert: Path | None = None, tls_key: Path | None = None, registry: Path | None = None,
        group: str | None = None, log_level: str = "info") -> None:
    """Validate everything first (a bad option or setting fails here, before any socket is opened),
    then serve until stopped. Options travel to worker processes as ECOMREC_* variables."""
    check_options(port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key)
    overrides = {"ECOMREC_MODEL": model, "ECOMREC_REGISTRY_ROOT": str(registry) if registry else None,
                 "ECOMREC_MODEL_GROUP": group}
    for name, value in overrides.items():
        if value is not None:
            os.environ[name] = value
    # A fresh answer's BLAS work (ALS scores, a new user's fold-in solve) is small: OpenBLAS's own thread
    # pool per worker only competes with the other workers for the cores (a 256x256 solve stalled at 125 ms
    # under load with 2 threads). Spawned workers load numpy after this; an explicit setting wins.
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    try:
        ServingSettings()
        limits = ServerLimits()
    except ValidationError as error:
        raise LaunchError(f"invalid service settings: {error}") from error
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("serving on %s://%s:%d with %d worker(s)", "https" if tls_cert else "http", host, port, workers)
    options: dict[str, Any] = {
        "factory": True, "host": host, "port": port, "workers": workers, "log_level": log_level,
        "ssl_certfile": str(tls_cert) if tls_cert else None, "ssl_keyfile": str(tls_key) if tls_key else None,
        **uvicorn_options(limits)}
    if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run("components.serving.main:app_factory", **options)
        return
    config = uvicorn.Config("components.serving.main:app_factory", **options)
    try:
        sockets = spread_sockets(host, port, workers)
    except OSError as error:
        raise LaunchError(f"cannot listen on {host}:{port}: {error}") from error
    try:
        SpreadMultiprocess(config, sockets).run()
    finally:
        for sock in sockets:
            sock.close()
