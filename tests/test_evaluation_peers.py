"""The strongest simple peers every run measures (EVALUATION.md): tifu_knn from the paper's definitions,
its settings chosen without the test window, itemknn exactly as implicit scores it, and the quality gate
refusing a ranker they beat."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from components import schema as s
from components.candidates import itemknn, tifu
from components.candidates.itemknn import ItemKnn
from components.config import GateConfig, PipelineConfig, RankerConfig
from components.errors import QualityGateError
from components.evaluation import step as evaluate_step
from components.evaluation.evaluate import evaluate, load_inputs
from components.ranker import data_step, train_step
from components.registry import step as register_step
from components.registry.local import LocalRegistry
from tests.test_ranker_fixtures import make_fake_outputs

T0 = pd.Timestamp("2024-03-01")


def _purchases(rows: list[tuple[int, int, float, str | None]]) -> pd.DataFrame:
    """(user_idx, item_idx, day offset, session_id) -> purchase rows."""
    return pd.DataFrame({s.USER_IDX: [r[0] for r in rows], s.ITEM_IDX: [r[1] for r in rows],
                         s.TIMESTAMP: [T0 + pd.Timedelta(days=r[2]) for r in rows],
                         s.SESSION_ID: [r[3] for r in rows]})


def test_baskets_are_sessions_else_days_oldest_first_and_a_cut_keeps_positions() -> None:
    rows = _purchases([(0, 1, 0.1, None), (0, 2, 0.9, None),  # one day, no session: one basket
                       (0, 3, 2.2, "A"), (0, 4, 2.3, "B"), (0, 3, 2.4, "B"),  # two orders on one day
                       (0, 5, 5.0, None), (1, 1, 1.0, "C")])
    out = tifu.baskets(rows)
    got = {(u, b): sorted(g) for (u, b), g in out.groupby([s.USER_IDX, tifu.BASKET])[s.ITEM_IDX]}
    assert got == {(0, 0): [1, 2], (0, 1): [3], (0, 2): [3, 4], (0, 3): [5], (1, 0): [1]}
    cut = tifu.before(out, str(T0 + pd.Timedelta(days=2.25)))
    assert sorted(map(tuple, cut[[s.USER_IDX, tifu.BASKET, s.ITEM_IDX]].to_numpy().tolist())) == [
        (0, 0, 1), (0, 0, 2), (0, 1, 3), (1, 0, 1)]


def test_user_vectors_follow_the_paper() -> None:
    """Hu et al. 2020, Eq. (1)-(2): groups of m baskets from the most recent back, within-group decay r_b
    per basket from the group's end, between-group decay r_g per group from the last, each averaged."""
    # user 0: 5 baskets b0..b4 (item = basket index); m = 2 -> groups [b0], [b1 b2], [b3 b4]
    rows = pd.DataFrame({s.USER_IDX: 0, tifu.BASKET: range(5), s.ITEM_IDX: range(5)})
    params = tifu.TifuParams(k=1, group_size=2, within_decay=0.5, group_decay=0.25)
    u = tifu.user_vectors(rows, 1, 5, params).toarray()[0]
    rb, rg, groups = 0.5, 0.25, 3
    expected = np.array([
        rg**2 * (1.0 / 1) / groups,  # b0: alone in the oldest group
        rg**1 * (rb / 2) / groups, rg**1 * (1 / 2) / groups,  # b1, b2
        rg**0 * (rb / 2) / groups, rg**0 * (1 / 2) / groups,  # b3, b4 (the most recent)
    ])
    np.testing.assert_allclose(u, expected, rtol=1e-6)


