"""ranker_data -> train -> evaluate on fake etl/als outputs (tests/test_ranker_fixtures.py, shaped like the
brief's contracts): evaluation.json's shape, recomputation from the two Parquet files to 1e-9, the
cold-user policy, and two_stage reproduced through the serving path (Ranker + rank_top_k + fallback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.config import PipelineConfig, RankerConfig
from components.evaluation import step as evaluate_step
from components.evaluation.recompute import recompute_metrics
from components.ranker import data_step, train_step
from components.ranker.model import FeatureSpec, PopularFallback, Ranker, rank_top_k
from tests.test_ranker_fixtures import make_fake_outputs

K = max(s.KS)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    etl, als = make_fake_outputs(root)
    config = PipelineConfig(ranker=RankerConfig(iterations=80, negatives_per_user=20)).to_json()
    paths = {"etl": etl, "als": als, "ranker_data": root / "ranker_data", "train": root / "train",
             "evaluate": root / "evaluate"}
    data_step.main(["--etl", str(etl), "--als", str(als), "--output", str(paths["ranker_data"]),
                    "--config", config])
    train_step.main(["--ranker_data", str(paths["ranker_data"]), "--output", str(paths["train"]),
                     "--config", config])
    evaluate_step.main([*[arg for name in evaluate_step.INPUTS for arg in (f"--{name}", str(paths[name]))],
                        "--output", str(paths["evaluate"]), "--config", config])
    return paths


def _get(document: dict[str, Any], path: str) -> Any:
    """What a SageMaker JsonGet does with a dotted path."""
    value: Any = document
    for part in path.split("."):
        value = value[part]
    return value


def test_evaluation_json_shape(run: dict[str, Path]) -> None:
    evaluation = json.loads((run["evaluate"] / s.EVALUATION_FILE).read_text())
    assert set(evaluation["ranking_metrics"]) == set(s.RECOMMENDERS)
    for name in s.RECOMMENDERS:
        for metric in s.METRICS:
            for k in s.KS:
                value = _get(evaluation, s.metric_json_path(name, metric, k))
                assert 0.0 <= value <= 1.0
    two_stage = evaluation["ranking_metrics"][s.TWO_STAGE]
    assert 0.0 < two_stage["candidate_recall"]["value"] <= 1.0
    assert two_stage["candidates_per_user"]["value"] > K
    assert set(evaluation["segments"]) == {"warm", "cold", "all"}
    assert evaluation["segments"]["warm"] == evaluation["ranking_metrics"]
    windows = json.loads((run["etl"] / s.WINDOWS_FILE).read_text())
    for key in ("test_start", "label_start", "test_days", "label_days"):
        assert evaluation["split"][key] == windows[key]
    users = evaluation["users"]
    assert users["evaluated"] == users["warm"] + users["cold"]
    assert users["cold"] > 0
    assert evaluation["data"]["catalog_items"] == len(pd.read_parquet(run["etl"] / s.ID_MAPS_DIR / s.ITEMS))
    assert set(evaluation["exclude_purchased"]["ranking_metrics"]) == set(s.RECOMMENDERS)
    # the ranker learned the shop's repurchase rhythm: it beats popular and ALS on the warm headline
    ndcg = {name: evaluation["ranking_metrics"][name]["ndcg_at_10"]["value"] for name in s.RECOMMENDERS}
    assert ndcg[s.TWO_STAGE] > ndcg[s.POPULAR]
    assert ndcg[s.TWO_STAGE] > ndcg[s.ALS]
    headline = evaluation["headline"]  # the ratio's denominator is the model-free lists; ALS stands beside
    assert headline["best_baseline"] == max(ndcg[s.POPULAR], ndcg[s.REPURCHASE])
    assert headline["two_stage_over_als"] == pytest.approx(ndcg[s.TWO_STAGE] / ndcg[s.ALS])


def test_metrics_recompute_from_the_two_parquet_files(run: dict[str, Path]) -> None:
    evaluation = json.loads((run["evaluate"] / s.EVALUATION_FILE).read_text())
    recomputed = recompute_metrics(pd.read_parquet(run["evaluate"] / s.GROUND_TRUTH_FILE),
                                   pd.read_parquet(run["evaluate"] / s.RECOMMENDATIONS_FILE),
                                   evaluation["data"]["catalog_items"])
    compared = 0
    for segment, blocks in recomputed["segments"].items():
        for name, block in blocks.items():
            for key, entry in block.items():
                assert entry["value"] == pytest.approx(evaluation["segments"][segment][name][key]["value"],
                                                       abs=1e-9), (segment, name, key)
                compared += 1
    assert compared == 3 * len(s.RECOMMENDERS) * len(s.METRICS) * len(s.KS)
    assert recomputed["ranking_metrics"].keys() == evaluation["ranking_metrics"].keys()


def test_recommendations_file_is_complete_and_cold_users_get_popular(run: dict[str, Path]) -> None:
    recs = pd.read_parquet(run["evaluate"] / s.RECOMMENDATIONS_FILE)
    truth = pd.read_parquet(run["evaluate"] / s.GROUND_TRUTH_FILE)
    assert list(recs.columns) == [s.RECOMMENDER, s.USER_ID, s.RANK, s.ITEM_ID, s.SCORE]
    assert list(truth.columns) == [s.USER_ID, s.ITEM_ID, s.SEGMENT]
    evaluated = set(truth[s.USER_ID])
    for name, rows in recs.groupby(s.RECOMMENDER):
        assert set(rows[s.USER_ID]) == evaluated, name
        per_user = rows.groupby(s.USER_ID)
        assert (per_user.size() == K).all(), name
        assert (per_user[s.ITEM_ID].nunique() == K).all(), name
        assert (per_user[s.RANK].apply(lambda r: sorted(r) == list(range(1, K + 1)))).all(), name
    cold = set(truth.loc[truth[s.SEGMENT] == s.COLD, s.USER_ID])
    popular = recs.loc[recs[s.RECOMMENDER] == s.POPULAR].sort_values([s.USER_ID, s.RANK])
    popular_list = popular.loc[popular[s.USER_ID] == next(iter(cold)), s.ITEM_ID].tolist()
    for name, rows in recs.loc[recs[s.USER_ID].isin(cold)].groupby([s.RECOMMENDER, s.USER_ID]):
        assert rows.sort_values(s.RANK)[s.ITEM_ID].tolist() == popular_list, name


def test_two_stage_is_reproduced_by_the_serving_path(run: dict[str, Path]) -> None:
    """Serving's recipe (every candidate row scored once with Ranker.score, the user's slice of the scores,
    rank_top_k, top_up) gives the evaluation's two_stage lists exactly."""
    spec = FeatureSpec.load(run["ranker_data"] / s.FEATURE_SPEC_FILE)
    ranker = Ranker.load(run["train"] / s.MODEL_ARCHIVE, spec=spec)
    scoring = pd.read_parquet(run["ranker_data"] / s.SCORING_DIR)
    all_scores = ranker.score(scoring, thread_count=1)
    users = scoring[s.USER_IDX].to_numpy()
    starts = np.searchsorted(users, np.unique(users))
    stops = [*starts[1:], len(users)]
    bounds = dict(zip(np.unique(users).tolist(), zip(starts, stops, strict=True), strict=True))
    fallback = PopularFallback.from_item_features(
        pd.read_parquet(run["etl"] / s.FOLDS_DIR / s.TEST_FOLD / s.ITEM_FEATURES))
    id_of_item = pd.read_parquet(run["etl"] / s.ID_MAPS_DIR / s.ITEMS).set_index(s.ITEM_IDX)[s.ITEM_ID]
    idx_of_user = pd.read_parquet(run["etl"] / s.ID_MAPS_DIR / s.USERS).set_index(s.USER_ID)[s.USER_IDX]
    recs = pd.read_parquet(run["evaluate"] / s.RECOMMENDATIONS_FILE)
    two_stage = recs.loc[recs[s.RECOMMENDER] == s.TWO_STAGE].sort_values([s.USER_ID, s.RANK])
    truth = pd.read_parquet(run["evaluate"] / s.GROUND_TRUTH_FILE)
    warm = truth.loc[truth[s.SEGMENT] == s.WARM, s.USER_ID].unique()
    checked = 0
    for user_id in warm[:25]:
        start, stop = bounds[int(idx_of_user[user_id])]
        items, top_scores = rank_top_k(scoring[s.ITEM_IDX].to_numpy()[start:stop], all_scores[start:stop], K)
        items, top_scores = fallback.top_up(items, top_scores, K)
        expected = two_stage.loc[two_stage[s.USER_ID] == user_id]
        assert [id_of_item[i] for i in items] == expected[s.ITEM_ID].tolist()
        np.testing.assert_allclose(top_scores, expected[s.SCORE].to_numpy(), rtol=0, atol=0)
        checked += 1
    assert checked == min(25, len(warm))


