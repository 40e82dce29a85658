"""Pipeline slice etl -> als -> ranker_data -> train -> evaluation through the local runner on the tiny_raw
shop (real Spark, real ALS, real CatBoost): every file contract between them holds end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from components import schema as s
from components.config import AlsConfig, PipelineConfig, RankerConfig
from components.evaluation.recompute import recompute_metrics
from components.ranker.model import FeatureSpec, Ranker
from pipelines.local import run_local

SLICE = ("etl", "als", "ranker_data", "train", "evaluation")


@pytest.mark.spark
def test_pipeline_slice_on_tiny_raw(spark: object, tiny_raw: Path, tmp_path: Path) -> None:
    config = PipelineConfig(als=AlsConfig(factors=8, iterations=3),
                            ranker=RankerConfig(iterations=40, negatives_per_user=20))
    out = tmp_path / "run"
    results = run_local(tiny_raw, out, config, resume=False, only=SLICE)
    assert [r.step for r in results] == list(SLICE)

    spec = FeatureSpec.load(out / "ranker_data" / s.FEATURE_SPEC_FILE)
    features = json.loads((out / "etl" / s.FEATURES_FILE).read_text())
    assert s.UI_PURCHASE_DAYS in spec.features
    assert set(spec.categorical) <= set(features["categorical"])
    ranker = Ranker.load(out / "train" / s.MODEL_ARCHIVE, spec=spec)
    scoring = pd.read_parquet(out / "ranker_data" / s.SCORING_DIR)
    assert len(ranker.score(scoring.head(50))) == min(50, len(scoring))

    evaluation = json.loads((out / "evaluation" / s.EVALUATION_FILE).read_text())
    assert set(evaluation["ranking_metrics"]) == set(s.RECOMMENDERS)
    recomputed = recompute_metrics(pd.read_parquet(out / "evaluation" / s.GROUND_TRUTH_FILE),
                                   pd.read_parquet(out / "evaluation" / s.RECOMMENDATIONS_FILE),
                                   evaluation["data"]["catalog_items"])
    for segment, blocks in recomputed["segments"].items():
        for name, block in blocks.items():
            for key, entry in block.items():
                expected = evaluation["segments"][segment][name][key]["value"]
                assert entry["value"] == pytest.approx(expected, abs=1e-9), (segment, name, key)
    windows = json.loads((out / "etl" / s.WINDOWS_FILE).read_text())
    assert evaluation["split"]["test_start"] == windows["test_start"]
    assert (out / "evaluation" / s.REPORT_FILE).exists()
