"""The ranker_data step on fake etl/als outputs (tests/test_ranker_fixtures.py, shaped like the brief's
contracts): the built-in CatBoost CSV format, negative sampling, the user-grouped split, scoring rows."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.config import PipelineConfig, RankerConfig
from components.ranker import data_step
from components.ranker.data import hash_uniform, validation_mask
from components.ranker.io import load_fold, user_chunks, user_row_counts
from components.ranker.model import FeatureSpec
from tests.test_ranker_fixtures import make_fake_outputs

# itemknn_features: its scores in shards of users too (test_shards_of_users_...)
CONFIG = RankerConfig(negatives_per_user=6, validation_user_share=0.25, seed=11, itemknn_features=True)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("ranker_data")
    etl, als = make_fake_outputs(root)
    data_step.main(["--etl", str(etl), "--als", str(als), "--output", str(root / "out"),
                    "--config", PipelineConfig(ranker=CONFIG).to_json()])
    return etl, als, root / "out"


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_channels_are_the_builtin_catboost_format(fake: tuple[Path, Path, Path]) -> None:
    _, _, out = fake
    spec = FeatureSpec.load(out / s.FEATURE_SPEC_FILE)
    assert spec.categorical, "the fake shop has categorical features"
    assert spec.numeric_first
    for channel in s.CHANNELS:
        rows = _rows(out / channel / s.CHANNEL_DATA_FILE)
        assert rows, channel
        assert {row[0] for row in rows} <= {"0", "1"}  # label first, no header line
        assert {len(row) for row in rows} == {1 + len(spec.features)}
        cat_index = json.loads((out / channel / s.CATEGORICAL_INDEX_FILE).read_text())["cat_index_list"]
        assert cat_index == [spec.features.index(name) + 1 for name in spec.categorical]
        assert min(cat_index) >= 1
        for i in cat_index:
            values = {row[i] for row in rows}
            assert values, i
            assert all(v and not v.replace(".", "").isdigit() for v in values)  # strings, never empty
        numeric_columns = [i for i in range(1, len(spec.features) + 1) if i not in cat_index]
        for row in rows[:50]:
            for i in numeric_columns:
                float(row[i])  # parses, and computed features are never empty


def test_sampling_and_user_grouped_split(fake: tuple[Path, Path, Path]) -> None:
    etl, als, _ = fake
    data = data_step.build_training_data(etl, als, CONFIG)
    training, validation, report = data.training, data.validation, data.report
    train_users, valid_users = set(training[s.USER_IDX]), set(validation[s.USER_IDX])
    assert train_users
    assert valid_users
    assert not train_users & valid_users  # grouped by user, never split rows of one user
    both = pd.concat([training, validation])
    assert int(both[s.LABEL].sum()) == report.positive_rows  # every positive kept
    negatives = both.loc[both[s.LABEL] == 0].groupby(s.USER_IDX).size()
    assert negatives.max() <= CONFIG.negatives_per_user
    assert (both.groupby(s.USER_IDX)[s.LABEL].max() == 1).all()  # no user without a positive
    assert report.users_with_positive + report.users_dropped_without_positive == report.candidate_users
    assert len(training) == len(_rows(fake[2] / s.TRAINING_CHANNEL / s.CHANNEL_DATA_FILE))
    # Labels are exactly the train-fold targets.
    targets = pd.read_parquet(etl / s.FOLDS_DIR / s.TRAIN_FOLD / s.TARGETS)
    target_pairs = set(zip(targets[s.USER_IDX], targets[s.ITEM_IDX], strict=True))
    labelled = {(u, i): lab for u, i, lab in both[[s.USER_IDX, s.ITEM_IDX, s.LABEL]].itertuples(index=False)}
    assert all((pair in target_pairs) == bool(label) for pair, label in labelled.items())


def test_sampling_is_deterministic(fake: tuple[Path, Path, Path], tmp_path: Path) -> None:
    etl, als, out = fake
    data_step.main(["--etl", str(etl), "--als", str(als), "--output", str(tmp_path / "again"),
                    "--config", PipelineConfig(ranker=CONFIG).to_json()])
    for channel in s.CHANNELS:
        first = (out / channel / s.CHANNEL_DATA_FILE).read_bytes()
        assert first == (tmp_path / "again" / channel / s.CHANNEL_DATA_FILE).read_bytes()


def test_users_without_a_positive_candidate_are_dropped(fake: tuple[Path, Path, Path],
                                                        tmp_path: Path) -> None:
    etl, als, _ = fake
    # Drop every target of 5 candidate users: they must vanish from training and be counted.
    targets_dir = etl / s.FOLDS_DIR / s.TRAIN_FOLD / s.TARGETS
    targets = pd.read_parquet(targets_dir)
    candidates = pd.read_parquet(als / s.FOLDS_DIR / s.TRAIN_FOLD / s.CANDIDATES)
    victims = sorted(set(candidates[s.USER_IDX]))[:5]
    copy = tmp_path / "etl"
    shutil.copytree(etl, copy)
    kept = targets.loc[~targets[s.USER_IDX].isin(victims)]
    shutil.rmtree(copy / s.FOLDS_DIR / s.TRAIN_FOLD / s.TARGETS)
    (copy / s.FOLDS_DIR / s.TRAIN_FOLD / s.TARGETS).mkdir()
    kept.to_parquet(copy / s.FOLDS_DIR / s.TRAIN_FOLD / s.TARGETS / "part-0.parquet", index=False)
    data = data_step.build_training_data(copy, als, CONFIG)
    training, validation, report = data.training, data.validation, data.report
    assert not set(victims) & (set(training[s.USER_IDX]) | set(validation[s.USER_IDX]))
    baseline = data_step.build_training_data(etl, als, CONFIG).report
    assert report.users_dropped_without_positive == baseline.users_dropped_without_positive + 5


def test_scoring_rows_cover_every_test_candidate(fake: tuple[Path, Path, Path]) -> None:
    _, als, out = fake
    spec = FeatureSpec.load(out / s.FEATURE_SPEC_FILE)
    scoring = pd.read_parquet(out / s.SCORING_DIR)
    candidates = pd.read_parquet(als / s.FOLDS_DIR / s.TEST_FOLD / s.CANDIDATES)
    assert len(scoring) == len(candidates)
    assert set(zip(scoring[s.USER_IDX], scoring[s.ITEM_IDX], strict=True)) == set(
        zip(candidates[s.USER_IDX], candidates[s.ITEM_IDX], strict=True))
    assert list(scoring.columns) == [s.USER_IDX, s.ITEM_IDX, *spec.features]
    assert scoring[s.USER_IDX].is_monotonic_increasing
    assert all(scoring[name].dtype == np.float32 for name in spec.numeric)
    assert not scoring[list(spec.numeric)].isna().any().any()


def test_hash_split_is_seeded_and_about_the_share() -> None:
    users = np.arange(20_000)
    mask = validation_mask(users, 0.2, 42)
    assert 0.18 < mask.mean() < 0.22
    assert (mask == validation_mask(users, 0.2, 42)).all()
    assert (mask != validation_mask(users, 0.2, 43)).any()
    draws = hash_uniform(1, users, users[::-1])
    assert draws.min() >= 0.0
    assert draws.max() < 1.0


def _ranker_data_report(directory: Path) -> dict[str, object]:
    report = json.loads((directory / s.RANKER_DATA_REPORT_FILE).read_text())
    report.pop("seconds")
    return report


def test_chunks_of_users_give_exactly_the_one_chunk_result(fake: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Memory is bounded by building features a chunk of users at a time; the result must not depend on it."""
    etl, als, out = fake
    chunked = tmp_path / "chunked"
    small_chunks = CONFIG.model_copy(update={"chunk_rows": 37, "workers": 1})
    data_step.main(["--etl", str(etl), "--als", str(als), "--output", str(chunked),
                    "--config", PipelineConfig(ranker=small_chunks).to_json()])
    assert len(list((chunked / s.SCORING_DIR).glob("*.parquet"))) > 3  # really chunked
    assert len(list((out / s.SCORING_DIR).glob("*.parquet"))) == 1
    for channel in s.CHANNELS:
        data = s.CHANNEL_DATA_FILE
        assert (chunked / channel / data).read_bytes() == (out / channel / data).read_bytes()
    for table in (s.SCORING_DIR, s.SCORING_WARM_DIR, s.VALIDATION_RANKING_DIR):
        pd.testing.assert_frame_equal(pd.read_parquet(chunked / table), pd.read_parquet(out / table))
    assert _ranker_data_report(chunked) == _ranker_data_report(out)
    assert FeatureSpec.load(chunked / s.FEATURE_SPEC_FILE) == FeatureSpec.load(out / s.FEATURE_SPEC_FILE)


