"""The explorer's model: a bundle loaded through the serving engine (so its top K is the answer of
``GET /recommendations``), plus what the engine drops after load and a person wants to see: which
generator proposed each candidate, the catalog attributes, the user's history before the cutoff.

The generator flags (``from_als`` ...) are ranker features, so every bundle's candidate parts hold them;
the history's counts and recency are in ``purchased.parquet`` from bundles built since the console came
(older bundles show the items without them)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from components import schema as s
from components.bundle import Bundle
from components.ranker.model import rank_top_k
from components.serving.engine import ServingModel, build_serving_model
from components.serving.source import BundleFetcher

# Generator name (as the candidates step calls them) -> its flag column in the candidate rows.
GENERATORS: tuple[tuple[str, str], ...] = (("als", s.FROM_ALS), ("history", s.FROM_HISTORY),
                                           ("cooc", s.FROM_COOC), ("popular", s.FROM_POPULAR))
HISTORY_COLUMNS = (s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST)


@dataclass(frozen=True)
class History:
    """What each user bought before the cutoff: rows of u are ``[offsets[u]:offsets[u + 1]]``."""

    offsets: np.ndarray
    items: np.ndarray
    purchase_days: np.ndarray  # NaN when the bundle does not carry it
    days_since_last: np.ndarray


@dataclass(frozen=True)
class Row:
    rank: int
    item_id: str
    score: float | None  # None: a popular top-up the ranker did not score
    generators: tuple[str, ...]
    attributes: dict[str, str]
    bought_before: bool


@dataclass(frozen=True)
class HistoryRow:
    item_id: str
    purchase_days: float | None
    days_since_last: float | None
    attributes: dict[str, str]


@dataclass(frozen=True)
class Explanation:
    user_id: str
    payload: dict[str, Any]  # exactly what GET /recommendations answers
    top: list[Row]
    candidates: list[Row]  # every candidate of the user, ranked (empty for a fallback)
    history: list[HistoryRow]  # most recent first
    history_total: int
    fallback: str | None


def _attribute_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ExplorerModel:
    def __init__(self, model: ServingModel, generators: np.ndarray, items: pd.DataFrame, history: History,
                 label: str) -> None:
        self.model = model
        self.generators = generators  # uint8 bit mask per candidate row, aligned with model.candidate_items
        self.label = label
        self.attribute_names = [c for c in items.columns if c not in (s.ITEM_IDX, s.ITEM_ID)]
        self._columns = [items[c].tolist() for c in self.attribute_names]  # item_idx order (Bundle.items)
        self.history = history
        self.samples = self._sample_users()

    @property
    def version(self) -> str:
        return self.model.version

    def attributes(self, item: int) -> dict[str, str]:
        if not 0 <= item < len(self._columns[0] if self._columns else ()):
            return {}
        return {name: _attribute_text(column[item]) for name, column in zip(self.attribute_names, self._columns,
                                                                              strict=True)}

    def _sample_users(self, count: int = 40) -> list[str]:
        """A spread of users with a personal list, for the picker."""
        with_rows = np.flatnonzero(np.diff(self.model.offsets) > 0)
        if not len(with_rows):
            return []
        picks = with_rows[np.linspace(0, len(with_rows) - 1, min(count, len(with_rows))).astype(np.int64)]
        wanted = {int(u) for u in picks}
        return [user for user, idx in self.model.user_index.items() if idx in wanted]

    def _row(self, rank: int, item: int, score: float, mask: int, bought: set[int]) -> Row:
        model = self.model
        return Row(rank=rank, item_id=model.item_ids[item], score=None if math.isnan(score) else score,
                   generators=tuple(name for bit, (name, _) in enumerate(GENERATORS) if mask & (1 << bit)),
                   attributes=self.attributes(item),
                   bought_before=item in bought)

    def explain(self, user_id: str, k: int, *, history_limit: int = 50) -> Explanation:
        model = self.model
        rec = model.recommend(user_id, k)  # the engine's answer, as GET /recommendations gives it
        payload = model.to_payload(rec)
        user_idx = model.user_index.get(user_id)
        candidates: list[Row] = []
        history: list[HistoryRow] = []
        history_total = 0
        bought: set[int] = set()
        masks: dict[int, int] = {}
        if user_idx is not None:
            h = self.history
            start, stop = int(h.offsets[user_idx]), int(h.offsets[user_idx + 1])
            bought = set(h.items[start:stop].tolist())
            history_total = stop - start
            recency = h.days_since_last[start:stop]
            order = np.argsort(np.where(np.isnan(recency), np.inf, recency), kind="stable")[:history_limit]
            for j in order.tolist():
                item = int(h.items[start + j])
                days, since = float(h.purchase_days[start + j]), float(h.days_since_last[start + j])
                history.append(HistoryRow(model.item_ids[item], None if math.isnan(days) else days,
                                          None if math.isnan(since) else since, self.attributes(item)))
            rows = slice(int(model.offsets[user_idx]), int(model.offsets[user_idx + 1]))
            items, scores = model.candidate_items[rows], model.candidate_scores[rows]
            item_masks = self.generators[rows]
            masks = dict(zip(items.tolist(), item_masks.tolist(), strict=True))
            ranked_items, ranked_scores = rank_top_k(items, scores, len(items))
            candidates = [self._row(n, int(i), float(v), masks[int(i)], bought) for n, (i, v) in
                          enumerate(zip(ranked_items.tolist(), ranked_scores.tolist(), strict=True), start=1)]
        top = [self._row(n, int(i), float(v), masks.get(int(i), 0), bought) for n, (i, v) in
               enumerate(zip(rec.item_idx.tolist(), rec.scores.tolist(), strict=True), start=1)]
        if rec.fallback is not None:  # the popular list itself, not a candidate generator
            top = [replace(r, generators=("popular list",)) for r in top]
        else:  # a short personal list is topped up from the popular list
            top = [r if r.score is not None else replace(r, generators=("popular top-up",)) for r in top]
        return Explanation(user_id=user_id, payload=payload, top=top, candidates=candidates, history=history,
                           history_total=history_total, fallback=rec.fallback)


def read_generators(bundle: Bundle) -> np.ndarray:
    """The generator flags of every candidate row as a bit mask, in the engine's row order (part order)."""
    present = [(bit, flag) for bit, (_, flag) in enumerate(GENERATORS) if flag in bundle.feature_names]
    out = np.zeros(bundle.candidate_row_count, dtype=np.uint8)
    filled = 0
    for frame in bundle.iter_candidate_parts(columns=[flag for _, flag in present]):
        stop = filled + len(frame)
        for bit, flag in present:
            out[filled:stop] |= (frame[flag].to_numpy() > 0).astype(np.uint8) << bit
        filled = stop
    return out