def test_report_and_plots_are_written(run: dict[str, Path]) -> None:
    html = (run["evaluate"] / s.REPORT_FILE).read_text()
    for name in s.RECOMMENDERS:
        assert name in html
    assert html.count("data:image/png;base64,") == 3
    for png in ("metrics.png", "candidate_recall.png", "feature_importance.png"):
        assert (run["evaluate"] / png).read_bytes()[:4] == b"\x89PNG"


def test_training_report_has_validation_ranking(run: dict[str, Path]) -> None:
    report = json.loads((run["train"] / s.TRAINING_REPORT_FILE).read_text())
    ranking = report["validation_ranking"]
    ranking_rows = pd.read_parquet(run["ranker_data"] / s.VALIDATION_RANKING_DIR)
    assert ranking["users"] == ranking_rows[s.USER_IDX].nunique() > 0
    assert 0.0 < ranking["ndcg_at_10"] <= 1.0
    assert ranking["ratio_to_repurchase"] == pytest.approx(ranking["ndcg_at_10"] / ranking["repurchase_ndcg_at_10"])
    # held-out users only: none of them is in the training channel's users
    training_users = set(data_step.build_training_data(
        run["etl"], run["als"], RankerConfig(negatives_per_user=20)).training[s.USER_IDX])
    assert not training_users & set(ranking_rows[s.USER_IDX])


