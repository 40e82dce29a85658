"""Train-fold tuning harness for the ranker: every quality choice is made here, never on the test window.

User-grouped K-fold CV over the TRAIN fold's candidate users (warm users with a label-window purchase):
per CV fold the ranker trains exactly as the pipeline does (sampled rows of the training users, early
stopping on a seeded 20 % of them) and is judged on the held-out users' WHOLE candidate lists: NDCG@10
as EVALUATION.md defines it (|R| counts targets outside the candidate list), next to repurchase, als and
popular on the same users and lists. Beside it the exploration view (EVALUATION.md's exclude_purchased, as
components/evaluation builds it): the lists without the items each user bought before the fold's cutoff,
topped up with the popular list, judged on the label-window items the user had not bought before; two_stage
(the CV ranker's order) and als (ALS candidates in ALS order).

Extra training windows (earlier cutoffs) come as more (etl, als, fold) triples: their labelled rows are
stacked onto the training rows (every user: a held-out user's earlier behaviour is history, as the test
fold's users' earlier windows are for the final model). Without pipeline support for extra folds, get
them by running `pipeline run --only etl --only als` on the raw log with events from label_start on
removed: its test fold has cutoff ~label_start - label_days, its train fold one window earlier
(results/ranker_cv_windows.md was made that way on Online Retail).

    .venv/bin/python benchmarks/ranker_cv.py --etl OUT/etl --als OUT/als --work /tmp/cv \
        --experiments '[{"name": "base"}, {"name": "lr.15", "params": {"learning_rate": 0.15}}]'

An experiment: {"name", "params" (CatBoost overrides; "ranking_loss": e.g. "YetiRank" fits a user-grouped
CatBoostRanker instead, for comparison), "negatives_per_user", "negatives_ratio", "hard_by", "hard_c" (see
sample), "validation_user_share"
(early-stopping users), "drop" (features),
"extra" (true: stack the --extra windows), "keep" (only these features)}. `--itemknn` / `--tifu` add those pair
features (drop them in an experiment to compare); `--temporal` trains on the train fold and scores the test fold
of an ETL + ALS run on a log cut at the real test_start (the pipeline one window earlier). Results:
benchmarks/results/<tag>.{json,md}, with the machine they ran on (benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import REPO, machine, machine_line

sys.path.insert(0, str(REPO))
from components import schema as s
from components.config import RankerConfig
from components.evaluation.recommenders import ranked_lists
from components.evaluation.recompute import metric_block
from components.ranker.data import (
    hash_uniform,
    label_candidates,
    sample_training_rows,
    training_users,
    validation_mask,
)
from components.ranker.features import HIST_RANK, RANK_SENTINEL, build_features
from components.ranker.hyperparameters import catboost_params, hyperparameters_from_config, parse_hyperparameters
from components.ranker.io import feature_lists, load_fold
from components.ranker.model import PopularFallback

RESULTS = REPO / "benchmarks" / "results"


def labelled_frame(etl: Path, als: Path, fold: s.Fold, horizon: float, *, tifu_features: bool = False,
                   itemknn_features: bool = False) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One fold's candidates with features, label and n_targets (the pipeline's build_features; with
    ``tifu_features`` / ``itemknn_features``, TIFU-KNN's / itemknn's pair scores as ranker_data adds them)."""
    tables = load_fold(etl, als, fold)
    candidates = tables.candidates
    if tifu_features:
        from components.candidates import tifu
        from components.ranker.data_step import fold_tifu_model

        candidates = tifu.with_pair_scores(fold_tifu_model(etl, fold, candidates[s.USER_IDX].unique()), candidates)
    if itemknn_features:
        from components.candidates import itemknn
        from components.ranker.data_step import fold_itemknn

        knn = fold_itemknn(etl, fold)
        candidates = itemknn.with_pair_scores(candidates, knn.similarity, knn.user_items)
    frame, spec = build_features(candidates, tables.user_features, tables.item_features,
                                 tables.user_item_features, feature_lists(etl), user_category=tables.user_category,
                                 horizon_days=horizon)
    frame[s.LABEL] = label_candidates(frame, tables.targets)
    n_targets = tables.targets.groupby(s.USER_IDX).size().rename(s.N_TARGETS)
    frame = frame.join(n_targets, on=s.USER_IDX)
    frame[s.N_TARGETS] = frame[s.N_TARGETS].fillna(0).astype(np.int64)
    return frame, list(spec.features), list(spec.categorical)


