"""TIFU-KNN (Hu, He, Gao & Zhang, "Modeling Personalized Item Frequency Information for Next-basket
Recommendation", SIGIR 2020), vectorised with scipy.sparse.

A basket is one user's purchases in one session (order) where the log has one, else on one UTC day. With
the user's n baskets b_1..b_n (oldest first, binary item vectors) cut into groups of ``group_size`` m from
the most recent one backwards (the oldest group may be smaller), the paper's personal item-frequency
vector is

    group g (size m_g):  v_g = (1/m_g) Σ_j r_b^(m_g - j) b_j       (within-group decay, the last basket 1)
    user (G groups):     u   = (1/G) Σ_g r_g^(G - g) v_g           (between-group decay, the last group 1)

and the prediction blends it with the mean vector of the user's k nearest users (Euclidean distance
between the u vectors, the user itself excluded): p = alpha · u + (1 - alpha) · mean_k(u_neighbour).
The hyper-parameters are chosen with :func:`choose` on a window the caller picks (the pipeline: the label
window of the train fold, never the test window).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import scipy.sparse as sp

from components import schema as s
from components.errors import DataContractError
from components.ranker.features import TIFU_ALPHA

log = logging.getLogger(__name__)

BASKET = "basket"  # 0-based position of the basket in the user's history, oldest first
TS_NS = "ts_ns"  # the first purchase of the item in the basket, ns since the epoch (UTC)
CHUNK_USERS = 512  # target users scored at once: bounds the dense distance / score blocks


@dataclass(frozen=True)
class TifuParams:
    k: int = 300
    alpha: float = 0.7
    group_size: int = 7
    within_decay: float = 0.9
    group_decay: float = 0.7

    def __post_init__(self) -> None:
        if self.k < 1 or self.group_size < 1:
            raise ValueError(f"tifu_knn: k and group_size must be >= 1, got {self}")
        if not (0.0 <= self.alpha <= 1.0 and 0.0 < self.within_decay <= 1.0 and 0.0 < self.group_decay <= 1.0):
            raise ValueError(f"tifu_knn: alpha in [0, 1] and decays in (0, 1] expected, got {self}")


# A small grid around the settings the paper reports as best on its data sets: the decays and group size
# change the vectors, k the neighbours, alpha only the blend (cheap).
GRID: Mapping[str, Sequence[float | int]] = {
    "k": (100, 300),
    "alpha": (0.5, 0.7, 0.9),
    "group_size": (3, 7),
    "within_decay": (0.9, 1.0),
    "group_decay": (0.6, 0.9),
}


def before(basket_rows: pd.DataFrame, cut: str) -> pd.DataFrame:
    """The rows of :func:`baskets` strictly before ``cut`` (ISO-8601)."""
    stamp = pd.Timestamp(cut)
    stamp = stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")
    return basket_rows.loc[basket_rows[TS_NS].to_numpy() < stamp.value].reset_index(drop=True)


def read_purchases(events: Path, before: str) -> pd.DataFrame:
    """user_idx, item_idx, timestamp, session_id of the purchase events strictly before ``before`` (ISO-8601)
    in ETL's clean/events, filtered while reading (Spark writes its UTC timestamps without a zone)."""
    columns = [s.USER_IDX, s.ITEM_IDX, s.TIMESTAMP, s.SESSION_ID]
    try:
        dataset = pads.dataset(events, format="parquet", exclude_invalid_files=True)
        kind = dataset.schema.field(s.TIMESTAMP).type
        cut = pd.Timestamp(before)
        cut = cut.tz_convert("UTC") if cut.tzinfo else cut.tz_localize("UTC")
        if getattr(kind, "tz", None) is None:
            cut = cut.tz_localize(None)
        wanted = (pads.field(s.EVENT_TYPE) == s.PURCHASE) & (pads.field(s.TIMESTAMP) < pa.scalar(cut, type=kind))
        present = [c for c in columns if c in dataset.schema.names]
        return dataset.to_table(columns=present, filter=wanted).to_pandas()
    except (OSError, ValueError, KeyError, pa.ArrowException) as error:
        raise DataContractError(f"cannot read purchase events from {events}: {error}") from error


