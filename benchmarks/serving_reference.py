"""The reference server: recommendations served the way a typical guide sketches it, on the SAME bundle
(same ALS factors, same CatBoost model, same feature values, same candidate count), so the benchmark
compares serving designs, not models.

Per request: ``implicit`` recommend for the ALS candidates, a per-request pandas DataFrame of their
features (item table merged, the user's user-item rows filtered and merged, user columns assigned),
CatBoost ``predict_proba``, a pandas sort. A sync FastAPI handler (the thread pool), stdlib JSON.
Deliberately NOT optimised: it is the baseline of the 30x goal. ``--features prejoined`` is a stronger
variant (one filter of the bundle's already joined rows), reported for context.

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


def _groups(features: list[str]) -> tuple[list[str], list[str], list[str]]:
    """User, item and user-item feature columns, by the ETL's name prefixes."""
    user = [f for f in features if f.startswith("u_")]
    item = [f for f in features if f.startswith("i_")]
    pair = [f for f in features if f not in set(user) | set(item)]
    return user, item, pair


def build_app(bundle_path: str, style: str = "tables") -> FastAPI:
    from implicit.cpu.als import AlternatingLeastSquares

    bundle = load_bundle(Path(bundle_path))
    features = bundle.feature_names
    categorical = bundle.categorical
    model = CatBoostClassifier()
    model.load_model(str(bundle.model_path))
    als = AlternatingLeastSquares(factors=bundle.user_factors.shape[1])
    als.user_factors = bundle.user_factors.astype(np.float32)
    als.item_factors = bundle.item_factors.astype(np.float32)
    table = pd.concat(list(bundle.iter_candidate_parts()), ignore_index=True)  # a guide's service holds it all
    user_cols, item_cols, pair_cols = _groups(features)
    # The feature tables a guide's service keeps in memory (here cut back out of the bundle's joined rows).
    user_features = table.groupby(s.USER_IDX)[user_cols].first()
    item_features = table.groupby(s.ITEM_IDX)[item_cols].first().reset_index()
    user_item_features = table[[s.USER_IDX, s.ITEM_IDX, *pair_cols]]
    per_user = table.groupby(s.USER_IDX).size().to_numpy()
    n_candidates = int(np.ceil(per_user[per_user > 0].mean()))  # the same candidate count as ours
    user_index = {u: i for i, u in enumerate(bundle.user_ids.tolist())}
    item_ids = bundle.item_ids
    popular = bundle.popular_items

    def features_of(uid: int, ids: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame({s.ITEM_IDX: ids})
        if style == "prejoined":  # one filter of the joined table: a stronger baseline than a guide's
            return frame.merge(table[table[s.USER_IDX] == uid], on=s.ITEM_IDX, how="left")
        frame = frame.merge(item_features, on=s.ITEM_IDX, how="left")
        pairs = user_item_features[user_item_features[s.USER_IDX] == uid].drop(columns=[s.USER_IDX])
        frame = frame.merge(pairs, on=s.ITEM_IDX, how="left")
        user_row = user_features.loc[uid] if uid in user_features.index else None
        for column in user_cols:
            frame[column] = user_row[column] if user_row is not None else np.nan
        return frame

    app = FastAPI(title="reference recommender")

    @app.get("/recommendations")
    def recommend(user_id: str, top_k: int = 10) -> dict[str, object]:
        if top_k < 1 or top_k > 100:
            raise HTTPException(status_code=422, detail="top_k must be in 1..100")
        if user_id not in user_index:
            return {"user_id": user_id, "items": [{"item_id": str(item_ids[i])} for i in popular[:top_k]]}
        uid = user_index[user_id]
        ids, _ = als.recommend(uid, None, N=n_candidates, filter_already_liked_items=False)
        frame = features_of(uid, ids)
        for column in categorical:
            frame[column] = frame[column].fillna("__missing__").astype(str)
        # A matrix, not the frame: the built-in algorithm's model knows its features by position only.
        frame["score"] = model.predict_proba(frame[features].to_numpy(dtype=object))[:, 1]
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
    parser.add_argument("--features", choices=["tables", "prejoined"], default="tables",
                        help="tables: user, item and user-item tables merged per request (the guide's way); "
                             "prejoined: one filter of the bundle's joined rows (a stronger baseline)")
    args = parser.parse_args()
    uvicorn.run(build_app(args.bundle, args.features), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
