"""One feature definition: the online as-of features equal the batch pipeline's, on real events.

The tiny shop's whole pipeline runs once (the session's ``tiny_run``); its bundle is the snapshot at the
cutoff c (window.test_start) and carries the test fold's history. Every user with candidate rows and events
in [c, t), t = c + 14 days, has those events replayed online (components/realtime/features.py's
``recompute`` over the bundle) and computed in batch by the ETL's own Spark functions
(components/etl/features.py, as the ETL step calls them) with the log's cutoff at t, then by the ranker's
``build_features`` with the snapshot's item tables (item features stay at the snapshot online: they count
every user's events). Every recomputed column must agree: counts and ranks exactly, the rest to float32.
The same runs on the Online Retail pipeline run (slow) for a sample of users.

Second, REALTIME.md's "users with no event since the cutoff may be answered from precomputed scores,
provided that equals what per-request scoring would return": checked on the same bundle for every user.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.bundle import load_bundle
from components.config import EtlConfig
from components.ranker import features as rf
from components.realtime.features import UserHistory, recompute, user_state
from components.realtime.store import DAY_US, StoredEvent

pytestmark = pytest.mark.spark

HORIZON_DAYS = 14
FLOAT32_RTOL = 1e-6  # float32 has a 2**-23 (1.2e-7) relative step
EXACT = {s.UI_N_EVENTS, s.UI_VIEWS, s.UI_CARTS, s.UI_RETURNS, s.UI_QUANTITY, s.UI_PURCHASE_DAYS,
         s.UI_PURCHASE_DAYS_90D, rf.UI_KNOWN, s.U_N_EVENTS, s.U_N_PURCHASE_DAYS, s.U_N_INVOICES, s.U_N_ITEMS,
         s.U_PURCHASE_DAYS_28D, s.U_PURCHASE_DAYS_90D, rf.HIST_RANK, rf.RECENCY_RANK, rf.ORDERS_AGO}
# Every ETL user and user-item feature depends on the user's events: all must be recomputed.
ETL_EVENT_FEATURES = {s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST, s.UI_DAYS_SINCE_FIRST, s.UI_N_EVENTS,
                      s.UI_QUANTITY, s.UI_SPEND, s.UI_VIEWS, s.UI_CARTS, s.UI_RETURNS, s.UI_WEIGHT,
                      s.UI_MEAN_INTERVAL_DAYS, s.UI_RECENCY_RATIO, s.UI_PURCHASE_DAYS_90D, s.UI_SHARE_OF_USER_DAYS,
                      s.U_N_EVENTS, s.U_N_PURCHASE_DAYS, s.U_N_INVOICES, s.U_N_ITEMS, s.U_SPEND,
                      s.U_AVG_BASKET_VALUE, s.U_DAYS_SINCE_LAST, s.U_DAYS_SINCE_FIRST, s.U_PURCHASE_DAYS_28D,
                      s.U_PURCHASE_DAYS_90D, s.U_MEAN_DAYS_BETWEEN_PURCHASES, s.U_AVG_ITEM_PRICE,
                      rf.UI_KNOWN, s.UC_SHARE}


def batch_tables(spark: object, etl: Path, at_us: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(user, user_item, user_category) features with the cutoff at ``at_us``, by the ETL step's own calls."""
    from pyspark.sql import functions as sf

    from components.etl import features as feat
    from components.etl.weights import DAY, TS_US
    from components.etl.windows import DAY_MICROS

    ts_us = sf.unix_micros(sf.col(s.TIMESTAMP))
    events = spark.read.parquet(str(etl / s.CLEAN_DIR / s.EVENTS)).select(  # type: ignore[attr-defined]
        s.USER_IDX, s.ITEM_IDX, s.EVENT_TYPE, s.QUANTITY, s.PRICE, s.SESSION_ID, ts_us.alias(TS_US),
        sf.floor(ts_us / DAY_MICROS).cast("int").alias(DAY))
    end_us = events.agg(sf.max(TS_US)).collect()[0][0]
    config = EtlConfig()
    daily = feat.fold_history(feat.daily_table(events, end_us, config), at_us)
    pairs = feat.pair_table(daily, at_us, end_us, config)
    day_stats = feat.user_day_stats(daily, at_us)
    invoices = feat.user_invoices(feat.fold_history(feat.orders_table(events), at_us))
    users = feat.user_features(pairs, day_stats, invoices, at_us, None, [])
    categories = spark.read.parquet(str(etl / s.CLEAN_DIR / s.ITEMS)).select(  # type: ignore[attr-defined]
        s.ITEM_IDX, sf.when(sf.trim(s.ITEM_CATEGORY) != "", sf.trim(s.ITEM_CATEGORY)).alias(s.ITEM_CATEGORY))
    return (users.toPandas(), feat.user_item_features(pairs, day_stats).toPandas(),
            feat.user_category_share(pairs, categories).toPandas())


