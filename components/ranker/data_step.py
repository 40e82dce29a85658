"""Graph step ``ranker_data``: labelled train-fold candidates in the built-in SageMaker CatBoost format,
plus the test fold's scoring rows.

Writes (OUTPUT/ranker_data/): training/ and validation/ (data.csv + categorical_index.json),
feature_spec.json, validation_ranking/, scoring/ (Parquet, every test-fold candidate: the bundle) and
scoring_warm/ (the warm test-target users' rows: the evaluation), ranker_data.json (counts)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from components import schema as s
from components.candidates import itemknn, tifu
from components.config import RankerConfig
from components.memory import release_memory
from components.ranker.data import (
    ChannelCounts,
    ChannelWriter,
    FoldCounts,
    SampleReport,
    ensure_both_channels,
    label_candidates,
    report_dict,
    sample_training_rows,
    sum_counts,
    training_users,
    validation_mask,
    write_scoring,
)
from components.ranker.features import ITEM_HISTORY_INPUTS, build_features, item_history_stats
from components.ranker.io import feature_lists, horizon_days, load_fold, read_table, user_chunks, user_row_counts
from components.ranker.model import FeatureSpec
from components.stepargs import parse_step_args

INPUTS = ("etl", "als")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingChunk:
    training: pd.DataFrame  # sampled rows of the training users
    validation: pd.DataFrame  # sampled rows of the validation users (early stopping)
    validation_ranking: pd.DataFrame  # every candidate of the validation users + label, n_targets
    spec: FeatureSpec
    counts: ChannelCounts


@dataclass(frozen=True)
class TrainingData:
    """The whole train fold's channels in memory (small data and tests; ``run`` streams chunks)."""

    training: pd.DataFrame
    validation: pd.DataFrame
    validation_ranking: pd.DataFrame
    spec: FeatureSpec
    report: SampleReport


def _train_fold(etl: Path, als: Path, config: RankerConfig) -> tuple[FoldCounts, Iterator[TrainingChunk]]:
    """The train fold's counts, and its labelled, sampled and user-split rows one chunk of whole users at a
    time. The user choices (the cap, the validation split) are global, and features are built for the
    chosen users only."""
    lists = feature_lists(etl)
    fold = load_fold(etl, als, s.TRAIN_FOLD)
    horizon = horizon_days(etl, s.TRAIN_FOLD)
    item_history = item_history_stats(fold.user_item_features)
    ids = fold.candidates[[s.USER_IDX, s.ITEM_IDX]].drop_duplicates()
    ids[s.LABEL] = label_candidates(ids, fold.targets)
    users, counts = training_users(ids, max_users=config.max_training_users, seed=config.seed)
    in_validation = users[ensure_both_channels(users, validation_mask(users, config.validation_user_share,
                                                                      config.seed))]
    n_targets = fold.targets.groupby(s.USER_IDX).size().rename(s.N_TARGETS)
    candidate_users = ids[s.USER_IDX].unique()
    fold_counts = FoldCounts(
        candidate_users=len(candidate_users), candidate_rows=len(ids), positive_rows=int(ids[s.LABEL].sum()),
        users_with_positive=counts["users_with_positive"], users_dropped_without_positive=counts["dropped"],
        users_capped=counts["capped"], target_pairs=int(fold.targets[s.USER_IDX].isin(candidate_users).sum()))
    chosen = replace(fold, candidates=fold.candidates.loc[fold.candidates[s.USER_IDX].isin(users)])
    model = fold_tifu_model(etl, s.TRAIN_FOLD, users) if config.tifu_features else None
    knn = fold_itemknn(etl, s.TRAIN_FOLD) if config.itemknn_features else None

    def chunks() -> Iterator[TrainingChunk]:
        spec: FeatureSpec | None = None
        for chunk in user_chunks(chosen, config.chunk_rows):
            candidates = tifu.with_pair_scores(model, chunk.candidates) if model else chunk.candidates
            if knn is not None:
                candidates = itemknn.with_pair_scores(candidates, knn.similarity, knn.user_items)
            frame, spec = build_features(candidates, chunk.user_features, chunk.item_features,
                                         chunk.user_item_features, lists, user_category=chunk.user_category,
                                         horizon_days=horizon, spec=spec, item_history=item_history)
            frame[s.LABEL] = label_candidates(frame, fold.targets)
            sampled = sample_training_rows(frame, users=users, negatives_per_user=config.negatives_per_user,
                                           seed=config.seed)
            mask = sampled[s.USER_IDX].isin(in_validation)
            training, validation = sampled.loc[~mask], sampled.loc[mask]
            ranking = frame.loc[frame[s.USER_IDX].isin(in_validation)].join(n_targets, on=s.USER_IDX)
            yield TrainingChunk(training, validation, ranking, spec, ChannelCounts.count(training, validation))

    return fold_counts, chunks()


