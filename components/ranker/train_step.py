"""Graph step ``train``: the CatBoost ranker, trained like the built-in SageMaker algorithm would be.

Reads ranker_data/training/ and validation/ (and feature_spec.json only to name the report's feature
importances); writes model.tar.gz (native ``model`` file) and training_report.json. On SageMaker the
built-in algorithm takes this step's place with the same channels and the same hyperparameter strings
(:func:`components.ranker.hyperparameters.hyperparameters_from_config`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

from components import schema as s
from components.ranker.hyperparameters import hyperparameters_from_config
from components.ranker.model import FeatureSpec
from components.ranker.train import train_catboost
from components.stepargs import parse_step_args

INPUTS = ("ranker_data",)
log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "train", INPUTS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.inputs["ranker_data"]
    spec_path = data / s.FEATURE_SPEC_FILE
    names = FeatureSpec.load(spec_path).features if spec_path.exists() else None
    hyperparameters = hyperparameters_from_config(args.config.ranker, thread_count=os.cpu_count() or 1)
    report = train_catboost(data / s.TRAINING_CHANNEL, data / s.VALIDATION_CHANNEL, hyperparameters,
                            args.output, feature_names=names)
    (args.output / s.TRAINING_REPORT_FILE).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
