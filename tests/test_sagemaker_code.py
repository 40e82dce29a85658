"""How the code reaches SageMaker containers: the versioned zip of the packages and the launcher that
runs a step's ``main(argv)`` from it. The launcher runs here in a fresh Python process, outside the
repository, exactly as a container would start it (no AWS involved)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from components import schema as s
from components.errors import EcomrecError
from components.registry.gate import baseline_comparison
from pipelines.sagemaker import entry
from pipelines.sagemaker.code import (
    CODE_ARCHIVE,
    LAUNCHER_PATH,
    build_code_archive,
    code_files,
    code_location,
    code_objects,
    code_version,
    runtime_requirements,
)

PROBE = '''
import json, sys
from pathlib import Path

def main(argv):
    out = Path(argv[argv.index("--output") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"argv": list(argv), "file": __file__}))
'''


def _fake_repo(root: Path, probe: str = PROBE) -> Path:
    for package in ("components", "pipelines"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "components" / "probe.py").write_text(probe)
    (root / "components" / "__pycache__").mkdir()
    (root / "components" / "__pycache__" / "probe.cpython-311.pyc").write_bytes(b"junk")
    (root / "pipelines" / "data.json").write_text("{}")
    return root


def _launch(module: str, argv: list[str], code_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ECOMREC_CODE_DIR=str(code_dir), ECOMREC_PIP_INSTALL="")
    return subprocess.run([sys.executable, str(LAUNCHER_PATH), module, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_archive_is_deterministic_and_complete(tmp_path: Path) -> None:
    root = _fake_repo(tmp_path / "repo")
    first, second = build_code_archive(root), build_code_archive(root)
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as handle:
        names = sorted(handle.namelist())
    assert names == ["components/__init__.py", "components/probe.py", "pipelines/__init__.py",
                     "pipelines/data.json"]
    assert [p.relative_to(root).as_posix() for p in code_files(root)] == names


def test_version_follows_the_code(tmp_path: Path) -> None:
    root = _fake_repo(tmp_path / "repo")
    before = code_version(root)
    assert code_version(root) == before
    (root / "components" / "probe.py").write_text(PROBE + "\n# changed\n")
    assert code_version(root) != before
    location = code_location("bucket", "/ecomrec/", before)
    assert location.archive_uri == f"s3://bucket/ecomrec/code/{before}/{CODE_ARCHIVE}"
    assert location.launcher_uri == f"s3://bucket/ecomrec/code/{before}/entry.py"
    assert code_location("bucket", "", "v1").prefix == "s3://bucket/code/v1"
    current = code_location("bucket", "ecomrec", code_version(root))
    assert set(code_objects(current, root)) == {current.archive_uri, current.launcher_uri}
    with pytest.raises(EcomrecError, match="code changed since the definition was built"):
        code_objects(location, root)  # built for `before`; the code moved on


def test_launcher_runs_main_from_the_extracted_zip(tmp_path: Path) -> None:
    code_dir = tmp_path / "input" / "ecomrec-code"
    code_dir.mkdir(parents=True)
    (code_dir / CODE_ARCHIVE).write_bytes(build_code_archive(_fake_repo(tmp_path / "repo")))
    out = tmp_path / "output" / "probe"
    config = '{"etl":{"test_days":14}}'
    result = _launch("components.probe", ["--raw", "/in/raw", "--output", str(out), "--config", config],
                     code_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    probe = json.loads((out / "probe.json").read_text())
    assert probe["argv"] == ["--raw", "/in/raw", "--output", str(out), "--config", config]
    # imported from the extracted archive, not from the repository or the installed package
    assert "ecomrec-code-" in probe["file"]
    assert not probe["file"].startswith(str(tmp_path / "repo"))


def test_launcher_runs_a_real_step_from_the_project_zip(tmp_path: Path) -> None:
    """The project's own zip, a real step (register): a failing gate stops it with the reasons."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / CODE_ARCHIVE).write_bytes(build_code_archive())
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    ranking = {r: {s.metric_key("ndcg", 10): {"value": v}}
               for r, v in ((s.TWO_STAGE, 0.01), (s.ALS, 0.02), (s.POPULAR, 0.005))}
    # with the gate block the evaluation step writes (components/evaluation/evaluate.py), which the gate reads
    document = {"ranking_metrics": ranking, "gate": baseline_comparison(ranking)}
    (evaluation / s.EVALUATION_FILE).write_text(json.dumps(document))
    out = tmp_path / "register"
    result = _launch("components.registry.step",
                     ["--bundle", str(tmp_path / "bundle"), "--evaluation", str(evaluation), "--output", str(out),
                      "--config", "{}"], code_dir, tmp_path)
    assert result.returncode != 0
    assert "quality gate failed" in result.stderr
    record = json.loads((out / "registration.json").read_text())
    assert record["gate"]["passed"] is False


def test_launcher_finds_the_py_files_copy_on_sys_path(tmp_path: Path) -> None:
    archive = tmp_path / "spark-tmp" / CODE_ARCHIVE
    archive.parent.mkdir()
    archive.write_bytes(b"PK")
    assert entry.find_code_archive([str(tmp_path / "missing")], ["/usr/lib", str(archive)]) == str(archive)
    assert entry.find_code_archive([str(tmp_path / "missing")], ["/usr/lib"]) is None


def test_launcher_without_code_says_where_it_looked(tmp_path: Path) -> None:
    result = _launch("components.probe", [], tmp_path / "nowhere", tmp_path)
    assert result.returncode != 0
    assert f"{CODE_ARCHIVE} not found" in result.stderr


def test_runtime_requirements_come_from_pyproject() -> None:
    requirements = runtime_requirements().split()
    names = {r.split("=")[0].split("<")[0].split(">")[0].lower() for r in requirements}
    assert {"pydantic", "pyarrow", "catboost", "implicit"} <= names
    assert "pyspark" not in names  # the SageMaker Spark image brings its own Spark


@pytest.mark.parametrize("missing", ["components", "pipelines"])
def test_missing_package_is_an_error(tmp_path: Path, missing: str) -> None:
    root = _fake_repo(tmp_path / "repo")
    (root / missing / "__init__.py").unlink()
    with pytest.raises(EcomrecError, match=f"package '{missing}' not found"):
        code_files(root)


def test_settings_apply_over_the_config_by_the_fields_types() -> None:
    from components.config import PipelineConfig

    config = PipelineConfig().with_settings(["etl.test_days=14", "model_package_group=123",
                                             "ranker.eval_metric=NDCG:top=10", "gate.ndcg_at_10_floor=0.125"])
    assert (config.etl.test_days, config.model_package_group, config.ranker.eval_metric,
            config.gate.ndcg_at_10_floor) == (14, "123", "NDCG:top=10", 0.125)
    for bad in ("etl.nope=1", "nope.test_days=1", "etl.test_days", "etl.test_days=fourteen"):
        with pytest.raises(ValueError, match="--set"):
            PipelineConfig().with_settings([bad])
    with pytest.raises(ValueError, match="model_package_group"):  # SageMaker would refuse it at the end
        PipelineConfig().with_settings(["model_package_group=ecomrec_v2"])


def test_the_launcher_refuses_an_old_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.sagemaker import entry

    monkeypatch.setattr(entry.sys, "version_info", (3, 9, 16))
    with pytest.raises(SystemExit, match=r"needs Python 3\.11\+"):
        entry.main(["components.etl.step", "--help"])