def build_training_data(etl: Path, als: Path, config: RankerConfig) -> TrainingData:
    fold_counts, chunks = _train_fold(etl, als, config)
    parts = list(chunks)
    return TrainingData(
        training=pd.concat([c.training for c in parts], ignore_index=True),
        validation=pd.concat([c.validation for c in parts], ignore_index=True),
        validation_ranking=pd.concat([c.validation_ranking for c in parts], ignore_index=True),
        spec=parts[-1].spec, report=SampleReport.combine(fold_counts, sum_counts(c.counts for c in parts)))


def write_training_data(etl: Path, als: Path, output: Path, config: RankerConfig) -> tuple[FeatureSpec,
                                                                                             SampleReport]:
    """training/ and validation/ channels, validation_ranking/ and feature_spec.json, chunk by chunk."""
    writers: dict[str, ChannelWriter] = {}
    channel_counts: list[ChannelCounts] = []
    spec: FeatureSpec | None = None
    fold_counts, chunks = _train_fold(etl, als, config)
    for number, chunk in enumerate(chunks):
        spec = chunk.spec
        if not writers:
            writers = {channel: ChannelWriter(spec, output / channel) for channel in s.CHANNELS}
        writers[s.TRAINING_CHANNEL].write(chunk.training)
        writers[s.VALIDATION_CHANNEL].write(chunk.validation)
        write_scoring(chunk.validation_ranking, chunk.spec, output / s.VALIDATION_RANKING_DIR,
                      extra=(s.LABEL, s.N_TARGETS), part=number)
        channel_counts.append(chunk.counts)
        log.info("train fold chunk %d: %d training rows, %d validation rows", number, chunk.counts.training_rows,
                 chunk.counts.validation_rows)
    for writer in writers.values():
        writer.close()
    if spec is None:
        raise ValueError(f"no train-fold chunk under {als}")  # user_chunks yields at least one
    spec.save(output / s.FEATURE_SPEC_FILE)
    return spec, SampleReport.combine(fold_counts, sum_counts(channel_counts))


def _id_map_sizes(etl: Path) -> tuple[int, int]:
    """(users, items) in ETL's dense id maps."""
    return (len(read_table(etl / s.ID_MAPS_DIR / s.USERS, [s.USER_IDX])),
            len(read_table(etl / s.ID_MAPS_DIR / s.ITEMS, [s.ITEM_IDX])))


def fold_tifu_model(etl: Path, fold: s.Fold, users: np.ndarray) -> tifu.TifuModel:
    """TIFU-KNN over the fold's history for ``users`` (the neighbours come from every user with a basket)."""
    n_users, n_items = _id_map_sizes(etl)
    return tifu.fold_model(etl, fold, users, n_users, n_items)


def _fold_interactions(etl: Path, fold: s.Fold, users: tuple[int, int] | None = None) -> pd.DataFrame:
    shard = [(s.USER_IDX, ">=", users[0]), (s.USER_IDX, "<", users[1])] if users else None
    return read_table(etl / s.FOLDS_DIR / fold / s.INTERACTIONS, [s.USER_IDX, s.ITEM_IDX, s.WEIGHT], filters=shard)


def fold_itemknn(etl: Path, fold: s.Fold) -> itemknn.ItemKnn:
    """itemknn (BM25 item-item, the evaluation's peer) fitted on the fold's interactions (before its cutoff)."""
    n_users, n_items = _id_map_sizes(etl)
    return itemknn.ItemKnn(_fold_interactions(etl, fold), n_users, n_items)


@dataclass(frozen=True)
class ScoringShard:
    """Test-fold users first <= user_idx < stop, scored by one process into parts numbered from ``part``."""

    etl: Path
    als: Path
    output: Path  # scoring/: every user's rows (the bundle)
    warm_output: Path  # scoring_warm/: the warm test-target users' rows (evaluation reads only those)
    spec: FeatureSpec
    item_history: pd.DataFrame  # per-item stats over the whole fold (a shard sees only its users)
    itemknn_similarity: sp.csr_matrix | None  # fitted on the whole fold; None when the spec has no itemknn score
    first: int
    stop: int
    part: int
    chunk_rows: int


PARTS_PER_SHARD = 1_000_000  # part numbers of shard k start at k * this: name order = user order