def read_history(bundle: Bundle) -> History:
    table = pd.read_parquet(bundle.root / s.BUNDLE_PURCHASED)
    table = table.sort_values([s.USER_IDX, s.ITEM_IDX], kind="stable")
    counts = np.bincount(table[s.USER_IDX].to_numpy(np.int64), minlength=bundle.n_users)
    offsets = np.zeros(bundle.n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    nan = np.full(len(table), np.nan)

    def column(name: str) -> np.ndarray:
        return table[name].to_numpy(np.float64) if name in table.columns else nan

    return History(offsets=offsets, items=table[s.ITEM_IDX].to_numpy(np.int64),
                   purchase_days=column(s.UI_PURCHASE_DAYS), days_since_last=column(s.UI_DAYS_SINCE_LAST))


def load_explorer_model(fetcher: BundleFetcher, location: str, *, label: str,
                        registry_version: int | None = None) -> ExplorerModel:
    """Load ``location`` exactly as the inference service does (fetch, verify, score, smoke-check),
    keeping the generator flags, catalog and history beside it. Raises BundleError."""
    with fetcher.open(location) as bundle:
        model = build_serving_model(bundle, source=location, registry_version=registry_version)
        return ExplorerModel(model, read_generators(bundle), bundle.items, read_history(bundle), label)


class ExplorerCache:
    """The last few loaded bundles (each holds every candidate's score: ~12 bytes a candidate)."""

    def __init__(self, fetcher: BundleFetcher, size: int = 2) -> None:
        self._fetcher = fetcher
        self._size = size
        self._models: OrderedDict[str, ExplorerModel] = OrderedDict()
        self._lock = threading.Lock()  # one load at a time: a second request for it waits, then hits

    def get(self, key: str, location: str, *, label: str, registry_version: int | None = None) -> ExplorerModel:
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = load_explorer_model(self._fetcher, location, label=label, registry_version=registry_version)
                self._models[key] = model
                while len(self._models) > self._size:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return model
