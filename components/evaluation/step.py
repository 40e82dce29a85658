"""Graph step ``evaluation``: EVALUATION.md on the test fold.

Writes (OUTPUT/evaluation/): evaluation.json, ground_truth.parquet, recommendations.parquet, report.html
(+ PNGs beside it)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components import schema as s
from components.errors import DataContractError
from components.evaluation.evaluate import EvaluationResult, evaluate, load_inputs, metrics_table
from components.evaluation.report import write_report
from components.stepargs import parse_step_args

INPUTS = ("etl", "als", "ranker_data", "train")
log = logging.getLogger(__name__)


def non_finite(node: Any, path: str = "") -> list[str]:
    """The dotted paths of NaN / infinite numbers in a JSON-shaped document."""
    if isinstance(node, float):
        return [] if math.isfinite(node) else [path or "(root)"]
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in non_finite(value, f"{path}.{key}" if path else str(key))]
    if isinstance(node, list | tuple):
        return [p for i, value in enumerate(node) for p in non_finite(value, f"{path}[{i}]")]
    return []


def write_outputs(result: EvaluationResult, training_report: dict[str, object], output: Path) -> None:
    # json.dumps would write NaN, which is not JSON: SageMaker's JsonGet (the quality gate) cannot read it
    bad = non_finite(result.evaluation)
    if bad:
        raise DataContractError(f"{s.EVALUATION_FILE} would hold non-finite numbers at {', '.join(bad[:10])}")
    output.mkdir(parents=True, exist_ok=True)
    (output / s.EVALUATION_FILE).write_text(json.dumps(result.evaluation, indent=2, allow_nan=False))
    result.ground_truth.to_parquet(output / s.GROUND_TRUTH_FILE, index=False)
    result.recommendations.to_parquet(output / s.RECOMMENDATIONS_FILE, index=False)
    write_report(result.evaluation, result.recall_curves, result.feature_importance, training_report, output)


def run(etl: Path, als: Path, ranker_data: Path, train: Path, output: Path) -> EvaluationResult:
    started = time.perf_counter()
    inputs = load_inputs(etl, als, ranker_data, train)
    result = evaluate(inputs)
    write_outputs(result, inputs.training_report, output)
    evaluation = result.evaluation
    for segment in ("warm", "cold", "all"):
        if any(evaluation["segments"][segment].values()):
            log.info("evaluation, %s users:\n%s", segment, metrics_table(evaluation, segment))
    two_stage = evaluation["ranking_metrics"].get(s.TWO_STAGE, {})
    headline = evaluation["headline"]
    log.info("two_stage candidate recall %.4f with %.1f candidates/user; NDCG@10 %.4f = %s x the best of "
             "popular and repurchase, %s x the strongest baseline (%s), %s x als; exclude_purchased: %s x als "
             "(%.1f s)",
             two_stage.get("candidate_recall", {}).get("value", float("nan")),
             two_stage.get("candidates_per_user", {}).get("value", float("nan")), headline["two_stage"],
             _ratio(headline["two_stage_over_best_baseline"]), _ratio(headline["two_stage_over_strongest_baseline"]),
             headline["strongest_baseline"], _ratio(headline["two_stage_over_als"]),
             _ratio(headline["exclude_purchased"]["two_stage_over_als"]), time.perf_counter() - started)
    return result


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_step_args(argv, "evaluation", INPUTS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.inputs["etl"], args.inputs["als"], args.inputs["ranker_data"], args.inputs["train"], args.output)


if __name__ == "__main__":
    main()
