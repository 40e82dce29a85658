"""A pipeline slice end to end: the local runner on the tiny deterministic shop, then on the real
Online Retail log. Real Spark (local mode), real CatBoost, real files between the steps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components import schema as s
from components.bundle import load_bundle
from components.config import GateConfig, PipelineConfig, RankerConfig
from components.errors import QualityGateError
from components.registry.local import LocalRegistry
from pipelines.graph import STEP_NAMES
from pipelines.local import SUCCESS_MARKER, run_local

TINY_CONFIG = PipelineConfig(gate=GateConfig(ndcg_at_10_floor=0.0, must_beat_als=False, must_beat_baselines=False))


def _run(raw: Path, output: Path, registry: Path, config: PipelineConfig = TINY_CONFIG,
         resume: bool = True) -> list[str]:
    results = run_local(raw, output, config, resume=resume,
                        step_options={"register": ["--registry", str(registry)]})
    return [r.step for r in results if not r.skipped]


@pytest.mark.usefixtures("spark")
def test_tiny_shop_end_to_end_resume_and_determinism(tiny_raw: Path, tmp_path: Path) -> None:
    output, registry = tmp_path / "run", tmp_path / "registry"
    assert _run(tiny_raw, output, registry) == list(STEP_NAMES)
    for step in STEP_NAMES:
        assert (output / step / SUCCESS_MARKER).is_file()
    for name in (s.EVALUATION_FILE, s.GROUND_TRUTH_FILE, s.RECOMMENDATIONS_FILE):
        assert (output / "evaluation" / name).is_file()
    bundle = load_bundle(output / "bundle" / s.MODEL_ARCHIVE)
    versions = LocalRegistry(registry).list_versions("ecomrec")
    assert [(v.version, v.status) for v in versions] == [(1, "PendingManualApproval")]

    # nothing changed: every step is skipped, nothing registered twice
    assert _run(tiny_raw, output, registry) == []
    # a changed evaluation input reruns that step and everything downstream, not upstream
    (output / "evaluation" / SUCCESS_MARKER).unlink()
    assert _run(tiny_raw, output, registry) == ["evaluation", "bundle", "register"]
    # a full rerun on the same input gives the same model (seeded): the same bundle version
    assert _run(tiny_raw, tmp_path / "again", registry, resume=False) == list(STEP_NAMES)
    assert load_bundle(tmp_path / "again" / "bundle" / s.MODEL_ARCHIVE).version == bundle.version
    # a ranker setting reruns the ranker's steps only: the ETL and ALS outputs still hold
    retuned = TINY_CONFIG.model_copy(update={"ranker": RankerConfig(learning_rate=0.1)})
    assert _run(tiny_raw, output, registry, config=retuned) == ["ranker_data", "train", "evaluation", "bundle",
                                                                 "register"]
    # new raw data (a file more under the same folder) reruns everything
    header = (tiny_raw / s.EVENTS / "part-0.csv").read_text().splitlines()[0]
    (tiny_raw / s.EVENTS / "part-1.csv").write_text(
        header + "\n" + ",".join({s.USER_ID: "u000", s.ITEM_ID: "sku-001", s.EVENT_TYPE: s.VIEW,
                                   s.TIMESTAMP: "2024-05-01T10:00:00", s.QUANTITY: "1", s.PRICE: "3.5",
                                   s.SESSION_ID: "s-new"}.get(c, "") for c in header.split(",")) + "\n")
    assert _run(tiny_raw, output, registry, config=retuned) == list(STEP_NAMES)


@pytest.mark.usefixtures("spark")
def test_failed_gate_registers_nothing_and_says_why(tiny_raw: Path, tmp_path: Path) -> None:
    strict = PipelineConfig(gate=GateConfig(ndcg_at_10_floor=1.0))
    with pytest.raises(QualityGateError, match="below the floor"):
        _run(tiny_raw, tmp_path / "run", tmp_path / "registry", config=strict)
    assert LocalRegistry(tmp_path / "registry").list_versions("ecomrec") == []
    verdict = json.loads((tmp_path / "run" / "register" / "registration.json").read_text())
    assert verdict["gate"]["passed"] is False and "registered" not in verdict


@pytest.mark.slow
def test_online_retail_end_to_end(online_retail_run: Path) -> None:
    """The README's first command, in process: import the real log, run every step, register."""
    from components.evaluation.recompute import recompute_metrics

    output = online_retail_run
    for step in STEP_NAMES:
        assert (output / step / SUCCESS_MARKER).is_file()
    evaluation = json.loads((output / "evaluation" / s.EVALUATION_FILE).read_text())
    metrics = evaluation["ranking_metrics"]
    ndcg = {name: metrics[name]["ndcg_at_10"]["value"] for name in s.RECOMMENDERS}
    # the two-stage model must beat every baseline and ALS on the held-out month
    assert ndcg[s.TWO_STAGE] > max(ndcg[name] for name in (*s.BASELINE_PEERS, s.ALS))
    assert metrics[s.TWO_STAGE]["candidates_per_user"]["value"] <= 200
    # anyone can recompute every metric from the two Parquet files alone
    ground_truth = pd.read_parquet(output / "evaluation" / s.GROUND_TRUTH_FILE)
    recommendations = pd.read_parquet(output / "evaluation" / s.RECOMMENDATIONS_FILE)
    recomputed = recompute_metrics(ground_truth, recommendations, evaluation["data"]["catalog_items"])
    for name in s.RECOMMENDERS:
        for key, value in recomputed["ranking_metrics"][name].items():
            assert metrics[name][key]["value"] == pytest.approx(value["value"], abs=1e-9)
    versions = LocalRegistry(output.parent / "registry").list_versions("ecomrec")
    assert len(versions) == 1 and versions[0].metrics["ranking_metrics"] == metrics