def stored_events(frame: pd.DataFrame) -> list[StoredEvent]:
    return [StoredEvent(key=str(i), user_id=r[s.USER_ID], item_id=r[s.ITEM_ID], event_type=r[s.EVENT_TYPE],
                        timestamp_us=int(r["ts_us"]), quantity=int(r[s.QUANTITY]),
                        price=None if pd.isna(r[s.PRICE]) else float(r[s.PRICE]), session_id=r[s.SESSION_ID])
            for i, r in enumerate(frame.sort_values("ts_us").to_dict("records"))]


def check_parity(spark: object, run: Path, max_users: int | None = None, *, trim: bool = False) -> dict[str, int]:
    """Replay the events of [c, c + HORIZON_DAYS) of up to ``max_users`` users (every one by default)
    online and in batch and compare every recomputed column; returns how many rows each moved from the
    snapshot."""
    bundle = load_bundle(run / "bundle" / s.MODEL_ARCHIVE)
    history = UserHistory.load(bundle)
    assert history is not None, "the pipeline's bundle carries the test fold's history"
    assert ETL_EVENT_FEATURES & set(history.spec.features) <= set(history.recomputed)
    cutoff = int(pd.Timestamp(bundle.manifest["window"]["test_start"]).value // 1000)
    at = cutoff + HORIZON_DAYS * DAY_US
    clean = pd.read_parquet(run / "etl" / s.CLEAN_DIR / s.EVENTS)
    # Spark wrote the session's UTC wall clock (naive or UTC-marked, by version): microseconds either way
    clean["ts_us"] = pd.to_datetime(clean[s.TIMESTAMP], utc=True).astype("int64") // 1000
    fresh = clean[(clean["ts_us"] >= cutoff) & (clean["ts_us"] < at)]
    with_rows = set(pd.concat(list(bundle.iter_candidate_parts([])))[s.USER_IDX])
    users = sorted(set(fresh[s.USER_IDX]) & with_rows)
    assert len(users) >= 10, "the shop should have users with fresh events and candidates"
    if max_users is not None and len(users) > max_users:
        users = sorted(np.random.default_rng(0).choice(users, max_users, replace=False).tolist())
    rows = pd.concat([part[part[s.USER_IDX].isin(users)] for part in bundle.iter_candidate_parts()],
                     ignore_index=True)

    online_parts = []
    for user in users:
        mine = rows[rows[s.USER_IDX] == user].reset_index(drop=True)
        columns = recompute(mine, stored_events(fresh[fresh[s.USER_IDX] == user]), history, user_idx=user,
                            item_index=bundle.item_index, cutoff_us=cutoff, at_us=at)
        online_parts.append(mine[[s.USER_IDX, s.ITEM_IDX]].assign(**columns))
    online = pd.concat(online_parts, ignore_index=True)

    user_frame, user_item, user_category = batch_tables(spark, run / "etl", at)
    fold = run / "etl" / s.FOLDS_DIR / s.TEST_FOLD
    snapshot_ui = pd.read_parquet(fold / s.USER_ITEM_FEATURES)
    candidates = rows[[s.USER_IDX, s.ITEM_IDX, *s.CANDIDATE_SCORE_COLUMNS, *s.CANDIDATE_SOURCE_COLUMNS]]
    batch, _ = rf.build_features(candidates, user_frame[user_frame[s.USER_IDX].isin(users)],
                                 pd.read_parquet(fold / s.ITEM_FEATURES),
                                 user_item[user_item[s.USER_IDX].isin(users)], history.lists,
                                 user_category=user_category[user_category[s.USER_IDX].isin(users)],
                                 horizon_days=history.horizon_days, item_history=rf.item_history_stats(snapshot_ui))
    batch = online[[s.USER_IDX, s.ITEM_IDX]].merge(batch, how="left", on=[s.USER_IDX, s.ITEM_IDX])
    snapshot = online[[s.USER_IDX, s.ITEM_IDX]].merge(rows, how="left", on=[s.USER_IDX, s.ITEM_IDX])
    moved = {}
    for name in history.recomputed:
        got, want = online[name].to_numpy(np.float64), batch[name].to_numpy(np.float64)
        if name in EXACT:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=FLOAT32_RTOL, atol=1e-9, err_msg=name)
        moved[name] = int((~np.isclose(got, snapshot[name].to_numpy(np.float64), rtol=1e-6)).sum())
    print(f"\n{run}: {len(history.recomputed)} features equal on {len(online)} rows of {len(users)} users; rows "
          f"moved from the snapshot: {moved}")
    moved["new pairs"] = check_fresh_candidates(bundle, history, rows, fresh, users, cutoff, at,
                                                (user_frame, user_item, user_category), fold, trim=trim)
    return moved


