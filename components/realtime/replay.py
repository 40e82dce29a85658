"""Replay evaluation (REALTIME.md, "Replay protocol"): the value of real time, measured on the test window.

The service is built in process exactly as ``ecomrec serve`` builds it (create_app, its start-up load with
the feature rows kept, an embedded store, the intake) and every list comes from ``ServiceState.answer``,
the function both HTTP routes answer through, asked as of each basket's first event (``at_us``); events are
fed through the same intake ``POST /events`` uses (durable log in a scratch folder, fsync off).

Baskets: one user's test-window events with one session_id (one UTC day when there is none), ordered by
their first event. A basket with a purchase is scored before it is fed: truth = its distinct purchased
items. Recommenders: ``static`` (the bundle with nothing fed), ``realtime`` (events fed), ``repurchase_realtime``
(the user's own items, history plus fed events, by distinct purchase days then recency, topped up with
popular) and ``popular``. Segments: warm / cold (events before test_start or not) x first / later (the
user's first scored basket or not), and their unions.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from components import schema as s
from components.errors import EcomrecError
from components.evaluation.recompute import metric_block
from components.event_rules import DUPLICATE
from components.realtime.fresh import cutoff_us
from components.realtime.store import DAY_US

log = logging.getLogger(__name__)

STATIC: Final = "static"
REALTIME: Final = "realtime"
REPURCHASE_REALTIME: Final = "repurchase_realtime"
REPLAY_RECOMMENDERS: Final = (STATIC, REALTIME, REPURCHASE_REALTIME, s.POPULAR)
FIRST: Final = "first"
LATER: Final = "later"
# Segments of the table: the four cells and their unions (truth rows carry the cell, e.g. "warm_later").
REPLAY_SEGMENTS: Final = ("all", s.WARM, s.COLD, FIRST, LATER, f"{s.WARM}_{FIRST}", f"{s.WARM}_{LATER}",
                          f"{s.COLD}_{FIRST}", f"{s.COLD}_{LATER}")
REPLAY_FILE: Final = "replay.json"
REPLAY_TRUTH_FILE: Final = "replay_truth.parquet"  # user_id, basket_id, basket_index, segment, item_id
# recommender, user_id, basket_id, rank, item_id, score
REPLAY_RECOMMENDATIONS_FILE: Final = "replay_recommendations.parquet"
REPLAY_PAGE_FILE: Final = "replay.html"
BASKET_ID: Final = "basket_id"
BASKET_INDEX: Final = "basket_index"
ROUTE: Final = "replay"
K_MAX: Final = max(s.KS)


class ReplayError(EcomrecError):
    """The inputs of a replay are missing or do not fit together."""


@dataclass(frozen=True)
class ReplayResult:
    metrics: dict[str, Any]
    truth: pd.DataFrame
    recommendations: pd.DataFrame


def _etl_dir(data: Path) -> Path:
    """``data`` is a pipeline run's output folder (holding etl/) or its etl/ folder."""
    for candidate in (data / "etl", data):
        if (candidate / s.CLEAN_DIR / s.EVENTS).is_dir():
            return candidate
    raise ReplayError(f"--data {data}: no {s.CLEAN_DIR}/{s.EVENTS}/ in it or in its etl/ (give the output folder "
                      "of `ecomrec pipeline run`, whose ETL cleaned the events the bundle was trained on)")


def segment_members(segment: str, cell: str) -> bool:
    warmth, order = cell.split("_")
    return segment in ("all", cell, warmth, order)