def ndcg(frame: pd.DataFrame, score: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over the frame's users with >= 1 target (score desc, ties item_idx asc)."""
    order = np.lexsort((frame[s.ITEM_IDX].to_numpy(), -np.asarray(score, dtype=np.float64),
                        frame[s.USER_IDX].to_numpy()))
    users = frame[s.USER_IDX].to_numpy()[order]
    labels = frame[s.LABEL].to_numpy()[order].astype(np.float64)
    starts = np.r_[True, users[1:] != users[:-1]]
    position = np.arange(len(users)) - np.maximum.accumulate(np.where(starts, np.arange(len(users)), 0))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = position < k
    dcg = pd.Series(labels[top] * discounts[position[top]]).groupby(users[top]).sum()
    n_targets = frame.groupby(s.USER_IDX)[s.N_TARGETS].first()
    n_targets = n_targets.loc[n_targets > 0]
    idcg = np.cumsum(discounts)[np.minimum(n_targets.to_numpy(), k) - 1]
    return float((dcg.reindex(n_targets.index).fillna(0.0).to_numpy() / idcg).mean())


def _lists(pairs: pd.DataFrame) -> dict[Hashable, list[Hashable]]:
    """user_idx -> its item_idx in row order (Python ints)."""
    out: dict[Hashable, list[Hashable]] = {}
    for user, item in zip(pairs[s.USER_IDX].tolist(), pairs[s.ITEM_IDX].tolist(), strict=True):
        out.setdefault(user, []).append(item)
    return out


def _sets(pairs: pd.DataFrame) -> dict[Hashable, set[Hashable]]:
    return {user: set(items) for user, items in _lists(pairs).items()}


@dataclass(frozen=True)
class ExploreView:
    """What the exploration view needs besides the candidate rows (one fold)."""

    purchased: pd.DataFrame  # user_idx, item_idx bought before the fold's cutoff
    new_truth: dict[Hashable, set[Hashable]]  # user -> the target items they had not bought before (>= 1)
    fallback: PopularFallback
    n_items: int

    @classmethod
    def load(cls, etl: Path, als: Path, fold: s.Fold) -> ExploreView:
        tables = load_fold(etl, als, fold)
        ui = tables.user_item_features
        purchased = ui.loc[ui[s.UI_PURCHASE_DAYS].fillna(0) > 0, [s.USER_IDX, s.ITEM_IDX]]
        bought = _sets(purchased)
        truth = {u: items - bought.get(u, set()) for u, items in _sets(tables.targets).items()}
        n_items = len(pd.read_parquet(etl / s.ID_MAPS_DIR / s.ITEMS, columns=[s.ITEM_IDX]))
        return cls(purchased, {u: t for u, t in truth.items() if t},
                   PopularFallback.from_item_features(tables.item_features), n_items)

    def ndcg(self, frame: pd.DataFrame, score: np.ndarray, users: np.ndarray, k: int = 10) -> float:
        """NDCG@k over ``users`` with a new target item: each one's rows of ``frame`` ranked by ``score`` (desc,
        ties item_idx asc) without their purchased items, topped up with popular ones (the evaluation's lists)."""
        pool = frame[[s.USER_IDX, s.ITEM_IDX]].assign(**{s.SCORE: np.asarray(score, dtype=np.float64)})
        lists = ranked_lists(pool, [s.SCORE], [False], users, self.fallback, k, exclude=self.purchased)
        per_user = _lists(lists)  # rows come by user, then rank
        truth = {u: self.new_truth[u] for u in users.tolist() if u in self.new_truth}
        return float(metric_block(per_user, truth, self.n_items, ks=(k,))[s.metric_key("ndcg", k)]["value"])

    def two_stage_and_als(self, frame: pd.DataFrame, score: np.ndarray) -> tuple[float, float]:
        """(two_stage: every candidate by ``score``, als: the ALS candidates in ALS order) on the frame's users."""
        users = np.unique(frame[s.USER_IDX].to_numpy())
        ranked = (frame[s.FROM_ALS] > 0) & (frame[s.ALS_RANK] < RANK_SENTINEL)
        return (self.ndcg(frame, score, users),
                self.ndcg(frame.loc[ranked], -frame.loc[ranked, s.ALS_RANK].to_numpy(np.float64), users))


def baselines(frame: pd.DataFrame) -> dict[str, float]:
    als_rank = frame[s.ALS_RANK].to_numpy(dtype=np.float64)
    return {
        "repurchase": ndcg(frame, -frame[HIST_RANK].to_numpy(dtype=np.float64)),
        "als": ndcg(frame, -als_rank),
        "popular": ndcg(frame, frame[s.ITEM_BUYERS_28D].to_numpy(dtype=np.float64)),
    }


def fit(train: pd.DataFrame, valid: pd.DataFrame, features: list[str], cats: list[str],
        params: dict[str, Any]) -> tuple[Any, float]:
    from catboost import CatBoostClassifier, Pool

    config = RankerConfig()
    hyper = hyperparameters_from_config(config, thread_count=2, verbose=0)
    merged, early = catboost_params(parse_hyperparameters(hyper))
    early = int(params.pop("early_stopping_rounds", early))
    merged.update(params)
    cat_index = [features.index(c) for c in cats if c in features]
    started = time.perf_counter()
    loss = merged.pop("ranking_loss", None)
    if loss is not None:
        # A listwise/pairwise loss grouped by user, for comparison only: the built-in SageMaker algorithm
        # trains classifiers and regressors, not CatBoostRanker.
        from catboost import CatBoostRanker

        merged.update(loss_function=loss, eval_metric="NDCG:top=10")
        ranker = CatBoostRanker(**merged)
        ranker.fit(Pool(train[features], train[s.LABEL], cat_features=cat_index, group_id=train[s.USER_IDX]),
                   eval_set=Pool(valid[features], valid[s.LABEL], cat_features=cat_index,
                                 group_id=valid[s.USER_IDX]),
                   early_stopping_rounds=early, use_best_model=True)
        return ranker, time.perf_counter() - started
    model = CatBoostClassifier(**merged)
    model.fit(Pool(train[features], train[s.LABEL], cat_features=cat_index),
              eval_set=Pool(valid[features], valid[s.LABEL], cat_features=cat_index),
              early_stopping_rounds=early, use_best_model=True)
    return model, time.perf_counter() - started


def sample(labelled: pd.DataFrame, negatives: int, seed: int, experiment: dict[str, Any] | None = None
           ) -> pd.DataFrame:
    """The pipeline's sampling (users with a positive, all positives, ``negatives`` per user), or an
    experiment's: "negatives_ratio" (per user max(negatives, ratio x positives)), "hard_by" (a feature:
    negatives drawn with weight 1 / (hard_c + its rank within the user), ascending)."""
    experiment = experiment or {}
    users, _ = training_users(labelled, max_users=10**9, seed=seed)
    if "negatives_ratio" not in experiment and "hard_by" not in experiment:
        return sample_training_rows(labelled, users=users, negatives_per_user=negatives, seed=seed)
    rows = labelled.loc[labelled[s.USER_IDX].isin(users)]
    negatives_frame = rows.loc[rows[s.LABEL] == 0]
    draw = hash_uniform(seed, negatives_frame[s.USER_IDX].to_numpy(), negatives_frame[s.ITEM_IDX].to_numpy())
    key = pd.Series(draw, index=negatives_frame.index)
    if "hard_by" in experiment:  # Efraimidis-Spirakis weighted draw without replacement: u ** (1 / w)
        rank = negatives_frame.groupby(s.USER_IDX)[experiment["hard_by"]].rank(method="first")
        weight = 1.0 / (float(experiment.get("hard_c", 10.0)) + rank)
        key = pd.Series(np.power(np.maximum(draw, 1e-300), 1.0 / weight.to_numpy()), index=negatives_frame.index)
    order = (-key).groupby(negatives_frame[s.USER_IDX]).rank(method="first")
    positives = rows.loc[rows[s.LABEL] == 1].groupby(s.USER_IDX).size()
    ratio = float(experiment.get("negatives_ratio", 0.0))
    quota = np.maximum(negatives, np.ceil(ratio * positives.reindex(negatives_frame[s.USER_IDX]).to_numpy()))
    kept = pd.concat([rows.loc[rows[s.LABEL] == 1], negatives_frame.loc[order.to_numpy() <= quota]])
    return kept.sort_values([s.USER_IDX, s.ITEM_IDX], kind="mergesort").reset_index(drop=True)


def cross_validate(frame: pd.DataFrame, extra: list[pd.DataFrame], features: list[str], cats: list[str],
                   experiment: dict[str, Any], folds: int, seed: int, view: ExploreView | None = None
                   ) -> dict[str, Any]:
    from catboost import Pool

    config = RankerConfig()
    negatives = int(experiment.get("negatives_per_user", config.negatives_per_user))
    keep = experiment.get("keep")
    used = [f for f in features if f not in set(experiment.get("drop", [])) and (keep is None or f in keep)]
    used_cats = [c for c in cats if c in used]
    users = np.unique(frame[s.USER_IDX].to_numpy())
    part = (hash_uniform(seed, users) * folds).astype(int)
    scores, base, seconds, trees, rows, explored = [], [], [], [], [], []
    for k in range(folds):
        held = users[part == k]
        rest = frame.loc[~frame[s.USER_IDX].isin(held)]
        sampled = sample(rest, negatives, config.seed, experiment)
        share = float(experiment.get("validation_user_share", config.validation_user_share))
        stop = validation_mask(sampled[s.USER_IDX].to_numpy(), share, config.seed)
        train, valid = sampled.loc[~stop], sampled.loc[stop]
        if experiment.get("extra") and extra:
            stacked = [sample(e, negatives, config.seed, experiment) for e in extra]
            train = pd.concat([train, *stacked], ignore_index=True)
        model, took = fit(train, valid, used, used_cats, dict(experiment.get("params", {})))
        evaluated = frame.loc[frame[s.USER_IDX].isin(held)]
        pool = Pool(evaluated[used], cat_features=[used.index(c) for c in used_cats])
        ranking = "ranking_loss" in experiment.get("params", {})  # CatBoostRanker predicts raw values
        raw = model.predict(pool) if ranking else model.predict(pool, prediction_type="RawFormulaVal")
        scores.append(ndcg(evaluated, raw))
        if view is not None:
            explored.append(view.two_stage_and_als(evaluated, raw))
        base.append(baselines(evaluated))
        seconds.append(took)
        trees.append(int(model.tree_count_))
        rows.append(len(train))
    mean_base = {name: float(np.mean([b[name] for b in base])) for name in base[0]}
    two_stage = float(np.mean(scores))
    explore: dict[str, Any] = {}
    if explored:  # the exploration view (exclude_purchased)
        new_two_stage, new_als = (float(np.mean(values)) for values in zip(*explored, strict=True))
        explore = {"two_stage": new_two_stage, "als": new_als, "two_stage_over_als": new_two_stage / new_als,
                   "per_fold": [e[0] for e in explored], "als_per_fold": [e[1] for e in explored]}
    return {
        "name": experiment["name"], "experiment": experiment, "two_stage": two_stage, "per_fold": scores,
        **mean_base, "ratio": two_stage / max(mean_base["repurchase"], mean_base["popular"]),
        "fit_seconds": float(np.mean(seconds)), "trees": trees, "training_rows": rows, "features": len(used),
        "explore": explore,
    }


def temporal(etl: Path, als: Path, experiments: list[dict[str, Any]], *, tifu_features: bool = False,
             itemknn_features: bool = False) -> list[dict[str, Any]]:
    """The pipeline's own procedure one window earlier: the ranker trained on the train fold (the pipeline's
    sampling and early-stopping split), scored on the test fold, of an ETL + ALS run on a log that ends
    before the real test window (which it never holds). NDCG@10 of the warm users, and the exclude_purchased
    view. Unlike the CV it sees the drift between two windows (features of a longer history, a new season)."""
    from catboost import Pool

    windows = json.loads((etl / s.WINDOWS_FILE).read_text())
    train, features, cats = labelled_frame(etl, als, s.TRAIN_FOLD, float(windows["label_days"]),
                                           tifu_features=tifu_features, itemknn_features=itemknn_features)
    test, _, _ = labelled_frame(etl, als, s.TEST_FOLD, float(windows["test_days"]),
                                tifu_features=tifu_features, itemknn_features=itemknn_features)
    view = ExploreView.load(etl, als, s.TEST_FOLD)
    config = RankerConfig()
    out = []
    for experiment in experiments:
        used = [f for f in features if f not in set(experiment.get("drop", []))]
        used_cats = [c for c in cats if c in used]
        sampled = sample(train, int(experiment.get("negatives_per_user", config.negatives_per_user)), config.seed,
                         experiment)
        stop = validation_mask(sampled[s.USER_IDX].to_numpy(), config.validation_user_share, config.seed)
        model, took = fit(sampled.loc[~stop], sampled.loc[stop], used, used_cats, dict(experiment.get("params", {})))
        raw = model.predict(Pool(test[used], cat_features=[used.index(c) for c in used_cats]),
                            prediction_type="RawFormulaVal")
        new_two_stage, new_als = view.two_stage_and_als(test, raw)
        result = {"name": experiment["name"], "experiment": experiment, "two_stage": ndcg(test, raw),
                  **baselines(test), "explore": {"two_stage": new_two_stage, "als": new_als,
                                                 "two_stage_over_als": new_two_stage / new_als},
                  "fit_seconds": took, "trees": int(model.tree_count_), "windows": windows}
        print(f"{result['name']:32s} ndcg {result['two_stage']:.4f} (als {result['als']:.4f}, repurchase "
              f"{result['repurchase']:.4f}); exclude_purchased {new_two_stage:.4f} als {new_als:.4f} = "
              f"{new_two_stage / new_als:.3f}x; trees {result['trees']}", flush=True)
        out.append(result)
    return out


def als_scan(etl: Path, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train-fold ALS NDCG@10 (the `als` recommender: ALS top 10) and union candidate recall per
    {"name", "als": AlsConfig overrides, "candidates": CandidateConfig overrides, "seeds": [...]}."""
    from components.candidates.als import ImplicitAls
    from components.candidates.generate import generate_local
    from components.candidates.io import read_fold_tables, read_targets, read_warm_target_users
    from components.candidates.metrics import candidate_recall
    from components.config import AlsConfig, CandidateConfig

    tables = read_fold_tables(etl, s.TRAIN_FOLD)
    users = read_warm_target_users(etl, s.TRAIN_FOLD)
    targets = read_targets(etl, s.TRAIN_FOLD)
    truth = targets.loc[targets[s.USER_IDX].isin(users), [s.USER_IDX, s.ITEM_IDX]].drop_duplicates()
    n_targets = truth.groupby(s.USER_IDX).size().rename(s.N_TARGETS)
    out = []
    for config in configs:
        als = AlsConfig(**config.get("als", {}))
        candidates = CandidateConfig(**config.get("candidates", {}))
        runs = []
        for seed in config.get("seeds", [als.seed]):
            seeded = als.model_copy(update={"seed": seed})
            started = time.perf_counter()
            top = ImplicitAls(seeded).fit(tables).recommend(users, 10)
            fit_seconds = time.perf_counter() - started
            listed = top.merge(truth.assign(**{s.LABEL: 1}), on=[s.USER_IDX, s.ITEM_IDX], how="left")
            listed[s.LABEL] = listed[s.LABEL].fillna(0).astype(np.int64)
            listed = listed.join(n_targets, on=s.USER_IDX)
            fused = generate_local(tables, users, seeded, candidates).candidates
            runs.append({"seed": seed, "als_ndcg_at_10": ndcg(listed, -listed["rank"].to_numpy(np.float64)),
                         "candidate_recall": candidate_recall(fused, targets, users), "fit_seconds": fit_seconds})
        result = {"name": config.get("name", json.dumps(config)), "config": config, "runs": runs,
                  **{key: float(np.mean([r[key] for r in runs]))
                     for key in ("als_ndcg_at_10", "candidate_recall", "fit_seconds")}}
        print(f"{result['name']:40s} als ndcg@10 {result['als_ndcg_at_10']:.4f} candidate recall "
              f"{result['candidate_recall']:.4f} (fit+top10 {result['fit_seconds']:.1f} s; {len(runs)} seeds)",
              flush=True)
        out.append(result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--etl", type=Path, required=True)
    parser.add_argument("--als", type=Path, default=None, help="the ALS step output (ranker experiments)")
    parser.add_argument("--extra", nargs="*", default=[],
                        help="earlier windows as ETL_DIR:ALS_DIR:FOLD (stacked when an experiment says extra)")
    parser.add_argument("--experiments", default="[]", help="ranker experiments: JSON list, or a path to one")
    parser.add_argument("--als-configs", default=None,
                        help="instead: scan ALS/candidate configs (JSON list or path): ALS NDCG@10 + union recall")
    parser.add_argument("--temporal", action="store_true",
                        help="instead of the CV: train on the train fold, score the test fold of --etl/--als (a run on "
                             "a log cut before the real test window; see temporal())")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tag", default="ranker_cv")
    parser.add_argument("--tifu", action="store_true",
                        help="add TIFU-KNN's pair features (compare with an experiment that drops them)")
    parser.add_argument("--itemknn", action="store_true",
                        help="add itemknn's pair features (ranker.itemknn_features; compare with an experiment that "
                             "drops them)")
    args = parser.parse_args()
    info = machine()
    if args.als_configs:
        scanned = als_scan(args.etl, _json_arg(args.als_configs))
        _write_als_scan(args.tag, info, args.etl, scanned)
        return
    experiments = _json_arg(args.experiments)
    if args.als is None:
        raise SystemExit("--als is required for ranker experiments")
    if args.temporal:
        results = temporal(args.etl, args.als, experiments, tifu_features=args.tifu, itemknn_features=args.itemknn)
        _write_temporal(args.tag, info, args.etl, results)
        return
    windows = json.loads((args.etl / s.WINDOWS_FILE).read_text())
    started = time.perf_counter()
    frame, features, cats = labelled_frame(args.etl, args.als, s.TRAIN_FOLD, float(windows["label_days"]),
                                           tifu_features=args.tifu, itemknn_features=args.itemknn)
    view = ExploreView.load(args.etl, args.als, s.TRAIN_FOLD)
    extra = []
    for spec in args.extra:
        etl, als, fold = spec.split(":")
        extra_windows = json.loads((Path(etl) / s.WINDOWS_FILE).read_text())
        horizon = float(extra_windows["label_days" if fold == s.TRAIN_FOLD else "test_days"])
        extra_frame, extra_features, _ = labelled_frame(Path(etl), Path(als), fold, horizon, tifu_features=args.tifu,
                                                        itemknn_features=args.itemknn)
        missing = set(features) - set(extra_features)
        if missing:
            raise SystemExit(f"extra window {spec} lacks features {sorted(missing)}")
        extra.append(extra_frame)
    print(f"frames built in {time.perf_counter() - started:.1f} s: {len(frame)} rows, "
          f"{frame[s.USER_IDX].nunique()} users, {int(frame[s.LABEL].sum())} positives; extra "
          f"{[(len(e), int(e[s.LABEL].sum())) for e in extra]}", flush=True)
    results = []
    for experiment in experiments:
        result = cross_validate(frame, extra, features, cats, experiment, args.folds, args.seed, view)
        results.append(result)
        folds = " ".join(f"{x:.4f}" for x in result["per_fold"])
        new = result["explore"]
        print(f"{result['name']:32s} ndcg {result['two_stage']:.4f} ({folds}) "
              f"repurchase {result['repurchase']:.4f} als {result['als']:.4f} popular {result['popular']:.4f} "
              f"ratio {result['ratio']:.3f} fit {result['fit_seconds']:.1f}s trees {result['trees']}; "
              f"exclude_purchased {new['two_stage']:.4f} ({' '.join(f'{x:.4f}' for x in new['per_fold'])}) "
              f"als {new['als']:.4f} = "
              f"{new['two_stage_over_als']:.3f}x", flush=True)
    report = {"machine": info, "etl": str(args.etl), "als": str(args.als), "extra": args.extra,
              "folds": args.folds, "seed": args.seed, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Ranker train-fold CV ({args.tag})", "", f"Machine: {machine_line(info)}", "",
             f"{args.folds}-fold user-grouped CV on the train fold (never the test window); NDCG@10 on held-out "
             "users' whole candidate lists.", "",
             "| experiment | two_stage | repurchase | als | popular | ratio | exclude_purchased: two_stage | als | "
             "two_stage / als | fit s | trees |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['two_stage']:.4f} | {r['repurchase']:.4f} | {r['als']:.4f} | {r['popular']:.4f} | "
              f"{r['ratio']:.3f} | {r['explore']['two_stage']:.4f} | {r['explore']['als']:.4f} | "
              f"{r['explore']['two_stage_over_als']:.3f} | {r['fit_seconds']:.1f} | {r['trees']} |" for r in results]
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines) + "\n")


def _json_arg(value: str) -> list[dict[str, Any]]:
    text = value if value.lstrip().startswith("[") else Path(value).read_text()
    loaded: list[dict[str, Any]] = json.loads(text)
    return loaded


def _write_temporal(tag: str, info: dict[str, Any], etl: Path, results: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({"machine": info, "etl": str(etl), "results": results}, indent=2))
    windows = results[0]["windows"] if results else {}
    lines = [f"# Ranker one window earlier ({tag})", "", f"Machine: {machine_line(info)}", "",
             f"Trained on the train fold, scored on the test fold of {etl} (windows {windows}): a log cut before "
             "the real test window. NDCG@10 of the warm users; exclude_purchased as the evaluation builds it.", "",
             "| experiment | two_stage | repurchase | als | exclude_purchased: two_stage | als | two_stage / als "
             "| trees |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['two_stage']:.4f} | {r['repurchase']:.4f} | {r['als']:.4f} | "
              f"{r['explore']['two_stage']:.4f} | {r['explore']['als']:.4f} | "
              f"{r['explore']['two_stage_over_als']:.3f} | {r['trees']} |" for r in results]
    (RESULTS / f"{tag}.md").write_text("\n".join(lines) + "\n")


def _write_als_scan(tag: str, info: dict[str, Any], etl: Path, results: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({"machine": info, "etl": str(etl), "results": results}, indent=2))
    lines = [f"# ALS choice on the train fold ({tag})", "", f"Machine: {machine_line(info)}", "",
             "ALS NDCG@10 = the `als` recommender (ALS top 10) on the train fold's warm target users; candidate "
             "recall = the fused union (<= max_per_user). Never the test window.", "",
             "| config | als NDCG@10 | candidate recall | fit s | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['als_ndcg_at_10']:.4f} | {r['candidate_recall']:.4f} | {r['fit_seconds']:.1f} | "
              f"{len(r['runs'])} |" for r in results]
    (RESULTS / f"{tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