def check_fresh_candidates(bundle: object, history: UserHistory, rows: pd.DataFrame, fresh: pd.DataFrame,
                           users: list[int], cutoff: int, at: int,
                           tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], fold: Path, *, trim: bool) -> int:
    """The per-request rows with fresh candidates (components/realtime/candidates.py rows_as_of: the
    bundle rows plus the fresh items, their neighbours; one build_features over the history-rebuilt
    tables) against build_features over the ETL's Spark tables at the same moment for the same candidate
    set (candidates_as_of: the generator columns as the union step hands them over): every feature of
    every row, new pairs included (their user-item features are exact: the pair's
    events before the cutoff come from the bundle's history). ``trim``: every other bundle row of a user is
    left out (the tiny shop's users have every item as a candidate: nothing would be new). Returns how many
    new pairs were compared."""
    import tempfile

    from components.realtime.candidates import FreshSources

    user_frame, user_item, user_category = tables
    with tempfile.TemporaryDirectory() as folder:
        sources = FreshSources.load(bundle, history, Path(folder))  # type: ignore[arg-type]
        assert sources is not None, "the pipeline's bundle carries what fresh candidates need"
        frames, generated = [], []
        for user in users:
            mine = rows[rows[s.USER_IDX] == user].reset_index(drop=True)
            # at the cutoff without events the same mechanism gives back the bundle's own rows
            snapshot = sources.rows_as_of(user, mine, [], bundle.item_index, cutoff, cutoff)  # type: ignore[attr-defined]
            assert snapshot is not None and snapshot[s.ITEM_IDX].tolist() == mine[s.ITEM_IDX].tolist()
            for name in history.spec.numeric:
                np.testing.assert_allclose(snapshot[name].to_numpy(np.float64), mine[name].to_numpy(np.float64),
                                           rtol=FLOAT32_RTOL, atol=1e-6, err_msg=f"user {user} at the cutoff: {name}")
            if trim:
                mine = mine.iloc[::2].reset_index(drop=True)
            events = stored_events(fresh[fresh[s.USER_IDX] == user])
            frame = sources.rows_as_of(user, mine, events, bundle.item_index, cutoff, at)  # type: ignore[attr-defined]
            assert frame is not None
            state = user_state(history, user, events, item_index=bundle.item_index,  # type: ignore[attr-defined]
                               cutoff_us=cutoff, at_us=at)
            assert state is not None
            # the candidate set as the union step hands it to build_features (the batch's input)
            generated.append(pd.DataFrame(sources.candidates_as_of(user, mine, state[1], events,  # type: ignore[attr-defined]
                                                                   bundle.item_index, cutoff, at)))
            frames.append(frame.assign(_new=~frame[s.ITEM_IDX].isin(mine[s.ITEM_IDX])))
    online = pd.concat(frames, ignore_index=True)
    candidates = pd.concat(generated, ignore_index=True)
    attributes = [n for n in history.lists["user"] if n.startswith(s.USER_ATTR_PREFIX)]
    batch_users = user_frame[user_frame[s.USER_IDX].isin(users)]
    if attributes:  # the shop's attributes: the bundle rows' (the snapshot's), as online
        batch_users = batch_users.merge(rows.drop_duplicates(s.USER_IDX)[[s.USER_IDX, *attributes]], on=s.USER_IDX)
    batch, _ = rf.build_features(candidates, batch_users, pd.read_parquet(fold / s.ITEM_FEATURES),
                                 user_item[user_item[s.USER_IDX].isin(users)], history.lists,
                                 user_category=user_category[user_category[s.USER_IDX].isin(users)],
                                 spec=history.spec, horizon_days=history.horizon_days,
                                 item_history=rf.item_history_stats(pd.read_parquet(fold / s.USER_ITEM_FEATURES)))
    assert batch[[s.USER_IDX, s.ITEM_IDX]].equals(online[[s.USER_IDX, s.ITEM_IDX]])
    for name in history.spec.features:
        got, want = online[name].to_numpy(), batch[name].to_numpy()
        if name in history.spec.categorical:
            np.testing.assert_array_equal(got.astype(str), want.astype(str), err_msg=name)
        elif name in EXACT:
            np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=name)
        else:
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=FLOAT32_RTOL,
                                       atol=1e-9, err_msg=name)
    new_pairs = int(online["_new"].sum())
    print(f"{len(history.spec.features)} features equal on {len(online)} rows with fresh candidates, "
          f"{new_pairs} of them new pairs")
    return new_pairs


