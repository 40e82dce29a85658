"""Freshness and degradation on real components:
- an acknowledged event changes the very next answer, on either of two uvicorn worker processes (a real
  socket, the embedded SQLite store shared by both), and the answer is the bundle's CatBoost model scoring
  the user's rows with the as-of-now features, computed here independently;
- the real redis-server killed under a mixed load of events and reads: every answer is still a 200, the
  answers are the bundle's own marked degraded, the events are still logged."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from components import schema as s
from components.ranker.model import FeatureSpec, PopularFallback, Ranker, rank_top_k
from components.realtime.log import log_folder
from components.realtime.store import DAY_US
from components.serving import metric_names as mn
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread
from tests.redis_server import free_port, redis_server

REPO = Path(__file__).resolve().parents[1]
FAR_AHEAD_S = 20 * 365 * 86_400  # the 2030 stamps below are accepted (the default refuses > 1 h ahead)
CUTOFF_US = int(datetime(2011, 11, 9, tzinfo=UTC).timestamp()) * 1_000_000  # the synthetic bundle's test_start


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "out", n_users=80, n_items=60, per_user=25)


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


def expected_after_purchases(shop: SyntheticShop, user_id: str, item_idx: int, stamps: list[str],
                             k: int) -> list[str]:
    """The as-of answer computed from the bundle's own rows, by hand: the request time is just after the
    last event (they are stamped ahead of the clock); every days-since value moves to it, the bought item's
    to its last purchase, and its purchase days grow by the distinct new days."""
    from components.bundle import load_bundle

    bundle = load_bundle(shop.archive)
    ranker = Ranker.load(bundle.model_path, spec=FeatureSpec.from_dict(bundle.manifest["feature_spec"]))
    user_idx = shop.user_ids.index(user_id)
    rows = shop.candidates[shop.candidates[s.USER_IDX] == user_idx].sort_values(s.ITEM_IDX).reset_index(drop=True)
    times = [_us(t) for t in stamps]
    at = max(times) + 1
    rows[s.UI_DAYS_SINCE_LAST] = rows[s.UI_DAYS_SINCE_LAST] + (at - CUTOFF_US) / DAY_US
    hit = rows[s.ITEM_IDX] == item_idx
    rows.loc[hit, s.UI_DAYS_SINCE_LAST] = (at - max(times)) / DAY_US
    rows.loc[hit, s.UI_PURCHASE_DAYS] += len({t // DAY_US for t in times})
    ranked = rank_top_k(rows[s.ITEM_IDX].to_numpy(np.int64), ranker.score(rows), k)
    items, _ = PopularFallback(bundle.popular_items, bundle.popular_scores).top_up(*ranked, k)
    return [shop.item_ids[i] for i in items]


@pytest.fixture
def two_workers(shop: SyntheticShop, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    work, raw = tmp_path / "work", tmp_path / "raw"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECOMREC_MODEL": str(shop.archive), "ECOMREC_WORK_DIR": str(work),
           "ECOMREC_EVENTS_RAW_ROOT": str(raw), "ECOMREC_WATCH_INTERVAL_S": "0",
           # the events are stamped ahead of the clock (2030), which pins the request time of the expected answer
           "ECOMREC_EVENTS_MAX_AHEAD_S": str(FAR_AHEAD_S)}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "components.serving.main:app_factory", "--factory", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while len(list((work / "features").glob("*"))) < 2 or not _ready(url):  # both workers loaded
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the 2-worker server did not start")
            time.sleep(0.2)
        yield url, raw
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_next_answer_on_either_worker_reflects_an_acknowledged_event(
        shop: SyntheticShop, two_workers: tuple[str, Path]) -> None:
    url, raw = two_workers
    warm = next(u for u in shop.user_ids if u not in shop.cold_user_ids)
    user_idx = shop.user_ids.index(warm)
    before = httpx.get(f"{url}/recommendations", params={"user_id": warm, "top_k": 10}).json()
    assert before["degraded"] is False
    stamps = ["2030-01-01T10:00:00", "2030-01-02T10:00:00", "2030-01-03T10:00:00"]
    # an item outside the user's top 10 whose purchases would bring it in (found offline, from the bundle)
    listed = [i["item_id"] for i in before["items"]]
    candidates = shop.candidates.loc[shop.candidates[s.USER_IDX] == user_idx, s.ITEM_IDX].tolist()
    item_idx, expected = next(
        (i, e) for i in candidates if shop.item_ids[i] not in listed
        for e in [expected_after_purchases(shop, warm, i, stamps, 10)] if shop.item_ids[i] in e)
    events = [{"user_id": warm, "item_id": shop.item_ids[item_idx], "event_type": "purchase", "timestamp": t,
               "quantity": 1} for t in stamps]
    answer = httpx.post(f"{url}/events", json={"events": events}).json()
    assert answer["accepted"] == [0, 1, 2] and answer["degraded"] is False
    # every next request, each on a new connection (either worker may take it), reflects the events
    for _ in range(30):
        with httpx.Client(base_url=url, timeout=10) as fresh_connection:
            body = fresh_connection.get("/recommendations", params={"user_id": warm, "top_k": 10}).json()
        assert [i["item_id"] for i in body["items"]] == expected
        assert body["fallback"] is False and body["degraded"] is False
    assert len(list((raw / s.EVENTS).rglob("*.csv"))) == 1  # one worker took the batch and logged it


def test_killing_redis_under_load_degrades_answers_without_errors(shop: SyntheticShop, tmp_path: Path) -> None:
    warm = [u for u in shop.user_ids if u not in shop.cold_user_ids][:10]
    with redis_server(tmp_path / "redis") as redis:
        settings = ServingSettings(model=str(shop.archive), work_dir=tmp_path / "work", watch_interval_s=0,
                                   events_raw_root=tmp_path / "raw", store_url=redis.url, store_timeout_s=0.05,
                                   store_retry_after_s=0.2, events_max_ahead_s=FAR_AHEAD_S)
        with serve_in_thread(create_app(settings)) as url:
            static = {u: httpx.get(f"{url}/recommendations", params={"user_id": u}).json()["items"] for u in warm}
            for n, user in enumerate(warm):
                httpx.post(f"{url}/events", json={"events": [
                    {"user_id": user, "item_id": shop.item_ids[n], "event_type": "purchase",
                     "timestamp": "2030-01-01T00:00:00", "event_id": f"seed-{n}"}]})
            statuses: list[int] = []
            answers: list[tuple[float, dict[str, object]]] = []
            posted: list[tuple[float, dict[str, object]]] = []
            killed_at: list[float] = []
            stop = threading.Event()

            def read() -> None:
                with httpx.Client(base_url=url, timeout=10) as client:
                    while not stop.is_set():
                        for user in warm:
                            response = client.get("/recommendations", params={"user_id": user})
                            statuses.append(response.status_code)
                            answers.append((time.monotonic(), response.json()))

            def write() -> None:
                with httpx.Client(base_url=url, timeout=10) as client:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        response = client.post("/events", json={"events": [
                            {"user_id": warm[n % len(warm)], "item_id": shop.item_ids[n % 7], "event_type": "view",
                             "timestamp": "2030-01-02T00:00:00", "event_id": f"load-{n}"}]})
                        statuses.append(response.status_code)
                        posted.append((time.monotonic(), response.json()))

            threads = [threading.Thread(target=read) for _ in range(2)] + [threading.Thread(target=write)]
            for thread in threads:
                thread.start()
            time.sleep(1.5)
            killed_at.append(time.monotonic())
            redis.kill()
            time.sleep(2.0)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            metrics = httpx.get(f"{url}/metrics").text
    assert statuses and set(statuses) == {200}
    before = [a for t, a in answers if t < killed_at[0]]
    after = [a for t, a in answers if t > killed_at[0] + 0.5]
    assert before and after
    assert not any(a["degraded"] for a in before)
    assert any(a["items"] != static[str(a["user_id"])] for a in before)  # fresh answers while redis was up
    degraded = [a for a in after if a["degraded"]]
    assert degraded and all(a["items"] == static[str(a["user_id"])] for a in degraded)  # the bundle alone
    late_posts = [a for t, a in posted if t > killed_at[0] + 0.5]
    assert late_posts and all(a["degraded"] and a["accepted"] == [0] for a in late_posts)
    logged = sum(len(p.read_text().splitlines()) - 1 for p in log_folder(tmp_path / "raw").rglob("*.csv"))
    assert logged == len(warm) + len(posted)  # every acknowledged event is in the log, store or not
    degraded_count = float(next(line.split()[-1] for line in metrics.splitlines()
                                if line.startswith(f'{mn.DEGRADED_TOTAL}{{route="/recommendations"}}')))
    assert degraded_count >= len(degraded)


def test_feature_rows_of_swapped_out_models_and_dead_workers_are_deleted(shop: SyntheticShop, tmp_path: Path) -> None:
    from components.bundle import load_bundle
    from components.realtime.rows import FeatureRows

    bundle = load_bundle(shop.archive)
    folder = tmp_path / "features"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / f"old-{os.getpid()}").mkdir(parents=True)  # an earlier model of this process
    (folder / f"v-{dead.pid}").mkdir()  # a worker that is gone
    (folder / f"v-{os.getppid()}").mkdir()  # a live process's copy stays
    rows = FeatureRows.write(bundle, folder / f"v-{os.getpid()}")
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"v-{os.getpid()}", f"v-{os.getppid()}"])
    user = int(shop.candidates[s.USER_IDX].iloc[0])
    expected = shop.candidates[shop.candidates[s.USER_IDX] == user].sort_values(s.ITEM_IDX)
    got = rows.user_rows(user)
    assert got[s.ITEM_IDX].tolist() == expected[s.ITEM_IDX].tolist()
    assert np.allclose(got[s.UI_DAYS_SINCE_LAST].to_numpy(), expected[s.UI_DAYS_SINCE_LAST].to_numpy())


def test_feature_rows_find_every_users_rows_across_row_groups(shop: SyntheticShop, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 7 rows: most users' rows start in one group and end in another."""
    from components.bundle import load_bundle
    from components.realtime import rows as rows_module

    monkeypatch.setattr(rows_module, "ROW_GROUP_ROWS", 7)
    rows = rows_module.FeatureRows.write(load_bundle(shop.archive), tmp_path / f"v-{os.getpid()}")
    for user in range(len(shop.user_ids)):
        expected = shop.candidates[shop.candidates[s.USER_IDX] == user].sort_values(s.ITEM_IDX)
        assert rows.user_rows(user)[s.ITEM_IDX].tolist() == expected[s.ITEM_IDX].tolist() if len(expected) \
            else rows.user_rows(user).empty


