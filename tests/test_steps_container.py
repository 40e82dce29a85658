"""The steps image without a Docker engine: the Dockerfile's invariants (the pinned Spark base given as a build
argument, a hash-locked install into its own venv, no pyspark installed over the base's Spark, the venv first
for `python3` and PYSPARK_PYTHON), hadolint, the lock against the requirements and the tested versions, and
the image's own layout run in an isolated venv whose imports are limited to what the lock installs.

The base image: aws/sagemaker-spark-container, spark/processing/3.5/py3/docker/py312/Dockerfile.cpu at commit
7d90eeb1461f614340475dc4644313a629c3750b (git tag 3.5-cpu-py312-v1.3): CPython 3.12 at /usr/bin/python3.12
(/usr/local/bin/python3 and, since that commit, /usr/bin/python3 link to it), Spark from EMR's dnf packages
(spark-core, spark-python: SPARK_HOME=/usr/lib/spark, no pip-installed pyspark), PYSPARK_PYTHON as an ENV,
ENTRYPOINT smspark-submit; its own Python packages come from smsparkbuild/py312/Pipfile.runtime.lock
(numpy 1.26.4 among them), which the venv leaves alone.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from pipelines.graph import STEPS
from pipelines.sagemaker.images import SPARK_REPOSITORY, SPARK_TAG, spark_image, steps_image_tag
from tests.test_serving_container import _imports, hadolint, isolated_python

REPO = Path(__file__).resolve().parents[1]
CONTAINER = REPO / "containers" / "steps"
DOCKERFILE = CONTAINER / "Dockerfile"
VENV = "/opt/ecomrec"
APP = f"{VENV}/app"
# Not installed by the lock: the base image's Spark provides them (SPARK_HOME/python and its py4j zip).
FROM_BASE = {"pyspark", "py4j"}
# What a Kubeflow task imports in the image (pipelines/kubeflow/pipeline.py: install_kfp_package=False): the
# command KFP 2.17.3 compiles runs `_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main` on a module that
# imports kfp and kfp.dsl (kfp/dsl/component_factory.py, _get_command_and_args_for_lightweight_component)
# and whose function body imports pipelines.kubeflow.runtime.
KUBEFLOW_TASK_IMPORTS = ("kfp.dsl.executor_main", "kfp.dsl", "pipelines.kubeflow.runtime")


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def lock_pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    text = (CONTAINER / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text,
                         flags=re.MULTILINE)
    assert len(entries) == len(re.findall(r"^[A-Za-z0-9]", text, flags=re.MULTILINE))  # every entry hashed
    return {canonicalize_name(name): version for name, version, _ in entries}


def test_the_base_is_the_pinned_spark_image_given_as_a_build_argument() -> None:
    ops = instructions()
    base = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))["SPARK_IMAGE"]
    # the pin of pipelines/sagemaker/images.py, us-east-1's registry as the SDK's spark.json lists it
    assert base == spark_image("us-east-1")
    assert base.endswith(f"/{SPARK_REPOSITORY}:{SPARK_TAG}")
    assert [args for op, args in ops if op == "FROM"] == ["${SPARK_IMAGE}"]


def test_the_closure_is_installed_from_the_lock_only_and_no_spark_over_the_base() -> None:
    ops = instructions()
    runs = " ".join(args for op, args in ops if op == "RUN")
    installs = [found.strip() for found in re.findall(r"pip install ([^&]+)", runs)]
    assert installs == ["--require-hashes --no-deps --requirement /tmp/ecomrec-requirements.lock"]
    assert f"/usr/bin/python3.12 -m venv {VENV}" in runs  # the base's 3.12, not the OS's 3.9
    assert not re.search(r"\bpyspark\b", runs)
    assert not [args for op, args in ops if op in ("ADD", "ENTRYPOINT", "USER")]  # the base's smspark-submit
    env = " ".join(args for op, args in ops if op == "ENV")
    from pipelines.sagemaker.pipeline import PROCESSING_PYTHON

    assert PROCESSING_PYTHON == "python3"  # found on PATH: the plain steps' interpreter is the venv's
    assert f'PATH="{VENV}/bin:${{PATH}}"' in env
    assert f"PYSPARK_PYTHON={VENV}/bin/python3" in env  # Spark's driver and executors too
    assert 'ECOMREC_PIP_INSTALL=""' in env
    ignore = (CONTAINER / "Dockerfile.dockerignore").read_text().split()
    sources = {src.rstrip("/") for op, args in ops if op == "COPY" for src in shlex.split(args)[:-1]}
    assert {f"!{src}/" if (REPO / src).is_dir() else f"!{src}" for src in sources} <= set(ignore)


def test_requirements_are_the_core_dependencies_but_pyspark_plus_the_kubeflow_extra() -> None:
    """kfp too: every Kubeflow task runs ``python3 -m kfp.dsl.executor_main`` in this image."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [line.split("#")[0].strip() for line in (CONTAINER / "requirements.txt").read_text().splitlines()]
    expected = [d for d in project["dependencies"] if not d.startswith("pyspark")]
    expected += project["optional-dependencies"]["kubeflow"]
    assert sorted(filter(None, wanted)) == sorted(re.sub(r"\s+", "", d) for d in expected)


