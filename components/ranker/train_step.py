"""Graph step ``train``: the CatBoost ranker, trained like the built-in SageMaker algorithm would be.

Reads ranker_data/training/ and validation/ like the built-in algorithm; writes model.tar.gz (native
``model`` file) and training_report.json. Beyond the built-in, feature_spec.json names the report's
feature importances and validation_ranking/ adds NDCG@10 on the validation users' whole candidate lists
(train fold; the number that may guide choices). On SageMaker the
built-in algorithm takes this step's place with the same channels and the same hyperparameter strings
(:func:`components.ranker.hyperparameters.hyperparameters_from_config`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import pandas as pd

from components import schema as s
from components.ranker.hyperparameters import hyperparameters_from_config
from components.ranker.model import FeatureSpec, Ranker
from components.ranker.train import train_catboost
from components.ranker.validation import validation_ranking_report
from components.stepargs import parse_step_args

INPUTS = ("ranker_data",)
log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "train", INPUTS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.inputs["ranker_data"]
    spec_path = data / s.FEATURE_SPEC_FILE
    spec = FeatureSpec.load(spec_path) if spec_path.exists() else None
    hyperparameters = hyperparameters_from_config(args.config.ranker, thread_count=os.cpu_count() or 1)
    report = train_catboost(data / s.TRAINING_CHANNEL, data / s.VALIDATION_CHANNEL, hyperparameters,
                            args.output, feature_names=spec.features if spec else None)
    ranking_dir = data / s.VALIDATION_RANKING_DIR
    if spec is not None and ranking_dir.exists():
        ranker = Ranker.load(args.output / s.MODEL_ARCHIVE, spec=spec)  # the artifact, as evaluation reads it
        ranking = validation_ranking_report(ranker, pd.read_parquet(ranking_dir))
        report["validation_ranking"] = ranking
        log.info("validation users (train fold), whole candidate lists: %s", ranking)
    (args.output / s.TRAINING_REPORT_FILE).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
