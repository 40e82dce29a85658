"""Replay evaluation on the tiny shop's real pipeline run, through `ecomrec evaluate replay`: the files,
every number recomputed from the two Parquet files to 1e-9, and the protocol's invariants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.realtime import replay as r

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def replayed(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path_factory.mktemp("replay")
    result = CliRunner().invoke(app, ["evaluate", "replay", "--bundle", str(tiny_run / "bundle" / s.MODEL_ARCHIVE),
                                      "--data", str(tiny_run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "realtime" in result.output and "warm_later" in result.output
    return out


def test_every_number_recomputes_from_the_parquet_files(replayed: Path, tiny_run: Path) -> None:
    stored = json.loads((replayed / r.REPLAY_FILE).read_text())
    truth = pd.read_parquet(replayed / r.REPLAY_TRUTH_FILE)
    recommendations = pd.read_parquet(replayed / r.REPLAY_RECOMMENDATIONS_FILE)
    from components.bundle import load_bundle

    catalog = len(load_bundle(tiny_run / "bundle" / s.MODEL_ARCHIVE).item_ids)
    recomputed = r.replay_metrics(truth, recommendations, catalog)
    assert recomputed["counts"] == stored["counts"]
    for name, segments in stored["replay_metrics"].items():
        for segment, block in segments.items():
            for key, value in block.items():
                assert abs(recomputed["replay_metrics"][name][segment][key]["value"] - value["value"]) <= 1e-9
    # independently of replay_metrics: NDCG@10 of `realtime` over all baskets, by hand
    gains = []
    for basket, rows in truth.groupby(r.BASKET_ID):
        relevant = set(rows[s.ITEM_ID])
        top = recommendations[(recommendations[s.RECOMMENDER] == r.REALTIME) & (recommendations[r.BASKET_ID] == basket)]
        ranked = top.sort_values(s.RANK)[s.ITEM_ID].tolist()[:10]
        dcg = sum(1 / np.log2(i + 2) for i, item in enumerate(ranked) if item in relevant)
        gains.append(dcg / sum(1 / np.log2(i + 2) for i in range(min(len(relevant), 10))))
    assert abs(np.mean(gains) - stored["replay_metrics"][r.REALTIME]["all"]["ndcg_at_10"]["value"]) <= 1e-9
    assert (replayed / r.REPLAY_PAGE_FILE).read_text().count("<table") == 10


def test_the_protocol_holds(replayed: Path) -> None:
    stored = json.loads((replayed / r.REPLAY_FILE).read_text())
    truth = pd.read_parquet(replayed / r.REPLAY_TRUTH_FILE)
    recommendations = pd.read_parquet(replayed / r.REPLAY_RECOMMENDATIONS_FILE)
    counts = stored["counts"]
    assert counts["all"]["baskets"] == counts[s.WARM]["baskets"] + counts[s.COLD]["baskets"] > 0
    assert counts["all"]["baskets"] == counts[r.FIRST]["baskets"] + counts[r.LATER]["baskets"]
    assert counts[r.FIRST]["baskets"] == counts["all"]["users"]  # one first basket per user
    firsts = truth.drop_duplicates(r.BASKET_ID).sort_values(r.BASKET_INDEX).drop_duplicates(s.USER_ID)
    assert set(firsts[s.SEGMENT].str.endswith(r.FIRST)) == {True}
    # static never changes for a user; realtime does once events are fed (the point of it)
    static = recommendations[recommendations[s.RECOMMENDER] == r.STATIC]
    per_user = static.groupby([s.USER_ID, r.BASKET_ID])[s.ITEM_ID].agg(tuple).groupby(level=0).nunique()
    assert (per_user == 1).all()
    live = recommendations[recommendations[s.RECOMMENDER] == r.REALTIME].groupby(r.BASKET_ID)[s.ITEM_ID].agg(tuple)
    fixed = static.groupby(r.BASKET_ID)[s.ITEM_ID].agg(tuple)
    later = truth.loc[truth[s.SEGMENT].str.endswith(r.LATER), r.BASKET_ID].unique()
    assert (live[later] != fixed[later]).any()
    assert (recommendations.groupby([s.RECOMMENDER, r.BASKET_ID]).size() == max(s.KS)).all()


def test_no_event_at_or_after_a_basket_start_shapes_its_list(replayed: Path, tiny_run: Path, tmp_path: Path) -> None:
    """For some later baskets: a fresh service fed only the test-window events strictly before the basket's
    first event (every user's) answers exactly the list the replay recorded for it."""
    from components.realtime.replay import _baskets
    from components.serving.app import create_app
    from components.serving.settings import ServingSettings

    truth = pd.read_parquet(replayed / r.REPLAY_TRUTH_FILE)
    recommendations = pd.read_parquet(replayed / r.REPLAY_RECOMMENDATIONS_FILE)
    events = pd.read_parquet(tiny_run / "etl" / s.CLEAN_DIR / s.EVENTS)
    events["ts_us"] = pd.to_datetime(events[s.TIMESTAMP], utc=True).astype("int64") // 1000
    bundle = tiny_run / "bundle" / s.MODEL_ARCHIVE
    later = truth.loc[truth[s.SEGMENT].str.endswith(r.LATER)].drop_duplicates(r.BASKET_ID)
    for n, basket in enumerate(later[r.BASKET_ID].tolist()[:3]):
        app = create_app(ServingSettings(model=str(bundle), work_dir=tmp_path / f"w{n}", watch_interval_s=0,
                                         events_raw_root=tmp_path / f"raw{n}", events_fsync=False,
                                         store_path=tmp_path / f"s{n}.sqlite", store_max_days=10_000))
        state = app.state.ecomrec
        state.start()
        model = state.holder.current
        from components.realtime.fresh import cutoff_us

        test = _baskets(events.loc[events["ts_us"] >= cutoff_us(model)].copy())
        start = int(test.loc[test[r.BASKET_ID] == basket, "ts_us"].min())
        before = test.loc[test["ts_us"] < start]
        rows = before.assign(**{s.TIMESTAMP: pd.to_datetime(before["ts_us"], unit="us", utc=True)
                                .dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        state.realtime.intake.ingest([{k: v for k, v in e.items() if v is not None and v == v} for e in rows[
            [s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID]].to_dict("records")])
        user = str(later.loc[later[r.BASKET_ID] == basket, s.USER_ID].iat[0])
        answer = state.answer(model, user, max(s.KS), route="test", at_us=start)
        recorded = recommendations[(recommendations[s.RECOMMENDER] == r.REALTIME)
                                   & (recommendations[r.BASKET_ID] == basket)].sort_values(s.RANK)
        assert [i["item_id"] for i in answer["items"]] == recorded[s.ITEM_ID].tolist(), basket
        state.stop()
        state.realtime.close()


def test_the_replay_measures_exact_answers(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live worker makes at most ECOMREC_FRESH_EXACT_PER_S exact rebuilds a second (then the fast path);
    the replay runs the same service with no such limit, so what it measures is the exact answers."""
    import math

    from components.realtime import service
    from components.realtime.fresh import FreshAnswers

    budgets: list[tuple[float, float]] = []

    class Recording(FreshAnswers):
        def __init__(self, *args: object, exact_per_s: float = math.inf, exact_share: float = math.inf,
                     **kwargs: object) -> None:
            budgets.append((exact_per_s, exact_share))
            super().__init__(*args, exact_per_s=exact_per_s, exact_share=exact_share, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "FreshAnswers", Recording)
    result = r.replay(tiny_run / "bundle" / s.MODEL_ARCHIVE, tiny_run, work_dir=tmp_path, limit_baskets=2)
    assert result is not None
    assert budgets == [(math.inf, math.inf)]