def test_tifu_scores_are_the_blend_with_the_k_nearest_users() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 25
    rows = pd.DataFrame({s.USER_IDX: rng.integers(0, n_users - 5, 400), tifu.BASKET: rng.integers(0, 6, 400),
                         s.ITEM_IDX: rng.integers(0, n_items, 400)}).drop_duplicates()
    params = tifu.TifuParams(k=4, alpha=0.6, group_size=2, within_decay=0.8, group_decay=0.7)
    vectors = tifu.user_vectors(rows, n_users, n_items, params).toarray().astype(np.float64)
    users = np.array([0, 3, 7, n_users - 1])  # the last user has no basket
    model = tifu.TifuModel(rows, users, n_users, n_items, params)
    got = model.recommend(n_items)
    has = np.flatnonzero(vectors.sum(axis=1) > 0)
    assert not len(got.loc[got[s.USER_IDX] == n_users - 1])  # no basket, no neighbours: popular tops it up
    for user in users[:-1]:
        others = has[has != user]
        dist = ((vectors[others] - vectors[user]) ** 2).sum(axis=1)
        nearest = others[np.lexsort((others, dist))[:4]]
        score = 0.6 * vectors[user] + 0.4 * vectors[nearest].mean(axis=0)
        mine = got.loc[got[s.USER_IDX] == user]
        positive = np.flatnonzero(score > 1e-9)
        assert sorted(mine[s.ITEM_IDX]) == sorted(positive.tolist())
        np.testing.assert_allclose(mine[s.SCORE].to_numpy(), score[mine[s.ITEM_IDX].to_numpy()], rtol=1e-5)
        assert (np.diff(mine[s.SCORE].to_numpy()) <= 1e-12).all()
    # excluded pairs never come back
    exclude = tifu.pairs_matrix(pd.DataFrame({s.USER_IDX: [0], s.ITEM_IDX: [int(got.iloc[0][s.ITEM_IDX])]}),
                                n_users, n_items)
    again = model.recommend(n_items, exclude=exclude)
    assert int(got.iloc[0][s.ITEM_IDX]) not in set(again.loc[again[s.USER_IDX] == 0, s.ITEM_IDX])


def test_itemknn_scores_as_implicit_recommends() -> None:
    """The chunked product (user row x similarity) gives implicit's BM25Recommender.recommend lists
    (implicit/nearest_neighbours.py: NearestNeighboursScorer over the user's items, own items kept)."""
    rng = np.random.default_rng(1)
    n_users, n_items = 60, 30
    interactions = pd.DataFrame({s.USER_IDX: rng.integers(0, n_users, 500),
                                 s.ITEM_IDX: rng.integers(0, n_items, 500)}).drop_duplicates()
    interactions[s.WEIGHT] = rng.integers(1, 5, len(interactions)).astype(float)
    model = ItemKnn(interactions, n_users, n_items)
    users = np.arange(n_users)
    ours = model.recommend(users, 10)
    ids, scores = model.model.recommend(users, model.user_items[users], N=10, filter_already_liked_items=False)
    for user in users:
        mine = ours.loc[ours[s.USER_IDX] == user]
        theirs = scores[user] > 0
        np.testing.assert_allclose(mine[s.SCORE].to_numpy(), scores[user][theirs], rtol=1e-6)
        assert set(mine[s.ITEM_IDX]) == set(ids[user][theirs])  # equal scores may tie in either order


