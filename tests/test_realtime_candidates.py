"""Candidates from fresh events (components/realtime/candidates.py) on the tiny shop's real pipeline run
(the session's ``tiny_run``: real Spark ETL, implicit ALS, CatBoost ranker, its bundle):
- a user the bundle does not know gets, from their first event, a personal list (not the popular one,
  ``fallback: false``) whose candidates hold the item's co-occurrence neighbours, over real HTTP;
- a known user's just-viewed item outside their bundle candidates can appear in their answer;
- every row (bundle rows and new pairs) follows the batch definitions: ALS scores and ranks as the ALS
  step's own candidates, co-occurrence scores as its own generator's, every user, user-item, item and
  derived feature as the batch pipeline's rows (one build_features over the history-rebuilt tables); the
  fold-in equals implicit's recalculate_user (new pairs after fresh events: tests/test_realtime_parity.py);
- events at or after the request moment (``at_us``) change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.realtime.candidates import fold_in
from components.realtime.fresh import cutoff_us
from components.realtime.store import DAY_US, StoredEvent
from components.serving.app import create_app
from components.serving.engine import ServingModel
from components.serving.settings import ServingSettings
from components.serving.state import ServiceState
from components.serving.testing import serve_in_thread

pytestmark = pytest.mark.spark


def _trimmed_rows(frame: pd.DataFrame) -> pd.Series:
    """Half of every user's bundle rows: the tiny shop's users have all 40 items as candidates, a real
    shop's a few hundred of thousands; the other half is what fresh events can bring back."""
    return (frame[s.USER_IDX] + frame[s.ITEM_IDX]) % 2 == 0


@pytest.fixture(scope="module")
def trimmed_bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's bundle step again (same outputs, the run's config), keeping half of each user's rows."""
    from dataclasses import replace

    from components.bundle.build import read_run_outputs, write_bundle
    from components.config import GateConfig, PipelineConfig
    from tests.conftest import TINY_RUN_CONFIG_GATE

    tmp = tmp_path_factory.mktemp("trimmed-bundle")
    config = PipelineConfig(gate=GateConfig(**TINY_RUN_CONFIG_GATE))
    inputs = read_run_outputs(*(tiny_run / step for step in ("etl", "als", "ranker_data", "train", "evaluation")),
                              scratch=tmp, config=config)
    assert isinstance(inputs.candidates, Path)
    rows = pd.read_parquet(inputs.candidates)
    return write_bundle(replace(inputs, candidates=rows.loc[_trimmed_rows(rows)]), tmp / "out",
                        etl_config=config.etl.model_dump(mode="json"))


@pytest.fixture(scope="module")
def service(trimmed_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServiceState]]:
    """The bundle served over a real socket, events on (the embedded store)."""
    tmp = tmp_path_factory.mktemp("fresh-candidates")
    settings = ServingSettings(model=str(trimmed_bundle), work_dir=tmp / "work",
                               watch_interval_s=0, events_raw_root=tmp / "raw", events_fsync=False,
                               store_max_days=100_000, max_top_k=1000,
                               fresh_exact_per_s=float("inf"))  # exact answers checked: no rebuild budget
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield url, app.state.ecomrec


def _model(service: tuple[str, ServiceState]) -> ServingModel:
    model = service[1].holder.current
    assert model is not None
    return model


def _stamp(model: ServingModel, days_after_cutoff: float) -> str:
    moment = pd.Timestamp(cutoff_us(model) + int(days_after_cutoff * DAY_US), unit="us", tz="UTC")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(user: str, item: str, kind: str, ts_us: int) -> StoredEvent:
    return StoredEvent(key=f"t-{user}-{item}-{ts_us}", user_id=user, item_id=item, event_type=kind,
                       timestamp_us=ts_us, quantity=1, price=None, session_id=None)


