"""Writing a bundle from the outputs of the etl, als, ranker_data, train and evaluate steps."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components import schema as s
from components.bundle.format import FORMAT_VERSION, REQUIRED_FILES, ascending_after, sha256_file
from components.errors import BundleError

if TYPE_CHECKING:
    from components.config import PipelineConfig  # the bundle step's; serving never imports this path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleInputs:
    """The tables a bundle is made of, already in memory (see ``read_run_outputs``)."""

    users_map: pd.DataFrame  # user_id, user_idx
    items_map: pd.DataFrame  # item_id, item_idx
    user_factors: np.ndarray
    item_factors: np.ndarray
    candidates: pd.DataFrame | Path  # user_idx, item_idx + features; or ranker_data's user-sorted scoring/
    popular: pd.DataFrame  # item_idx, score; best first
    items: pd.DataFrame  # item_idx, item_id + catalog attributes
    purchased: pd.DataFrame  # user_idx, item_idx (+ ui_purchase_days, ui_days_since_last when known)
    feature_spec: dict[str, Any]
    model_file: Path  # native CatBoost file
    window: dict[str, Any]
    evaluation: dict[str, Any]
    # Real-time features (components/realtime/features.py): file name in BUNDLE_HISTORY -> table; None: none
    history: dict[str, pd.DataFrame] | None = None
    # real-time candidates (optional, components/realtime/candidates.py): the co-occurrence neighbours and how
    # the batch steps made candidates (manifest key "realtime")
    item_neighbours: pd.DataFrame | None = None
    realtime: dict[str, Any] | None = None


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise BundleError(f"missing input table {path}")
    return pd.read_parquet(path)


def _dense_factors(table: pd.DataFrame, idx_column: str, n_rows: int) -> np.ndarray:
    """Factor rows by index; rows ALS never saw stay zero (they score 0 against every item)."""
    if table.empty:
        return np.zeros((n_rows, 0), dtype=np.float32)
    vectors = np.stack(table[s.FACTORS].to_numpy()).astype(np.float32)
    dense = np.zeros((n_rows, vectors.shape[1]), dtype=np.float32)
    dense[table[idx_column].to_numpy()] = vectors
    return dense


def popular_ranking(item_features: pd.DataFrame) -> pd.DataFrame:
    """The cold-user fallback: items by distinct buyers in the 28 days before the cutoff, ties by index."""
    ranked = item_features[[s.ITEM_IDX, s.ITEM_BUYERS_28D]].rename(columns={s.ITEM_BUYERS_28D: s.SCORE})
    ranked = ranked[ranked[s.SCORE] > 0].sort_values([s.SCORE, s.ITEM_IDX], ascending=[False, True])
    return ranked.reset_index(drop=True).astype({s.ITEM_IDX: "int64", s.SCORE: "float64"})


def realtime_parts(etl: Path, config: PipelineConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """What real-time candidates need besides the fold's history (:func:`_history_tables`), made by the batch
    steps' own code: the co-occurrence neighbours (the candidates step's CoocGenerator refitted on the same
    fold tables with the same settings: the very table it scored with; 0.7 s on Online Retail) and how the
    candidates and ALS steps made candidates (manifest key "realtime")."""
    from components.candidates.cooc import CoocGenerator
    from components.candidates.io import read_fold_tables

    cand = config.candidates
    cooc = CoocGenerator(neighbours=cand.cooc_neighbours, half_life_days=cand.cooc_half_life_days,
                         max_items_per_user=cand.cooc_max_items_per_user).fit(read_fold_tables(etl, s.TEST_FOLD))
    settings = {
        "candidates": cand.model_dump(),
        "als": {"regularization": config.als.regularization, "alpha": config.als.alpha,
                "confidence": config.als.confidence, "recency_half_life_days": config.als.recency_half_life_days},
    }
    return cooc.neighbour_table(), settings


def read_run_outputs(etl: Path, als: Path, ranker_data: Path, train: Path, evaluation: Path, *,
                     scratch: Path, config: PipelineConfig | None = None) -> BundleInputs:
    """Collect the test-fold artefacts: exactly the models and tables the evaluation scored. The model is
    unpacked under ``scratch`` (never into another step's folder), which must outlive the inputs. With
    ``config`` (the run's), also what real-time candidates need (:func:`realtime_parts`)."""
    fold = etl / s.FOLDS_DIR / s.TEST_FOLD
    users_map = _read_table(etl / s.ID_MAPS_DIR / s.USERS)[[s.USER_ID, s.USER_IDX]]
    items_map = _read_table(etl / s.ID_MAPS_DIR / s.ITEMS)[[s.ITEM_ID, s.ITEM_IDX]]
    catalog_path = etl / s.CLEAN_DIR / s.ITEMS
    items = items_map.copy()
    if catalog_path.exists():
        catalog = pd.read_parquet(catalog_path).drop(columns=[s.ITEM_IDX], errors="ignore")
        items = items.merge(catalog, on=s.ITEM_ID, how="left")
    ui = _read_table(fold / s.USER_ITEM_FEATURES)
    # with how often and how recently: the console's explorer shows a user's history from them
    history = [c for c in (s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST) if c in ui.columns]
    purchased = ui.loc[ui[s.UI_PURCHASE_DAYS] > 0, [s.USER_IDX, s.ITEM_IDX, *history]]
    tables = _history_tables(fold, ui)
    archive = train / s.MODEL_ARCHIVE
    if not archive.is_file():
        raise BundleError(f"missing trained model {archive}")
    model_dir = scratch / "model"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    if not (model_dir / s.MODEL_FILE).is_file():
        raise BundleError(f"{archive} holds no file named {s.MODEL_FILE!r}")
    neighbours, realtime = realtime_parts(etl, config) if config is not None and tables is not None else (None, None)
    return BundleInputs(
        users_map=users_map,
        items_map=items_map,
        user_factors=_dense_factors(_read_table(als / s.FOLDS_DIR / s.TEST_FOLD / s.USER_FACTORS),
                                    s.USER_IDX, len(users_map)),
        item_factors=_dense_factors(_read_table(als / s.FOLDS_DIR / s.TEST_FOLD / s.ITEM_FACTORS),
                                    s.ITEM_IDX, len(items_map)),
        candidates=ranker_data / s.SCORING_DIR,  # streamed: at scale it does not fit in memory
        popular=popular_ranking(_read_table(fold / s.ITEM_FEATURES)),
        items=items,
        purchased=purchased,
        feature_spec=json.loads((ranker_data / s.FEATURE_SPEC_FILE).read_text()),
        model_file=model_dir / s.MODEL_FILE,
        window=json.loads((etl / s.WINDOWS_FILE).read_text()),
        evaluation=json.loads((evaluation / s.EVALUATION_FILE).read_text()),
        history=tables,
        item_neighbours=neighbours,
        realtime=realtime,
    )


def _history_tables(fold: Path, user_item: pd.DataFrame) -> dict[str, pd.DataFrame] | None:
    """The test fold's history (the ETL's daily and orders tables before the cutoff) sorted by user, its
    item features and the per-item history statistics the ranker computed over every buyer: what real-time
    features are recomputed from. None when the ETL wrote no history (an older run)."""
    from components.ranker.features import item_history_stats

    if not (fold / s.HISTORY_DAILY).exists():
        return None
    daily = _read_table(fold / s.HISTORY_DAILY)
    daily = daily.sort_values([s.USER_IDX, s.ITEM_IDX, s.EVENT_TYPE, "_day"], kind="stable").reset_index(drop=True)
    orders = _read_table(fold / s.HISTORY_ORDERS).sort_values([s.USER_IDX, "_day"], kind="stable")
    return {"daily.parquet": daily, "orders.parquet": orders.reset_index(drop=True),
            "item_features.parquet": _read_table(fold / s.ITEM_FEATURES).sort_values(s.ITEM_IDX),
            "item_history.parquet": item_history_stats(user_item)}


# The ETL settings real-time features need with the history (ui_weight: components/etl/weights.py).
REALTIME_ETL_KEYS = ("event_weights", "purchase_weight_by_quantity", "quantity_cap", "decay_half_life_days",
                     "weight_unit", "quantity_scale")


# CatBoost stamps every model with a random GUID and the finish time, and stores how it ran: its logging and
# file options, and the machine's share (threads, RAM limit, hosts) in the params. None changes a prediction;
# all would change the bundle's checksums, and with them its content-derived version: the same data and
# config trained on a laptop and on a SageMaker instance (thread_count -1 there, the hyperparameters in
# another order) must give one version.
VOLATILE_MODEL_METADATA = ("model_guid", "train_finish_time", "output_options")
MACHINE_PARAMS = ("thread_count", "used_ram_limit")  # in params.flat_params; params.system_options is all machine


def copy_model_without_volatile_metadata(source: Path, destination: Path) -> None:
    from catboost import CatBoost

    model = CatBoost()
    model.load_model(str(source))
    metadata = model.get_metadata()
    for key in VOLATILE_MODEL_METADATA:
        if key in metadata:
            del metadata[key]
    if "params" in metadata:
        params = json.loads(metadata["params"])
        params.pop("system_options", None)
        for key in MACHINE_PARAMS:
            params.get("flat_params", {}).pop(key, None)
        metadata["params"] = json.dumps(params, sort_keys=True)  # flat_params came in another order on SageMaker
    model.save_model(str(destination))


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0  # reproducible archives: same content, same bytes
    info.mode = 0o644
    return info


def _write_candidates(candidates: pd.DataFrame | Path, columns: list[str], destination: Path) -> tuple[int, int]:
    """``destination``/ as Parquet parts of ``columns``, ascending users, each sorted by (user_idx, item_idx)
    -> (rows, users). A folder of such parts (ranker_data's scoring/) is copied part by part as it is
    when it has exactly these columns (at scale it is gigabytes: never read whole, never re-encoded)."""
    destination.mkdir(parents=True)
    if isinstance(candidates, pd.DataFrame):
        _require_columns(map(str, candidates.columns), columns, "scoring candidates")
        frame = candidates[columns].sort_values([s.USER_IDX, s.ITEM_IDX], kind="stable")
        frame.to_parquet(destination / "part-00000000.parquet", index=False)
        return len(frame), int(frame[s.USER_IDX].nunique())
    parts = sorted(candidates.glob("*.parquet"))
    if not parts:
        raise BundleError(f"no scoring candidates in {candidates}")
    rows = users = 0
    last_user = -1
    for part in parts:
        names = pq.read_schema(part).names
        _require_columns(names, columns, str(part))
        keys = pq.read_table(part, columns=[s.USER_IDX, s.ITEM_IDX])
        part_users = keys.column(s.USER_IDX).to_numpy().astype(np.int64)
        if not ascending_after(part_users, keys.column(s.ITEM_IDX).to_numpy().astype(np.int64), last_user):
            raise BundleError(f"{part}: rows are not sorted by ({s.USER_IDX}, {s.ITEM_IDX}) after the previous "
                              f"part; ranker_data writes ascending ranges of users")
        if names == columns:
            shutil.copyfile(part, destination / part.name)
        else:
            pq.write_table(pq.read_table(part, columns=columns), destination / part.name)
        rows, users = rows + len(part_users), users + len(np.unique(part_users))
        last_user = int(part_users[-1]) if len(part_users) else last_user
    return rows, users


def _require_columns(present: Iterable[str], columns: list[str], what: str) -> None:
    have = set(present)
    missing = [c for c in columns if c not in have]
    if missing:
        raise BundleError(f"{what} lack columns {missing}")


def write_bundle(inputs: BundleInputs, output: Path, *, group: str = "ecomrec",
                 etl_config: dict[str, Any] | None = None) -> Path:
    """Write ``output/model.tar.gz`` and ``output/manifest.json``; return the archive path.

    The version is derived from the content (window + checksums), so rerunning on the same input gives
    the same version and a changed input a new one.
    """
    staging = output / "_staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / s.BUNDLE_ID_MAPS).mkdir(parents=True)
    (staging / "als").mkdir()
    copy_model_without_volatile_metadata(inputs.model_file, staging / s.MODEL_FILE)
    inputs.users_map.sort_values(s.USER_IDX).to_parquet(staging / s.BUNDLE_ID_MAPS / "users.parquet", index=False)
    inputs.items_map.sort_values(s.ITEM_IDX).to_parquet(staging / s.BUNDLE_ID_MAPS / "items.parquet", index=False)
    np.save(staging / s.BUNDLE_USER_FACTORS, inputs.user_factors)
    np.save(staging / s.BUNDLE_ITEM_FACTORS, inputs.item_factors)
    feature_columns = [s.USER_IDX, s.ITEM_IDX, *inputs.feature_spec["features"]]
    candidate_rows, candidate_users = _write_candidates(inputs.candidates, feature_columns,
                                                        staging / s.BUNDLE_CANDIDATES)
    inputs.popular.to_parquet(staging / s.BUNDLE_POPULAR, index=False)
    inputs.items.sort_values(s.ITEM_IDX).to_parquet(staging / s.BUNDLE_ITEMS, index=False)
    inputs.purchased.sort_values([s.USER_IDX, s.ITEM_IDX]).to_parquet(staging / s.BUNDLE_PURCHASED, index=False)

    optional = []
    if inputs.item_neighbours is not None:
        inputs.item_neighbours.to_parquet(staging / s.BUNDLE_ITEM_NEIGHBOURS, index=False)
        optional.append(s.BUNDLE_ITEM_NEIGHBOURS)
    parts = [f"{s.BUNDLE_CANDIDATES}/{path.name}" for path in sorted((staging / s.BUNDLE_CANDIDATES).iterdir())]
    history = []
    if inputs.history is not None:
        if not etl_config:
            raise BundleError("a bundle with the fold's history needs the ETL settings it was computed with "
                              "(write_bundle's etl_config)")
        (staging / s.BUNDLE_HISTORY).mkdir()
        for name, table in inputs.history.items():
            table.to_parquet(staging / s.BUNDLE_HISTORY / name, index=False, row_group_size=65_536)
            history.append(f"{s.BUNDLE_HISTORY}/{name}")
    files = {rel: sha256_file(staging / rel) for rel in (*REQUIRED_FILES[1:], *optional, *parts, *history)}
    # Sizes and Parquet row counts let a reader refuse a bundle before unpacking or loading a byte of it.
    sizes = {rel: (staging / rel).stat().st_size for rel in files}
    rows = {rel: pq.read_metadata(staging / rel).num_rows for rel in files if rel.endswith(".parquet")}
    content_id = hashlib.sha256(json.dumps([inputs.window, files], sort_keys=True).encode()).hexdigest()
    cut = str(inputs.window.get("test_start", ""))[:10].replace("-", "")
    manifest = {
        "format": FORMAT_VERSION,
        "version": f"{cut}-{content_id[:12]}",
        "group": group,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "window": inputs.window,
        "fit_on": "every accepted event before window.test_start (the evaluated test fold)",
        "metrics": inputs.evaluation.get("ranking_metrics", {}),
        "feature_spec": inputs.feature_spec,
        # the interaction-weight settings ui_weight was computed with (real-time features recompute it)
        **({"etl": {k: etl_config[k] for k in REALTIME_ETL_KEYS}} if history and etl_config else {}),
        "counts": {
            "users": len(inputs.users_map),
            "items": len(inputs.items_map),
            "candidate_rows": candidate_rows,
            "users_with_candidates": candidate_users,
            "popular": len(inputs.popular),
        },
        **({"realtime": inputs.realtime} if inputs.realtime is not None else {}),
        "files": files,
        "sizes": sizes,
        "rows": rows,
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    archive = output / s.MODEL_ARCHIVE
    # Level 0 (gzip framing, stored blocks): the members are compressed Parquet already. Measured on
    # scoring parts: level 1 saves 18 % of the size at a tenth of the speed (24 vs 249 MB/s), which at
    # 10M events is minutes; SageMaker wants a model.tar.gz either way.
    with tarfile.open(archive, "w:gz", compresslevel=0) as tar:
        tar.addfile(_tar_info(s.BUNDLE_MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for relative in sorted(files):
            path = staging / relative
            with path.open("rb") as handle:  # streamed: the candidates file can be gigabytes
                tar.addfile(_tar_info(relative, path.stat().st_size), handle)
    (output / s.BUNDLE_MANIFEST).write_bytes(manifest_bytes)
    (output / s.BUNDLE_DIGEST_FILE).write_text(json.dumps({"sha256": sha256_file(archive)}))
    shutil.rmtree(staging)
    log.info("bundle %s: %s (%.1f MB)", manifest["version"], archive, archive.stat().st_size / 1e6)
    return archive