# Ranker features (components/ranker/features.py): the settings the evaluation chose on Online Retail's train
# fold (its label window; benchmarks/results/quality_peers.md), fixed so the ranker_data step needs no search.
FEATURE_PARAMS = TifuParams(k=300, alpha=TIFU_ALPHA, group_size=3, within_decay=1.0, group_decay=0.6)
OWN, NEIGHBOURS = PAIR_COLUMNS = s.TIFU_PAIR_COLUMNS  # u[item] of the user; the k nearest users' mean u[item]


def baskets(purchases: pd.DataFrame) -> pd.DataFrame:
    """user_idx, basket, item_idx (distinct), ts_ns from purchase rows (user_idx, item_idx, timestamp and
    an optional session_id). Baskets are ordered by their first purchase time, then by key, so the rows
    before a later cut (``ts_ns < cut``) are the baskets that cut would give, positions unchanged."""
    if purchases.empty:
        return pd.DataFrame({s.USER_IDX: pd.Series(dtype=np.int64), BASKET: pd.Series(dtype=np.int64),
                             s.ITEM_IDX: pd.Series(dtype=np.int64), TS_NS: pd.Series(dtype=np.int64)})
    ts = purchases[s.TIMESTAMP].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    # A basket key per row: the session's code where there is one, else -1 - the UTC day number.
    key = -1 - ts // 86_400_000_000_000
    if s.SESSION_ID in purchases.columns:
        session = purchases[s.SESSION_ID].astype("string")
        codes, _ = pd.factorize(session, use_na_sentinel=True)
        key = np.where((codes >= 0) & (session != "").fillna(False).to_numpy(bool), codes, key)
    rows = pd.DataFrame({s.USER_IDX: purchases[s.USER_IDX].to_numpy(np.int64), "key": key,
                         s.ITEM_IDX: purchases[s.ITEM_IDX].to_numpy(np.int64), "ts": ts})
    first = rows.groupby([s.USER_IDX, "key"], sort=False)["ts"].min().reset_index()
    first = first.sort_values([s.USER_IDX, "ts", "key"], kind="mergesort")
    first[BASKET] = first.groupby(s.USER_IDX, sort=False).cumcount()
    out = rows.merge(first[[s.USER_IDX, "key", BASKET]], on=[s.USER_IDX, "key"])
    out = out.groupby([s.USER_IDX, BASKET, s.ITEM_IDX], sort=True)["ts"].min().reset_index()
    return out.rename(columns={"ts": TS_NS})


