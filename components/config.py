"""Typed parameters of every step. One JSON document travels to each step (``--config``), so the local
runner and the SageMaker steps read the same values; unknown keys fail fast."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EtlConfig(_Strict):
    test_days: int = Field(28, ge=1)
    label_days: int = Field(28, ge=1)
    # Implicit weight per event type; a return cancels the matching purchase weight (DATA_CONTRACT.md).
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0, "return": -5.0}
    )
    purchase_weight_by_quantity: bool = True
    quantity_cap: int = Field(100, ge=1)  # wholesale orders of thousands must not drown everything else
    decay_half_life_days: float | None = Field(None, gt=0)
    # "day": one contribution per (user, item, event type, UTC day), so a repeat buyer counts by purchase
    # days, not by rows or units (what predicts the next purchase on Online Retail); "event": per row.
    weight_unit: Literal["event", "day"] = "day"
    # How units scale purchase/return weights (with purchase_weight_by_quantity): "linear" = min(q, cap),
    # "log" = log2(1 + min(q, cap)) (1 unit -> 1, 100 units -> 6.7: a mild wholesale bonus).
    quantity_scale: Literal["linear", "log"] = "log"
    strict_catalog: bool = True  # events on items missing from a given catalog are rejected
    max_rejected_share: float = Field(0.5, ge=0.0, le=1.0)
    # A string attribute with more distinct values than this share of rows is free text, not a category.
    max_category_share: float = Field(0.5, gt=0.0, le=1.0)


class AlsConfig(_Strict):
    # Defaults chosen on the Online Retail TRAIN fold (never the test fold) on a joint criterion: the best
    # `als` NDCG@10 (the ALS list itself) with the fused candidate recall within ~0.005 of the best found
    # (benchmarks/ranker_cv.py --als-configs, results/als_choice.md: 256 factors, alpha 1 -> NDCG 0.295,
    # recall 0.558; 32 factors, alpha 3 -> 0.245, 0.563). The ranker's train-fold NDCG is the same with both.
    factors: int = Field(256, ge=2)
    iterations: int = Field(10, ge=1)
    regularization: float = Field(10.0, ge=0.0)
    alpha: float = Field(1.0, gt=0.0)  # confidence = 1 + alpha * f(weight) * recency
    # f: "log" = log1p(weight) (bulk buyers must not flatten everyone else), "linear" = weight.
    confidence: Literal["log", "linear"] = "log"
    # recency = 0.5 ** (ui_days_since_last / this); None = no recency factor.
    recency_half_life_days: float | None = Field(60.0, gt=0)
    backend: Literal["auto", "implicit", "mllib"] = "auto"
    # "auto" picks the single-machine path while the matrix has at most this many non-zeros.
    single_machine_max_nnz: int = Field(50_000_000, ge=0)
    num_threads: int = Field(0, ge=0)  # implicit's fit threads; 0 = all cores
    # MLlib multiplies regParam by each user's/item's number of ratings (ALS-WR), implicit does not. None =
    # regularization / mean ratings per user and item, which matches implicit's recall (benchmarks/als.py).
    mllib_regularization: float | None = Field(None, ge=0.0)
    seed: int = 42


class CandidateConfig(_Strict):
    # Each generator's list length; the union keeps at most max_per_user per user, by priority
    # sum_g weight_g / (rrf_k + rank_g) (weighted reciprocal-rank fusion), ties by item_idx.
    # Online Retail train-fold candidate recall with these defaults: 0.562 (100 ALS + 50 history: 0.405).
    als_top_n: int = Field(500, ge=1)
    history_top_n: int = Field(300, ge=0)
    cooc_top_n: int = Field(100, ge=0)
    popular_top_n: int = Field(300, ge=0)
    max_per_user: int = Field(200, ge=1, le=200)
    als_weight: float = Field(1.0, ge=0.0)
    history_weight: float = Field(1.5, ge=0.0)
    cooc_weight: float = Field(0.25, ge=0.0)
    popular_weight: float = Field(1.0, ge=0.0)
    rrf_k: float = Field(120.0, gt=0.0)
    cooc_neighbours: int = Field(20, ge=1)  # similar items kept per item
    cooc_half_life_days: float | None = Field(30.0, gt=0)  # recency weight of the user's items
    cooc_max_items_per_user: int = Field(200, ge=2)  # bounds the quadratic pair count (recall flat 100-500)


class RankerConfig(_Strict):
    """Hyperparameters under the built-in SageMaker CatBoost algorithm's own names."""

    iterations: int = Field(500, ge=1)
    early_stopping_rounds: int = Field(50, ge=1)
    eval_metric: str = "AUC"
    learning_rate: float = Field(0.08, gt=0.0)
    depth: int = Field(6, ge=1, le=16)
    l2_leaf_reg: int = Field(3, ge=0)  # an integer in the built-in algorithm
    random_strength: float = Field(1.0, ge=0.0)
    max_leaves: int = Field(31, ge=2)
    rsm: float = Field(1.0, gt=0.0, le=1.0)
    min_data_in_leaf: int = Field(1, ge=1)
    grow_policy: Literal["SymmetricTree", "Depthwise", "Lossguide"] = "SymmetricTree"
    # Plain, not Auto: Auto switches to the slower Ordered scheme on small data, so behaviour would vary.
    boosting_type: Literal["Auto", "Ordered", "Plain"] = "Plain"
    # Ranker data: negatives per user kept for training, and the share of users held out for validation.
    # 50: train-fold CV NDCG@10 as with 100 (mean difference -0.001, range -0.005..+0.002 over four
    # candidate sets) at about half the training time; 30 lost 0.008 (benchmarks/ranker_cv.py).
    negatives_per_user: int = Field(50, ge=1)
    validation_user_share: float = Field(0.2, gt=0.0, lt=1.0)
    # Users (with all their sampled rows) the ranker learns from: training time grows linearly with them,
    # so a large shop trains on a seeded sample (Online Retail has ~1,060 such users, 1M synthetic events ~2,800).
    max_training_users: int = Field(5_000, ge=1)
    seed: int = 42
    # Feature rows built at once (whole users per chunk): bounds ranker_data's memory at any data size.
    chunk_rows: int = Field(500_000, ge=1)
    workers: int = Field(0, ge=0)  # processes building the test fold's rows; 0 = one per core
    # TIFU-KNN's pair scores (own decayed frequency, neighbours' mean, blend, rank) as features: train-fold CV
    # NDCG@10 +0.001 to +0.004 (within noise), ~1/3 more trees, ~18 % more pipeline time (budget 15 %): off
    # (README, issue 17; benchmarks/results/ranker_cv_tifu.md).
    tifu_features: bool = False
    # itemknn's score of each candidate (BM25 item-item over the user's own history: "items like yours", for the
    # exclude_purchased view). Chosen on the train side (benchmarks/results/ranker_cv_itemknn.md: CV over 3 user
    # splits, exclude_purchased NDCG@10 0.1240 -> 0.1288, main 0.3417 -> 0.3471; ranker_temporal_itemknn.md: one
    # window earlier, both up too), then checked once on the test window: both went down (0.3800 -> 0.3710,
    # 1.285x -> 1.240x als; quality_peers_itemknn_features.md). Off, as the main view must not get worse (README).
    itemknn_features: bool = False