def score_shard(shard: ScoringShard) -> tuple[int, int]:
    """Build and write the feature rows of one shard of users, a chunk at a time -> (rows, users)."""
    fold = load_fold(shard.etl, shard.als, s.TEST_FOLD, users=(shard.first, shard.stop))
    lists, horizon = feature_lists(shard.etl), horizon_days(shard.etl, s.TEST_FOLD)
    warm = fold.target_users.loc[fold.target_users[s.SEGMENT] == s.WARM, s.USER_IDX]
    model = (fold_tifu_model(shard.etl, s.TEST_FOLD, fold.candidates[s.USER_IDX].unique())
             if set(tifu.PAIR_COLUMNS) <= set(shard.spec.features) else None)
    knn_rows = None
    if shard.itemknn_similarity is not None:  # the shard's users' rows: their scores need no other user's
        knn_rows = itemknn.user_item_matrix(_fold_interactions(shard.etl, s.TEST_FOLD, (shard.first, shard.stop)),
                                            *_id_map_sizes(shard.etl))
    rows = users = 0
    for number, chunk in enumerate(user_chunks(fold, shard.chunk_rows)):
        candidates = tifu.with_pair_scores(model, chunk.candidates) if model else chunk.candidates
        if knn_rows is not None and shard.itemknn_similarity is not None:
            candidates = itemknn.with_pair_scores(candidates, shard.itemknn_similarity, knn_rows)
        frame, _ = build_features(candidates, chunk.user_features, chunk.item_features,
                                  chunk.user_item_features, lists, user_category=chunk.user_category,
                                  spec=shard.spec, horizon_days=horizon, item_history=shard.item_history)
        write_scoring(frame, shard.spec, shard.output, part=shard.part + number)
        write_scoring(frame.loc[frame[s.USER_IDX].isin(warm)], shard.spec, shard.warm_output,
                      part=shard.part + number)
        rows, users = rows + len(frame), users + int(frame[s.USER_IDX].nunique())
        log.info("test fold users [%d, %d): chunk %d, %d scoring rows so far", shard.first, shard.stop, number, rows)
    return rows, users


def scoring_shards(candidate_users: np.ndarray, rows_per_user: np.ndarray, workers: int, chunk_rows: int
                   ) -> list[tuple[int, int]]:
    """User ranges [first, stop) of about equal candidate rows: one per worker, none smaller than a few
    chunks (starting a process costs about as much as a chunk)."""
    total = int(rows_per_user.sum())
    n = max(1, min(workers, total // (4 * chunk_rows)))
    cumulative = np.cumsum(rows_per_user)
    cuts = np.searchsorted(cumulative, [total * k / n for k in range(1, n)])
    firsts = np.unique(np.r_[0, candidate_users[np.minimum(cuts + 1, len(candidate_users) - 1)]]) if total else [0]
    stops = [*firsts[1:], np.iinfo(np.int32).max]
    return [(int(a), int(b)) for a, b in zip(firsts, stops, strict=True)]


def write_scoring_rows(etl: Path, als: Path, spec: FeatureSpec, output: Path, config: RankerConfig) -> tuple[int,
                                                                                                            int]:
    """Every test-fold candidate with the train fold's feature spec, in ``output``/scoring/ and, for the
    warm test-target users, also in ``output``/scoring_warm/ -> (rows, users). Shards of users run in
    parallel processes (pandas uses one core), each a chunk at a time (bounded memory)."""
    candidate_users, rows_per_user = user_row_counts(als / s.FOLDS_DIR / s.TEST_FOLD / s.CANDIDATES)
    item_history = item_history_stats(read_table(etl / s.FOLDS_DIR / s.TEST_FOLD / s.USER_ITEM_FEATURES,
                                                 list(ITEM_HISTORY_INPUTS)))
    similarity = fold_itemknn(etl, s.TEST_FOLD).similarity if s.ITEMKNN_PAIR_COLUMN in spec.features else None
    release_memory()  # the train fold's tables are garbage now; the workers below need the room
    workers = config.workers or os.cpu_count() or 1
    shards = [ScoringShard(etl, als, output / s.SCORING_DIR, output / s.SCORING_WARM_DIR, spec, item_history,
                           similarity, first, stop, k * PARTS_PER_SHARD, config.chunk_rows)
              for k, (first, stop) in enumerate(scoring_shards(candidate_users, rows_per_user, workers,
                                                               config.chunk_rows))]
    log.info("scoring %d test-fold rows of %d users in %d process(es)", rows_per_user.sum(), len(candidate_users),
             len(shards))
    if len(shards) == 1:
        counts = [score_shard(shards[0])]
    else:  # spawn, not fork: the parent holds a Spark gateway and Arrow thread pools
        with ProcessPoolExecutor(len(shards), mp_context=multiprocessing.get_context("spawn")) as pool:
            counts = list(pool.map(score_shard, shards))
    return sum(r for r, _ in counts), sum(u for _, u in counts)


def run(etl: Path, als: Path, output: Path, config: RankerConfig) -> SampleReport:
    started = time.perf_counter()
    spec, report = write_training_data(etl, als, output, config)
    log.info("ranker data (train fold): %d candidate users, %d rows, %d positives, target pairs covered %.3f; "
             "dropped %d users without a positive candidate, capped %d",
             report.candidate_users, report.candidate_rows, report.positive_rows, report.pair_recall,
             report.users_dropped_without_positive, report.users_capped)
    log.info("training: %d rows / %d users / %d positives; validation: %d rows / %d users / %d positives",
             report.training_rows, report.training_users, report.training_positives,
             report.validation_rows, report.validation_users, report.validation_positives)
    scoring_rows, scoring_users = write_scoring_rows(etl, als, spec, output, config)
    log.info("scoring (test fold): %d rows, %d users", scoring_rows, scoring_users)
    summary = {**report_dict(report), "scoring_rows": scoring_rows, "scoring_users": scoring_users,
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
