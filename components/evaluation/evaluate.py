"""EVALUATION.md on the test fold: the six recommenders, their metrics, and the files that let anyone
recompute them. Pure functions over loaded frames; ``step.py`` reads the inputs and writes the outputs."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components import schema as s
from components.candidates import tifu
from components.candidates.itemknn import BM25_B, BM25_K1, K_NEIGHBOURS, ItemKnn
from components.errors import DataContractError
from components.evaluation.metrics import mean_recall
from components.evaluation.recommenders import (
    als_lists,
    popular_lists,
    repurchase_lists,
    scored_lists,
    two_stage_lists,
    with_cold_policy,
)
from components.evaluation.recompute import SEGMENTS, metric_block
from components.ranker.io import read_json, read_table
from components.ranker.model import SCORE_BATCH_ROWS, FeatureSpec, PopularFallback, Ranker
from components.ranker.train import report_from_model
from components.registry.gate import baseline_comparison

log = logging.getLogger(__name__)

K_MAX = max(s.KS)
SPLIT_KEYS = ("test_start", "label_start", "test_days", "label_days", "end")
ALL = "all"
BASELINES = (s.POPULAR, s.REPURCHASE)  # the headline ratio's denominator: the best of these


@dataclass(frozen=True)
class EvaluationInputs:
    windows: dict[str, Any]
    user_ids: pd.DataFrame  # user_id, user_idx
    item_ids: pd.DataFrame  # item_id, item_idx
    targets: pd.DataFrame  # user_idx, item_idx (test window purchases)
    target_users: pd.DataFrame  # user_idx, segment
    item_features: pd.DataFrame  # test fold
    user_item_features: pd.DataFrame  # test fold
    candidates: pd.DataFrame  # test fold, ALS step output (warm target users' rows)
    scored: pd.DataFrame  # user_idx, item_idx, score: the ranker on the warm target users' test-fold rows
    training_report: dict[str, Any]
    purchases: pd.DataFrame  # user_idx, item_idx, timestamp, session_id: purchase events before test_start
    interactions: pd.DataFrame  # test fold: user_idx, item_idx, weight (itemknn's history)
    train_targets: pd.DataFrame  # train fold: user_idx, item_idx (label-window purchases: tifu_knn's tuning)


@dataclass(frozen=True)
class EvaluationResult:
    evaluation: dict[str, Any]
    ground_truth: pd.DataFrame  # user_id, item_id, segment
    recommendations: pd.DataFrame  # recommender, user_id, rank, item_id, score
    recall_curves: dict[str, list[float]]  # generator order -> recall@N for N = 1..len
    feature_importance: dict[str, float]


def load_inputs(etl: Path, als: Path, ranker_data: Path, train: Path) -> EvaluationInputs:
    fold = etl / s.FOLDS_DIR / s.TEST_FOLD
    spec = FeatureSpec.load(ranker_data / s.FEATURE_SPEC_FILE)
    report_path = train / s.TRAINING_REPORT_FILE
    target_users = read_table(fold / s.TARGET_USERS, [s.USER_IDX, s.SEGMENT])
    # Only warm target users have candidates and history worth reading: at scale the test fold's
    # candidate, scoring and user_item rows of every user would not fit in memory.
    warm_users = target_users.loc[target_users[s.SEGMENT] == s.WARM, s.USER_IDX].unique().tolist()
    warm = [(s.USER_IDX, "in", warm_users)]
    ranker = Ranker.load(train / s.MODEL_ARCHIVE, spec=spec)
    windows = read_json(etl / s.WINDOWS_FILE)
    return EvaluationInputs(
        windows=windows,
        user_ids=read_table(etl / s.ID_MAPS_DIR / s.USERS, [s.USER_ID, s.USER_IDX]),
        item_ids=read_table(etl / s.ID_MAPS_DIR / s.ITEMS, [s.ITEM_ID, s.ITEM_IDX]),
        targets=read_table(fold / s.TARGETS, [s.USER_IDX, s.ITEM_IDX]),
        target_users=target_users,
        item_features=read_table(fold / s.ITEM_FEATURES),
        # Cold users have no history rows; the repurchase lists and exclude_purchased read only these.
        user_item_features=read_table(fold / s.USER_ITEM_FEATURES,
                                      [s.USER_IDX, s.ITEM_IDX, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST],
                                      filters=warm),
        candidates=read_table(als / s.FOLDS_DIR / s.TEST_FOLD / s.CANDIDATES, filters=warm),
        scored=score_candidates(ranker_data / s.SCORING_WARM_DIR, ranker, warm_users),
        # SageMaker's built-in algorithm leaves only the model: its report is read from the model
        training_report=(read_json(report_path) if report_path.exists()
                         else report_from_model(ranker.model, spec.features)),
        purchases=tifu.read_purchases(etl / s.CLEAN_DIR / s.EVENTS, windows["test_start"]),
        interactions=read_table(fold / s.INTERACTIONS, [s.USER_IDX, s.ITEM_IDX, s.WEIGHT]),
        train_targets=read_table(etl / s.FOLDS_DIR / s.TRAIN_FOLD / s.TARGETS, [s.USER_IDX, s.ITEM_IDX]),
    )


def score_candidates(directory: Path, ranker: Ranker, users: Sequence[int]) -> pd.DataFrame:
    """user_idx, item_idx, score (the ranker's P(purchase)) of ``users``' rows in a scoring folder, read and
    scored a batch at a time so that only the scores stay in memory (at 10M events the warm users' feature
    rows alone took several GB)."""
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        raise DataContractError(f"table not found: no part-*.parquet in {directory}")
    wanted = np.asarray(users, dtype=np.int64)
    scored = [pd.DataFrame({s.USER_IDX: pd.Series(dtype=np.int32), s.ITEM_IDX: pd.Series(dtype=np.int32),
                            s.SCORE: pd.Series(dtype=np.float64)})]
    for part in parts:
        try:
            batches = pq.ParquetFile(part).iter_batches(batch_size=SCORE_BATCH_ROWS)
            for batch in batches:
                rows = batch.to_pandas()
                rows = rows.loc[np.isin(rows[s.USER_IDX].to_numpy(), wanted)]
                if len(rows):
                    scored.append(rows[[s.USER_IDX, s.ITEM_IDX]].assign(**{s.SCORE: ranker.score(rows)}))
        except (OSError, ValueError, pa.ArrowException) as error:
            raise DataContractError(f"cannot read scoring rows {part}: {error}") from error
    return pd.concat(scored, ignore_index=True)


def _id_lookup(frame: pd.DataFrame, idx: str, ident: str, table: str) -> np.ndarray:
    """Array a with a[idx] = id; the id maps are dense 0-based by contract."""
    values = frame[idx].to_numpy(dtype=np.int64)
    dense = not len(values) or (values.min() == 0 and values.max() == len(values) - 1
                                 and len(np.unique(values)) == len(values))
    if not dense:
        raise DataContractError(f"id map {table} is not dense 0..{len(values) - 1} in {idx}")
    out = np.empty(len(values), dtype=object)
    out[values] = frame[ident].astype(str).to_numpy()
    return out


def _as_dict(lists: pd.DataFrame) -> dict[Hashable, list[Hashable]]:
    ordered = lists.sort_values([s.USER_IDX, s.RANK], kind="mergesort")
    return {int(u): rows.tolist() for u, rows in ordered.groupby(s.USER_IDX, sort=False)[s.ITEM_IDX]}


def _truth(targets: pd.DataFrame, users: pd.Series) -> dict[Hashable, set[Hashable]]:
    chosen = targets.loc[targets[s.USER_IDX].isin(users)]
    return {int(u): set(items.tolist()) for u, items in chosen.groupby(s.USER_IDX)[s.ITEM_IDX]}


def recall_curve(ordered: pd.DataFrame, truth: Mapping[Hashable, set[Hashable]], max_n: int) -> list[float]:
    """Mean recall@N over the users of ``truth`` for N = 1..max_n; ``ordered`` holds each user's
    candidates best first (user_idx, item_idx)."""
    if not truth:
        return []
    position = ordered.groupby(s.USER_IDX, sort=False).cumcount().to_numpy() + 1
    users = ordered[s.USER_IDX].to_numpy(dtype=np.int64)
    items = ordered[s.ITEM_IDX].to_numpy(dtype=np.int64)
    size = {u: len(r) for u, r in truth.items()}
    hit = np.fromiter((int(i) in truth.get(int(u), ()) for u, i in zip(users, items, strict=True)),
                      dtype=bool, count=len(users))
    weights = np.array([1.0 / size[int(u)] for u in users[hit]], dtype=np.float64)
    gained = np.bincount(np.minimum(position[hit], max_n + 1), weights=weights, minlength=max_n + 2)
    return (np.cumsum(gained)[1 : max_n + 1] / len(truth)).tolist()


def evaluate(inputs: EvaluationInputs, *, k: int = K_MAX) -> EvaluationResult:
    users = inputs.target_users.drop_duplicates(s.USER_IDX)
    unknown = set(users[s.SEGMENT].unique()) - {s.WARM, s.COLD}
    if unknown:
        raise DataContractError(f"target_users has unknown segments {sorted(unknown)}")
    warm_users = users.loc[users[s.SEGMENT] == s.WARM, s.USER_IDX].to_numpy(dtype=np.int64)
    cold_users = users.loc[users[s.SEGMENT] == s.COLD, s.USER_IDX].to_numpy(dtype=np.int64)
    if not len(warm_users):  # else the gate block below fails as "evaluation.json has no ranking_metrics..."
        raise DataContractError(f"target_users has no {s.WARM} user (none of the {len(users)} test-window buyers "
                                "has history before test_start): the headline and the quality gate are measured "
                                "on warm users")
    fallback = PopularFallback.from_item_features(inputs.item_features)
    log.info("evaluating %d users (%d warm, %d cold), popular list of %d items", len(users), len(warm_users),
             len(cold_users), len(fallback.item_idx))

    scored = inputs.scored.loc[inputs.scored[s.USER_IDX].isin(warm_users)].reset_index(drop=True)
    log.info("ranker scored %d candidate rows of %d warm users", len(scored), scored[s.USER_IDX].nunique())
    n_users, n_items = len(inputs.user_ids), len(inputs.item_ids)

    # tifu_knn: settings chosen on the train fold (history before label_start, its label window's
    # purchases), never on the test window; then refit on everything before test_start.
    basket_rows = tifu.baskets(inputs.purchases)
    choice = tifu.choose(tifu.before(basket_rows, inputs.windows["label_start"]), inputs.train_targets,
                         n_users, n_items)
    tifu_model = tifu.TifuModel(basket_rows, warm_users, n_users, n_items, choice.params)
    itemknn = ItemKnn(inputs.interactions, n_users, n_items)

    def build(exclude: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
        cold = popular_lists(cold_users, fallback, k, exclude=exclude)
        mask = tifu.pairs_matrix(exclude, n_users, n_items) if exclude is not None else None
        warm = {
            s.POPULAR: popular_lists(warm_users, fallback, k, exclude=exclude),
            s.REPURCHASE: repurchase_lists(warm_users, inputs.user_item_features, fallback, k,
                                           exclude=exclude),
            s.ALS: als_lists(warm_users, inputs.candidates, fallback, k, exclude=exclude),
            s.TWO_STAGE: two_stage_lists(warm_users, scored, fallback, k, exclude=exclude),
            s.TIFU_KNN: scored_lists(warm_users, tifu_model.recommend(k, exclude=mask), fallback, k,
                                     exclude=exclude),
            s.ITEMKNN: scored_lists(warm_users, itemknn.recommend(warm_users, k, exclude=mask), fallback, k,
                                    exclude=exclude),
        }
        return {name: with_cold_policy(lists, cold) for name, lists in warm.items()}

    lists = build(None)
    catalog_items = len(inputs.item_ids)
    truth = {
        s.WARM: _truth(inputs.targets, pd.Series(warm_users)),
        s.COLD: _truth(inputs.targets, pd.Series(cold_users)),
    }
    truth[ALL] = {**truth[s.WARM], **truth[s.COLD]}
    missing_truth = len(users) - len(truth[ALL])
    if missing_truth:
        raise DataContractError(f"{missing_truth} target_users have no targets (every one must have >= 1)")
    as_dicts = {name: _as_dict(frame) for name, frame in lists.items()}
    segments = {segment: {name: metric_block(per_user, truth[segment], catalog_items)
                          for name, per_user in as_dicts.items()} for segment in SEGMENTS}

    # Candidate recall: the ranker's ceiling, over its whole candidate list.
    candidate_items: dict[Hashable, set[Hashable]] = {
        int(u): set(v.tolist()) for u, v in scored.groupby(s.USER_IDX)[s.ITEM_IDX]}
    for segment in SEGMENTS:
        if not truth[segment]:
            continue
        block = segments[segment][s.TWO_STAGE]
        block["candidate_recall"] = {"value": mean_recall(candidate_items, truth[segment])}
        counts = [len(candidate_items.get(u, set())) for u in truth[segment]]
        block["candidates_per_user"] = {"value": float(np.mean(counts))}

    # exclude_purchased: lists without items the user bought before the cut, judged on new items only.
    purchased = inputs.user_item_features.loc[
        inputs.user_item_features[s.UI_PURCHASE_DAYS].fillna(0) > 0, [s.USER_IDX, s.ITEM_IDX]]
    purchased = purchased.loc[purchased[s.USER_IDX].isin(users[s.USER_IDX])]
    new_truth: dict[Hashable, set[Hashable]] = {}
    bought: dict[Hashable, set[Hashable]] = {
        int(u): set(v.tolist()) for u, v in purchased.groupby(s.USER_IDX)[s.ITEM_IDX]}
    for user, items in truth[s.WARM].items():
        fresh = items - bought.get(user, set())
        if fresh:
            new_truth[user] = fresh
    excluded_lists = {name: _as_dict(frame) for name, frame in build(purchased).items()}
    exclude_block = {name: metric_block(per_user, new_truth, catalog_items)
                     for name, per_user in excluded_lists.items()}

    # Curves over warm users: recall@N of the candidate list in the ranker's and in ALS's order.
    max_n = int(scored.groupby(s.USER_IDX).size().max()) if len(scored) else 0
    by_ranker = scored.sort_values([s.USER_IDX, s.SCORE, s.ITEM_IDX], ascending=[True, False, True],
                                   kind="mergesort")
    warm_candidates = inputs.candidates.loc[inputs.candidates[s.USER_IDX].isin(warm_users)]
    als_key = warm_candidates[s.ALS_RANK].where(warm_candidates[s.ALS_RANK] > 0, np.iinfo(np.int32).max)
    by_als = warm_candidates.assign(_key=als_key).sort_values([s.USER_IDX, "_key", s.ITEM_IDX],
                                                              kind="mergesort")
    curves = {"ranker": recall_curve(by_ranker, truth[s.WARM], max_n),
              "als_then_rest": recall_curve(by_als, truth[s.WARM], max_n)}

    user_id_of = _id_lookup(inputs.user_ids, s.USER_IDX, s.USER_ID, "users")
    item_id_of = _id_lookup(inputs.item_ids, s.ITEM_IDX, s.ITEM_ID, "items")
    segment_of = users.set_index(s.USER_IDX)[s.SEGMENT]
    gt = inputs.targets.loc[inputs.targets[s.USER_IDX].isin(users[s.USER_IDX])].drop_duplicates()
    gt = gt.sort_values([s.USER_IDX, s.ITEM_IDX], kind="mergesort")
    ground_truth = pd.DataFrame({
        s.USER_ID: user_id_of[gt[s.USER_IDX].to_numpy()],
        s.ITEM_ID: item_id_of[gt[s.ITEM_IDX].to_numpy()],
        s.SEGMENT: gt[s.USER_IDX].map(segment_of).to_numpy(),
    })
    frames = []
    for name in s.RECOMMENDERS:
        frame = lists[name].sort_values([s.USER_IDX, s.RANK], kind="mergesort")
        frames.append(pd.DataFrame({
            s.RECOMMENDER: name,
            s.USER_ID: user_id_of[frame[s.USER_IDX].to_numpy()],
            s.RANK: frame[s.RANK].to_numpy(dtype=np.int32),
            s.ITEM_ID: item_id_of[frame[s.ITEM_IDX].to_numpy()],
            s.SCORE: frame[s.SCORE].to_numpy(dtype=np.float64),
        }))
    recommendations = pd.concat(frames, ignore_index=True)

    ranking = segments[s.WARM]

    def ndcg_at_10(name: str, blocks: Mapping[str, Any] = ranking) -> float:
        return float(blocks.get(name, {}).get(s.metric_key("ndcg", 10), {}).get("value", 0.0))

    def ratio(a: float, b: float) -> float | None:
        return a / b if b > 0 else None

    # The model-free pair (EVALUATION.md's first bar), and the strongest simple peer: the bar a trained
    # model must clear, which the quality gate reads from the gate block. ALS is the first stage, beside.
    baseline = max(ndcg_at_10(name) for name in BASELINES)
    two_stage_ndcg, als_ndcg = ndcg_at_10(s.TWO_STAGE), ndcg_at_10(s.ALS)
    gate = baseline_comparison(ranking)
    new_two_stage, new_als = ndcg_at_10(s.TWO_STAGE, exclude_block), ndcg_at_10(s.ALS, exclude_block)
    label_start, test_start = inputs.windows["label_start"], inputs.windows["test_start"]
    evaluation: dict[str, Any] = {
        "ranking_metrics": ranking,
        "segments": segments,
        "exclude_purchased": {"ranking_metrics": exclude_block, "users": len(new_truth),
                              "note": "lists exclude items bought before the cut; ground truth = warm users' "
                                      "test items they had not bought before"},
        "users": {"evaluated": len(users), s.WARM: len(warm_users), s.COLD: len(cold_users),
                  "warm_with_candidates": int(sum(1 for u in truth[s.WARM] if u in candidate_items))},
        "split": {key: inputs.windows[key] for key in SPLIT_KEYS if key in inputs.windows},
        "data": {
            "catalog_items": catalog_items,
            "test_purchases": len(ground_truth),
            "test_items": int(ground_truth[s.ITEM_ID].nunique()),
            "popular_items": len(fallback.item_idx),
            "scored_candidates": len(scored),
            "k": list(s.KS),
            "list_length": k,
        },
        "headline": {
            "metric": s.metric_key("ndcg", 10),
            "two_stage": two_stage_ndcg,
            "baselines": list(BASELINES),
            "best_baseline": baseline,
            "two_stage_over_best_baseline": ratio(two_stage_ndcg, baseline),
            "strongest_baseline": gate["strongest_baseline"],
            "strongest_baseline_value": gate["strongest_baseline_value"],
            "two_stage_over_strongest_baseline": ratio(two_stage_ndcg, gate["strongest_baseline_value"]),
            "als": als_ndcg,
            "two_stage_over_als": ratio(two_stage_ndcg, als_ndcg),
            "exclude_purchased": {"two_stage": new_two_stage, "als": new_als,
                                  "two_stage_over_als": ratio(new_two_stage, new_als)},
        },
        "gate": gate,
        s.TIFU_KNN: {
            "paper": "Hu, He, Gao & Zhang, SIGIR 2020 (TIFU-KNN)",
            "basket": "one user's purchases in one session where the log has one, else on one UTC day",
            "params": asdict(choice.params),
            "chosen_on": {"fold": s.TRAIN_FOLD, "history_before": label_start,
                          "targets": f"purchases in [{label_start}, {test_start}) (the train fold's label "
                                     "window; never the test window)",
                          "metric": s.metric_key("ndcg", 10), "value": choice.ndcg_at_10, "users": choice.users},
            "grid": choice.grid,
            "search": "k and alpha in full at every vector setting tried; group_size and the decays by one "
                      "round of coordinate ascent",
            "tried": choice.scores,
        },
        s.ITEMKNN: {"implementation": "implicit.nearest_neighbours.BM25Recommender", "K": K_NEIGHBOURS,
                    "K1": BM25_K1, "B": BM25_B, "fit_on": "the test fold's interactions (before test_start)"},
    }
    importance = inputs.training_report.get("feature_importance", {})
    return EvaluationResult(evaluation=evaluation, ground_truth=ground_truth, recommendations=recommendations,
                            recall_curves=curves, feature_importance=dict(importance))


def metrics_table(evaluation: Mapping[str, Any], segment: str = s.WARM) -> str:
    """A fixed-width text table of one segment's metrics (the log's and the report's summary)."""
    blocks = evaluation["segments"][segment]
    keys = [s.metric_key(metric, k) for k in s.KS for metric in s.METRICS]
    header = f"{'recommender':<12}" + "".join(f"{key:>16}" for key in keys)
    lines = [header]
    for name in s.RECOMMENDERS:
        block = blocks.get(name, {})
        lines.append(f"{name:<12}" + "".join(
            f"{block[key]['value']:>16.4f}" if key in block else f"{'-':>16}" for key in keys))
    return "\n".join(lines)
