"""Review probes of the real-time path on the tiny shop's real pipeline run (``tiny_run``): filters on fresh
candidates, users and items the bundle does not know, events at the request moment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components import schema as s
from components.realtime.fresh import cutoff_us
from components.realtime.store import DAY_US
from components.serving.app import create_app
from components.serving.engine import ServingModel
from components.serving.settings import ServingSettings
from components.serving.state import ServiceState

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def state(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceState]:
    tmp = tmp_path_factory.mktemp("rt-review")
    settings = ServingSettings(model=str(tiny_run / "bundle" / "model.tar.gz"), work_dir=tmp / "work",
                               watch_interval_s=0, events_raw_root=tmp / "raw", events_fsync=False,
                               store_max_days=100_000, max_top_k=1000,
                               fresh_exact_per_s=float("inf"),  # exact answers checked: no rebuild budget
                               fresh_exact_share=float("inf"))
    app = create_app(settings)
    state: ServiceState = app.state.ecomrec
    state.start()
    yield state
    state.stop()


def _model(state: ServiceState) -> ServingModel:
    model = state.holder.current
    assert model is not None and model.fresh_sources is not None
    return model


def _items(answer: dict[str, Any]) -> list[str]:
    return [str(i["item_id"]) for i in answer["items"]]


def _ingest(state: ServiceState, model: ServingModel, user: str, item: str, kind: str, days: float) -> None:
    import pandas as pd

    stamp = pd.Timestamp(cutoff_us(model) + int(days * DAY_US), unit="us", tz="UTC")
    assert state.realtime is not None
    result = state.realtime.intake.ingest([{"user_id": user, "item_id": item, "event_type": kind,
                                            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}])
    assert result.accepted == [0], result.as_json()


def test_a_new_user_whose_events_name_no_known_item_gets_the_marked_fallback(state: ServiceState) -> None:
    """Nothing the bundle knows to personalise from (no neighbour, no factor): the popular list is the
    answer and it says so (``fallback: true``); before the fix the popular items re-scored came back
    marked personal."""
    model = _model(state)
    _ingest(state, model, "ghost-unknown-items", "NOT-AN-ITEM", "purchase", 1.0)
    out = state.answer(model, "ghost-unknown-items", 10, route="t")
    assert out["fallback"] is True and out["fallback_reason"] == "unknown_user" and not out["degraded"]
    assert _items(out) == [model.item_ids[i] for i in model.popular.item_idx[:10].tolist()]
    # the same for a user in the id map without rows (first event after the cutoff)
    user = next(iter(model.user_index))
    _ingest(state, model, user, "NOT-AN-ITEM-3", "view", 1.0)
    original = model.candidate_count
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "candidate_count", lambda u: 0 if u == model.user_index[user] else original(u))
        assert state.realtime is not None
        assert state.realtime.fresh.recommend(model, user, 10) == (None, False)
    # one known item among them: personal from then on
    _ingest(state, model, "ghost-unknown-items", model.item_ids[int(model.popular.item_idx[2])], "view", 1.5)
    assert state.answer(model, "ghost-unknown-items", 10, route="t")["fallback"] is False


def test_filters_apply_to_fresh_candidates_of_a_new_user(state: ServiceState) -> None:
    model = _model(state)
    bought = model.item_ids[int(model.popular.item_idx[3])]
    _ingest(state, model, "ghost-filters", bought, "purchase", 1.0)
    everything = state.answer(model, "ghost-filters", 1000, route="t")
    assert everything["fallback"] is False and bought in _items(everything)
    out = state.answer(model, "ghost-filters", 1000, route="t", exclude_purchased=True)
    assert bought not in _items(out)
    first = _items(everything)[:3]
    out = state.answer(model, "ghost-filters", 1000, route="t", exclude=first)
    assert not set(first) & set(_items(out))
    for category, code in model.category_index.items():
        out = state.answer(model, "ghost-filters", 1000, route="t", category=category)
        assert model.category_codes is not None and _items(out)
        assert all(model.category_codes[model.item_index[i]] == code for i in _items(out))


def test_a_known_user_with_events_on_unknown_items_is_answered(state: ServiceState) -> None:
    model = _model(state)
    user = next(iter(model.user_index))
    _ingest(state, model, user, "NOT-AN-ITEM-2", "view", 1.0)
    out = state.answer(model, user, 10, route="t")
    assert out["fallback"] is False and len(_items(out)) == 10


def test_an_event_stamped_at_the_request_moment_does_not_count(state: ServiceState) -> None:
    model = _model(state)
    _ingest(state, model, "ghost-same-moment", model.item_ids[int(model.popular.item_idx[1])], "purchase", 2.0)
    at = cutoff_us(model) + 2 * DAY_US
    assert state.answer(model, "ghost-same-moment", 10, route="t", at_us=at)["fallback"] is True
    assert state.answer(model, "ghost-same-moment", 10, route="t", at_us=at + 1)["fallback"] is False


def test_reloading_the_served_version_leaves_its_files_alone(tiny_run: Path, tmp_path: Path) -> None:
    """The same content registered again (a rerun on the same data: the same content-derived version) is
    loaded while that version serves: the new load must not rewrite the files the served model reads (its
    user factors are memory-mapped: truncating them under it is a SIGBUS)."""
    import os

    from components.bundle import load_bundle
    from components.serving.engine import build_serving_model

    archive = tiny_run / "bundle" / "model.tar.gz"
    served = build_serving_model(load_bundle(archive), source="a", feature_dir=tmp_path)
    factors = Path(served.fresh_sources.user_factors.filename)
    inode = os.stat(factors).st_ino
    again = build_serving_model(load_bundle(archive), source="b", feature_dir=tmp_path)
    assert again.version == served.version
    assert not (factors.exists() and os.stat(factors).st_ino == inode), "rewritten in place under the served model"
    assert np.array_equal(np.asarray(served.fresh_sources.user_factors), np.asarray(again.fresh_sources.user_factors))


def test_the_load_estimate_covers_the_real_time_parts(tiny_run: Path, tmp_path: Path) -> None:
    """The manifest limits refuse a bundle before loading it: the estimate's share for what real-time
    serving loads (history/, the neighbours, the ALS copies FreshSources makes) must cover what loading them
    allocates (tracemalloc sees numpy's and pandas' buffers; pyarrow's own pool is not even counted)."""
    import json
    import tracemalloc

    from components.bundle import load_bundle
    from components.bundle.format import estimate_load_bytes
    from components.realtime.candidates import FreshSources
    from components.realtime.features import UserHistory

    bundle = load_bundle(tiny_run / "bundle" / "model.tar.gz")
    manifest = json.loads((tiny_run / "bundle" / s.BUNDLE_MANIFEST).read_text())
    assert any(name.startswith(f"{s.BUNDLE_HISTORY}/") for name in manifest["rows"])
    batch_only = {**manifest, "rows": {k: v for k, v in manifest["rows"].items()
                                       if not k.startswith(f"{s.BUNDLE_HISTORY}/") and k != s.BUNDLE_ITEM_NEIGHBOURS}}
    batch_only.pop("realtime", None)
    share = estimate_load_bytes(manifest) - estimate_load_bytes(batch_only)
    tracemalloc.start()
    history = UserHistory.load(bundle)
    sources = FreshSources.load(bundle, history, tmp_path / "fresh")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert history is not None and sources is not None
    assert share >= peak, f"estimate {share} bytes for the real-time parts, loading them took {peak}"


def test_a_user_in_the_id_map_without_history_is_a_new_user(state: ServiceState, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The ETL's id map covers the whole log, so a user whose first event is after the cutoff is in the
    bundle's map with a zero ALS factor and no rows: from their events they get what a user the bundle does
    not know gets (ALS fold-in, the popular list's candidates), the same rows bar the user_idx."""
    from components.realtime.store import StoredEvent

    model = _model(state)
    sources = model.fresh_sources
    user_idx = 7
    factors = np.array(sources.user_factors)
    factors[user_idx] = 0.0  # as _dense_factors leaves a user ALS never saw
    monkeypatch.setattr(sources, "user_factors", factors)
    cut = cutoff_us(model)
    item = model.item_ids[int(model.popular.item_idx[4])]
    events = [StoredEvent(key="k1", user_id="u", item_id=item, event_type=s.PURCHASE, timestamp_us=cut + DAY_US,
                          quantity=1, price=2.0, session_id=None)]
    empty = model.feature_rows.user_rows(user_idx).iloc[:0]
    monkeypatch.setattr(sources.history, "user_daily",
                        lambda u: {k: v[:0] for k, v in {**sources.history.daily,
                                                         s.EVENT_TYPE: sources.history.kinds[:0]}.items()})
    monkeypatch.setattr(sources.history, "user_orders", lambda u: set())
    mapped = sources.rows_as_of(user_idx, empty, events, model.item_index, cut, cut + DAY_US + 1)
    unknown = sources.rows_as_of(None, empty, events, model.item_index, cut, cut + DAY_US + 1)
    assert mapped is not None and unknown is not None
    assert mapped[s.ITEM_IDX].tolist() == unknown[s.ITEM_IDX].tolist()
    assert model.ranker is not None and model.ranker.spec is not None
    numeric = list(model.ranker.spec.numeric)
    assert np.allclose(mapped[numeric].to_numpy(np.float64), unknown[numeric].to_numpy(np.float64), equal_nan=True)
    categorical = list(model.ranker.spec.categorical)
    assert mapped[categorical].equals(unknown[categorical])