def test_online_features_equal_the_batch_features_at_the_same_cutoff(spark: object, tiny_run: Path) -> None:
    moved = check_parity(spark, tiny_run, trim=True)
    # the events since the cutoff moved the windows (old purchases left them, new ones came in), the
    # weights, intervals, shares and derived ranks: each a column the snapshot had wrong at t
    for name in (s.U_PURCHASE_DAYS_28D, s.UI_PURCHASE_DAYS_90D, s.UI_WEIGHT, s.U_N_INVOICES, s.UI_MEAN_INTERVAL_DAYS,
                 s.UC_SHARE, rf.HIST_RANK, rf.EXPECTED_REBUY, rf.U_DUE):
        assert moved[name] > 0, name
    assert moved["new pairs"] >= 50, "fresh events brought candidates outside the users' bundle rows"


@pytest.mark.slow
def test_online_features_equal_the_batch_features_on_online_retail(spark: object, online_retail_run: Path) -> None:
    """The same on the real Online Retail log (returns, invoices as orders, wholesale quantities), for a
    sample of ECOMREC_PARITY_USERS users (recomputing costs ~60 ms a user)."""
    moved = check_parity(spark, online_retail_run, int(os.environ.get("ECOMREC_PARITY_USERS", "100")))
    for name in (s.U_PURCHASE_DAYS_28D, s.U_PURCHASE_DAYS_90D, s.UI_WEIGHT, s.U_N_INVOICES, rf.HIST_RANK):
        assert moved[name] > 0, name
    assert moved["new pairs"] > 0