def test_user_chunks_hold_whole_users_in_order(fake: tuple[Path, Path, Path]) -> None:
    etl, als, _ = fake
    fold = load_fold(etl, als, s.TEST_FOLD)
    chunks = list(user_chunks(fold, 50))
    assert len(chunks) > 2
    users_per_chunk = [set(c.candidates[s.USER_IDX]) for c in chunks]
    assert sum(len(c.candidates) for c in chunks) == len(fold.candidates)  # every row once
    assert all(max(a) < min(b) for a, b in itertools.pairwise(users_per_chunk))
    for chunk, users in zip(chunks, users_per_chunk, strict=True):
        assert set(chunk.user_item_features[s.USER_IDX]) <= users
        expected = fold.user_item_features[s.USER_IDX].isin(users).sum()
        assert len(chunk.user_item_features) == expected  # all of each user's history comes along
        assert len(chunk.candidates) < 50 + chunk.candidates.groupby(s.USER_IDX).size().max()


def test_shards_of_users_in_parallel_processes_give_the_one_process_result(fake: tuple[Path, Path, Path],
                                                                           tmp_path: Path) -> None:
    etl, als, out = fake
    spec = FeatureSpec.load(out / s.FEATURE_SPEC_FILE)
    config = CONFIG.model_copy(update={"chunk_rows": 20, "workers": 2})
    users, rows = user_row_counts(als / s.FOLDS_DIR / s.TEST_FOLD / s.CANDIDATES)
    shards = data_step.scoring_shards(users, rows, config.workers, config.chunk_rows)
    assert len(shards) == 2 and shards[0][0] == 0 and shards[0][1] == shards[1][0]  # adjacent ranges
    assert abs(int(rows[users < shards[0][1]].sum()) - int(rows.sum()) / 2) <= rows.max()  # about equal rows
    assert data_step.write_scoring_rows(etl, als, spec, tmp_path, config) == (int(rows.sum()), len(users))
    parts = sorted((tmp_path / s.SCORING_DIR).glob("*.parquet"))
    assert any(p.name.startswith(f"part-{data_step.PARTS_PER_SHARD:08d}") for p in parts)  # the second shard
    for table in (s.SCORING_DIR, s.SCORING_WARM_DIR):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / table), pd.read_parquet(out / table))


