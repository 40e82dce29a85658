"""Launcher for one ecomrec step inside a SageMaker container (stdlib only: it runs before our code is
importable).

    python3 entry.py <module> --<input> PATH ... --output PATH --config JSON

1. Put the project's code on ``sys.path``: the ``ecomrec-code.zip`` the pipeline mounts under
   /opt/ml/processing/input/ecomrec-code (or, under spark-submit, the copy ``--py-files`` put on the path)
   is extracted, so package data files are plain files.
2. ``ECOMREC_PIP_INSTALL`` (space separated requirements): installed first. The stock SageMaker Spark
   image has Python 3.12, numpy and pandas but not pydantic, pyarrow, implicit or catboost. Set it to ""
   with an image that already has them.
3. ``importlib.import_module(<module>).main(argv)``: the same entry point and argv as the local runner.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile

CODE_ARCHIVE = "ecomrec-code.zip"
CODE_INPUT_DIR = "/opt/ml/processing/input/ecomrec-code"
log = logging.getLogger("ecomrec.entry")
MIN_PYTHON = (3, 11)


def find_code_archive(search_dirs: list[str], path_entries: list[str]) -> str | None:
    for directory in search_dirs:
        candidate = os.path.join(directory, CODE_ARCHIVE)
        if os.path.isfile(candidate):
            return candidate
    for entry in path_entries:  # spark-submit --py-files puts its local copy of the zip on sys.path
        if os.path.basename(entry) == CODE_ARCHIVE and os.path.isfile(entry):
            return entry
    return None


def install_code(archive: str, target: str) -> None:
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(target)
    sys.path.insert(0, target)


def pip_install(requirements: str) -> None:
    packages = requirements.split()
    if not packages:
        return
    log.info("pip install %s", " ".join(packages))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir",
                    "--disable-pip-version-check", *packages], check=True)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv:
        raise SystemExit("usage: entry.py <module> [step arguments]")
    module_name, step_argv = argv[0], argv[1:]
    if sys.version_info < MIN_PYTHON:
        # e.g. the Spark image's /usr/bin/python3 (3.9) instead of its /usr/local/bin/python3 (3.12)
        raise SystemExit(f"ecomrec needs Python {'.'.join(map(str, MIN_PYTHON))}+, this is {sys.executable} "
                         f"{sys.version.split()[0]}")
    archive = find_code_archive([os.environ.get("ECOMREC_CODE_DIR", CODE_INPUT_DIR)], list(sys.path))
    if archive is None:
        raise SystemExit(f"{CODE_ARCHIVE} not found in {CODE_INPUT_DIR} nor on sys.path")
    install_code(archive, tempfile.mkdtemp(prefix="ecomrec-code-"))
    pip_install(os.environ.get("ECOMREC_PIP_INSTALL", ""))
    log.info("running %s", module_name)
    importlib.import_module(module_name).main(step_argv)


if __name__ == "__main__":
    main(sys.argv[1:])