def test_a_new_users_first_event_gives_personal_candidates_with_the_items_neighbours(service: tuple[str, ServiceState]
                                                                                      ) -> None:
    url, _ = service
    model = _model(service)
    sources = model.fresh_sources
    assert sources is not None, "the pipeline's bundle carries what fresh candidates need"
    # the item with the most co-occurrence neighbours
    item = int(np.argmax(np.diff(sources.neighbour_offsets)))
    neighbours = {model.item_ids[i] for i in sources.neighbour_items[
        sources.neighbour_offsets[item]:sources.neighbour_offsets[item + 1]].tolist()}
    assert neighbours
    user = "a-brand-new-customer"
    before = httpx.get(f"{url}/recommendations", params={"user_id": user, "top_k": 1000}).json()
    assert before["fallback"] is True  # before any event: the popular list
    answer = httpx.post(f"{url}/events", json={"events": [
        {"user_id": user, "item_id": model.item_ids[item], "event_type": "purchase",
         "timestamp": _stamp(model, 1.0), "quantity": 2, "price": 1.5}]}).json()
    assert answer["accepted"] == [0]
    after = httpx.get(f"{url}/recommendations", params={"user_id": user, "top_k": 1000}).json()
    assert after["fallback"] is False and after["degraded"] is False
    listed = [i["item_id"] for i in after["items"]]
    assert neighbours & set(listed), "the bought item's neighbours are among the candidates"
    top = listed[:10]
    assert top != [i["item_id"] for i in before["items"]][:10], "not the popular list"
    assert all(i["score"] is not None for i in after["items"][:10]), "scored by the ranker"


