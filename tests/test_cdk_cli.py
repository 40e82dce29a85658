"""`cdk synth` with the real AWS CDK CLI, installed from npm by the project's own setup (cdk/package.json,
`npm ci`), offline: no AWS account, no credentials, no context lookups.

No fakes. It synthesizes the environment-agnostic variant (no account/region context, as a developer's
plain `cdk synth`); tests/test_cdk_stacks.py covers the named variant in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CDK_DIR = Path(__file__).resolve().parents[1] / "cdk"
STACKS = ("EcomrecData", "EcomrecMl", "EcomrecServing", "EcomrecEvents", "EcomrecMonitoring")


@pytest.mark.cdk_cli
def test_cdk_cli_synthesizes_every_stack_offline(tmp_path: Path) -> None:
    if shutil.which("npx") is None:
        pytest.skip("Node.js/npx is not installed: the CDK CLI cannot run here")
    cli = CDK_DIR / "node_modules" / ".bin" / "cdk"
    assert cli.exists(), "the CDK CLI is missing: run `bash .ci/setup --dev` (it runs `npm ci` in cdk/)"
    # Offline and account-free: no credentials, no instance metadata, no telemetry, no notices.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", CDK_DISABLE_CLI_TELEMETRY="true",
               JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="18,20")
    out = tmp_path / "cdk.out"
    proc = subprocess.run(["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "-o", str(out)],
                          cwd=CDK_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    manifest = json.loads((out / "manifest.json").read_text())
    stacks = [name for name, art in manifest["artifacts"].items() if art["type"] == "aws:cloudformation:stack"]
    assert sorted(stacks) == sorted(STACKS)
    for name in STACKS:
        template = json.loads((out / f"{name}.template.json").read_text())
        assert template["Resources"], name
        # Environment-agnostic: no account or region is baked in.
        assert manifest["artifacts"][name]["environment"] == "aws://unknown-account/unknown-region"
    # Without account context the pipeline is left to `ecomrec pipeline upsert` (see cdk/README.md).
    ml = json.loads((out / "EcomrecMl.template.json").read_text())
    assert not [r for r in ml["Resources"].values() if r["Type"] == "AWS::SageMaker::Pipeline"]
    # Lean cloud assembly: no kubectl/awscli Lambda layers (tens of MB each).
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 2_000_000, size