def test_precomputed_answers_equal_per_request_scoring_for_users_without_fresh_events(tiny_run: Path,
                                                                                      tmp_path: Path) -> None:
    """The service answers a user without events since the cutoff from the scores computed at load
    (components/serving/engine.py) and everyone else by per-request scoring (components/realtime/fresh.py).
    For the shortcut to be allowed, per-request scoring of such a user, at a request time long after the
    cutoff, must give the same list: same items, same order, same scores."""
    from components.ranker.model import rank_top_k
    from components.realtime.fresh import FreshAnswers
    from components.realtime.intake import StoreGuard
    from components.serving.engine import build_serving_model

    bundle = load_bundle(tiny_run / "bundle" / s.MODEL_ARCHIVE)
    model = build_serving_model(bundle, source="test", feature_dir=tmp_path)
    assert model.user_history is not None
    later = int(pd.Timestamp(bundle.manifest["window"]["end"]).value // 1000) + 30 * DAY_US
    answers = FreshAnswers(StoreGuard(None), clock=lambda: later)
    users = [u for u in range(model.n_users) if model.candidate_count(u) > 0]
    assert len(users) >= 30
    k = 20
    for user in users:
        user_id = bundle.user_ids[user]
        precomputed = model.recommend(user_id, k)
        items, scores = answers.score(model, user, model.feature_rows.user_rows(user), [])
        ranked_items, ranked_scores = model.popular.top_up(*rank_top_k(items, scores, k), k)
        np.testing.assert_array_equal(ranked_items, precomputed.item_idx, err_msg=user_id)
        np.testing.assert_allclose(ranked_scores, precomputed.scores, rtol=1e-9, atol=1e-12, err_msg=user_id)


def test_past_the_exact_budget_answers_take_the_fast_path_and_the_exact_one_follows(tiny_run: Path,
                                                                                    tmp_path: Path) -> None:
    """An exact rebuild costs one build_features call (a few ms); a worker makes at most
    ECOMREC_FRESH_EXACT_PER_S of them a second. Past the budget the answer is the fast one (the bundle rows,
    the 16 counts and durations moved to the request; no rebuild, not cached), and the next request with
    budget gets the exact answer, equal to an unlimited worker's."""
    from components.realtime.fresh import ExactBudget, FreshAnswers
    from components.realtime.intake import StoreGuard
    from components.realtime.store import SqliteStore
    from components.serving.engine import build_serving_model

    bundle = load_bundle(tiny_run / "bundle" / s.MODEL_ARCHIVE)
    model = build_serving_model(bundle, source="test", feature_dir=tmp_path / "rows")
    assert model.user_history is not None and model.fresh_sources is not None
    store = SqliteStore(tmp_path / "store.sqlite")
    cut = int(pd.Timestamp(bundle.manifest["window"]["test_start"]).value // 1000)
    users = [bundle.user_ids[u] for u in range(model.n_users) if model.candidate_count(u) > 0][:6]
    store.add([StoredEvent(key=f"k{n}", user_id=u, item_id=model.item_ids[n], event_type=s.PURCHASE,
                           timestamp_us=cut + DAY_US, quantity=1, price=2.0, session_id=None)
               for n, u in enumerate(users)])
    unlimited = FreshAnswers(StoreGuard(store))
    fast_calls: list[int] = []
    budgeted = FreshAnswers(StoreGuard(store), exact_per_s=2.0, on_fast=lambda: fast_calls.append(1))
    ticks = [0.0]
    budgeted.budget = ExactBudget(2.0, clock=lambda: ticks[0])
    rebuilds: list[str] = []
    columns_as_of = model.fresh_sources.columns_as_of

    def counted(*args: object, **kwargs: object) -> object:
        rebuilds.append("rebuild")
        return columns_as_of(*args, **kwargs)  # type: ignore[arg-type]

    model.fresh_sources.columns_as_of = counted  # type: ignore[method-assign]
    exact = {u: unlimited.recommend(model, u, 10)[0] for u in users}
    rebuilds.clear()
    first = {u: budgeted.recommend(model, u, 10)[0] for u in users}
    assert len(rebuilds) == 2 and len(fast_calls) == 4  # a burst of 2, then the fast path
    for u in users[:2]:
        assert first[u] is not None and first[u].item_idx.tolist() == exact[u].item_idx.tolist(), u  # type: ignore[union-attr]
    ticks[0] = 10.0  # the budget refills: the exact answers follow, not the cached fast ones
    again = {u: budgeted.recommend(model, u, 10)[0] for u in users[2:4]}
    for u, rec in again.items():
        assert rec is not None and rec.item_idx.tolist() == exact[u].item_idx.tolist(), u  # type: ignore[union-attr]
        np.testing.assert_allclose(rec.scores, exact[u].scores)  # type: ignore[union-attr]
    zero = ExactBudget(0.0)
    assert not zero.take()
    # and the CPU-time bucket (ECOMREC_FRESH_EXACT_SHARE): a rebuild costs more than a microsecond of CPU, so
    # with no count limit at all the next user's answer is still the fast one
    timed_fast: list[int] = []
    timed = FreshAnswers(StoreGuard(store), exact_share=1e-6, on_fast=lambda: timed_fast.append(1))
    rebuilds.clear()
    for u in users[4:6]:
        assert timed.recommend(model, u, 10)[0] is not None
    assert len(rebuilds) == 1 and len(timed_fast) == 1