def test_the_lock_satisfies_the_requirements_at_the_tested_versions() -> None:
    """Every requirement pinned with hashes, and at the version the test suite runs with (the dev venv's):
    the steps run what the tests ran."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = lock_pins()
    for line in filter(None, (x.split("#")[0].strip() for x in (CONTAINER / "requirements.txt").read_text()
                              .splitlines())):
        wanted = Requirement(line)
        pinned = pins.get(canonicalize_name(wanted.name))
        assert pinned is not None and wanted.specifier.contains(pinned, prereleases=True), (line, pinned)
    assert not FROM_BASE & set(pins)
    tested = {name: importlib.metadata.version(name) for name in pins}
    assert {n: v for n, v in pins.items() if tested[n] != v} == {}, "refresh the lock (see its header)"


def test_hadolint_finds_nothing() -> None:
    hadolint(DOCKERFILE)


def test_the_tag_follows_every_input_of_the_image(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for package in ("components", "pipelines"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    shutil.copytree(CONTAINER, root / "containers" / "steps")
    first = steps_image_tag(root)
    assert steps_image_tag(root) == first and re.fullmatch(r"[0-9a-f]{12}", first)
    seen = {first}
    for changed in ("components/__init__.py", "containers/steps/requirements.lock", "containers/steps/Dockerfile",
                    "containers/steps/Dockerfile.dockerignore"):
        with (root / changed).open("a") as handle:
            handle.write("\n# changed\n")
        seen.add(steps_image_tag(root))
    assert len(seen) == 5
    (root / "containers" / "steps" / "requirements.lock").unlink()
    from components.errors import EcomrecError

    with pytest.raises(EcomrecError, match="--steps-image"):
        steps_image_tag(root)


# ---------------------------------------------------------------------------------------------- the layout
def image_layout(app: Path) -> None:
    """Copy what the Dockerfile copies under the app folder, the way COPY does."""
    for op, args in instructions():
        *sources, dest = shlex.split(args) if op == "COPY" else ["", ""]
        if op != "COPY" or not dest.startswith(APP):
            continue
        target = app / dest.removeprefix(APP).strip("/")
        for source in sources:
            shutil.copytree(REPO / source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _runtime_imports(path: Path, module: str) -> tuple[set[str], set[str]]:
    """_imports without the `if TYPE_CHECKING:` blocks (stubs such as mypy_boto3_s3 never load at run time)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = [ast.Pass()]
    with tempfile.TemporaryDirectory() as folder:
        stripped = Path(folder) / path.name  # the same name: __init__.py resolves relative imports differently
        stripped.write_text(ast.unparse(tree))
        return _imports(stripped, module)


def step_imports(app: Path) -> tuple[set[str], set[str]]:
    """(modules of the layout the steps reach, top-level names of everything else they import), statically,
    function-level imports included, from every step's entry point and every Kubeflow task's."""

    def source(name: str) -> Path | None:
        stem = app.joinpath(*name.split("."))
        return next((p for p in (stem.with_suffix(".py"), stem / "__init__.py") if p.is_file()), None)

    seen: set[str] = set()
    external: set[str] = set()
    todo = [(name, True) for name in (*(step.entry_point for step in STEPS), "pipelines.sagemaker.entry",
                                      *KUBEFLOW_TASK_IMPORTS)]
    while todo:
        name, needed = todo.pop()
        if name in seen or not name:
            continue
        path = source(name)
        if name.split(".")[0] not in ("components", "pipelines"):
            if needed:
                external.add(name.split(".")[0])
            continue
        if path is None:
            assert not needed, f"{name} is imported by a step but not in the image"
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [(".".join(parts[:i]), True) for i in range(1, len(parts))]
        needs, maybe = _runtime_imports(path, name)
        todo += [(m, True) for m in needs] + [(m, False) for m in maybe]
    return seen, external - set(sys.stdlib_module_names) - {"__future__"}


def lock_modules() -> set[str]:
    """Top-level modules the lock's distributions provide (as installed in the dev venv)."""
    from packaging.utils import canonicalize_name

    pins = lock_pins()
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(canonicalize_name(d) in pins for d in dists)}


def test_every_library_a_step_imports_is_in_the_lock_or_the_base(tmp_path: Path) -> None:
    app = tmp_path / "app"
    image_layout(app)
    reached, external = step_imports(app)
    assert {step.entry_point for step in STEPS} | {"pipelines.kubeflow.runtime"} <= reached
    assert "kfp" in external
    assert external - lock_modules() - FROM_BASE == set()
    # Not vacuous: a step importing a library the lock lacks is reported.
    step = app.joinpath(*STEPS[0].entry_point.split(".")).with_suffix(".py")
    step.write_text(step.read_text() + "\ndef _report():\n    import sklearn\n")
    assert "sklearn" in step_imports(app)[1] - lock_modules()


