"""Parity: the service's top-10 over HTTP equals the two_stage lists in evaluation/recommendations.parquet
of the very run that built its bundle, for up to 200 evaluated users (warm and cold). Real pipeline
(local Spark, real CatBoost) on the tiny deterministic shop; on Online Retail with ``-m slow`` (or, with
ECOMREC_RUN_DIR set, on an existing run's output folder, e.g. the lead's final run)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.serving.app import create_app
from components.serving.settings import ServingSettings
from components.serving.testing import serve_in_thread

K = 10


def assert_parity(run: Path, work: Path, n_users: int = 200) -> int:
    """Compare served and evaluated top-K for ``n_users`` evaluated users; return how many were compared."""
    recommendations = pd.read_parquet(run / "evaluation" / s.RECOMMENDATIONS_FILE)
    two_stage = recommendations[(recommendations[s.RECOMMENDER] == s.TWO_STAGE) & (recommendations[s.RANK] <= K)]
    expected = {str(u): g.sort_values(s.RANK) for u, g in two_stage.groupby(s.USER_ID)}
    users = sorted(expected)
    picked = [users[i] for i in np.unique(np.linspace(0, len(users) - 1, min(n_users, len(users))).astype(int))]
    settings = ServingSettings(model=str(run / "bundle" / s.MODEL_ARCHIVE), watch_interval_s=0, work_dir=work)
    mismatches: list[str] = []
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        for user_id in picked:
            body = client.get("/recommendations", params={"user_id": user_id, "top_k": K}).json()
            served = [item["item_id"] for item in body["items"]]
            wanted = expected[user_id][s.ITEM_ID].astype(str).tolist()
            if served != wanted:
                mismatches.append(f"{user_id}: served {served} != evaluated {wanted}")
                continue
            # Scores agree too where the ranker scored the item (top-up items carry no ranker score).
            ranker_scored = [item["score"] for item in body["items"]][: len(wanted)]
            evaluated = expected[user_id][s.SCORE].to_numpy()
            for got, want in zip(ranker_scored, evaluated, strict=True):
                if got is not None and not np.isnan(want) and not body["fallback"]:
                    assert got == pytest.approx(want, rel=1e-6), user_id
    assert mismatches == [], f"{len(mismatches)} of {len(picked)} users differ:\n" + "\n".join(mismatches[:10])
    return len(picked)


@pytest.mark.spark
def test_served_top10_equals_evaluated_two_stage_on_the_tiny_shop(tiny_run: Path, tmp_path: Path) -> None:
    assert assert_parity(tiny_run, tmp_path / "work") >= 10


@pytest.mark.slow
@pytest.mark.spark
def test_served_top10_equals_evaluated_two_stage_on_online_retail(online_retail_run: Path, tmp_path: Path) -> None:
    assert assert_parity(online_retail_run, tmp_path / "work") == 200
