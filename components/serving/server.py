"""Start the service with uvicorn: the one launcher behind ``ecomrec serve`` and the container's
``serve`` entry point (``python -m components.serving``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from components.serving.settings import ServingSettings

log = logging.getLogger(__name__)


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
    try:
        ServingSettings()
    except ValidationError as error:
        raise LaunchError(f"invalid service settings: {error}") from error
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("serving on %s://%s:%d with %d worker(s)", "https" if tls_cert else "http", host, port, workers)
    uvicorn.run(
        "components.serving.main:app_factory", factory=True, host=host, port=port, workers=workers,
        ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
        loop="uvloop", http="httptools", access_log=False, log_level=log_level, server_header=False,
        # Longer than the 60 s idle timeout of AWS load balancers, so they never reuse a closed connection.
        timeout_keep_alive=75,
    )