def test_itemknn_pair_scores_are_the_scores_it_ranks_by() -> None:
    """A candidate's itemknn feature is the score ItemKnn.recommend ranks by (implicit's product of the user's
    row and the similarity), also when the matrix holds only a shard's users' rows."""
    rng = np.random.default_rng(2)
    n_users, n_items = 50, 30
    interactions = pd.DataFrame({s.USER_IDX: rng.integers(0, n_users, 400),
                                 s.ITEM_IDX: rng.integers(0, n_items, 400)}).drop_duplicates()
    interactions[s.WEIGHT] = rng.integers(1, 5, len(interactions)).astype(float)
    model = ItemKnn(interactions, n_users, n_items)
    dense = np.vstack([block for _, block in model.score_blocks(np.arange(n_users))])
    users, items = np.repeat(np.arange(n_users), n_items), np.tile(np.arange(n_items), n_users)
    order = rng.permutation(len(users))  # any row order
    got = itemknn.pair_scores(model.similarity, model.user_items, users[order], items[order])
    np.testing.assert_allclose(got, dense[users[order], items[order]], rtol=1e-12)
    assert (got > 0).any() and (got == 0).any()
    shard = interactions.loc[interactions[s.USER_IDX].between(10, 19)]
    rows = itemknn.user_item_matrix(shard, n_users, n_items)
    mine = (users >= 10) & (users < 20)
    np.testing.assert_allclose(itemknn.pair_scores(model.similarity, rows, users[mine], items[mine]),
                               dense[users[mine], items[mine]], rtol=1e-12)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fake shop (seed 5: tifu_knn is its strongest baseline) through ranker_data and train."""
    root = tmp_path_factory.mktemp("peers")
    etl, als = make_fake_outputs(root, seed=5)
    config = PipelineConfig(ranker=RankerConfig(iterations=80, negatives_per_user=20, tifu_features=True,
                                                 itemknn_features=True)).to_json()
    data_step.main(["--etl", str(etl), "--als", str(als), "--output", str(root / "ranker_data"),
                    "--config", config])
    train_step.main(["--ranker_data", str(root / "ranker_data"), "--output", str(root / "train"),
                     "--config", config])
    return {"root": root, "etl": etl, "als": als, "ranker_data": root / "ranker_data", "train": root / "train"}


def test_tifu_settings_are_chosen_without_the_test_window(shop: dict[str, Path], tmp_path: Path) -> None:
    inputs = load_inputs(shop["etl"], shop["als"], shop["ranker_data"], shop["train"])
    first = evaluate(inputs).evaluation[s.TIFU_KNN]
    assert first["chosen_on"]["fold"] == s.TRAIN_FOLD
    assert len(first["tried"]) >= len(first["grid"]["k"]) * len(first["grid"]["alpha"])
    assert first["chosen_on"]["value"] == max(p["ndcg_at_10"] for p in first["tried"])
    # Rewrite every test-window purchase (and the test targets): the choice must not move.
    test_start = pd.Timestamp(json.loads((shop["etl"] / s.WINDOWS_FILE).read_text())["test_start"])
    events = pd.read_parquet(shop["etl"] / s.CLEAN_DIR / s.EVENTS)
    late = events[s.TIMESTAMP] >= test_start.tz_localize(None)
    assert late.any()
    events.loc[late, s.ITEM_IDX] = (events.loc[late, s.ITEM_IDX] + 7) % int(events[s.ITEM_IDX].max() + 1)
    etl = tmp_path / "etl"
    shutil.copytree(shop["etl"], etl)
    shutil.rmtree(etl / s.CLEAN_DIR / s.EVENTS)
    (etl / s.CLEAN_DIR / s.EVENTS).mkdir(parents=True)
    events.to_parquet(etl / s.CLEAN_DIR / s.EVENTS / "part-00000.parquet", index=False)
    targets = pd.read_parquet(etl / s.FOLDS_DIR / s.TEST_FOLD / s.TARGETS)
    targets[s.ITEM_IDX] = (targets[s.ITEM_IDX] + 7) % int(events[s.ITEM_IDX].max() + 1)
    shutil.rmtree(etl / s.FOLDS_DIR / s.TEST_FOLD / s.TARGETS)
    (etl / s.FOLDS_DIR / s.TEST_FOLD / s.TARGETS).mkdir()
    targets.drop_duplicates().to_parquet(etl / s.FOLDS_DIR / s.TEST_FOLD / s.TARGETS / "part-0.parquet",
                                         index=False)
    moved = evaluate(load_inputs(etl, shop["als"], shop["ranker_data"], shop["train"])).evaluation[s.TIFU_KNN]
    assert moved["params"] == first["params"] and moved["tried"] == first["tried"]


def test_gate_refuses_a_weakened_ranker_that_tifu_knn_beats(shop: dict[str, Path], tmp_path: Path) -> None:
    """The ranker trained on shuffled labels (deliberately weakened), evaluated and gated as the pipeline
    does: tifu_knn wins, nothing is registered, and the reason names it and the gap."""
    ranker_data = tmp_path / "ranker_data"
    shutil.copytree(shop["ranker_data"], ranker_data)
    rng = np.random.default_rng(0)
    for channel in s.CHANNELS:
        path = ranker_data / channel / s.CHANNEL_DATA_FILE
        lines = path.read_text().splitlines()
        labels = rng.permutation([line.split(",", 1)[0] for line in lines])
        path.write_text("".join(f"{label},{line.split(',', 1)[1]}\n" for label, line in zip(labels, lines,
                                                                                              strict=True)))
    config = PipelineConfig(ranker=RankerConfig(iterations=80, negatives_per_user=20),
                            gate=GateConfig(ndcg_at_10_floor=0.0, must_beat_als=False)).to_json()
    train_step.main(["--ranker_data", str(ranker_data), "--output", str(tmp_path / "train"), "--config", config])
    evaluate_step.main(["--etl", str(shop["etl"]), "--als", str(shop["als"]), "--ranker_data", str(ranker_data),
                        "--train", str(tmp_path / "train"), "--output", str(tmp_path / "evaluation"),
                        "--config", config])
    evaluation = json.loads((tmp_path / "evaluation" / s.EVALUATION_FILE).read_text())
    ndcg = {name: block["ndcg_at_10"]["value"] for name, block in evaluation["ranking_metrics"].items()}
    assert evaluation["gate"]["strongest_baseline"] == s.TIFU_KNN
    assert ndcg[s.TIFU_KNN] > ndcg[s.TWO_STAGE]
    (tmp_path / "bundle").mkdir()
    registry = tmp_path / "registry"
    with pytest.raises(QualityGateError, match=r"baseline tifu_knn \(\d\.\d{4} ndcg_at_10\) leads by "):
        register_step.main(["--bundle", str(tmp_path / "bundle"), "--evaluation", str(tmp_path / "evaluation"),
                            "--output", str(tmp_path / "register"), "--registry", str(registry),
                            "--config", config])
    record = json.loads((tmp_path / "register" / "registration.json").read_text())
    assert record["gate"]["passed"] is False and record["gate"]["strongest_baseline"] == s.TIFU_KNN
    assert record["gate"]["two_stage_over_strongest_baseline"] == pytest.approx(ndcg[s.TWO_STAGE] / ndcg[s.TIFU_KNN])
    assert LocalRegistry(registry).list_versions("ecomrec") == []


def test_pairs_matrix_is_binary() -> None:
    m = tifu.pairs_matrix(pd.DataFrame({s.USER_IDX: [0, 0, 1], s.ITEM_IDX: [2, 2, 0]}), 2, 3)
    assert isinstance(m, sp.csr_matrix) and m.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]


def test_pair_scores_are_the_model_scores_of_those_pairs() -> None:
    rng = np.random.default_rng(2)
    n_users, n_items = 30, 20
    rows = pd.DataFrame({s.USER_IDX: rng.integers(0, n_users, 300), tifu.BASKET: rng.integers(0, 5, 300),
                         s.ITEM_IDX: rng.integers(0, n_items, 300)}).drop_duplicates()
    params = tifu.TifuParams(k=5, alpha=0.7, group_size=2)
    users = np.array([4, 1, 9])
    model = tifu.TifuModel(rows, users, n_users, n_items, params)
    pairs = pd.DataFrame({s.USER_IDX: np.repeat(users, n_items), s.ITEM_IDX: np.tile(np.arange(n_items), 3)})
    scored = tifu.with_pair_scores(model, pairs)
    blend = 0.7 * scored[tifu.OWN] + 0.3 * scored[tifu.NEIGHBOURS]
    top = model.recommend(n_items)
    merged = pairs.assign(blend=blend).merge(top, on=[s.USER_IDX, s.ITEM_IDX])
    assert len(merged) == len(top)
    np.testing.assert_allclose(merged["blend"], merged[s.SCORE], rtol=1e-5)
    with pytest.raises(ValueError, match="no neighbours"):
        model.pair_scores(np.array([2]), np.array([0]))


def test_ranker_reads_tifu_pair_scores_on_both_folds(shop: dict[str, Path]) -> None:
    """ranker.tifu_features: the train fold's rows and the scoring rows carry the same TIFU-KNN columns,
    the scoring rows' values those of a model over the history before test_start."""
    from components.ranker.data_step import fold_tifu_model
    from components.ranker.features import TIFU_RANK, TIFU_SCORE
    from components.ranker.model import FeatureSpec

    spec = FeatureSpec.load(shop["ranker_data"] / s.FEATURE_SPEC_FILE)
    assert {*tifu.PAIR_COLUMNS, TIFU_SCORE, TIFU_RANK} <= set(spec.features)
    scoring = pd.read_parquet(shop["ranker_data"] / s.SCORING_DIR)
    model = fold_tifu_model(shop["etl"], s.TEST_FOLD, scoring[s.USER_IDX].unique())
    own, neighbours = model.pair_scores(scoring[s.USER_IDX].to_numpy(), scoring[s.ITEM_IDX].to_numpy())
    np.testing.assert_allclose(scoring[tifu.OWN], own, rtol=1e-6)
    np.testing.assert_allclose(scoring[tifu.NEIGHBOURS], neighbours, rtol=1e-6)
    assert (scoring[tifu.OWN] > 0).any() and (scoring[tifu.NEIGHBOURS] > 0).any()


