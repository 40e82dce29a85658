"""Ranker loading and scoring paths, rank_top_k's tie-break, and the popular fallback policy."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier, Pool

from components import schema as s
from components.errors import NotFittedError
from components.ranker import model as model_module
from components.ranker.model import FeatureSpec, PopularFallback, Ranker, rank_top_k
from components.ranker.train import write_model_archive


def test_rank_top_k_orders_by_score_then_item() -> None:
    items, scores = rank_top_k([7, 3, 5, 1, 9], [0.5, 0.9, 0.5, np.nan, 0.5], 4)
    assert items.tolist() == [3, 5, 7, 9]  # ties at 0.5 by item_idx asc; NaN ranks last
    assert scores.tolist() == [0.9, 0.5, 0.5, 0.5]
    items, _ = rank_top_k([7, 3, 5, 1, 9], [0.5, 0.9, 0.5, np.nan, 0.5], 10)
    assert items.tolist() == [3, 5, 7, 9, 1]
    assert rank_top_k([], [], 3)[0].size == 0
    with pytest.raises(ValueError, match="shape"):
        rank_top_k([1, 2], [0.1], 1)


def test_rank_top_k_does_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(0)
    items = rng.permutation(200)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    first = rank_top_k(items, scores, 20)[0]
    order = rng.permutation(200)
    assert first.tolist() == rank_top_k(items[order], scores[order], 20)[0].tolist()


def test_popular_fallback_top_and_top_up() -> None:
    features = pd.DataFrame({s.ITEM_IDX: [0, 1, 2, 3, 4], s.ITEM_BUYERS_28D: [5.0, 9.0, 5.0, 0.0, 1.0]})
    fallback = PopularFallback.from_item_features(features)
    assert fallback.item_idx.tolist() == [1, 0, 2, 4]  # item 3 was not bought: not popular
    assert fallback.top(2)[0].tolist() == [1, 0]
    assert fallback.top(2, exclude=[1])[0].tolist() == [0, 2]
    items, scores = fallback.top_up(np.array([2]), np.array([0.7]), 3)
    assert items.tolist() == [2, 1, 0]
    assert scores[0] == 0.7
    assert np.isnan(scores[1:]).all()
    items, _ = fallback.top_up(np.array([2]), np.array([0.7]), 3, exclude=[1])
    assert items.tolist() == [2, 0, 4]
    roundtrip = PopularFallback.from_frame(fallback.to_frame())
    assert roundtrip.item_idx.tolist() == fallback.item_idx.tolist()


def _train_small_model(with_categorical: bool) -> tuple[CatBoostClassifier, FeatureSpec, pd.DataFrame]:
    rng = np.random.default_rng(1)
    n = 400
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 10, n).astype(float)})
    features = ["a", "b"]
    categorical: list[str] = []
    if with_categorical:
        frame["country"] = rng.choice(["UK", "France", "Germany"], n).astype(object)
        features.append("country")
        categorical.append("country")
    label = ((frame["a"] + (frame.get("country", pd.Series("", index=frame.index)) == "France") * 1.5
              + rng.normal(scale=0.5, size=n)) > 0.5).astype(int)
    model = CatBoostClassifier(iterations=30, depth=3, verbose=0, random_seed=0, allow_writing_files=False)
    model.fit(Pool(frame[features], label, cat_features=[features.index(c) for c in categorical]))
    return model, FeatureSpec(tuple(features), tuple(categorical)), frame


@pytest.mark.parametrize("with_categorical", [False, True])
def test_scoring_paths_agree(with_categorical: bool) -> None:
    model, spec, frame = _train_small_model(with_categorical)
    ranker = Ranker.from_model(model, spec)
    expected = model.predict_proba(Pool(frame[list(spec.features)],
                                        cat_features=spec.categorical_positions))[:, 1]
    by_frame = ranker.score(frame)
    np.testing.assert_allclose(by_frame, expected, rtol=1e-12, atol=1e-12)
    prepared = ranker.prepare(frame)
    rows = slice(100, 300)
    np.testing.assert_array_equal(ranker.score_prepared(prepared, rows), by_frame[100:300])
    picked = np.array([5, 3, 399])
    np.testing.assert_array_equal(ranker.score_prepared(prepared, picked), by_frame[picked])
    if not with_categorical:
        np.testing.assert_array_equal(ranker.score(frame[list(spec.features)].to_numpy()), by_frame)
    # A spec in another layout (categorical first) takes the slower path with the same numbers.
    if with_categorical:
        reordered = FeatureSpec(("country", "a", "b"), ("country",))
        model2 = CatBoostClassifier(iterations=30, depth=3, verbose=0, random_seed=0,
                                    allow_writing_files=False)
        label = (by_frame > 0.5).astype(int)
        model2.fit(Pool(frame[list(reordered.features)], label, cat_features=[0]))
        slow = Ranker.from_model(model2, reordered).score(frame)
        direct = model2.predict_proba(Pool(frame[list(reordered.features)], cat_features=[0]))[:, 1]
        np.testing.assert_allclose(slow, direct, rtol=1e-12, atol=1e-12)


def test_load_from_archive_directory_and_file(tmp_path: Path) -> None:
    model, spec, frame = _train_small_model(True)
    write_model_archive(model, tmp_path / s.MODEL_ARCHIVE)
    with tarfile.open(tmp_path / s.MODEL_ARCHIVE) as archive:
        assert archive.getnames() == [s.MODEL_FILE]
        archive.extractall(tmp_path / "unpacked", filter="data")
    spec.save(tmp_path / "unpacked" / s.FEATURE_SPEC_FILE)
    expected = Ranker.from_model(model, spec).score(frame)
    for source in (tmp_path / s.MODEL_ARCHIVE, tmp_path / "unpacked", tmp_path / "unpacked" / s.MODEL_FILE):
        ranker = Ranker.load(source, spec=spec)
        np.testing.assert_array_equal(ranker.score(frame), expected)
    # feature_spec.json beside the model is picked up without spec=
    assert Ranker.load(tmp_path / "unpacked").spec == spec


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        Ranker().score(pd.DataFrame({"a": [1.0]}))
    model, spec, frame = _train_small_model(False)
    with pytest.raises(NotFittedError, match="feature spec"):
        Ranker.from_model(model).score(frame)
    with pytest.raises(ValueError, match="features"):
        Ranker.from_model(model, FeatureSpec(("a",)))
    with pytest.raises(KeyError, match="b"):
        Ranker.from_model(model, spec).score(frame[["a"]])
    with pytest.raises(FileNotFoundError):
        Ranker.load(tmp_path / "nowhere")
    empty_archive = tmp_path / "empty.tar.gz"
    with tarfile.open(empty_archive, "w:gz") as archive:
        (tmp_path / "other").write_text("x")
        archive.add(tmp_path / "other", arcname="other")
    with pytest.raises(FileNotFoundError, match="model"):
        Ranker.load(empty_archive)


def test_frames_are_scored_in_batches_with_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    model, spec, frame = _train_small_model(with_categorical=True)
    ranker = Ranker.from_model(model, spec)
    whole = ranker.score(frame)
    prepared_rows: list[int] = []
    prepare = ranker.prepare

    def counting_prepare(batch: pd.DataFrame) -> object:
        prepared_rows.append(len(batch))
        return prepare(batch)

    monkeypatch.setattr(model_module, "SCORE_BATCH_ROWS", 150)
    monkeypatch.setattr(ranker, "prepare", counting_prepare)
    np.testing.assert_array_equal(ranker.score(frame), whole)
    assert prepared_rows == [150, 150, 100]
    assert ranker.score(frame.iloc[:0]).shape == (0,)
