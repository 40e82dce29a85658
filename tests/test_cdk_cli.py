"""`cdk synth` with the real AWS CDK CLI, installed from npm by the project's own setup (cdk/package.json,
`npm ci`), offline: no AWS account, no credentials, no context lookups.

No fakes. It runs the very `cdk synth` commands of .github/workflows/ci.yml's synth job (read from the
workflow file, so the test and CI cannot drift apart), with every AWS_* variable removed and the instance
metadata service disabled: the environment-agnostic synth and the named one (dummy account and region).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CDK_DIR = REPO / "cdk"
STACKS = ("EcomrecData", "EcomrecMl", "EcomrecServing", "EcomrecEvents", "EcomrecMonitoring", "EcomrecGithub")


def ci_synth_commands() -> list[list[str]]:
    """The `cdk synth` commands of ci.yml's synth job, as argument lists (folded YAML joins the lines)."""
    ci: dict[Any, Any] = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    commands = []
    for step in ci["jobs"]["synth"]["steps"]:
        run = step.get("run", "")
        if "cdk synth" in run:
            assert step.get("working-directory") == "cdk", step
            commands.append(shlex.split(run))
    return commands


def _with_outdir(argv: list[str], outdir: Path) -> list[str]:
    """The command with its output directory (-o) moved under the test's tmp directory."""
    out = list(argv)
    if "-o" in out:
        i = out.index("-o")
        out[i + 1] = str(outdir / out[i + 1])
    else:
        out += ["-o", str(outdir / "cdk.out")]
    return out


def _outdir(argv: list[str], tmp: Path) -> Path:
    return Path(argv[argv.index("-o") + 1]) if "-o" in argv else tmp / "cdk.out"


@pytest.mark.cdk_cli
def test_ci_synth_commands_succeed_without_credentials(tmp_path: Path) -> None:
    """Both synths of CI pass with no credentials; the named one used to stop at "Need to perform AWS calls
    for account 123456789012, but no credentials have been configured" (the VPC's zones were looked up)."""
    if shutil.which("npx") is None:
        pytest.skip("Node.js/npx is not installed: the CDK CLI cannot run here")
    cli = CDK_DIR / "node_modules" / ".bin" / "cdk"
    assert cli.exists(), "the CDK CLI is missing: run `bash .ci/setup --dev` (it runs `npm ci` in cdk/)"
    commands = ci_synth_commands()
    assert len(commands) == 2
    assert any("account=123456789012" in a for a in commands[1]), commands  # the named variant
    # Offline and account-free: no credentials, no instance metadata, no telemetry, no notices.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", CDK_DISABLE_CLI_TELEMETRY="true",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="18,20,22")
    outs = []
    for argv in commands:
        argv = _with_outdir(argv, tmp_path)
        proc = subprocess.run(argv, cwd=CDK_DIR, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (" ".join(argv) + "\n" + proc.stdout + proc.stderr)[-4000:]
        assert "Need to perform AWS calls" not in proc.stdout + proc.stderr
        out = _outdir(argv, tmp_path)
        manifest = json.loads((out / "manifest.json").read_text())
        assert not manifest.get("missing"), manifest.get("missing")  # no context lookup was wanted
        outs.append((out, manifest))

    (agnostic, manifest), (named, named_manifest) = outs
    stacks = [name for name, art in manifest["artifacts"].items() if art["type"] == "aws:cloudformation:stack"]
    assert sorted(stacks) == sorted(STACKS)
    for name in STACKS:
        template = json.loads((agnostic / f"{name}.template.json").read_text())
        assert template["Resources"], name
        # Environment-agnostic: no account or region is baked in.
        assert manifest["artifacts"][name]["environment"] == "aws://unknown-account/unknown-region"
        assert named_manifest["artifacts"][name]["environment"] == "aws://123456789012/eu-west-1"
    # Without account context the pipeline is left to `ecomrec pipeline upsert` (see cdk/README.md).
    ml = json.loads((agnostic / "EcomrecMl.template.json").read_text())
    assert not [r for r in ml["Resources"].values() if r["Type"] == "AWS::SageMaker::Pipeline"]
    # Subnet zones come from Fn::GetAZs at deploy time, never a guessed "<region>a/b" (not every region
    # offers a "b" zone to every account).
    serving = json.loads((named / "EcomrecServing.template.json").read_text())
    zones = [r["Properties"]["AvailabilityZone"] for r in serving["Resources"].values()
             if r["Type"] == "AWS::EC2::Subnet"]
    assert zones and all(z in ({"Fn::Select": [0, {"Fn::GetAZs": ""}]}, {"Fn::Select": [1, {"Fn::GetAZs": ""}]})
                         for z in zones), zones
    # Lean cloud assembly: no kubectl/awscli Lambda layers (tens of MB each).
    size = sum(p.stat().st_size for p in agnostic.rglob("*") if p.is_file())
    assert size < 2_000_000, size