def user_vectors(basket_rows: pd.DataFrame, n_users: int, n_items: int, params: TifuParams) -> sp.csr_matrix:
    """The (n_users x n_items) matrix of personal item-frequency vectors u (zero rows: no baskets)."""
    users = basket_rows[s.USER_IDX].to_numpy(np.int64)
    position = basket_rows[BASKET].to_numpy(np.int64)
    n_baskets = np.zeros(n_users, dtype=np.int64)
    if len(users):
        np.maximum.at(n_baskets, users, position + 1)
    n = n_baskets[users]
    back = n - 1 - position  # 0 = the most recent basket
    m = params.group_size
    group = back // m  # 0 = the most recent group
    within = back % m
    groups = -(-n // m)
    group_len = np.minimum(m, n - group * m)
    weight = (params.within_decay ** within / group_len) * (params.group_decay ** group / groups)
    # float32: half the memory traffic of the dense score blocks (argpartition dominates the cost)
    return sp.csr_matrix((weight.astype(np.float32), (users, basket_rows[s.ITEM_IDX].to_numpy(np.int64))),
                         shape=(n_users, n_items))


@dataclass(frozen=True)
class Neighbours:
    """Each target user's nearest users, nearest first (``index`` -1 where fewer exist)."""

    users: np.ndarray  # target user_idx
    index: np.ndarray  # (len(users), k_max) neighbour user_idx


def nearest_users(vectors: sp.csr_matrix, users: np.ndarray, k_max: int) -> Neighbours:
    """The ``k_max`` nearest users (Euclidean, among users with a basket, the user excluded) of ``users``;
    a user without a basket has none (every other vector would be equally far from nowhere)."""
    users = np.asarray(users, dtype=np.int64)
    norms = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()
    has = np.diff(vectors.indptr) > 0
    pool = np.flatnonzero(has)
    k = min(k_max, max(len(pool) - 1, 0))
    out = np.full((len(users), k_max), -1, dtype=np.int64)
    if k == 0:
        return Neighbours(users, out)
    pool_t = vectors[pool].T.tocsr()
    for start in range(0, len(users), CHUNK_USERS):
        chunk = users[start:start + CHUNK_USERS]
        dot = (vectors[chunk] @ pool_t).toarray()
        dist = norms[chunk][:, None] + norms[pool][None, :] - 2.0 * dot
        dist[chunk[:, None] == pool[None, :]] = np.inf
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
        nearest = np.take_along_axis(part, order, axis=1)
        out[start:start + len(chunk), :k] = np.where(has[chunk][:, None], pool[nearest], -1)
    return Neighbours(users, out)


def _neighbour_mean(vectors: sp.csr_matrix, index: np.ndarray, k: int) -> sp.csr_matrix:
    """mean_k(u_neighbour) per row of ``index`` (its first k columns; -1 = none)."""
    top = index[:, :k]
    rows, cols = np.nonzero(top >= 0)
    counts = np.maximum((top >= 0).sum(axis=1), 1)
    weights = sp.csr_matrix(((1.0 / counts[rows]).astype(np.float32), (rows, top[rows, cols])),
                            shape=(len(top), vectors.shape[0]))
    return (weights @ vectors).tocsr()


def score_blocks(vectors: sp.csr_matrix, neighbours: Neighbours, params: TifuParams
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(user_idx chunk, dense score rows p = alpha·u + (1-alpha)·mean_k) a chunk of users at a time."""
    for start in range(0, len(neighbours.users), CHUNK_USERS):
        chunk = neighbours.users[start:start + CHUNK_USERS]
        mean = _neighbour_mean(vectors, neighbours.index[start:start + CHUNK_USERS], params.k)
        yield chunk, (params.alpha * vectors[chunk] + (1.0 - params.alpha) * mean).toarray()


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column indices of the ``n`` largest positive scores (desc, ties item asc) and the
    scores; -1 / 0 pads rows with fewer."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    items = np.take_along_axis(part, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    items = np.where(values > 0, items, -1)
    return items, np.where(values > 0, values, 0.0)


def pairs_matrix(pairs: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """A 0/1 (n_users x n_items) matrix of (user_idx, item_idx) pairs."""
    pairs = pairs[[s.USER_IDX, s.ITEM_IDX]].drop_duplicates()
    return sp.csr_matrix((np.ones(len(pairs)), (pairs[s.USER_IDX].to_numpy(np.int64),
                                                 pairs[s.ITEM_IDX].to_numpy(np.int64))), shape=(n_users, n_items))


def top_pairs(blocks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, *,
              exclude: sp.csr_matrix | None = None) -> pd.DataFrame:
    """user_idx, item_idx, score: the ``n`` best positive-scored items of each (users, dense score rows)
    block, ties by item_idx; ``exclude`` (n_users x n_items, non-zero = leave out) drops pairs first."""
    parts = []
    for chunk, scores in blocks:
        if exclude is not None:
            scores = np.where(exclude[chunk].toarray() != 0, 0.0, scores)
        items, values = top_n(scores, n)
        keep = items >= 0
        parts.append(pd.DataFrame({s.USER_IDX: np.repeat(chunk, keep.sum(axis=1)), s.ITEM_IDX: items[keep],
                                   s.SCORE: values[keep].astype(np.float64)}))
    if not parts:
        return pd.DataFrame({s.USER_IDX: pd.Series(dtype=np.int64), s.ITEM_IDX: pd.Series(dtype=np.int64),
                             s.SCORE: pd.Series(dtype=np.float64)})
    return pd.concat(parts, ignore_index=True)


class TifuModel:
    """The user vectors and the target users' neighbours, computed once for several top-n lists."""

    def __init__(self, basket_rows: pd.DataFrame, users: np.ndarray, n_users: int, n_items: int,
                 params: TifuParams) -> None:
        self.params = params
        self.vectors = user_vectors(basket_rows, n_users, n_items, params)
        self.neighbours = nearest_users(self.vectors, np.asarray(users, dtype=np.int64), params.k)

    def recommend(self, n: int, *, exclude: sp.csr_matrix | None = None) -> pd.DataFrame:
        """user_idx, item_idx, score: each target user's top ``n`` (zero scores left out)."""
        return top_pairs(score_blocks(self.vectors, self.neighbours, self.params), n, exclude=exclude)

    def pair_scores(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(own u value, neighbours' mean value) of each (user, item) pair; users must be targets. Built
        a chunk of users at a time as dense rows (sampling a sparse matrix pair by pair is ~10x slower)."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        targets = self.neighbours.users
        order = np.argsort(targets, kind="stable")
        found = np.minimum(np.searchsorted(targets[order], users), max(len(targets) - 1, 0))
        if len(users) and (not len(targets) or (targets[order][found] != users).any()):
            raise ValueError("tifu_knn: pair_scores got users the model has no neighbours for")
        rows = order[found] if len(users) else found
        own = np.zeros(len(users), dtype=np.float64)
        neighbours = np.zeros(len(users), dtype=np.float64)
        for start in range(0, len(targets), CHUNK_USERS):
            pick = np.flatnonzero((rows >= start) & (rows < start + CHUNK_USERS))
            if len(pick):
                chunk = targets[start:start + CHUNK_USERS]
                at = (rows[pick] - start, items[pick])
                own[pick] = self.vectors[chunk].toarray()[at]
                mean = _neighbour_mean(self.vectors, self.neighbours.index[start:start + CHUNK_USERS], self.params.k)
                neighbours[pick] = mean.toarray()[at]
        return own, neighbours


def ndcg_at(items: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-row NDCG@k (EVALUATION.md) of top lists ``items`` (-1 = empty slot) against the dense boolean
    rows ``relevant`` (every row with >= 1 relevant item)."""
    top = items[:, :k]
    rel = np.take_along_axis(relevant, np.maximum(top, 0), axis=1) & (top >= 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel * discounts[: top.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(relevant.sum(axis=1), k) - 1]
    return dcg / ideal


def history_baskets(etl: Path) -> pd.DataFrame:
    """:func:`baskets` of every purchase before test_start from ETL's clean events, cached per version of
    those files (ranker_data needs both folds' baskets: the train fold's are the rows before label_start;
    a rerun of the ETL in the same process writes new files, so a new key)."""
    files = [etl / s.WINDOWS_FILE, *sorted((etl / s.CLEAN_DIR / s.EVENTS).glob("*.parquet"))]
    return _history_baskets(etl, tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))


@functools.lru_cache(maxsize=2)
def _history_baskets(etl: Path, version: tuple[tuple[str, int, int], ...]) -> pd.DataFrame:
    windows = json.loads((etl / s.WINDOWS_FILE).read_text())
    return baskets(read_purchases(etl / s.CLEAN_DIR / s.EVENTS, windows["test_start"]))


def fold_model(etl: Path, fold: str, users: np.ndarray, n_users: int, n_items: int,
               params: TifuParams = FEATURE_PARAMS) -> TifuModel:
    """The model of a fold (history = purchases before its cutoff: label_start for train, test_start for
    test) for ``users``, from ETL's clean events and windows.json."""
    windows = json.loads((etl / s.WINDOWS_FILE).read_text())
    cut = windows["label_start" if fold == s.TRAIN_FOLD else "test_start"]
    rows = before(history_baskets(etl), cut)
    return TifuModel(rows, np.unique(np.asarray(users, dtype=np.int64)), n_users, n_items, params)


def with_pair_scores(model: TifuModel, candidates: pd.DataFrame) -> pd.DataFrame:
    """``candidates`` plus the :data:`PAIR_COLUMNS` of each (user_idx, item_idx) row."""
    own, neighbours = model.pair_scores(candidates[s.USER_IDX].to_numpy(), candidates[s.ITEM_IDX].to_numpy())
    return candidates.assign(**{OWN: own, NEIGHBOURS: neighbours})


@dataclass(frozen=True)
class Choice:
    params: TifuParams
    ndcg_at_10: float | None  # mean over the tuning users (None: there were none)
    users: int
    grid: dict[str, list[float | int]]
    scores: list[dict[str, float | int]]  # every grid point tried, with its NDCG@10


VECTOR_KEYS = ("group_decay", "within_decay", "group_size")  # coordinate ascent, in this order


def choose(basket_rows: pd.DataFrame, targets: pd.DataFrame, n_users: int, n_items: int,
           grid: Mapping[str, Sequence[float | int]] = GRID, k: int = 10) -> Choice:
    """The settings with the best mean NDCG@k over the users of ``targets`` (user_idx, item_idx: the
    purchases of the window after ``basket_rows``) who have a basket. k and alpha are searched in full at
    every vector setting tried (they reuse its vectors and neighbours); the vector settings (group size,
    decays) by one round of coordinate ascent from each one's first value (each costs a KNN search).
    Ties: the point tried first."""
    truth = pairs_matrix(targets, n_users, n_items)
    with_history = np.unique(basket_rows[s.USER_IDX].to_numpy(np.int64))
    users = np.intersect1d(np.flatnonzero(np.diff(truth.indptr)), with_history)
    for key in ("k", "alpha", *VECTOR_KEYS):
        if not grid.get(key):
            raise ValueError(f"tifu_knn grid: {key!r} needs at least one value")
    if not len(users):  # nothing to choose on (a tiny shop): the first grid point, said so in the record
        log.warning("tifu_knn: no user with both baskets and target purchases; using the grid's first values")
        first = TifuParams(k=int(grid["k"][0]), alpha=float(grid["alpha"][0]), group_size=int(grid["group_size"][0]),
                           within_decay=float(grid["within_decay"][0]), group_decay=float(grid["group_decay"][0]))
        return Choice(params=first, ndcg_at_10=None, users=0,
                      grid={key: list(values) for key, values in grid.items()}, scores=[])
    k_max = max(int(v) for v in grid["k"])
    scores: list[dict[str, float | int]] = []
    tried: dict[tuple[float, ...], tuple[float, TifuParams]] = {}

    def best_at(vector: dict[str, float]) -> tuple[float, TifuParams]:
        key = tuple(vector[name] for name in VECTOR_KEYS)
        if key in tried:
            return tried[key]
        base = TifuParams(k=k_max, group_size=int(vector["group_size"]), within_decay=vector["within_decay"],
                          group_decay=vector["group_decay"])
        vectors = user_vectors(basket_rows, n_users, n_items, base)
        neighbours = nearest_users(vectors, users, k_max)
        totals: dict[tuple[int, float], float] = {}
        for start in range(0, len(users), CHUNK_USERS):
            chunk = users[start:start + CHUNK_USERS]
            own = vectors[chunk].toarray()
            relevant = truth[chunk].toarray() > 0
            for kk in grid["k"]:
                mean = _neighbour_mean(vectors, neighbours.index[start:start + CHUNK_USERS], int(kk)).toarray()
                for alpha in grid["alpha"]:
                    items, _ = top_n(np.float32(alpha) * own + np.float32(1.0 - float(alpha)) * mean, k)
                    point = (int(kk), float(alpha))
                    totals[point] = totals.get(point, 0.0) + float(ndcg_at(items, relevant, k).sum())
        found: tuple[float, TifuParams] | None = None
        for (kk, alpha), total in totals.items():
            params = TifuParams(k=kk, alpha=alpha, group_size=base.group_size, within_decay=base.within_decay,
                                group_decay=base.group_decay)
            value = total / len(users)
            scores.append({**asdict(params), f"ndcg_at_{k}": value})
            if found is None or value > found[0]:
                found = (value, params)
        assert found is not None
        tried[key] = found
        return found

    vector = {name: float(grid[name][0]) for name in VECTOR_KEYS}
    best = best_at(vector)
    for name in VECTOR_KEYS:
        for value in grid[name][1:]:
            result = best_at({**vector, name: float(value)})
            if result[0] > best[0]:
                best = result
        vector = {key: float(getattr(best[1], key)) for key in VECTOR_KEYS}
    log.info("tifu_knn: chose %s (NDCG@%d %.4f over %d users, %d points tried)", best[1], k, best[0],
             len(users), len(scores))
    return Choice(params=best[1], ndcg_at_10=best[0], users=len(users),
                  grid={key: list(values) for key, values in grid.items()}, scores=scores)
