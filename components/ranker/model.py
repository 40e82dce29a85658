"""The trained ranker as evaluation and serving use it, and the shared list policies.

- :class:`FeatureSpec`: the ordered feature names (``feature_spec.json``); numeric features come first
  and categorical ones last, so the CatBoost fast path (``FeaturesData``) lines up with the model.
- :class:`Ranker`: a native CatBoost model (the built-in SageMaker algorithm's ``model`` file) plus the
  spec. ``score`` returns P(purchase) as float64.
- :func:`rank_top_k`: the one deterministic ordering (score desc, then item_idx asc).
- :class:`PopularFallback`: the cold-user policy (popular list) and the top-up of short lists.

How serving reproduces ``two_stage`` exactly (the evaluation step does the same):

    ranker = Ranker.load(bundle_dir / "model", spec=FeatureSpec.load(bundle_dir / "feature_spec.json"))
    scores = ranker.score(candidates_part)             # once at load, each user_idx-sorted part in turn
    rows = slice(start[user], end[user])               # the user's ~200 candidate rows
    items, top_scores = rank_top_k(candidate_item_idx[rows], scores[rows], k)
    items, top_scores = fallback.top_up(items, top_scores, k, exclude=...)  # only when short

Rows are scored independently, so a batch gives each row the bits that scoring its user's rows alone
(``score_prepared(prepare(rows))``) gives; serving checks that on a spread of users for every bundle.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from components import schema as s
from components.errors import NotFittedError


@dataclass(frozen=True)
class FeatureSpec:
    """Ordered feature names; ``categorical`` is a subset of ``features`` (their string-valued ones)."""

    features: tuple[str, ...]
    categorical: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"duplicate feature names in spec: {list(self.features)}")
        unknown = set(self.categorical) - set(self.features)
        if unknown:
            raise ValueError(f"categorical features not in the feature list: {sorted(unknown)}")

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(name for name in self.features if name not in set(self.categorical))

    @property
    def categorical_positions(self) -> list[int]:
        """0-based positions of the categorical features in ``features`` (CSV column = position + 1)."""
        cats = set(self.categorical)
        return [i for i, name in enumerate(self.features) if name in cats]

    @property
    def numeric_first(self) -> bool:
        """True when every categorical feature follows every numeric one (the FeaturesData layout)."""
        return self.categorical_positions == list(range(len(self.numeric), len(self.features)))

    def to_json(self) -> str:
        return json.dumps({"features": list(self.features), "categorical": list(self.categorical)}, indent=2)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[str]]) -> FeatureSpec:
        if "features" not in data:
            raise ValueError(f"feature spec without a 'features' list: keys {sorted(data)}")
        return cls(tuple(data["features"]), tuple(data.get("categorical", ())))

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        if not path.exists():
            raise FileNotFoundError(f"feature spec not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class PreparedFeatures:
    """Scoring rows laid out for CatBoost: float32 numeric block + object (str) categorical block."""

    numeric: np.ndarray  # (n, n_numeric) float32
    categorical: np.ndarray  # (n, n_categorical) object, str values

    def __len__(self) -> int:
        return int(self.numeric.shape[0])


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-raw))


def read_model_bytes(path: Path) -> bytes:
    """The native CatBoost ``model`` file from a model.tar.gz, a directory holding it, or the file."""
    if path.is_dir():
        path = path / s.MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no CatBoost model at {path}")
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and Path(m.name).name == s.MODEL_FILE]
            if not members:
                names = [m.name for m in archive.getmembers()]
                raise FileNotFoundError(f"{path} holds no file named {s.MODEL_FILE!r}: {names}")
            extracted = archive.extractfile(members[0])
            assert extracted is not None  # a regular file member always extracts
            return extracted.read()
    return path.read_bytes()


SCORE_BATCH_ROWS: Final = 500_000  # feature rows scored at once by Ranker.score


@dataclass
class Ranker:
    """P(purchase | user, candidate item) from the CatBoost model; higher ranks first."""

    spec: FeatureSpec | None = None
    _model: object | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path, spec: FeatureSpec | None = None) -> Ranker:
        """Load from model.tar.gz, a directory holding ``model``, or the ``model`` file itself.

        Without ``spec``, a ``feature_spec.json`` beside the model (or inside the directory) is used when
        present; scoring a DataFrame needs a spec, scoring a prepared matrix does not."""
        from catboost import CatBoostClassifier

        path = Path(path)
        model = CatBoostClassifier()
        model.load_model(blob=read_model_bytes(path))
        if spec is None:
            beside = (path if path.is_dir() else path.parent) / s.FEATURE_SPEC_FILE
            spec = FeatureSpec.load(beside) if beside.exists() else None
        ranker = cls(spec=spec, _model=model)
        ranker._check_spec()
        return ranker

    @classmethod
    def from_model(cls, model: object, spec: FeatureSpec | None = None) -> Ranker:
        ranker = cls(spec=spec, _model=model)
        ranker._check_spec()
        return ranker

    @property
    def model(self) -> object:
        if self._model is None:
            raise NotFittedError("Ranker has no model: use Ranker.load(path) or Ranker.from_model(model)")
        return self._model

    def _check_spec(self) -> None:
        if self.spec is None:
            return
        model = self.model
        n_model = len(model.feature_names_)  # type: ignore[attr-defined]
        if n_model != len(self.spec.features):
            raise ValueError(
                f"the model has {n_model} features, the feature spec {len(self.spec.features)}: "
                f"{list(self.spec.features)}"
            )
        model_cats = sorted(model.get_cat_feature_indices())  # type: ignore[attr-defined]
        if model_cats != self.spec.categorical_positions:
            raise ValueError(
                f"categorical positions differ: model {model_cats}, spec {self.spec.categorical_positions} "
                f"({list(self.spec.categorical)})"
            )

    def _require_spec(self) -> FeatureSpec:
        if self.spec is None:
            raise NotFittedError("Ranker has no feature spec: pass spec= or put feature_spec.json beside it")
        return self.spec

    def prepare(self, frame: pd.DataFrame) -> PreparedFeatures:
        """Pick the spec's columns from ``frame`` into the fast layout (do it once, slice per request)."""
        spec = self._require_spec()
        missing = [name for name in spec.features if name not in frame.columns]
        if missing:
            raise KeyError(f"scoring frame lacks feature columns {missing}")
        numeric = frame.loc[:, list(spec.numeric)].to_numpy(dtype=np.float32, copy=True)
        if spec.categorical:
            categorical = (
                frame.loc[:, list(spec.categorical)].astype("string").fillna(s.MISSING_CATEGORY)
                .to_numpy(dtype=object)
            )
        else:
            categorical = np.empty((len(frame), 0), dtype=object)
        return PreparedFeatures(numeric=numeric, categorical=categorical)

    def prepare_columns(self, columns: Mapping[str, np.ndarray]) -> PreparedFeatures:
        """:meth:`prepare` for build_features' columns (components/ranker/features.py feature_columns: numbers
        as float64, categories already strings)."""
        spec = self._require_spec()
        missing = [name for name in spec.features if name not in columns]
        if missing:
            raise KeyError(f"scoring columns lack features {missing}")
        numeric = np.stack([columns[name] for name in spec.numeric], axis=1).astype(np.float32)
        categorical = (np.stack([columns[name] for name in spec.categorical], axis=1).astype(object)
                       if spec.categorical else np.empty((len(numeric), 0), dtype=object))
        return PreparedFeatures(numeric=numeric, categorical=categorical)

    def score_prepared(self, prepared: PreparedFeatures,
                       rows: slice | np.ndarray | None = None, *, thread_count: int = 1) -> np.ndarray:
        """P(purchase) for ``prepared`` rows (all, a slice, or an index array). One thread by default:
        a request scores ~200 rows, where threads cost more than they give."""
        from catboost import FeaturesData

        spec = self._require_spec()
        numeric = prepared.numeric if rows is None else prepared.numeric[rows]
        categorical = prepared.categorical if rows is None else prepared.categorical[rows]
        if numeric.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        model = self.model
        if spec.numeric_first:
            data: object = FeaturesData(
                num_feature_data=np.ascontiguousarray(numeric, dtype=np.float32),
                cat_feature_data=np.ascontiguousarray(categorical) if spec.categorical else None,
            )
        else:  # any other layout: one object matrix in spec order (slower, still exact)
            data = self._object_matrix(spec, numeric, categorical)
        raw = model.predict(data, prediction_type="RawFormulaVal", thread_count=thread_count)  # type: ignore[attr-defined]
        return _sigmoid(np.asarray(raw, dtype=np.float64))

    @staticmethod
    def _object_matrix(spec: FeatureSpec, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        out = np.empty((numeric.shape[0], len(spec.features)), dtype=object)
        cats = spec.categorical_positions
        nums = [i for i in range(len(spec.features)) if i not in set(cats)]
        out[:, nums] = numeric
        if cats:
            out[:, cats] = categorical
        return out

    def score(self, data: pd.DataFrame | PreparedFeatures | np.ndarray, *,
              thread_count: int = -1, batch_rows: int | None = None) -> np.ndarray:
        """P(purchase) per row of a feature frame (spec columns), a prepared layout, or a float matrix
        already in spec order (numeric-only specs). Frames are scored ``batch_rows`` rows at a time
        (default SCORE_BATCH_ROWS)."""
        if isinstance(data, pd.DataFrame):
            batch_rows = batch_rows or SCORE_BATCH_ROWS
            # In batches: the prepared layout and CatBoost's own copy of millions of rows (the evaluation
            # at 10M events) would otherwise triple the frame in memory. Rows are scored independently.
            batches = [data.iloc[start:start + batch_rows] for start in range(0, len(data), batch_rows)]
            return np.concatenate([np.empty(0, dtype=np.float64)] + [
                self.score_prepared(self.prepare(batch), thread_count=thread_count) for batch in batches])
        if isinstance(data, PreparedFeatures):
            return self.score_prepared(data, thread_count=thread_count)
        matrix = np.asarray(data)
        if self.spec is not None and self.spec.categorical:
            raise TypeError("this model has categorical features: score a DataFrame or PreparedFeatures")
        raw = self.model.predict(  # type: ignore[attr-defined]
            np.ascontiguousarray(matrix, dtype=np.float32), prediction_type="RawFormulaVal",
            thread_count=thread_count,
        )
        return _sigmoid(np.asarray(raw, dtype=np.float64))


def rank_top_k(item_idx: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` items by score desc, ties by item_idx asc; NaN scores rank last. Returns
    (item_idx int64, scores float64), at most k long."""
    items = np.asarray(item_idx, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    if items.shape != values.shape:
        raise ValueError(f"item_idx and scores differ in shape: {items.shape} vs {values.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    # lexsort: last key is primary. NaN -> +inf after negation so it sorts after every real score.
    primary = np.where(np.isnan(values), np.inf, -values)
    order = np.lexsort((items, primary))[:k]
    return items[order], values[order]


@dataclass(frozen=True)
class PopularFallback:
    """The popular list (best first) and the policy built on it: cold users get it as is; a short
    personal list is topped up with popular items it does not already hold."""

    item_idx: np.ndarray  # int64, best first, unique
    scores: np.ndarray  # float64, same length

    def __post_init__(self) -> None:
        if self.item_idx.shape != self.scores.shape:
            raise ValueError("popular item_idx and scores differ in length")
        if len(np.unique(self.item_idx)) != len(self.item_idx):
            raise ValueError("popular list has duplicate items")

    @classmethod
    def from_item_features(cls, item_features: pd.DataFrame, *, limit: int | None = None) -> PopularFallback:
        """Items by ``i_buyers_28d`` (distinct buyers in the 28 days before the cut) desc, item_idx asc;
        items nobody bought in that window are left out. All of them unless ``limit``: the bundle's
        popular.parquet holds them all, so evaluation and serving top up from the same list."""
        for column in (s.ITEM_IDX, s.ITEM_BUYERS_28D):
            if column not in item_features.columns:
                raise KeyError(f"item features lack column {column!r}")
        bought = item_features.loc[item_features[s.ITEM_BUYERS_28D].fillna(0) > 0]
        items, scores = rank_top_k(bought[s.ITEM_IDX].to_numpy(), bought[s.ITEM_BUYERS_28D].to_numpy(),
                                   len(bought) if limit is None else limit)
        return cls(item_idx=items, scores=scores)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> PopularFallback:
        """From ``popular.parquet`` (item_idx, score; best first), as the bundle stores it."""
        return cls(item_idx=frame[s.ITEM_IDX].to_numpy(dtype=np.int64),
                   scores=frame[s.SCORE].to_numpy(dtype=np.float64))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({s.ITEM_IDX: self.item_idx, s.SCORE: self.scores})

    def top(self, k: int, exclude: np.ndarray | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The cold-user list: the first ``k`` popular items not in ``exclude``."""
        if exclude is not None and len(exclude):
            keep = ~np.isin(self.item_idx, np.asarray(exclude, dtype=np.int64))
            return self.item_idx[keep][:k], self.scores[keep][:k]
        return self.item_idx[:k], self.scores[:k]

    def top_up(self, item_idx: np.ndarray, scores: np.ndarray, k: int,
               exclude: np.ndarray | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Append popular items (not already listed, not excluded) until the list holds ``k``. Appended
        items carry NaN scores: the recommender did not score them."""
        items = np.asarray(item_idx, dtype=np.int64)[:k]
        values = np.asarray(scores, dtype=np.float64)[:k]
        need = k - len(items)
        if need <= 0:
            return items, values
        blocked = items if exclude is None else np.concatenate([items, np.asarray(exclude, dtype=np.int64)])
        extra, _ = self.top(need, exclude=blocked)
        return np.concatenate([items, extra]), np.concatenate([values, np.full(len(extra), np.nan)])
