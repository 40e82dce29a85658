#!/usr/bin/env python3
"""Entry point of `cdk synth` / `cdk deploy` (cdk.json runs it with the project's .venv).

Offline by design: no context lookups. Pass `-c account=... -c region=...` for a named deployment (the
CD workflow does); without them the stacks are environment-agnostic.
"""

from __future__ import annotations

import logging

import aws_cdk as cdk
from stacks import build

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

app = cdk.App()
build(app)
app.synth()