def test_feature_rows_cache_is_bounded_in_bytes(shop: SyntheticShop, tmp_path: Path) -> None:
    """A worker keeps recently read users' rows; the cache is bounded by their memory, not only their count
    (2,048 Online Retail users' rows would be ~200 MB a worker)."""
    from components.bundle import load_bundle
    from components.realtime.rows import FeatureRows, frame_bytes

    written = FeatureRows.write(load_bundle(shop.archive), tmp_path / f"v-{os.getpid()}")
    users = [u for u in range(len(shop.user_ids)) if not written.user_rows(u).empty][:6]
    one = max(frame_bytes(written.user_rows(u)) for u in users)
    rows = FeatureRows(written.folder, written._index, cache_users=100, cache_bytes=int(2.5 * one))
    for user in users:
        rows.user_rows(user)
    assert 1 <= len(rows._cache) <= 2 and rows._cache.total <= 2.5 * one
    assert rows.user_rows(users[-1]) is rows.user_rows(users[-1])  # the newest stays cached


def test_the_exact_budget_bounds_the_cpu_time_of_rebuilds_as_well_as_their_count() -> None:
    """A rebuild's cost grows with the user's stored events, so a count alone let rebuilds take whole cores
    (the prefilled soak: 114 req/s of mixed peak at 100 a second): past ``share`` seconds of CPU a second the
    fast path answers, however few rebuilds that is; the count still bounds cheap ones."""
    from components.realtime.fresh import ExactBudget

    ticks = [0.0]
    budget = ExactBudget(100.0, share=0.5, clock=lambda: ticks[0])
    for _ in range(2):
        assert budget.take()
        budget.charge(0.3)  # 0.5 - 0.6: 0.1 s overdrawn
    assert not budget.take()  # 98 rebuild tokens left, no CPU time
    ticks[0] = 0.1  # +0.05 s: still overdrawn
    assert not budget.take()
    ticks[0] = 0.4  # +0.15 s: 0.1 s left
    assert budget.take()
    cheap = ExactBudget(2.0, share=0.5, clock=lambda: 0.0)
    assert [cheap.take() for _ in range(3)] == [True, True, False]
    unlimited = ExactBudget(math.inf)
    unlimited.charge(10.0)
    assert unlimited.take()
