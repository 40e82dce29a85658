"""The quality gate before registration, on the same evaluation.json keys SageMaker's JsonGet reads.

One rule for every runner (local register step, SageMaker's ConditionStep, Kubeflow's gate component):
- two_stage NDCG@10 >= ``ndcg_at_10_floor``;
- with ``must_beat_als``, two_stage NDCG@10 > als NDCG@10;
- with ``must_beat_baselines``, ``gate.two_stage_over_strongest_baseline`` >= 1 + ``baseline_margin``: two_stage
  against the strongest of ``schema.BASELINE_PEERS`` measured in the same run (:func:`baseline_comparison`
  writes that block into evaluation.json, so a ConditionStep compares one number with a constant).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components import schema as s
from components.config import GateConfig
from components.errors import QualityGateError

GATE_METRIC = s.metric_key("ndcg", 10)
# two_stage / strongest baseline when the strongest scores 0: any positive two_stage clears every margin.
RATIO_WHEN_BASELINE_ZERO = 1e9


def json_value(evaluation: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted JsonGet path through evaluation.json."""
    node: Any = evaluation
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise QualityGateError(f"evaluation.json has no {path!r}")
        node = node[key]
    return node


def metric_value(evaluation: Mapping[str, Any], recommender: str, metric: str, k: int) -> float:
    """Follow ``schema.metric_json_path`` through evaluation.json (the JsonGet path, one source)."""
    return float(json_value(evaluation, s.metric_json_path(recommender, metric, k)))


def baseline_comparison(ranking_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """evaluation.json's ``gate`` block: two_stage's NDCG@10 against the strongest baseline peer of the
    run (ties: the earlier in ``schema.BASELINE_PEERS``)."""
    document = {"ranking_metrics": ranking_metrics}
    peers = {name: metric_value(document, name, "ndcg", 10) for name in s.BASELINE_PEERS
             if name in ranking_metrics}
    if not peers:
        raise QualityGateError(f"ranking_metrics has none of the baselines {list(s.BASELINE_PEERS)}")
    strongest = max(peers, key=lambda name: peers[name])
    two_stage, bar = metric_value(document, s.TWO_STAGE, "ndcg", 10), peers[strongest]
    ratio = two_stage / bar if bar > 0 else RATIO_WHEN_BASELINE_ZERO if two_stage > 0 else 1.0
    return {"metric": GATE_METRIC, "two_stage_value": two_stage, "strongest_baseline": strongest,
            "strongest_baseline_value": bar, "two_stage_over_strongest_baseline": ratio, "baselines": peers}


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    two_stage_ndcg_at_10: float
    als_ndcg_at_10: float
    floor: float
    reasons: list[str] = field(default_factory=list)
    strongest_baseline: str | None = None
    strongest_baseline_ndcg_at_10: float | None = None
    two_stage_over_strongest_baseline: float | None = None


def check_gate(evaluation: Mapping[str, Any], gate: GateConfig) -> GateVerdict:
    two_stage = metric_value(evaluation, s.TWO_STAGE, "ndcg", 10)
    als = metric_value(evaluation, s.ALS, "ndcg", 10)
    reasons = []
    if two_stage < gate.ndcg_at_10_floor:
        reasons.append(f"two_stage ndcg_at_10 {two_stage:.4f} is below the floor {gate.ndcg_at_10_floor:.4f}")
    if gate.must_beat_als and not two_stage > als:
        reasons.append(f"two_stage ndcg_at_10 {two_stage:.4f} does not beat als {als:.4f}")
    strongest = bar = ratio = None
    if gate.must_beat_baselines:
        ratio = float(json_value(evaluation, s.GATE_RATIO_PATH))
        strongest = str(json_value(evaluation, s.GATE_STRONGEST_PATH))
        bar = float(json_value(evaluation, s.GATE_STRONGEST_VALUE_PATH))
        needed = 1.0 + gate.baseline_margin
        if not ratio >= needed:
            lead = f"leads by {bar - two_stage:.4f}" if bar >= two_stage else f"trails by {two_stage - bar:.4f}"
            reasons.append(f"baseline {strongest} ({bar:.4f} ndcg_at_10) {lead}: two_stage ({two_stage:.4f}) is "
                           f"{ratio:.3f}x it, the gate needs >= {needed:.3f}x (baseline_margin "
                           f"{gate.baseline_margin})")
    return GateVerdict(not reasons, two_stage, als, gate.ndcg_at_10_floor, reasons, strongest, bar, ratio)
