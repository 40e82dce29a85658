"""Labelled ranker data in the built-in SageMaker CatBoost format (pure functions; data_step wires them).

- label 1 when (user, item) is in the fold's targets;
- every positive kept; ``negatives_per_user`` negatives sampled per user with a seeded hash of
  (user_idx, item_idx), so the sample does not depend on row order or partitioning;
- users without a positive candidate dropped (nothing to learn from them; counted in the report);
- train/validation split by a seeded hash of user_idx: a user's rows all land in one channel, so early
  stopping measures generalisation to unseen users, as the test fold needs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components import schema as s
from components.ranker.model import FeatureSpec

log = logging.getLogger(__name__)

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixer (SplitMix64 finaliser): the same uniform-looking bits on every platform."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, *keys: np.ndarray) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from integer keys (each < 2**32) and a seed."""
    state = np.full(len(keys[0]), np.uint64(seed & 0xFFFFFFFF), dtype=np.uint64)
    for key in keys:
        state = _splitmix64(state ^ np.asarray(key).astype(np.uint64))
    return (state >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def label_candidates(frame: pd.DataFrame, targets: pd.DataFrame) -> pd.Series:
    """1 where (user_idx, item_idx) is a target purchase, else 0 (aligned to ``frame``)."""
    keys = pd.MultiIndex.from_frame(targets[[s.USER_IDX, s.ITEM_IDX]].astype(np.int64))
    pairs = pd.MultiIndex.from_frame(frame[[s.USER_IDX, s.ITEM_IDX]].astype(np.int64))
    return pd.Series(pairs.isin(keys).astype(np.int8), index=frame.index, name=s.LABEL)


@dataclass(frozen=True)
class FoldCounts:
    """The train fold's candidates and targets, counted once on the whole fold."""

    candidate_users: int
    candidate_rows: int
    positive_rows: int
    users_with_positive: int
    users_dropped_without_positive: int
    users_capped: int
    target_pairs: int


@dataclass(frozen=True)
class ChannelCounts:
    """What went to the training and validation channels; chunks of whole users add up."""

    training_rows: int
    training_users: int
    training_positives: int
    validation_rows: int
    validation_users: int
    validation_positives: int

    @classmethod
    def count(cls, training: pd.DataFrame, validation: pd.DataFrame) -> ChannelCounts:
        return cls(len(training), int(training[s.USER_IDX].nunique()), int(training[s.LABEL].sum()),
                   len(validation), int(validation[s.USER_IDX].nunique()), int(validation[s.LABEL].sum()))

    def __add__(self, other: ChannelCounts) -> ChannelCounts:
        names = [f.name for f in fields(ChannelCounts)]  # by name: a SampleReport adds as its channel counts
        return ChannelCounts(**{name: getattr(self, name) + getattr(other, name) for name in names})


def sum_counts(counts: Iterable[ChannelCounts]) -> ChannelCounts:
    return sum(counts, ChannelCounts(0, 0, 0, 0, 0, 0))


@dataclass(frozen=True)
class SampleReport(ChannelCounts, FoldCounts):
    """ranker_data.json's counts: the fold's, the channels', and the candidates' recall of the targets."""

    pair_recall: float  # share of the candidate users' target pairs found among their candidates (micro)

    @classmethod
    def combine(cls, fold: FoldCounts, channels: ChannelCounts) -> SampleReport:
        return cls(**asdict(fold), **asdict(channels), pair_recall=fold.positive_rows / max(1, fold.target_pairs))


def training_users(labelled: pd.DataFrame, *, max_users: int, seed: int) -> tuple[np.ndarray, dict[str, int]]:
    """Users with >= 1 positive candidate (user_idx, label rows), at most ``max_users`` by seeded hash."""
    positives_per_user = labelled[s.LABEL].groupby(labelled[s.USER_IDX]).sum()
    keep_users = positives_per_user.index[positives_per_user > 0].to_numpy()
    dropped = int((positives_per_user == 0).sum())
    capped = 0
    if len(keep_users) > max_users:
        order = np.argsort(hash_uniform(seed + 1, keep_users), kind="stable")
        capped = len(keep_users) - max_users
        keep_users = keep_users[order[:max_users]]
    counts = {"users_with_positive": len(keep_users) + capped, "dropped": dropped, "capped": capped}
    return np.sort(keep_users), counts


def sample_training_rows(labelled: pd.DataFrame, *, users: np.ndarray, negatives_per_user: int,
                         seed: int) -> pd.DataFrame:
    """The rows of ``users`` (see :func:`training_users`): all their positives and at most
    ``negatives_per_user`` seeded-random negatives each. The draw is per (user, item), so any chunk of
    whole users samples exactly what the whole table would."""
    rows = labelled.loc[labelled[s.USER_IDX].isin(users)]
    negatives = rows.loc[rows[s.LABEL] == 0]
    draw = hash_uniform(seed, negatives[s.USER_IDX].to_numpy(), negatives[s.ITEM_IDX].to_numpy())
    picked = (pd.Series(draw, index=negatives.index).groupby(negatives[s.USER_IDX]).rank(method="first")
              <= negatives_per_user)
    kept = pd.concat([rows.loc[rows[s.LABEL] == 1], negatives.loc[picked]])
    return kept.sort_values([s.USER_IDX, s.ITEM_IDX], kind="mergesort").reset_index(drop=True)


def validation_mask(user_idx: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for rows whose user is in the validation group (seeded hash of the user, never of the row)."""
    return hash_uniform(seed + 2, np.asarray(user_idx)) < share


def ensure_both_channels(users: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """With very few users the hash can put all of them on one side; move the first user (in hash order)
    so both channels exist (CatBoost needs data in each, early stopping needs validation)."""
    unique = np.unique(users)
    if len(unique) < 2:
        raise ValueError(f"need at least 2 users with a positive candidate to split; have {len(unique)}")
    in_validation = set(np.unique(users[mask]).tolist())
    if in_validation and len(in_validation) < len(unique):
        return mask
    move = int(unique[0])
    if not in_validation:
        return mask | (users == move)
    return mask & (users != move)


class ChannelWriter:
    """A channel folder written chunk by chunk: data.csv (no header; label, then the spec's features;
    categorical values as strings; NaN as an empty field) and categorical_index.json (CSV column
    indices, so >= 1)."""

    def __init__(self, spec: FeatureSpec, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_categorical_index(spec, directory)
        self.spec = spec
        self.rows = 0
        self.schema = pa.schema([(s.LABEL, pa.int64()), *(
            (name, pa.string() if name in spec.categorical else pa.float64()) for name in spec.features)])
        self._writer = pacsv.CSVWriter(directory / s.CHANNEL_DATA_FILE, self.schema,
                                       write_options=pacsv.WriteOptions(include_header=False))

    def write(self, frame: pd.DataFrame) -> None:
        columns = [pa.array(frame[s.LABEL].to_numpy(dtype=np.int64))]
        for name in self.spec.features:  # plain arrays: the frame's index is a sample, not 0..n-1
            values = frame[name].to_numpy(dtype=object if name in self.spec.categorical else np.float64)
            columns.append(pa.array(values, type=self.schema.field(name).type, from_pandas=True))  # NaN -> empty
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        self.rows += len(frame)

    def close(self) -> None:
        self._writer.close()


def write_categorical_index(spec: FeatureSpec, directory: Path) -> None:
    cat_index = [position + 1 for position in spec.categorical_positions]  # column 0 is the label
    (directory / s.CATEGORICAL_INDEX_FILE).write_text(json.dumps({"cat_index_list": cat_index}))


def write_scoring(frame: pd.DataFrame, spec: FeatureSpec, directory: Path, *,
                  extra: Sequence[str] = (), part: int = 0) -> None:
    """scoring/ (part ``part``): user_idx, item_idx (+ ``extra``) + features, user_idx-sorted, numeric
    features as float32 (exactly what the model sees, and half the bundle size). Parts hold ascending
    ranges of users, so the folder read in part order is sorted too."""
    directory.mkdir(parents=True, exist_ok=True)
    # Column by column through Arrow: sorting or casting the wide pandas frame copies all of it twice.
    order = np.lexsort((frame[s.ITEM_IDX].to_numpy(), frame[s.USER_IDX].to_numpy()))
    columns: dict[str, pa.Array] = {}
    for name in (s.USER_IDX, s.ITEM_IDX, *extra, *spec.features):
        values = frame[name].to_numpy()[order]
        if name in (s.USER_IDX, s.ITEM_IDX):
            columns[name] = pa.array(values.astype(np.int32))
        elif name in spec.categorical:  # typed even when empty (an empty object column would be null)
            columns[name] = pa.array(values, type=pa.string(), from_pandas=True)
        elif name in extra:
            columns[name] = pa.array(values, from_pandas=True)
        else:
            columns[name] = pa.array(values.astype(np.float32), from_pandas=True)
    pq.write_table(pa.table(columns), directory / f"part-{part:08d}.parquet")


def report_dict(report: SampleReport) -> dict[str, object]:
    return asdict(report)
