"""What every candidate generator shares: the fold's tables in single-machine form, the fit/recommend
contract (RecTools style), and the one top-N helper the generators rank with.

A generator is fitted on one fold's tables (only events strictly before the fold's cutoff reach them) and
then ``recommend(users, n)`` returns a long frame ``user_idx, item_idx, score, rank`` with rank 1..n per
user, best first, ties broken by the smaller item_idx so that every run gives the same list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Final, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from components import schema as s
from components.errors import DataContractError, NotFittedError

SCORE: Final = "score"
RANK: Final = "rank"
RECOMMENDATION_COLUMNS: Final = (s.USER_IDX, s.ITEM_IDX, SCORE, RANK)


@dataclass(frozen=True)
class FoldTables:
    """One fold's inputs, collected to the driver (the single-machine path).

    interactions: user_idx, item_idx, weight (> 0), events before the cutoff.
    user_items: user_idx, item_idx, ui_purchase_days, ui_days_since_last (pairs with history).
    items: item_idx, i_buyers_28d (every catalogue item).
    """

    interactions: pd.DataFrame
    user_items: pd.DataFrame
    items: pd.DataFrame

    def __post_init__(self) -> None:
        for name, frame, columns in (
            (s.INTERACTIONS, self.interactions, (s.USER_IDX, s.ITEM_IDX, s.WEIGHT)),
            (s.USER_ITEM_FEATURES, self.user_items, (s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS,
                                                     s.UI_DAYS_SINCE_LAST)),
            (s.ITEM_FEATURES, self.items, (s.ITEM_IDX, s.ITEM_BUYERS_28D)),
        ):
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise DataContractError(f"fold table {name}/ lacks column {missing[0]!r}")

    @property
    def nnz(self) -> int:
        return len(self.interactions)

    @cached_property
    def recency(self) -> pd.DataFrame:
        """interactions + ui_days_since_last (NaN when a pair has no feature row), computed once for
        every generator that weights by recency."""
        return self.interactions[[s.USER_IDX, s.ITEM_IDX, s.WEIGHT]].merge(
            self.user_items[[s.USER_IDX, s.ITEM_IDX, s.UI_DAYS_SINCE_LAST]], on=[s.USER_IDX, s.ITEM_IDX],
            how="left", validate="one_to_one")


@dataclass(frozen=True)
class CompactMatrix:
    """A users x items CSR matrix over only the users and items that occur, with the maps back to the
    dense global indices (ALS and co-occurrence never waste rows on users without interactions)."""

    matrix: sp.csr_matrix
    users: np.ndarray  # global user_idx of each row, sorted
    items: np.ndarray  # global item_idx of each column, sorted

    @classmethod
    def build(cls, user_idx: np.ndarray, item_idx: np.ndarray, values: np.ndarray,
              dtype: type[np.floating] = np.float32) -> CompactMatrix:
        users, rows = np.unique(user_idx, return_inverse=True)
        items, cols = np.unique(item_idx, return_inverse=True)
        matrix = sp.csr_matrix((values.astype(dtype), (rows, cols)), shape=(len(users), len(items)))
        matrix.sum_duplicates()
        return cls(matrix, users.astype(np.int64), items.astype(np.int64))

    def rows_of(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``user_idx`` of known users, their matrix rows)."""
        if len(self.users) == 0:
            return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
        pos = np.searchsorted(self.users, user_idx).clip(max=len(self.users) - 1)
        known = self.users[pos] == user_idx
        return np.flatnonzero(known), pos[known]


class CandidateGenerator(ABC):
    """fit(tables) -> self; recommend(users, n) -> user_idx, item_idx, score, rank (1..n, best first)."""

    name: str = "generator"

    def __init__(self) -> None:
        self._fitted = False

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def fit(self, tables: FoldTables) -> Self:
        self._fit(tables)
        self._fitted = True
        return self

    def recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        if not self._fitted:
            raise NotFittedError(f"{type(self).__name__}.recommend called before fit")
        users = np.unique(np.asarray(users, dtype=np.int64))
        if n <= 0 or len(users) == 0:
            return empty_recommendations()
        return self._recommend(users, n)

    @abstractmethod
    def _fit(self, tables: FoldTables) -> None: ...

    @abstractmethod
    def _recommend(self, users: np.ndarray, n: int) -> pd.DataFrame: ...


def empty_recommendations() -> pd.DataFrame:
    return pd.DataFrame({
        s.USER_IDX: np.array([], dtype=np.int32), s.ITEM_IDX: np.array([], dtype=np.int32),
        SCORE: np.array([], dtype=np.float64), RANK: np.array([], dtype=np.int32),
    })


# Dense score blocks stay around this many cells (x 8 bytes) whatever the catalogue size.
BLOCK_CELLS: Final = 4_000_000


