"""Single-machine candidate generators: what each one recommends, in which order, and when it refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from components import schema as s
from components.candidates.als import (
    ImplicitAls,
    blas_thread_warnings,
    choose_backend,
    confidence_values,
    mllib_reg_param,
)
from components.candidates.base import RANK, SCORE, CandidateGenerator, FoldTables, top_n_by_row, top_n_sparse
from components.candidates.cooc import CoocGenerator
from components.candidates.history import HistoryGenerator
from components.candidates.io import read_fold_tables
from components.candidates.popular import PopularGenerator
from components.config import AlsConfig
from components.errors import DataContractError, NotFittedError
from tests.test_candidates_fixtures import (
    block_events,
    block_tables,
    fold_tables,
    shop_events,
    windows,
    write_etl,
)

SMALL_ALS = AlsConfig(factors=8, iterations=15, regularization=0.1, alpha=10.0, seed=7)


def _in_block_share(recs: pd.DataFrame, user_block: np.ndarray, item_block: np.ndarray) -> float:
    return float((user_block[recs[s.USER_IDX]] == item_block[recs[s.ITEM_IDX]]).mean())


def test_implicit_als_recovers_planted_blocks() -> None:
    interactions, user_block, item_block = block_events()
    users = np.arange(len(user_block))
    recs = ImplicitAls(SMALL_ALS).fit(block_tables(interactions, len(item_block))).recommend(users, 10)
    # 10 = a block's size: the user's whole block, bought and not yet bought, must come first.
    assert _in_block_share(recs, user_block, item_block) >= 0.95
    held_out = recs.merge(interactions, on=[s.USER_IDX, s.ITEM_IDX], how="left", indicator=True)
    unseen_in_block = held_out[(held_out["_merge"] == "left_only")
                               & (user_block[held_out[s.USER_IDX]] == item_block[held_out[s.ITEM_IDX]])]
    assert len(unseen_in_block) >= 0.9 * 4 * len(users)  # 4 unseen block items per user found


def test_als_keeps_already_bought_items() -> None:
    interactions, user_block, item_block = block_events()
    recs = ImplicitAls(SMALL_ALS).fit(block_tables(interactions, len(item_block))).recommend(
        np.arange(len(user_block)), 10)
    bought = set(zip(interactions[s.USER_IDX], interactions[s.ITEM_IDX], strict=True))
    recommended = set(zip(recs[s.USER_IDX], recs[s.ITEM_IDX], strict=True))
    assert bought <= recommended  # repeat buying: never filtered


def test_als_is_deterministic_and_seeded() -> None:
    interactions, user_block, item_block = block_events()
    tables = block_tables(interactions, len(item_block))
    users = np.arange(len(user_block))
    first = ImplicitAls(SMALL_ALS).fit(tables)
    again = ImplicitAls(SMALL_ALS).fit(tables)
    other_seed = ImplicitAls(SMALL_ALS.model_copy(update={"seed": 8})).fit(tables)
    pd.testing.assert_frame_equal(first.recommend(users, 15), again.recommend(users, 15))
    np.testing.assert_array_equal(first.factors()[0].vectors, again.factors()[0].vectors)
    assert not np.array_equal(first.factors()[1].vectors, other_seed.factors()[1].vectors)


def test_als_output_shapes_and_unknown_users() -> None:
    interactions, user_block, item_block = block_events()
    model = ImplicitAls(SMALL_ALS).fit(block_tables(interactions, len(item_block)))
    recs = model.recommend(np.array([0, 1, 999]), 5)  # 999 has no interactions: no ALS candidates
    assert set(recs[s.USER_IDX]) == {0, 1}
    assert recs.groupby(s.USER_IDX)[RANK].apply(list).tolist() == [[1, 2, 3, 4, 5]] * 2
    assert (recs.groupby(s.USER_IDX)[SCORE].diff().dropna() <= 0).all()
    users, items = model.factors()
    assert users.vectors.shape == (len(user_block), SMALL_ALS.factors) and users.vectors.dtype == np.float32
    assert list(items.ids) == sorted(interactions[s.ITEM_IDX].unique())


def test_confidence_is_log_scaled_and_decays_with_recency() -> None:
    config = AlsConfig(confidence="log", recency_half_life_days=30.0)
    values = confidence_values(np.array([0.0, np.e - 1, np.e - 1]), np.array([0.0, 0.0, 30.0]), config)
    np.testing.assert_allclose(values, [0.0, 1.0, 0.5])
    linear = confidence_values(np.array([4.0]), np.array([np.nan]), AlsConfig(confidence="linear"))
    np.testing.assert_allclose(linear, [4.0])


def test_backend_choice_follows_the_size_limit() -> None:
    config = AlsConfig(single_machine_max_nnz=1000)
    assert choose_backend(config, 1000) == "implicit"
    assert choose_backend(config, 1001) == "mllib"
    assert choose_backend(config.model_copy(update={"backend": "mllib"}), 10) == "mllib"


def test_mllib_penalty_is_scaled_to_match_implicit() -> None:
    # 1000 ratings over 10 users (100 each) and 50 items (20 each): mean 60 ratings per row.
    assert mllib_reg_param(AlsConfig(regularization=6.0), 1000, 10, 50) == pytest.approx(0.1)
    assert mllib_reg_param(AlsConfig(regularization=6.0, mllib_regularization=0.5), 1000, 10, 50) == 0.5


def test_blas_threads_from_the_environment_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert "OPENBLAS_NUM_THREADS=4" in blas_thread_warnings()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert not any("OPENBLAS_NUM_THREADS" in w for w in blas_thread_warnings())


def _history_tables() -> FoldTables:
    ui = pd.DataFrame({
        s.USER_IDX: [0, 0, 0, 0, 1],
        s.ITEM_IDX: [5, 3, 9, 7, 3],
        s.UI_PURCHASE_DAYS: [1, 4, 4, 2, 1],
        s.UI_DAYS_SINCE_LAST: [1.0, 30.0, 2.0, np.nan, 5.0],
    })
    interactions = ui[[s.USER_IDX, s.ITEM_IDX]].assign(**{s.WEIGHT: 1.0})
    items = pd.DataFrame({s.ITEM_IDX: np.arange(10), s.ITEM_BUYERS_28D: [0, 5, 0, 9, 5, 2, 0, 0, 0, 1]})
    return FoldTables(interactions, ui, items)


def test_history_orders_by_purchase_days_then_recency() -> None:
    recs = HistoryGenerator().fit(_history_tables()).recommend(np.array([0, 1, 2]), 3)
    assert recs[recs[s.USER_IDX] == 0][s.ITEM_IDX].tolist() == [9, 3, 7]  # 4 days recent, 4 days old, 2 days
    assert recs[recs[s.USER_IDX] == 1][s.ITEM_IDX].tolist() == [3]
    assert 2 not in set(recs[s.USER_IDX])


def test_popular_orders_by_recent_buyers_and_skips_unsold_items() -> None:
    recs = PopularGenerator().fit(_history_tables()).recommend(np.array([4, 2]), 10)
    per_user = recs.groupby(s.USER_IDX)[s.ITEM_IDX].apply(list)
    assert per_user.tolist() == [[3, 1, 4, 5, 9]] * 2  # 9 buyers, then 5/5 by item_idx, ...; 0 buyers never


def test_cooc_recommends_what_co_buyers_bought() -> None:
    # Users 0-2 buy A=0 and B=1 together, users 3-4 buy C=2 and D=3; user 5 only bought A.
    pairs = [(u, i) for u in (0, 1, 2) for i in (0, 1)] + [(u, i) for u in (3, 4) for i in (2, 3)] + [(5, 0)]
    interactions = pd.DataFrame(pairs, columns=[s.USER_IDX, s.ITEM_IDX]).assign(**{s.WEIGHT: 1.0})
    ui = interactions[[s.USER_IDX, s.ITEM_IDX]].assign(**{s.UI_PURCHASE_DAYS: 1, s.UI_DAYS_SINCE_LAST: 3.0})
    items = pd.DataFrame({s.ITEM_IDX: np.arange(4), s.ITEM_BUYERS_28D: 1})
    cooc = CoocGenerator(neighbours=5, half_life_days=None).fit(FoldTables(interactions, ui, items))
    recs = cooc.recommend(np.array([5]), 5)
    assert recs[s.ITEM_IDX].tolist() == [1]  # only B co-occurs with A; C and D never did
    np.testing.assert_allclose(recs[SCORE], 3 / np.sqrt(4 * 3))


def test_cooc_weights_recent_items_more() -> None:
    # User 9 bought A (long ago) and C (yesterday); A's partner B and C's partner D co-occur equally.
    pairs = [(u, i) for u in (0, 1) for i in (0, 1)] + [(u, i) for u in (2, 3) for i in (2, 3)]
    pairs += [(9, 0), (9, 2)]
    interactions = pd.DataFrame(pairs, columns=[s.USER_IDX, s.ITEM_IDX]).assign(**{s.WEIGHT: 1.0})
    days = [5.0] * 8 + [300.0, 1.0]
    ui = interactions[[s.USER_IDX, s.ITEM_IDX]].assign(**{s.UI_PURCHASE_DAYS: 1, s.UI_DAYS_SINCE_LAST: days})
    items = pd.DataFrame({s.ITEM_IDX: np.arange(4), s.ITEM_BUYERS_28D: 1})
    recs = CoocGenerator(half_life_days=30.0).fit(FoldTables(interactions, ui, items)).recommend(
        np.array([9]), 2)
    assert recs[s.ITEM_IDX].tolist()[0] == 3  # D (via recent C) before B (via old A)


@pytest.mark.parametrize("generator", [
    ImplicitAls(SMALL_ALS), HistoryGenerator(), PopularGenerator(), CoocGenerator()], ids=lambda g: g.name)
def test_generators_refuse_to_recommend_before_fit(generator: CandidateGenerator) -> None:
    with pytest.raises(NotFittedError):
        generator.recommend(np.array([0]), 5)


def test_als_factors_refused_before_fit() -> None:
    with pytest.raises(NotFittedError):
        ImplicitAls(SMALL_ALS).factors()


def test_fold_tables_name_a_missing_column() -> None:
    tables = _history_tables()
    with pytest.raises(DataContractError, match=s.ITEM_BUYERS_28D):
        FoldTables(tables.interactions, tables.user_items, tables.items.drop(columns=[s.ITEM_BUYERS_28D]))


def test_generators_only_know_the_fold_they_were_fitted_on() -> None:
    events = shop_events()
    cutoff = windows(events)["label_start"]
    tables = fold_tables(events, cutoff, 30)
    users = np.arange(40)
    late_items, late_users = {27, 28, 29}, {37, 38, 39}
    for generator, n in ((ImplicitAls(SMALL_ALS), 30), (HistoryGenerator(), 30), (CoocGenerator(), 30),
                         (PopularGenerator(), 30)):
        recs = generator.fit(tables).recommend(users, n)
        assert not late_items & set(recs[s.ITEM_IDX]), generator.name
        if generator.name != "popular":  # popular serves everyone the same list
            assert not late_users & set(recs[s.USER_IDX]), generator.name


def test_top_n_by_row_is_exact_with_ties_to_the_smaller_column() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0],
                       [0.1, 0.2, 0.3, 0.4, 0.5]])
    row, col, val, rank = top_n_by_row(lambda a, b: scores[a:b], 3, 5, 3)
    assert list(zip(row, col, rank, strict=True)) == [(0, 1, 1), (0, 0, 2), (0, 2, 3),
                                                      (2, 4, 1), (2, 3, 2), (2, 2, 3)]
    np.testing.assert_allclose(val, [0.9, 0.5, 0.5, 0.5, 0.4, 0.3])


def test_reading_names_the_missing_table_and_column(tmp_path: Path) -> None:
    etl = write_etl(tmp_path / "etl", shop_events(), 30)
    tables = read_fold_tables(etl, s.TRAIN_FOLD)
    assert len(tables.interactions) > 0 and list(tables.items.columns) == [s.ITEM_IDX, s.ITEM_BUYERS_28D]
    items = etl / s.FOLDS_DIR / s.TEST_FOLD / s.ITEM_FEATURES
    pd.read_parquet(items).drop(columns=[s.ITEM_BUYERS_28D]).to_parquet(items / "part-00000.parquet")
    with pytest.raises(DataContractError, match=f"{s.ITEM_FEATURES}.*{s.ITEM_BUYERS_28D}"):
        read_fold_tables(etl, s.TEST_FOLD)
    shutil.rmtree(etl / s.FOLDS_DIR / s.TEST_FOLD / s.INTERACTIONS)
    with pytest.raises(DataContractError, match=f"{s.TEST_FOLD}/{s.INTERACTIONS}"):
        read_fold_tables(etl, s.TEST_FOLD)


def test_sparse_top_n_matches_the_dense_selection() -> None:
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((60, 40)) < 0.4, rng.integers(1, 6, (60, 40)) / 5.0, 0.0)  # many ties
    dense[3] = 0.0  # an empty row
    for n in (1, 3, 10, 50):
        sparse_out = top_n_sparse(sp.csr_matrix(dense), n)
        dense_out = top_n_by_row(lambda a, b: dense[a:b], 60, 40, n)
        for got, want in zip(sparse_out, dense_out, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("blocks", "items_per_block"), [(1, 10), (20, 5)],
                         ids=["dense co-occurrence", "sparse co-occurrence"])
def test_cooc_equals_brute_force_cosine(blocks: int, items_per_block: int) -> None:
    # One small block: most item pairs co-occur (the dense path); 20 blocks: block-diagonal (the sparse one).
    interactions, _, item_block = block_events(blocks=blocks, users_per_block=6, items_per_block=items_per_block,
                                               bought_per_user=4)
    tables = block_tables(interactions, len(item_block))
    users = np.unique(interactions[s.USER_IDX])
    got = CoocGenerator(neighbours=3, half_life_days=None).fit(tables).recommend(users, 5)
    bought = np.zeros((len(users), len(item_block)))
    bought[interactions[s.USER_IDX], interactions[s.ITEM_IDX]] = 1.0
    n_item = np.maximum(bought.sum(axis=0), 1.0)
    sim = (bought.T @ bought) / np.sqrt(n_item[:, None] * n_item[None, :])
    np.fill_diagonal(sim, 0.0)
    keep_row, keep_col, _, _ = top_n_by_row(lambda a, b: sim[a:b], len(sim), len(sim), 3)
    neighbours = np.zeros_like(sim)
    neighbours[keep_row, keep_col] = sim[keep_row, keep_col]
    scores = bought @ neighbours
    row, col, score, rank = top_n_by_row(lambda a, b: scores[a:b], len(users), len(sim), 5)
    assert got[s.USER_IDX].tolist() == users[row].tolist() and got[s.ITEM_IDX].tolist() == col.tolist()
    assert got[RANK].tolist() == rank.tolist()
    np.testing.assert_allclose(got[SCORE], score)