class GateConfig(_Strict):
    # NaN compares false with every bound: refused as "not a finite number", naming the field
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    ndcg_at_10_floor: float = Field(0.05, ge=0.0, le=1.0)
    must_beat_als: bool = True
    # two_stage NDCG@10 must be >= (1 + baseline_margin) x the strongest of popular, repurchase, tifu_knn
    # and itemknn in the same run (EVALUATION.md's bar); 0 = must not be worse, 0.05 = must lead by 5 %.
    # Never negative: a model worse than a baseline is switched through with must_beat_baselines=false.
    must_beat_baselines: bool = True
    baseline_margin: float = Field(0.0, ge=0.0, le=10.0)


class PipelineConfig(_Strict):
    etl: EtlConfig = EtlConfig()
    als: AlsConfig = AlsConfig()
    candidates: CandidateConfig = CandidateConfig()
    ranker: RankerConfig = RankerConfig()
    gate: GateConfig = GateConfig()
    # SageMaker's ModelPackageGroupName pattern, held locally too so a name fails here, not after a whole run
    model_package_group: str = Field("ecomrec", pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json_or_path(cls, value: str | None) -> PipelineConfig:
        """``--config`` takes inline JSON, a path to a JSON file, or nothing (defaults)."""
        if not value:
            return cls()
        text = Path(value).read_text() if not value.lstrip().startswith("{") else value
        return cls.model_validate(json.loads(text))

    def settings(self) -> dict[str, str]:
        """``{section.field: value}`` of every field that differs from the defaults, encoded as
        :meth:`with_settings` reads them (a string as is, anything else JSON):
        ``PipelineConfig().with_settings([f"{k}={v}" for k, v in c.settings().items()]) == c``."""
        defaults = _leaves(type(self)().model_dump(mode="json"))
        return {path: value if isinstance(defaults.get(path), str) else json.dumps(value, separators=(",", ":"))
                for path, value in sorted(_leaves(self.model_dump(mode="json")).items())
                if value != defaults.get(path)}

    def with_settings(self, settings: Sequence[str]) -> PipelineConfig:
        """This config with ``section.field=value`` settings applied in order (``--set``): a value is read
        as the field's current type (a string field takes the text as is, others JSON). SageMaker caps a
        container argument at 256 characters, so a step there gets its config as settings, not one JSON."""
        document = self.model_dump(mode="json")
        for setting in settings:
            path, sep, raw = setting.partition("=")
            keys = path.split(".")
            node: Any = document
            for key in keys[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    raise ValueError(f"--set {setting!r}: no config section {path!r}")
            if not sep or not isinstance(node, dict) or keys[-1] not in node:
                raise ValueError(f"--set {setting!r}: expected an existing section.field=value")
            try:
                node[keys[-1]] = raw if isinstance(node[keys[-1]], str) else json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"--set {setting!r}: {raw!r} is not a JSON value") from error
        return type(self).model_validate(document)


def _leaves(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested document's scalar (or empty / list) values by dotted path."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