def test_scoring_warm_holds_exactly_the_warm_test_target_users_rows(fake: tuple[Path, Path, Path],
                                                                     tmp_path: Path) -> None:
    etl, als, out = fake
    # Keep half of the test fold's target users (and make one of them cold): the others' rows must go.
    copy = tmp_path / "etl"
    shutil.copytree(etl, copy)
    users_dir = copy / s.FOLDS_DIR / s.TEST_FOLD / s.TARGET_USERS
    target_users = pd.read_parquet(users_dir).sort_values(s.USER_IDX).iloc[::2].reset_index(drop=True)
    target_users.loc[0, s.SEGMENT] = s.COLD
    shutil.rmtree(users_dir)
    users_dir.mkdir()
    target_users.to_parquet(users_dir / "part-0.parquet", index=False)
    data_step.write_scoring_rows(copy, als, FeatureSpec.load(out / s.FEATURE_SPEC_FILE), tmp_path / "out", CONFIG)
    warm = set(target_users.loc[target_users[s.SEGMENT] == s.WARM, s.USER_IDX])
    scoring = pd.read_parquet(tmp_path / "out" / s.SCORING_DIR)
    expected = scoring.loc[scoring[s.USER_IDX].isin(warm)].reset_index(drop=True)
    assert 0 < len(expected) < len(scoring)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / s.SCORING_WARM_DIR), expected)
