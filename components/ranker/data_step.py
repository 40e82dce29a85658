"""Graph step ``ranker_data``: labelled train-fold candidates in the built-in SageMaker CatBoost format,
plus the test fold's scoring rows.

Writes (OUTPUT/ranker_data/): training/ and validation/ (data.csv + categorical_index.json),
feature_spec.json, scoring/ (Parquet), ranker_data.json (counts)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components import schema as s
from components.config import RankerConfig
from components.ranker.data import (
    SampleReport,
    ensure_both_channels,
    label_candidates,
    report_dict,
    sample_training_rows,
    validation_mask,
    write_channel,
    write_scoring,
)
from components.ranker.features import build_features
from components.ranker.io import feature_lists, horizon_days, load_fold
from components.ranker.model import FeatureSpec
from components.stepargs import parse_step_args

INPUTS = ("etl", "als")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    training: pd.DataFrame  # sampled rows of the training users
    validation: pd.DataFrame  # sampled rows of the validation users (early stopping)
    validation_ranking: pd.DataFrame  # every candidate of the validation users + label, n_targets
    spec: FeatureSpec
    report: SampleReport


def build_training_data(etl: Path, als: Path, config: RankerConfig) -> TrainingData:
    """Labelled, sampled and user-split rows of the train fold."""
    lists = feature_lists(etl)
    fold = load_fold(etl, als, s.TRAIN_FOLD)
    frame, spec = build_features(fold.candidates, fold.user_features, fold.item_features,
                                 fold.user_item_features, lists, user_category=fold.user_category,
                                 horizon_days=horizon_days(etl, s.TRAIN_FOLD))
    frame[s.LABEL] = label_candidates(frame, fold.targets)
    candidate_users = frame[s.USER_IDX].unique()
    targets_of_candidate_users = fold.targets.loc[fold.targets[s.USER_IDX].isin(candidate_users)]
    positive_rows = int(frame[s.LABEL].sum())
    sampled, counts = sample_training_rows(frame, negatives_per_user=config.negatives_per_user,
                                           max_users=config.max_training_users, seed=config.seed)
    users = sampled[s.USER_IDX].to_numpy()
    mask = ensure_both_channels(users, validation_mask(users, config.validation_user_share, config.seed))
    training, validation = sampled.loc[~mask], sampled.loc[mask]
    validation_users = validation[s.USER_IDX].unique()
    n_targets = fold.targets.groupby(s.USER_IDX).size().rename(s.N_TARGETS)
    validation_ranking = frame.loc[frame[s.USER_IDX].isin(validation_users)].join(n_targets, on=s.USER_IDX)
    report = SampleReport(
        candidate_users=len(candidate_users),
        candidate_rows=len(frame),
        positive_rows=positive_rows,
        users_with_positive=counts["users_with_positive"],
        users_dropped_without_positive=counts["dropped"],
        users_capped=counts["capped"],
        target_pairs=len(targets_of_candidate_users),
        pair_recall=positive_rows / max(1, len(targets_of_candidate_users)),
        training_rows=len(training),
        training_users=int(training[s.USER_IDX].nunique()),
        training_positives=int(training[s.LABEL].sum()),
        validation_rows=len(validation),
        validation_users=int(validation[s.USER_IDX].nunique()),
        validation_positives=int(validation[s.LABEL].sum()),
    )
    return TrainingData(training, validation, validation_ranking, spec, report)


def build_scoring_rows(etl: Path, als: Path, spec: FeatureSpec) -> pd.DataFrame:
    """Every test-fold candidate with the train fold's feature spec."""
    fold = load_fold(etl, als, s.TEST_FOLD)
    frame, _ = build_features(fold.candidates, fold.user_features, fold.item_features,
                              fold.user_item_features, feature_lists(etl), user_category=fold.user_category,
                              spec=spec, horizon_days=horizon_days(etl, s.TEST_FOLD))
    return frame


def run(etl: Path, als: Path, output: Path, config: RankerConfig) -> SampleReport:
    started = time.perf_counter()
    data = build_training_data(etl, als, config)
    training, validation, spec, report = data.training, data.validation, data.spec, data.report
    log.info("ranker data (train fold): %d candidate users, %d rows, %d positives, target pairs covered %.3f; "
             "dropped %d users without a positive candidate, capped %d",
             report.candidate_users, report.candidate_rows, report.positive_rows, report.pair_recall,
             report.users_dropped_without_positive, report.users_capped)
    log.info("training: %d rows / %d users / %d positives; validation: %d rows / %d users / %d positives",
             report.training_rows, report.training_users, report.training_positives,
             report.validation_rows, report.validation_users, report.validation_positives)
    write_channel(training, spec, output / s.TRAINING_CHANNEL)
    write_channel(validation, spec, output / s.VALIDATION_CHANNEL)
    spec.save(output / s.FEATURE_SPEC_FILE)
    write_scoring(data.validation_ranking, spec, output / s.VALIDATION_RANKING_DIR,
                  extra=(s.LABEL, s.N_TARGETS))
    scoring = build_scoring_rows(etl, als, spec)
    write_scoring(scoring, spec, output / s.SCORING_DIR)
    log.info("scoring (test fold): %d rows, %d users", len(scoring), scoring[s.USER_IDX].nunique())
    summary = {**report_dict(report), "scoring_rows": len(scoring),
               "scoring_users": int(scoring[s.USER_IDX].nunique()),
               "features": len(spec.features), "categorical": list(spec.categorical),
               "seconds": round(time.perf_counter() - started, 2)}
    (output / s.RANKER_DATA_REPORT_FILE).write_text(json.dumps(summary, indent=2, default=_json_default))
    return report


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "ranker_data", INPUTS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.inputs["etl"], args.inputs["als"], args.output, args.config.ranker)


if __name__ == "__main__":
    main()
