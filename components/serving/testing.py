"""Run an app on a real loopback socket inside this process (tests, benchmarks): the same uvicorn
server and options as production (server.uvicorn_options), on a port the OS picks, stopped cleanly on exit."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from components.serving.server import uvicorn_options as server_options
from components.serving.settings import ServerLimits


@contextmanager
def serve_in_thread(app: FastAPI, *, host: str = "127.0.0.1", startup_timeout_s: float = 60.0,
                    limits: ServerLimits | None = None, **uvicorn_options: object) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) once the app has started (model loaded)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    limits = limits or ServerLimits()
    options: dict[str, object] = {**server_options(limits), "log_level": "warning", "lifespan": "on"}
    options.update(uvicorn_options)
    config = uvicorn.Config(app, **options)  # type: ignore[arg-type]
    config.ecomrec_limits = limits  # type: ignore[attr-defined]  # read by GuardedHttpToolsProtocol
    server = uvicorn.Server(config)
    exit_codes: list[object] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit as stop:  # uvicorn exits on a failed start-up (e.g. a bundle it cannot load)
            exit_codes.append(stop.code)

    thread = threading.Thread(target=run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the server stopped during start-up with exit code {exit_codes} "
                               "(the log says why)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"server on port {port} did not start within {startup_timeout_s} s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