def test_the_image_layout_runs_a_step_with_only_the_locked_libraries(tmp_path: Path) -> None:
    """The venv the Dockerfile makes, emulated: the layout through the same .pth file, third-party imports
    limited to the lock's distributions (and the base's pyspark); every step module imports from the layout,
    a real step (register: a failing gate) runs to its end, and so does a Kubeflow task (gate-failed) through
    the very command the compiled pipeline gives its container (kfp's executor_main, kfp from the lock)."""
    import json

    from components import schema as s
    from components.registry.gate import baseline_comparison

    app = tmp_path / "app"
    image_layout(app)
    python_bin = isolated_python(tmp_path / "venv")
    pth = re.search(r"echo (\S+) > \S+/site-packages/(\S+\.pth)", DOCKERFILE.read_text())
    assert pth is not None and pth.group(1) == APP
    site = Path(subprocess.run([str(python_bin / "python"), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / pth.group(2)).write_text(f"{app}\n")
    guard = tmp_path / "guard"
    guard.mkdir()
    allowed = sorted(lock_modules() | FROM_BASE | {"components", "pipelines", "_distutils_hack"})
    (guard / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        f"    allowed = set({allowed!r}) | set(sys.stdlib_module_names)\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top not in self.allowed and not top.startswith('_'):\n"
        "            raise ImportError(f'{name} is not in the steps image')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {"PYTHONPATH": str(guard), "PATH": f"{python_bin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    modules = [step.entry_point for step in STEPS] + ["pipelines.kubeflow.runtime"]
    probe = subprocess.run(
        [str(python_bin / "python"), "-c",
         "import importlib, sys\n"
         f"for name in {modules!r}:\n"
         "    print(importlib.import_module(name).__file__)\n"
         "try:\n"
         "    import fastapi\n"
         "except ImportError as error:\n"
         "    print(error)\n"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    *files, refused = probe.stdout.splitlines()
    assert all(Path(f).is_relative_to(app) for f in files), files
    assert refused == "fastapi is not in the steps image"  # the guard is in force
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    ranking = {r: {s.metric_key("ndcg", 10): {"value": v}}
               for r, v in ((s.TWO_STAGE, 0.01), (s.ALS, 0.02), (s.POPULAR, 0.005))}
    # with the gate block the evaluation step writes (components/evaluation/evaluate.py), which the gate reads
    document = {"ranking_metrics": ranking, "gate": baseline_comparison(ranking)}
    (evaluation / s.EVALUATION_FILE).write_text(json.dumps(document))
    out = tmp_path / "register"
    result = subprocess.run([str(python_bin / "python"), "-m", "components.registry.step",
                             "--bundle", str(tmp_path / "bundle"), "--evaluation", str(evaluation),
                             "--output", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "quality gate failed" in result.stderr
    assert json.loads((out / "registration.json").read_text())["gate"]["passed"] is False

    import yaml

    from pipelines.kubeflow import pipeline as k

    k.compile_pipeline(k.KubeflowSettings(), str(tmp_path / "pipeline.yaml"))
    ir = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    container = ir["deploymentSpec"]["executors"][f"exec-{k.GATE_FAILED_TASK}"]["container"]
    executor_input = {"inputs": {"parameterValues": {"reasons": "ndcg@10 0.01 < 0.02"}},
                      "outputs": {"outputFile": str(tmp_path / "executor_output.json")}}
    args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"]]
    task = subprocess.run([*container["command"], *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert "_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main" in " ".join(container["command"])
    assert task.returncode != 0
    assert "QualityGateError: quality gate failed, nothing registered: ndcg@10 0.01 < 0.02" in task.stderr, \
        task.stderr


def test_cd_re_pins_then_builds_the_steps_image_and_checks_the_account_before_the_upsert() -> None:
    """The order that keeps one tag meaning one image: re-pin (the pins are part of the code), resolve the tag
    and the region's Spark base, build FROM that base and push once per tag, check, then upsert."""
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "cd.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = [step.get("run", "") for step in steps]

    def first(text: str) -> int:
        return next(i for i, run in enumerate(runs) if text in run)

    order = [first("pipeline refresh-jumpstart"), first("pipeline images"), first("containers/steps/Dockerfile"),
             first("pipeline doctor"), first("pipeline upsert")]
    assert order == sorted(order)
    resolve = runs[first("pipeline images")]
    assert "set -euo pipefail" in resolve  # a pin that cannot be resolved fails the job
    assert "imagetools inspect" in resolve and "head-object" in resolve
    build = runs[first("containers/steps/Dockerfile")]
    assert '--build-arg SPARK_IMAGE="${{ steps.images.outputs.spark }}"' in build
    assert "docker push" in build
