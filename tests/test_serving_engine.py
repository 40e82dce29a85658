"""Load-time scoring: every candidate scored once, part by part, with only (item, score) kept; the served
lists equal scoring each user's rows directly; a bundle split in parts answers as one part does; a bundle
whose model gives invalid or inconsistent scores is refused and the old model keeps serving."""

from __future__ import annotations

import json
import shutil
import weakref
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import schema as s
from components.bundle import Bundle, load_bundle
from components.bundle.format import candidate_parts, extract_bundle, sha256_file
from components.errors import BundleError
from components.ranker.model import FeatureSpec, PopularFallback, PreparedFeatures, Ranker, rank_top_k
from components.serving.engine import build_serving_model
from components.serving.holder import ModelHolder
from components.serving.metrics import ServiceMetrics
from components.serving.source import BundleFetcher
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle

PARTS = 4


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShop:
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "out", n_users=200, n_items=120,
                                 per_user=40, parts=PARTS)


@pytest.fixture(scope="module")
def one_part_root(shop: SyntheticShop, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle (same model file) with its candidate parts merged into one."""
    root = extract_bundle(shop.archive, tmp_path_factory.mktemp("unpacked") / "bundle")
    manifest = json.loads((root / s.BUNDLE_MANIFEST).read_text())
    parts = candidate_parts(manifest)
    merged = pd.concat([pd.read_parquet(root / part) for part in parts], ignore_index=True)
    for part in parts:
        (root / part).unlink()
        for key in ("files", "sizes", "rows"):
            del manifest[key][part]
    single = f"{s.BUNDLE_CANDIDATES}/part-00000.parquet"
    merged.to_parquet(root / single, index=False)
    manifest["files"][single] = sha256_file(root / single)
    manifest["sizes"][single] = (root / single).stat().st_size
    manifest["rows"][single] = len(merged)
    (root / s.BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    target = tmp_path_factory.mktemp("one-part") / "bundle"
    shutil.move(root, target)
    return target


def _ranker(bundle: Bundle) -> Ranker:
    return Ranker.load(bundle.model_path, spec=FeatureSpec.from_dict(bundle.manifest["feature_spec"]))


def test_served_lists_equal_scoring_each_users_rows_directly(shop: SyntheticShop) -> None:
    """For every user, k = 10 and k = 60 (beyond the 40 candidates: topped up): the served items and
    scores are those of the evaluation's path run on that user's rows alone, bit for bit."""
    bundle = load_bundle(shop.archive)
    assert len(bundle.candidate_part_paths) == PARTS
    model = build_serving_model(bundle, source="test")
    ranker = _ranker(bundle)
    popular = PopularFallback(bundle.popular_items, bundle.popular_scores)
    by_user = dict(iter(shop.candidates.groupby(s.USER_IDX)))
    for user_idx, user_id in enumerate(shop.user_ids):
        rows = by_user.get(user_idx)
        for k in (10, 60):
            served = model.recommend(user_id, k)
            if rows is None:
                items, scores = popular.top(k)
                assert served.fallback == "no_candidates"
            else:
                rows = rows.sort_values(s.ITEM_IDX)
                alone = ranker.score_prepared(ranker.prepare(rows))
                items, scores = popular.top_up(*rank_top_k(rows[s.ITEM_IDX].to_numpy(), alone, k), k)
                assert served.fallback is None and served.candidates_considered == len(rows)
            np.testing.assert_array_equal(served.item_idx, items)
            np.testing.assert_array_equal(served.scores, scores)  # NaN (top-up) where the reference has NaN


def test_a_bundle_in_several_parts_answers_as_one_part(shop: SyntheticShop, one_part_root: Path) -> None:
    split, whole = load_bundle(shop.archive), load_bundle(one_part_root)
    assert (len(split.candidate_part_paths), len(whole.candidate_part_paths)) == (PARTS, 1)
    a, b = build_serving_model(split, source="split"), build_serving_model(whole, source="whole")
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.candidate_items, b.candidate_items)
    np.testing.assert_array_equal(a.candidate_scores, b.candidate_scores)
    for user_id in [*shop.user_ids, "ghost"]:
        x, y = a.recommend(user_id, 15, exclude_purchased=True), b.recommend(user_id, 15, exclude_purchased=True)
        np.testing.assert_array_equal(x.item_idx, y.item_idx)
        np.testing.assert_array_equal(x.scores, y.scores)


def _held_objects(root: object, depth: int = 3) -> Iterator[object]:
    """Attribute values of ``root`` and, a few levels down, of the dataclasses and objects it holds."""
    values = ([getattr(root, f.name) for f in fields(root)] if is_dataclass(root)
              else list(vars(root).values()) if hasattr(root, "__dict__") else [])
    for value in values:
        yield value
        if depth and not isinstance(value, (np.ndarray, str, bytes, int, float, dict, list, tuple)):
            yield from _held_objects(value, depth - 1)


def test_load_holds_one_part_of_features_at_a_time_and_keeps_none(shop: SyntheticShop,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """When a candidate part is read, no earlier part's frame is alive any more (freed by reference
    counting, no collector run), and the loaded model holds no feature table, prepared features or
    CatBoost model: only (item, score) arrays."""
    bundle = load_bundle(shop.archive)
    read = pd.read_parquet
    parts: list[weakref.ref[pd.DataFrame]] = []
    alive_at_read: list[int] = []

    def reader(path: Path, *args: object, **kwargs: object) -> pd.DataFrame:
        alive_at_read.append(sum(ref() is not None for ref in parts))
        frame = read(path, *args, **kwargs)
        parts.append(weakref.ref(frame))
        return frame

    monkeypatch.setattr(pd, "read_parquet", reader)  # after load_bundle: only candidate parts are read now
    model = build_serving_model(bundle, source="test")
    assert alive_at_read == [0] * PARTS
    assert all(ref() is None for ref in parts)
    held = list(_held_objects(model))
    assert not [type(v).__name__ for v in held if isinstance(v, (pd.DataFrame, PreparedFeatures, Ranker))]
    assert model.candidate_items.dtype == np.int32 and model.candidate_scores.dtype == np.float64
    assert len(model.candidate_scores) == len(shop.candidates)


def _corrupt(how: str) -> Callable[[np.ndarray], np.ndarray]:
    def damage(scores: np.ndarray) -> np.ndarray:
        scores = scores.copy()
        if how == "nextafter":
            return np.nextafter(scores, 1.0)  # off by one ulp: only the bit-for-bit check sees it
        scores[len(scores) // 2] = {"nan": np.nan, "inf": np.inf, "above 1": 1.5, "below 0": -0.1}[how]
        return scores
    return damage


@pytest.mark.parametrize(("how", "message"), [
    ("nan", "not a probability"), ("inf", "not a probability"), ("above 1", "not a probability"),
    ("below 0", "not a probability"), ("nextafter", "scores differ between batch scoring and scoring the user"),
])
def test_invalid_or_mismatching_scores_refuse_the_bundle(shop: SyntheticShop, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, how: str,
                                                         message: str) -> None:
    """The batch path (Ranker.score) is damaged; the bundle is refused and the serving model stays."""
    holder = ModelHolder(BundleFetcher(tmp_path / "work"), ServiceMetrics())
    assert holder.load(str(shop.archive)).ok
    serving = holder.current
    assert serving is not None
    score = Ranker.score

    def damaged(self: Ranker, data: pd.DataFrame, *, thread_count: int = -1,
                batch_rows: int | None = None) -> np.ndarray:
        return _corrupt(how)(score(self, data, thread_count=thread_count, batch_rows=batch_rows))

    monkeypatch.setattr(Ranker, "score", damaged)
    with pytest.raises(BundleError, match=message):
        build_serving_model(load_bundle(shop.archive), source="damaged")
    result = holder.load(str(shop.archive))
    assert not result.ok and result.error is not None and message in result.error
    assert holder.current is serving



def test_available_memory_reads_meminfo_and_the_cgroup(tmp_path: Path) -> None:
    from components.memory import available_memory_bytes

    assert (available_memory_bytes() or 0) > 0  # this machine's /proc
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (proc / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:    8000000 kB\n")
    assert available_memory_bytes(proc, cgroup) == 8_000_000 * 1024
    (cgroup / "memory.max").write_text("1000000\n")
    (cgroup / "memory.current").write_text("400000\n")
    assert available_memory_bytes(proc, cgroup) == 600_000
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory_bytes(proc, cgroup) == 8_000_000 * 1024