def test_scoring_a_folder_batch_by_batch_equals_scoring_the_whole_table(run: dict[str, Path], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation scores the warm users' rows a batch at a time (bounded memory): the scores of the
    chosen users, from several parts in small batches, equal the ranker on the whole table at once."""
    from components.evaluation import evaluate

    ranker = Ranker.load(run["train"] / s.MODEL_ARCHIVE,
                         spec=FeatureSpec.load(run["ranker_data"] / s.FEATURE_SPEC_FILE))
    whole = pd.read_parquet(run["ranker_data"] / s.SCORING_DIR)
    users = np.unique(whole[s.USER_IDX].to_numpy())
    chosen = users[::2]
    split = len(whole) // 2
    folder = tmp_path / "scoring"
    folder.mkdir()
    whole.iloc[:split].to_parquet(folder / "part-00000000.parquet")
    whole.iloc[split:].to_parquet(folder / "part-00000001.parquet")
    monkeypatch.setattr(evaluate, "SCORE_BATCH_ROWS", 7)

    got = evaluate.score_candidates(folder, ranker, chosen.tolist())

    expected_rows = whole.loc[whole[s.USER_IDX].isin(chosen)]
    expected = expected_rows[[s.USER_IDX, s.ITEM_IDX]].assign(**{s.SCORE: ranker.score(expected_rows)})
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)
    assert set(got[s.USER_IDX]) == set(chosen.tolist())


def test_a_scoring_folder_without_parts_is_a_clear_error(run: dict[str, Path], tmp_path: Path) -> None:
    from components.errors import DataContractError
    from components.evaluation import evaluate

    ranker = Ranker.load(run["train"] / s.MODEL_ARCHIVE,
                         spec=FeatureSpec.load(run["ranker_data"] / s.FEATURE_SPEC_FILE))
    with pytest.raises(DataContractError, match=r"no part-\*\.parquet in .*empty"):
        evaluate.score_candidates(tmp_path / "empty", ranker, [0])


def test_a_non_finite_metric_is_refused_before_evaluation_json_is_written(tmp_path: Path) -> None:
    """NaN is not JSON (RFC 8259, section 6): SageMaker's JsonGet could not read the gate's numbers. The step
    names the field instead of writing it."""
    import math

    from components.errors import DataContractError
    from components.evaluation.evaluate import EvaluationResult

    empty = pd.DataFrame()
    result = EvaluationResult(
        evaluation={"ranking_metrics": {s.TWO_STAGE: {"ndcg_at_10": {"value": 0.3}}},
                    s.TIFU_KNN: {"chosen_on": {"value": math.nan}, "tried": [{"ndcg_at_10": math.inf}]}},
        ground_truth=empty, recommendations=empty, recall_curves={}, feature_importance={})
    with pytest.raises(DataContractError, match=r"evaluation\.json .* at tifu_knn\.chosen_on\.value, "
                                                r"tifu_knn\.tried\[0\]\.ndcg_at_10"):
        evaluate_step.write_outputs(result, {}, tmp_path)
    assert not (tmp_path / s.EVALUATION_FILE).exists()


def test_the_report_says_when_tifu_knn_had_no_user_to_tune_on(tmp_path: Path) -> None:
    """A shop without purchases before label_start: tifu.choose takes the grid's first point and records
    value null; the report says so instead of a measured-looking "NDCG@10 0.0000"."""
    from components.evaluation.report import write_report

    block = {s.metric_key(m, k): {"value": 0.1} for m in s.METRICS for k in s.KS}
    evaluation = {"ranking_metrics": {s.TWO_STAGE: block}, "segments": {"warm": {s.TWO_STAGE: block}},
                  "users": {"evaluated": 3, "warm": 3}, "split": {}, "data": {}, "headline": {},
                  s.TIFU_KNN: {"params": {"k": 100}, "grid": {"k": [100]},
                               "chosen_on": {"fold": "train", "value": None, "users": 0}}}
    page = write_report(evaluation, {"ranker": [0.1, 0.2]}, {}, {}, tmp_path).read_text()
    assert "not tuned: no user had both baskets and target purchases" in page
    assert "NDCG@10 0.0000 over 0 users" not in page


def test_a_test_window_without_warm_users_is_a_clear_error() -> None:
    """Only new customers bought in the test window: the evaluation says so up front (the warm headline would
    be empty and the gate block's lookup would fail with "evaluation.json has no 'ranking_metrics...'")."""
    from components.errors import DataContractError
    from components.evaluation.evaluate import EvaluationInputs, evaluate

    empty = pd.DataFrame()
    inputs = EvaluationInputs(
        windows={}, user_ids=empty, item_ids=empty, targets=empty,
        target_users=pd.DataFrame({s.USER_IDX: [0, 1], s.SEGMENT: [s.COLD, s.COLD]}),
        item_features=empty, user_item_features=empty, candidates=empty, scored=empty, training_report={},
        purchases=empty, interactions=empty, train_targets=empty)
    with pytest.raises(DataContractError, match=r"target_users has no warm user .*2 test-window buyers"):
        evaluate(inputs)