def test_ranker_reads_itemknn_scores_of_each_folds_own_history(shop: dict[str, Path]) -> None:
    """ranker.itemknn_features: the train fold's rows carry itemknn fitted on the train fold's
    interactions, the scoring rows (the bundle's) itemknn fitted on the test fold's, so nothing of the label
    window reaches a training row and serving sees the evaluation's features."""
    from components.ranker.data_step import fold_itemknn
    from components.ranker.model import FeatureSpec

    spec = FeatureSpec.load(shop["ranker_data"] / s.FEATURE_SPEC_FILE)
    assert s.ITEMKNN_PAIR_COLUMN in spec.features
    for rows_dir, fold in ((s.VALIDATION_RANKING_DIR, s.TRAIN_FOLD), (s.SCORING_DIR, s.TEST_FOLD)):
        rows = pd.read_parquet(shop["ranker_data"] / rows_dir)
        pairs = rows[s.USER_IDX].to_numpy(), rows[s.ITEM_IDX].to_numpy()
        own, other = (fold_itemknn(shop["etl"], f) for f in (fold, ({s.TRAIN_FOLD, s.TEST_FOLD} - {fold}).pop()))
        expected = itemknn.pair_scores(own.similarity, own.user_items, *pairs)
        np.testing.assert_allclose(rows[s.ITEMKNN_PAIR_COLUMN], expected, rtol=1e-6)  # float32 in the files
        assert (expected > 0).any()
        assert not np.allclose(expected, itemknn.pair_scores(other.similarity, other.user_items, *pairs))


