"""The reference server: recommendations served the way a typical guide sketches it, on the SAME bundle
(same ALS factors, same CatBoost model, same feature values, same candidate count), so the benchmark
compares serving designs, not models.

Per request: ``implicit`` recommend for the ALS candidates, a pandas filter of the feature table for the
user and a merge into a per-request DataFrame, CatBoost ``predict_proba``, a pandas sort. A sync FastAPI
handler (the thread pool), stdlib JSON. Deliberately NOT optimised: it is the baseline of the 30x goal.

    .venv/bin/python benchmarks/serving_reference.py --bundle OUT/bundle/model.tar.gz --port 8090
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's own advice; keeps the baseline fair

import numpy as np
import pandas as pd
import uvicorn
from catboost import CatBoostClassifier
from fastapi import FastAPI, HTTPException

from components import schema as s
from components.bundle import load_bundle


def build_app(bundle_path: str) -> FastAPI:
    from implicit.cpu.als import AlternatingLeastSquares

    bundle = load_bundle(Path(bundle_path))
    features = bundle.feature_names
    categorical = bundle.categorical
    model = CatBoostClassifier()
    model.load_model(str(bundle.model_path))
    als = AlternatingLeastSquares(factors=bundle.user_factors.shape[1])
    als.user_factors = bundle.user_factors.astype(np.float32)
    als.item_factors = bundle.item_factors.astype(np.float32)
    feature_table = bundle.candidates  # one pandas DataFrame, filtered per request
    per_user = np.diff(bundle.candidate_offsets)
    n_candidates = int(np.ceil(per_user[per_user > 0].mean()))  # the same candidate count as ours
    user_index = {u: i for i, u in enumerate(bundle.user_ids.tolist())}
    item_ids = bundle.item_ids
    popular = bundle.popular_items

    app = FastAPI(title="reference recommender")

    @app.get("/recommendations")
    def recommend(user_id: str, top_k: int = 10) -> dict[str, object]:
        if top_k < 1 or top_k > 100:
            raise HTTPException(status_code=422, detail="top_k must be in 1..100")
        if user_id not in user_index:
            return {"user_id": user_id, "items": [{"item_id": str(item_ids[i])} for i in popular[:top_k]]}
        uid = user_index[user_id]
        ids, als_scores = als.recommend(uid, None, N=n_candidates, filter_already_liked_items=False)
        candidates = pd.DataFrame({s.ITEM_IDX: ids, "als_recommend_score": als_scores})
        rows = feature_table[feature_table[s.USER_IDX] == uid]
        frame = candidates.merge(rows, on=s.ITEM_IDX, how="left")
        for column in categorical:
            frame[column] = frame[column].fillna("__missing__").astype(str)
        frame["score"] = model.predict_proba(frame[features])[:, 1]
        top = frame.sort_values("score", ascending=False).head(top_k)
        return {"user_id": user_id,
                "items": [{"item_id": str(item_ids[i]), "score": float(p)}
                          for i, p in zip(top[s.ITEM_IDX], top["score"], strict=True)]}

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    uvicorn.run(build_app(args.bundle), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
