"""The quality gate before registration, on the same evaluation.json keys SageMaker's JsonGet reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components import schema as s
from components.config import GateConfig
from components.errors import QualityGateError


def metric_value(evaluation: dict[str, Any], recommender: str, metric: str, k: int) -> float:
    """Follow ``schema.metric_json_path`` through evaluation.json (the JsonGet path, one source)."""
    node: Any = evaluation
    path = s.metric_json_path(recommender, metric, k)
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise QualityGateError(f"evaluation.json has no {path!r}")
        node = node[key]
    return float(node)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    two_stage_ndcg_at_10: float
    als_ndcg_at_10: float
    floor: float
    reasons: list[str] = field(default_factory=list)


def check_gate(evaluation: dict[str, Any], gate: GateConfig) -> GateVerdict:
    two_stage = metric_value(evaluation, s.TWO_STAGE, "ndcg", 10)
    als = metric_value(evaluation, s.ALS, "ndcg", 10)
    reasons = []
    if two_stage < gate.ndcg_at_10_floor:
        reasons.append(f"two_stage ndcg_at_10 {two_stage:.4f} is below the floor {gate.ndcg_at_10_floor:.4f}")
    if gate.must_beat_als and not two_stage > als:
        reasons.append(f"two_stage ndcg_at_10 {two_stage:.4f} does not beat als {als:.4f}")
    return GateVerdict(not reasons, two_stage, als, gate.ndcg_at_10_floor, reasons)