def test_history_baskets_follow_a_rewritten_etl(shop: dict[str, Path], tmp_path: Path) -> None:
    """The cache of ranker_data's baskets is keyed by the clean events' files: a rerun ETL is read again."""
    etl = tmp_path / "etl"
    shutil.copytree(shop["etl"], etl)
    first = tifu.history_baskets(etl)
    assert tifu.history_baskets(etl) is first
    events_dir = etl / s.CLEAN_DIR / s.EVENTS
    events = pd.read_parquet(events_dir)
    shutil.rmtree(events_dir)
    events_dir.mkdir()
    events.iloc[: len(events) // 2].to_parquet(events_dir / "part-00001.parquet", index=False)
    assert len(tifu.history_baskets(etl)) < len(first)


def test_choose_without_tuning_users_takes_the_first_grid_point() -> None:
    rows = pd.DataFrame({s.USER_IDX: [0], tifu.BASKET: [0], s.ITEM_IDX: [1]})
    choice = tifu.choose(rows, pd.DataFrame({s.USER_IDX: [1], s.ITEM_IDX: [2]}), 2, 3)
    assert choice.users == 0 and choice.scores == []
    assert choice.params == tifu.TifuParams(k=100, alpha=0.5, group_size=3, within_decay=0.9, group_decay=0.6)
