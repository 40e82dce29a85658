"""The als step end to end on a small ETL-like directory (built here in the etl/ file contract): the
output contract per fold, who gets candidates, no leakage across the fold cutoff, determinism, and the
MLlib path writing the same contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.candidates.io import read_targets
from components.candidates.metrics import candidate_recall
from components.candidates.step import INPUTS, main
from components.candidates.union import CANDIDATE_COLUMNS
from components.config import PipelineConfig
from pipelines.graph import get_step
from tests.test_candidates_fixtures import TS, shop_events, windows, write_etl

pytestmark = pytest.mark.spark
N_ITEMS = 30
LATE_ITEMS = {27, 28, 29}  # first sold after the train cutoff (see shop_events)


def config(backend: str) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "als": {"factors": 8, "iterations": 5, "backend": backend},
        "candidates": {"als_top_n": 15, "history_top_n": 10, "cooc_top_n": 10, "popular_top_n": 10,
                       "max_per_user": 20}})


@pytest.fixture(scope="module")
def etl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_etl(tmp_path_factory.mktemp("etl"), shop_events(), N_ITEMS)


def run_step(etl: Path, out: Path, backend: str) -> Path:
    main(["--etl", str(etl), "--output", str(out), "--config", config(backend).to_json()])
    return out


@pytest.fixture(scope="module")
def implicit_out(spark: Any, etl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_step(etl, tmp_path_factory.mktemp("als"), "implicit")


def read(spark: Any, path: Path) -> Any:
    return spark.read.parquet(str(path))


def collect(frame: Any) -> pd.DataFrame:
    out: pd.DataFrame = frame.toPandas()
    return out


def fold_frame(etl: Path, fold: str, table: str) -> pd.DataFrame:
    return pd.read_parquet(etl / s.FOLDS_DIR / fold / table)


def test_step_matches_the_graph() -> None:
    assert get_step("als").inputs == INPUTS == ("etl",)


def check_contract(spark: Any, etl: Path, out: Path) -> dict[str, pd.DataFrame]:
    candidates: dict[str, pd.DataFrame] = {}
    for fold in s.FOLDS:
        base = out / s.FOLDS_DIR / fold
        users = read(spark, base / s.USER_FACTORS)
        items = read(spark, base / s.ITEM_FACTORS)
        assert dict(users.dtypes) == {s.USER_IDX: "int", s.FACTORS: "array<float>"}
        assert dict(items.dtypes) == {s.ITEM_IDX: "int", s.FACTORS: "array<float>"}
        frame = read(spark, base / s.CANDIDATES)
        assert tuple(frame.columns) == CANDIDATE_COLUMNS
        types = dict(frame.dtypes)
        assert types[s.ALS_SCORE] == types[s.COOC_SCORE] == "double" and types[s.ALS_RANK] == "int"
        assert all(types[flag] == "boolean" for flag in s.CANDIDATE_SOURCE_COLUMNS)
        cands = collect(frame)
        assert cands.groupby(s.USER_IDX).size().max() <= 20
        assert not cands.duplicated([s.USER_IDX, s.ITEM_IDX]).any()
        from_als = cands[s.FROM_ALS]
        assert cands.loc[from_als, s.ALS_RANK].between(1, 15).all() and cands.loc[~from_als, s.ALS_RANK].eq(0).all()
        assert cands.loc[~from_als, s.ALS_SCORE].isna().all() and cands.loc[from_als, s.ALS_SCORE].notna().all()
        assert cands.loc[~cands[s.FROM_COOC], s.COOC_SCORE].eq(0).all()
        assert cands[list(s.CANDIDATE_SOURCE_COLUMNS)].any(axis=1).all()
        candidates[fold] = cands
        # Factors exist exactly for the fold's users and items with interactions.
        interactions = fold_frame(etl, fold, s.INTERACTIONS)
        assert set(collect(users)[s.USER_IDX]) == set(interactions[s.USER_IDX])
        assert set(collect(items)[s.ITEM_IDX]) == set(interactions[s.ITEM_IDX])
    # Who gets candidates: train = warm target users; test = every user with interactions.
    target_users = fold_frame(etl, s.TRAIN_FOLD, s.TARGET_USERS)
    warm = set(target_users.loc[target_users[s.SEGMENT] == s.WARM, s.USER_IDX])
    assert set(candidates[s.TRAIN_FOLD][s.USER_IDX]) == warm
    assert set(candidates[s.TEST_FOLD][s.USER_IDX]) == set(
        fold_frame(etl, s.TEST_FOLD, s.INTERACTIONS)[s.USER_IDX])
    report = json.loads((out / s.ALS_REPORT_FILE).read_text())
    assert report["params"]["candidates"]["max_per_user"] == 20
    assert set(report["folds"]) == set(s.FOLDS) and set(report["timings"]) >= set(s.FOLDS)
    return candidates


def test_implicit_step_writes_the_contract(spark: Any, etl: Path, implicit_out: Path) -> None:
    check_contract(spark, etl, implicit_out)
    assert json.loads((implicit_out / s.ALS_REPORT_FILE).read_text())["backend"] == "implicit"


def test_train_fold_never_sees_events_after_its_cutoff(spark: Any, etl: Path, implicit_out: Path) -> None:
    events = shop_events()
    assert set(events.loc[events[TS] >= windows(events)["label_start"], s.ITEM_IDX]) >= LATE_ITEMS
    train = implicit_out / s.FOLDS_DIR / s.TRAIN_FOLD
    assert not LATE_ITEMS & set(collect(read(spark, train / s.CANDIDATES))[s.ITEM_IDX])
    assert not LATE_ITEMS & set(collect(read(spark, train / s.ITEM_FACTORS))[s.ITEM_IDX])
    # The test fold is refit on everything before ITS cutoff, so the late items are known there.
    test = collect(read(spark, implicit_out / s.FOLDS_DIR / s.TEST_FOLD / s.ITEM_FACTORS))
    assert set(test[s.ITEM_IDX]) >= LATE_ITEMS


def test_step_is_deterministic(spark: Any, etl: Path, implicit_out: Path, tmp_path: Path) -> None:
    again = run_step(etl, tmp_path / "again", "implicit")
    for fold in s.FOLDS:
        for table in (s.CANDIDATES, s.USER_FACTORS):
            first = pd.read_parquet(implicit_out / s.FOLDS_DIR / fold / table)
            second = pd.read_parquet(again / s.FOLDS_DIR / fold / table)
            pd.testing.assert_frame_equal(first, second)


def test_mllib_step_writes_the_same_contract(spark: Any, etl: Path, implicit_out: Path, tmp_path: Path) -> None:
    out = run_step(etl, tmp_path / "mllib", "mllib")
    mllib = check_contract(spark, etl, out)
    assert json.loads((out / s.ALS_REPORT_FILE).read_text())["backend"] == "mllib"
    implicit = {fold: pd.read_parquet(implicit_out / s.FOLDS_DIR / fold / s.CANDIDATES) for fold in s.FOLDS}
    targets = read_targets(etl, s.TRAIN_FOLD)
    users = np.array(sorted(implicit[s.TRAIN_FOLD][s.USER_IDX].unique()))
    recall_implicit = candidate_recall(implicit[s.TRAIN_FOLD], targets, users)
    recall_mllib = candidate_recall(mllib[s.TRAIN_FOLD], targets, users)
    assert recall_implicit > 0.2 and abs(recall_implicit - recall_mllib) < 0.1
    # The non-ALS generators are the same code path in spirit: identical history and popular flags.
    for fold in s.FOLDS:
        key = [s.USER_IDX, s.ITEM_IDX]
        both = implicit[fold].merge(mllib[fold], on=key, suffixes=("_i", "_m"))
        assert len(both) >= 0.7 * len(implicit[fold])
        assert (both[f"{s.FROM_HISTORY}_i"] == both[f"{s.FROM_HISTORY}_m"]).all()
        assert (both[f"{s.FROM_POPULAR}_i"] == both[f"{s.FROM_POPULAR}_m"]).all()
