"""``python -m components.serving``: what the container's ``serve`` entry point runs (no CLI extras,
no Spark). Same options as ``ecomrec serve``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from components.serving.server import LaunchError, run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m components.serving", description=__doc__)
    parser.add_argument("--model", help="bundle: model.tar.gz, a folder, or s3://... "
                                        "(default: ECOMREC_MODEL, else /opt/ml/model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--registry", type=Path, help="a local registry folder to follow")
    parser.add_argument("--group", help="model package group in the registry")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    try:
        run(model=args.model, host=args.host, port=args.port, workers=args.workers, tls_cert=args.tls_cert,
            tls_key=args.tls_key, registry=args.registry, group=args.group, log_level=args.log_level)
    except LaunchError as error:
        parser.error(str(error))  # usage + message on stderr, exit code 2


if __name__ == "__main__":
    main()
