"""Step ``bundle``: package what the evaluation measured into one versioned model.tar.gz."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from components.bundle.build import read_run_outputs, write_bundle
from components.stepargs import parse_step_args

INPUTS = ("etl", "als", "ranker_data", "train", "evaluation")
log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "bundle", INPUTS)
    with tempfile.TemporaryDirectory(prefix="ecomrec-bundle-") as scratch:
        inputs = read_run_outputs(*(args.inputs[name] for name in INPUTS), scratch=Path(scratch),
                                  config=args.config)
        write_bundle(inputs, args.output, group=args.config.model_package_group,
                     etl_config=args.config.etl.model_dump(mode="json"))


if __name__ == "__main__":
    main()