def test_a_known_users_just_viewed_item_outside_their_candidates_can_appear(service: tuple[str, ServiceState]) -> None:
    url, _ = service
    model = _model(service)
    known = [u for u, idx in model.user_index.items() if model.candidate_count(idx) > 0]
    user = known[len(known) // 2]
    user_idx = model.user_index[user]
    own = set(model.candidate_items[model.offsets[user_idx]:model.offsets[user_idx + 1]].tolist())
    outside = next(i for i in model.popular.item_idx.tolist() if i not in own)  # an item the bundle never offered
    before = httpx.get(f"{url}/recommendations", params={"user_id": user, "top_k": 1000}).json()
    assert model.item_ids[outside] not in {i["item_id"] for i in before["items"] if i["score"] is not None}
    events = [{"user_id": user, "item_id": model.item_ids[outside], "event_type": event_type,
               "timestamp": _stamp(model, day)} for day, event_type in ((1.0, "view"), (1.1, "add_to_cart"))]
    assert httpx.post(f"{url}/events", json={"events": events}).json()["accepted"] == [0, 1]
    after = httpx.get(f"{url}/recommendations", params={"user_id": user, "top_k": 1000}).json()
    scored = [i["item_id"] for i in after["items"] if i["score"] is not None]  # ranked, not a popular top-up
    assert model.item_ids[outside] in scored
    assert len(scored) > model.candidate_count(user_idx)  # the just-viewed item and its neighbours joined


def test_new_rows_equal_the_batch_rows_of_the_same_pairs(service: tuple[str, ServiceState], tiny_run: Path) -> None:
    """The trimmed half of every user's rows, rebuilt online at the cutoff (no event) by the per-request
    mechanism (rows_as_of over the kept half), against the batch pipeline's own rows for the same pairs
    (ranker_data's scoring/): every feature of the spec, for the kept rows and the rebuilt ones alike
    (generator columns, user, user-item, item and derived features, the within-candidates ranks)."""
    model = _model(service)
    sources = model.fresh_sources
    assert sources is not None
    cut = cutoff_us(model)
    batch = pd.read_parquet(tiny_run / "ranker_data" / s.SCORING_DIR)
    compared = 0
    for user_idx in sorted(set(batch[s.USER_IDX].tolist())):
        theirs = batch.loc[batch[s.USER_IDX] == user_idx].sort_values(s.ITEM_IDX).reset_index(drop=True)
        rows = model.feature_rows.user_rows(user_idx)
        every = theirs[s.ITEM_IDX].to_numpy()
        # the set the batch had: the kept half plus the trimmed half, rebuilt
        ours = sources.rows_as_of(user_idx, rows, [], model.item_index, cut, cut, extra=every)
        assert ours is not None
        assert ours[s.ITEM_IDX].tolist() == every.tolist()
        rebuilt = ~ours[s.ITEM_IDX].isin(rows[s.ITEM_IDX]).to_numpy()
        for name in sources.history.spec.features:
            mine, batch_values = ours[name].to_numpy(), theirs[name].to_numpy()
            if name in sources.history.spec.categorical:
                assert (mine.astype(str) == batch_values.astype(str)).all(), name
            else:
                assert np.allclose(mine.astype(np.float64), batch_values.astype(np.float64), rtol=1e-5, atol=1e-4,
                                   equal_nan=True), (user_idx, name, mine, batch_values)
        compared += int(rebuilt.sum())
    assert compared >= 300

    # a fresh event's new row: the ALS score is the dot product of the bundle's user and item factors
    user_idx = int(batch[s.USER_IDX].to_numpy()[0])
    rows = model.feature_rows.user_rows(user_idx)
    outside = sorted(set(range(model.n_items)) - set(rows[s.ITEM_IDX].tolist()))
    events = [_event("someone", model.item_ids[outside[0]], s.VIEW, cut + DAY_US)]
    frame = sources.rows_as_of(user_idx, rows, events, model.item_index, cut, cut + 2 * DAY_US)
    assert frame is not None
    new = frame.loc[~frame[s.ITEM_IDX].isin(rows[s.ITEM_IDX]) & (frame[s.FROM_ALS] > 0)]
    assert outside[0] in new[s.ITEM_IDX].tolist()
    factor = np.asarray(sources.user_factors[user_idx], dtype=np.float64)
    assert np.allclose(new[s.ALS_SCORE], sources.item_factors[new[s.ITEM_IDX]].astype(np.float64) @ factor,
                       rtol=1e-5, atol=1e-6)


def test_the_fold_in_is_implicits_recalculate_user(service: tuple[str, ServiceState]) -> None:
    """implicit 0.7.3 AlternatingLeastSquares.recalculate_user (implicit/cpu/als.py: alpha * user_items, the
    least-squares solve with the model's regularisation) on the bundle's item factors."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    sources = _model(service).fresh_sources
    factors = np.array(sources.item_factors)  # implicit writes into its arrays: not the read-only view
    als = sources.settings.als
    model = AlternatingLeastSquares(factors=factors.shape[1], regularization=als["regularization"],
                                    alpha=als["alpha"], dtype=np.float32, num_threads=1)
    model.item_factors = factors
    items = sources.als_items[:3]
    values = np.array([1.0, 0.5, 2.0])
    row = csr_matrix((values.astype(np.float32), (np.zeros(3, dtype=np.int64), items)), shape=(1, len(factors)))
    expected = np.asarray(model.recalculate_user(0, row), dtype=np.float64).ravel()
    ours = fold_in(factors, sources.gram, items, als["alpha"] * values, als["regularization"])
    assert np.allclose(ours, expected, rtol=1e-3, atol=1e-4)


def test_events_at_or_after_the_request_moment_change_nothing(service: tuple[str, ServiceState]) -> None:
    realtime = service[1].realtime
    assert realtime is not None
    model = _model(service)
    fresh = realtime.fresh
    user = "a-new-customer-asked-in-the-past"
    cut = cutoff_us(model)
    at = cut + 3 * DAY_US
    first, later = model.popular.item_idx[0], model.popular.item_idx[5]
    realtime.intake.ingest([{"user_id": user, "item_id": model.item_ids[first], "event_type": "purchase",
                                   "timestamp": _stamp(model, 1.0)}])
    answer, degraded = fresh.recommend(model, user, 20, at_us=at)
    assert answer is not None and not degraded and answer.fallback is None  # the earlier event personalised it
    realtime.intake.ingest([
        {"user_id": user, "item_id": model.item_ids[item], "event_type": kind, "timestamp": _stamp(model, day)}
        for item, kind, day in ((later, "purchase", 3.0), (later, "view", 4.0), (first, "add_to_cart", 5.0))])
    again, _ = fresh.recommend(model, user, 20, at_us=at)
    assert again is not None
    assert again.item_idx.tolist() == answer.item_idx.tolist()
    assert np.array_equal(again.scores, answer.scores)
    now, _ = fresh.recommend(model, user, 20)  # as of now the later events count
    assert now is not None and not np.array_equal(now.scores, answer.scores)


def test_a_bundle_whose_neighbours_name_an_item_beyond_its_map_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from components.bundle import load_bundle
    from components.bundle.build import read_run_outputs, write_bundle
    from components.config import GateConfig, PipelineConfig
    from components.errors import BundleError
    from components.serving.engine import build_serving_model
    from tests.conftest import TINY_RUN_CONFIG_GATE

    inputs = read_run_outputs(*(tiny_run / step for step in ("etl", "als", "ranker_data", "train", "evaluation")),
                              scratch=tmp_path, config=PipelineConfig(gate=GateConfig(**TINY_RUN_CONFIG_GATE)))
    assert inputs.item_neighbours is not None
    bad = inputs.item_neighbours.copy()
    bad.loc[0, s.NEIGHBOUR_IDX] = len(inputs.items_map)
    archive = write_bundle(replace(inputs, item_neighbours=bad), tmp_path / "out",
                           etl_config=PipelineConfig().etl.model_dump(mode="json"))
    with pytest.raises(BundleError, match="item_neighbours"):
        build_serving_model(load_bundle(archive), source=str(archive), feature_dir=tmp_path / "features")