def block_rows(n_cols: int) -> int:
    """Rows per dense block for a matrix with ``n_cols`` columns."""
    return max(1, BLOCK_CELLS // max(n_cols, 1))


def rank_within_rows(rows: np.ndarray) -> np.ndarray:
    """1-based position of each element within its run of equal (sorted) row ids."""
    if len(rows) == 0:
        return np.array([], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    return np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)])) + 1


def select_top(dense: np.ndarray, n: int, *, positive_only: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact top n cells of every row of a dense block: score descending, ties to the smaller column.

    A partial sort finds each row's n-th best score, every cell at or above it (ties included) is kept,
    and a small lexsort orders just those. Cells at -inf (and <= 0 with ``positive_only``) never count.
    Returns (row, col, score, rank), rank 1..n.
    """
    k = min(n, dense.shape[1])
    kth = -np.partition(-dense, k - 1, axis=1)[:, k - 1]
    mask = (dense >= kth[:, None]) & (dense > (0.0 if positive_only else -np.inf))
    rows, cols = np.nonzero(mask)  # row-major: columns ascending within a row
    vals = dense[rows, cols]
    # = lexsort((cols, -vals, rows)) at a third of the cost: stable sorts keep the column order among
    # equal scores, and the row pass is a radix sort on small integers.
    by_score = np.argsort(-vals, kind="stable")
    row_type = np.int16 if dense.shape[0] < 2**15 else np.int32
    order = by_score[np.argsort(rows[by_score].astype(row_type), kind="stable")]
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = rank_within_rows(rows)
    keep = rank <= k
    return rows[keep], cols[keep], vals[keep], rank[keep]


def top_n_sparse(matrix: sp.csr_matrix, n: int, *, positive_only: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``select_top`` for a sparse matrix, without densifying it or sorting every entry.

    Each row's n-th best value comes from a partial sort over the rows with more than n entries, laid out
    padded in buckets of similar length (so padding at most doubles the work); only entries at or above it
    are then sorted. Exact, ties to the smaller column. Returns (row, col, score, rank), rank 1..n.
    """
    m = sp.csr_matrix(matrix)  # entries must be unique per (row, col), as matrix products give them
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    cols, vals = m.indices.astype(np.int64), m.data.astype(np.float64)
    if positive_only:
        keep = vals > 0
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    if n <= 0 or len(vals) == 0:
        empty_i = np.array([], dtype=np.int64)
        return empty_i, empty_i, np.array([], dtype=np.float64), empty_i
    counts = np.bincount(rows, minlength=m.shape[0])
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    kth = np.full(m.shape[0], -np.inf)
    big = np.flatnonzero(counts > n)
    bucket = np.ceil(np.log2(counts[big])).astype(np.int64)
    for b in np.unique(bucket):
        members = big[bucket == b]
        lengths = counts[members]
        local = np.repeat(np.arange(len(members)), lengths)
        offset = np.arange(int(lengths.sum())) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        dense = np.full((len(members), int(lengths.max())), -np.inf)
        dense[local, offset] = vals[np.repeat(starts[members], lengths) + offset]
        kth[members] = -np.partition(-dense, n - 1, axis=1)[:, n - 1]
    keep = vals >= kth[rows]
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = rank_within_rows(rows)
    keep = rank <= n
    return rows[keep], cols[keep], vals[keep], rank[keep]


def top_n_by_row(block_scores: Callable[[int, int], np.ndarray], n_rows: int, n_cols: int, n: int,
                 *, positive_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``select_top`` over a score matrix produced block by block: ``block_scores(start, stop)`` returns
    the dense rows [start, stop), so memory stays bounded whatever the size. Returns (row, col, score, rank)."""
    if n_rows == 0 or n_cols == 0 or n <= 0:
        empty_i = np.array([], dtype=np.int64)
        return empty_i, empty_i, np.array([], dtype=np.float64), empty_i
    out: list[tuple[np.ndarray, ...]] = []
    step = block_rows(n_cols)
    for start in range(0, n_rows, step):
        dense = np.asarray(block_scores(start, min(n_rows, start + step)), dtype=np.float64)
        rows, cols, vals, rank = select_top(dense, n, positive_only=positive_only)
        out.append((rows + start, cols, vals, rank))
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]


def top_n_csr(matrix: sp.csr_matrix, n: int, *, positive_only: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact top n per row of a sparse matrix: dense blocks while it is dense-ish (contiguous partial
    sorts beat index juggling), ``top_n_sparse`` once most cells are empty (a large catalogue)."""
    m = sp.csr_matrix(matrix)
    n_rows, n_cols = m.shape
    if n_rows * n_cols <= 4 * max(m.nnz, 1):
        return top_n_by_row(lambda a, b: m[a:b].toarray(), n_rows, n_cols, n, positive_only=positive_only)
    return top_n_sparse(m, n, positive_only=positive_only)