def _baskets(test: pd.DataFrame) -> pd.DataFrame:
    """Test-window events with their basket (id, first time) in replay order."""
    day = (test["ts_us"] // DAY_US).astype(str)
    session = test[s.SESSION_ID].astype("string")
    test = test.assign(**{BASKET_ID: test[s.USER_ID].astype(str) + "|" + session.fillna("day:" + day).astype(str)})
    test["_start"] = test.groupby(BASKET_ID)["ts_us"].transform("min")
    return test.sort_values(["_start", BASKET_ID, "ts_us"], kind="mergesort").reset_index(drop=True)


class _Repurchase:
    """repurchase_realtime: per user, item -> [distinct purchase days, last event time]."""

    def __init__(self, history: pd.DataFrame, item_ids: Sequence[str], user_ids: Sequence[str], cutoff: int):
        self.state: dict[str, dict[str, list[Any]]] = {}
        for row in history.itertuples(index=False):
            days = float(getattr(row, s.UI_PURCHASE_DAYS) or 0)
            last = cutoff - round(float(getattr(row, s.UI_DAYS_SINCE_LAST)) * DAY_US)
            entry = self.state.setdefault(user_ids[int(getattr(row, s.USER_IDX))], {})
            entry[item_ids[int(getattr(row, s.ITEM_IDX))]] = [days, last, set()]

    def feed(self, events: pd.DataFrame) -> None:
        for user, item, kind, ts in zip(events[s.USER_ID], events[s.ITEM_ID], events[s.EVENT_TYPE], events["ts_us"],
                                        strict=True):
            entry = self.state.setdefault(str(user), {}).setdefault(str(item), [0.0, int(ts), set()])
            entry[1] = max(entry[1], int(ts))
            if kind == s.PURCHASE and int(ts) // DAY_US not in entry[2]:
                entry[2].add(int(ts) // DAY_US)
                entry[0] += 1

    def top(self, user: str, k: int, popular: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        bought = [(item, v[0], v[1]) for item, v in self.state.get(user, {}).items() if v[0] > 0]
        bought.sort(key=lambda x: (-x[1], -x[2], x[0]))
        out = [(item, days) for item, days, _ in bought[:k]]
        seen = {item for item, _ in out}
        for item, _ in popular:
            if len(out) >= k:
                break
            if item not in seen:
                out.append((item, float("nan")))
                seen.add(item)
        return out


def replay(bundle: Path, data: Path, *, work_dir: Path | None = None, limit_baskets: int | None = None
           ) -> ReplayResult:
    """Run the protocol; ``limit_baskets`` stops after that many scored baskets (tests)."""
    from components.serving.app import create_app
    from components.serving.settings import ServingSettings

    etl = _etl_dir(data)
    scratch = Path(tempfile.mkdtemp(prefix="ecomrec-replay-", dir=work_dir))
    settings = ServingSettings(model=str(bundle), work_dir=scratch / "work", watch_interval_s=0,
                               events_raw_root=scratch / "raw", events_fsync=False,
                               store_path=scratch / "store.sqlite", store_timeout_s=30.0,
                               store_max_events=100_000, store_max_days=10_000,
                               # the exact answers are measured; a live worker's budget only sheds load
                               fresh_exact_per_s=math.inf, fresh_exact_share=math.inf)
    app = create_app(settings)
    state = app.state.ecomrec
    state.start()
    try:
        return _run(state, etl, limit_baskets)
    finally:
        state.stop()
        if state.realtime is not None:
            state.realtime.close()


def _run(state: Any, etl: Path, limit_baskets: int | None) -> ReplayResult:
    model = state.holder.current
    realtime = state.realtime
    cut = cutoff_us(model)
    events = pd.read_parquet(etl / s.CLEAN_DIR / s.EVENTS,
                             columns=[s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE,
                                      s.SESSION_ID])
    # Spark wrote the session's UTC wall clock (naive or UTC-marked by version): microseconds either way.
    events["ts_us"] = pd.to_datetime(events[s.TIMESTAMP], utc=True).astype("int64") // 1000
    warm_users = set(events.loc[events["ts_us"] < cut, s.USER_ID].astype(str))
    test = _baskets(events.loc[events["ts_us"] >= cut].copy())
    history = pd.read_parquet(etl / s.FOLDS_DIR / s.TEST_FOLD / s.USER_ITEM_FEATURES,
                              columns=[s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST])
    if datetime_to_us(json.loads((etl / s.WINDOWS_FILE).read_text())["test_start"]) != cut:
        raise ReplayError(f"the bundle's cutoff and {etl / s.WINDOWS_FILE}'s test_start differ: not the same run")
    repurchase = _Repurchase(history, model.item_ids, list(model.user_index), cut)
    popular_items, popular_scores = model.popular.top(K_MAX)
    popular = [(model.item_ids[i], float(v)) for i, v in zip(popular_items.tolist(), popular_scores.tolist(),
                                                             strict=True)]
    static_cache: dict[str, list[tuple[str, float]]] = {}
    truth_rows: list[tuple[str, str, int, str, str]] = []
    rec_rows: list[tuple[str, str, str, int, str, float]] = []
    scored_users: set[str] = set()
    n_scored = fed_duplicates = 0
    columns = [s.USER_ID, s.ITEM_ID, s.EVENT_TYPE, s.TIMESTAMP, s.QUANTITY, s.PRICE, s.SESSION_ID]
    for basket_id, basket in test.groupby(BASKET_ID, sort=False):
        user = str(basket[s.USER_ID].iat[0])
        start = int(basket["ts_us"].min())
        bought = sorted(set(basket.loc[basket[s.EVENT_TYPE] == s.PURCHASE, s.ITEM_ID].astype(str)))
        if bought and (limit_baskets is None or n_scored < limit_baskets):
            cell = f"{s.WARM if user in warm_users else s.COLD}_{LATER if user in scored_users else FIRST}"
            scored_users.add(user)
            truth_rows += [(user, str(basket_id), n_scored, cell, item) for item in bought]
            if user not in static_cache:
                static_cache[user] = _items(model.to_payload(model.recommend(user, K_MAX)))
            live = _items(state.answer(model, user, K_MAX, route=ROUTE, at_us=start))
            lists = {STATIC: static_cache[user], REALTIME: live,
                     REPURCHASE_REALTIME: repurchase.top(user, K_MAX, popular), s.POPULAR: popular}
            for name, items in lists.items():
                rec_rows += [(name, user, str(basket_id), rank, item, score)
                             for rank, (item, score) in enumerate(items, start=1)]
            n_scored += 1
        # then the basket's events are fed, through the service's own intake
        rows = basket[columns].assign(**{s.TIMESTAMP: pd.to_datetime(basket["ts_us"], unit="us", utc=True)
                                         .dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        payload = [{k: v for k, v in r.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
                   for r in rows.to_dict("records")]
        result = realtime.intake.ingest(payload)
        # Clean events that differ only in a column outside the contract have equal contract values: the
        # intake takes them as one (its duplicate); anything else refused means the inputs do not fit.
        refused = [r for r in result.rejected if r["reason"] != DUPLICATE]
        if refused or result.degraded:
            raise ReplayError(f"basket {basket_id}: the intake refused clean events: {result.as_json()}")
        fed_duplicates += len(result.rejected)
        repurchase.feed(basket)
    truth = pd.DataFrame(truth_rows, columns=[s.USER_ID, BASKET_ID, BASKET_INDEX, s.SEGMENT, s.ITEM_ID])
    recommendations = pd.DataFrame(rec_rows, columns=[s.RECOMMENDER, s.USER_ID, BASKET_ID, s.RANK, s.ITEM_ID,
                                                      s.SCORE])
    metrics = replay_metrics(truth, recommendations, model.n_items)
    metrics["fed"] = {"events": len(test), "baskets": int(test[BASKET_ID].nunique()), "scored_baskets": n_scored,
                      "equal_contract_values_fed_once": fed_duplicates, "bundle": model.version}
    return ReplayResult(metrics=metrics, truth=truth, recommendations=recommendations)


def datetime_to_us(text: str) -> int:
    return int(pd.Timestamp(text).value // 1000)


def _items(payload: Mapping[str, Any]) -> list[tuple[str, float]]:
    return [(str(i["item_id"]), float("nan") if i["score"] is None else float(i["score"]))
            for i in payload["items"]]


def replay_metrics(truth: pd.DataFrame, recommendations: pd.DataFrame, catalog_items: int) -> dict[str, Any]:
    """replay.json's content from the two tables alone (what the recompute test re-derives)."""
    by_basket: dict[str, dict[Hashable, list[Hashable]]] = {}
    ordered = recommendations.sort_values([s.RECOMMENDER, BASKET_ID, s.RANK], kind="mergesort")
    for (name, basket), rows in ordered.groupby([s.RECOMMENDER, BASKET_ID], sort=False):
        by_basket.setdefault(str(name), {})[basket] = rows[s.ITEM_ID].tolist()
    cells: dict[Hashable, str] = {b: str(c) for b, c in truth.groupby(BASKET_ID)[s.SEGMENT].first().items()}
    items: dict[Hashable, set[Hashable]] = dict(truth.groupby(BASKET_ID)[s.ITEM_ID].agg(set).items())
    users: dict[Hashable, Hashable] = dict(truth.groupby(BASKET_ID)[s.USER_ID].first().items())
    out: dict[str, Any] = {"replay_metrics": {}, "counts": {}}
    for segment in REPLAY_SEGMENTS:
        members = [b for b, cell in cells.items() if segment_members(segment, cell)]
        segment_truth: dict[Hashable, Iterable[Hashable]] = {b: items[b] for b in members}
        out["counts"][segment] = {"baskets": len(members), "users": len({users[b] for b in members})}
        for name, lists in by_basket.items():
            out["replay_metrics"].setdefault(name, {})[segment] = metric_block(lists, segment_truth, catalog_items)
    return out


def write_replay(result: ReplayResult, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    result.truth.to_parquet(output / REPLAY_TRUTH_FILE, index=False)
    result.recommendations.to_parquet(output / REPLAY_RECOMMENDATIONS_FILE, index=False)
    (output / REPLAY_FILE).write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    (output / REPLAY_PAGE_FILE).write_text(replay_page(result.metrics))


def replay_table(metrics: Mapping[str, Any], k: int = 10, metric: str = "ndcg") -> str:
    """Markdown: one row per segment, one column per recommender (``metric`` at ``k``)."""
    names = [n for n in REPLAY_RECOMMENDERS if n in metrics["replay_metrics"]]
    lines = [f"| segment (baskets / users) | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for segment in REPLAY_SEGMENTS:
        counts = metrics["counts"][segment]
        cells = []
        for name in names:
            block = metrics["replay_metrics"][name].get(segment) or {}
            value = block.get(s.metric_key(metric, k), {}).get("value")
            cells.append("-" if value is None else f"{value:.4f}")
        lines.append(f"| {segment} ({counts['baskets']} / {counts['users']}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def replay_page(metrics: Mapping[str, Any]) -> str:
    import html

    parts = ["<!doctype html><meta charset='utf-8'><title>ecomrec replay</title>",
             "<h1>Replay evaluation</h1><p>REALTIME.md's protocol: every test-window basket with a purchase is "
             "scored just before its first event, then fed. Recompute every number from "
             f"{REPLAY_TRUTH_FILE} and {REPLAY_RECOMMENDATIONS_FILE}.</p>"]
    names = [n for n in REPLAY_RECOMMENDERS if n in metrics["replay_metrics"]]
    for k in s.KS:
        for metric in ("ndcg", "recall", "hit_rate", "precision", "map"):
            parts.append(f"<h2>{metric}@{k}</h2><table border=1 cellpadding=4><tr><th>segment</th><th>baskets</th>"
                         f"<th>users</th>{''.join(f'<th>{html.escape(n)}</th>' for n in names)}</tr>")
            for segment in REPLAY_SEGMENTS:
                counts = metrics["counts"][segment]
                cells = []
                for name in names:
                    value = (metrics["replay_metrics"][name].get(segment) or {}).get(s.metric_key(metric, k), {})
                    cells.append(f"<td>{value['value']:.4f}</td>" if value else "<td>-</td>")
                parts.append(f"<tr><td>{segment}</td><td>{counts['baskets']}</td><td>{counts['users']}</td>"
                             f"{''.join(cells)}</tr>")
            parts.append("</table>")
    return "\n".join(parts)
