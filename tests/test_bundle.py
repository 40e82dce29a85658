"""A bundle round-trips, is reproducible, and refuses to load when incomplete or tampered with."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from catboost import CatBoostClassifier

from components import schema as s
from components.bundle import Bundle, load_bundle
from components.bundle.build import BundleInputs, popular_ranking, write_bundle
from components.bundle.format import BundleLimits, estimate_load_bytes, extract_bundle, sha256_file
from components.errors import BundleError


def _inputs(tmp_path: Path, thread_count: int = 1) -> BundleInputs:
    rng = np.random.default_rng(0)
    n_users, n_items = 5, 6
    rows = [(u, i) for u in (0, 1, 3) for i in range(4)]  # users 2 and 4 have no candidates
    candidates = pd.DataFrame(rows, columns=[s.USER_IDX, s.ITEM_IDX])
    candidates["f_num"] = rng.random(len(candidates))
    candidates["f_cat"] = np.where(candidates[s.ITEM_IDX] % 2 == 0, "a", "b")
    model = CatBoostClassifier(iterations=5, verbose=False, cat_features=["f_cat"], thread_count=thread_count)
    model.fit(candidates[["f_num", "f_cat"]], (candidates["f_num"] > 0.5).astype(int))
    tmp_path.mkdir(parents=True, exist_ok=True)
    model_file = tmp_path / "model"
    model.save_model(str(model_file))
    item_features = pd.DataFrame({s.ITEM_IDX: range(n_items), s.ITEM_BUYERS_28D: [3, 0, 5, 3, 1, 0]})
    return BundleInputs(
        users_map=pd.DataFrame({s.USER_ID: [f"u{i}" for i in range(n_users)], s.USER_IDX: range(n_users)}),
        items_map=pd.DataFrame({s.ITEM_ID: [f"i{i}" for i in range(n_items)], s.ITEM_IDX: range(n_items)}),
        user_factors=rng.random((n_users, 3)).astype(np.float32),
        item_factors=rng.random((n_items, 3)).astype(np.float32),
        candidates=candidates.sample(frac=1.0, random_state=1),  # the writer sorts
        popular=popular_ranking(item_features),
        items=pd.DataFrame({s.ITEM_IDX: range(n_items), s.ITEM_ID: [f"i{i}" for i in range(n_items)],
                            "category": list("xxyyzz")}),
        purchased=pd.DataFrame({s.USER_IDX: [3, 0, 0], s.ITEM_IDX: [5, 2, 1]}),
        feature_spec={"features": ["f_num", "f_cat"], "categorical": ["f_cat"]},
        model_file=model_file,
        window={"test_start": "2011-11-11T00:00:00+00:00"},
        evaluation={"ranking_metrics": {"two_stage": {"ndcg_at_10": {"value": 0.5}}}},
    )


def _candidate_rows(bundle: Bundle, user_idx: int) -> pd.DataFrame:
    rows = pd.concat(list(bundle.iter_candidate_parts()), ignore_index=True)
    return rows.loc[rows[s.USER_IDX] == user_idx].reset_index(drop=True)


def _rewrite_part(root: Path, frame: pd.DataFrame) -> None:
    """Replace the bundle's (first) candidate part and its checksum: a consistent but wrong bundle."""
    manifest = json.loads((root / s.BUNDLE_MANIFEST).read_text())
    relative = min(name for name in manifest["files"] if name.startswith(f"{s.BUNDLE_CANDIDATES}/"))
    frame.to_parquet(root / relative, index=False)
    _reseal(root, manifest, relative)


def _reseal(root: Path, manifest: dict[str, Any], relative: str) -> None:
    """Record ``relative``'s new checksum, size and rows in the manifest, as a forger would."""
    manifest["files"][relative] = sha256_file(root / relative)
    manifest["sizes"][relative] = (root / relative).stat().st_size
    if relative.endswith(".parquet"):
        manifest["rows"][relative] = pq.read_metadata(root / relative).num_rows
    (root / s.BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def test_round_trip(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    archive = write_bundle(inputs, tmp_path / "out")
    bundle = load_bundle(archive)
    assert bundle.version.startswith("20111111-")
    assert bundle.feature_names == ["f_num", "f_cat"] and bundle.categorical == ["f_cat"]
    assert bundle.user_index["u3"] == 3 and bundle.item_ids[5] == "i5"
    assert _candidate_rows(bundle, 3)[s.ITEM_IDX].tolist() == [0, 1, 2, 3]
    assert _candidate_rows(bundle, 2).empty and _candidate_rows(bundle, 4).empty
    assert bundle.candidate_row_count == 12
    (part,) = bundle.iter_candidate_parts()
    assert list(part.columns) == [s.USER_IDX, s.ITEM_IDX, "f_num", "f_cat"]
    assert bundle.purchased(0).tolist() == [1, 2] and bundle.purchased(1).size == 0
    assert bundle.popular_items.tolist() == [2, 0, 3, 4]  # ties by item index, zero-buyer items left out
    assert bundle.model_path.is_file()
    np.testing.assert_array_equal(bundle.user_factors, inputs.user_factors)
    # a folder (SageMaker's /opt/ml/model layout) loads too
    assert load_bundle(bundle.root).version == bundle.version


def test_same_input_same_version_and_bytes(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    first = write_bundle(inputs, tmp_path / "a")
    second = write_bundle(inputs, tmp_path / "b")
    assert load_bundle(first).version == load_bundle(second).version


def test_the_version_does_not_depend_on_the_machine_the_model_trained_on(tmp_path: Path) -> None:
    """thread_count (1 here, every core locally, -1 on SageMaker) changes no prediction, so not the version."""
    one = load_bundle(write_bundle(_inputs(tmp_path / "one", thread_count=1), tmp_path / "a"))
    two = load_bundle(write_bundle(_inputs(tmp_path / "two", thread_count=-1), tmp_path / "b"))
    assert one.version == two.version
    assert one.model_path.read_bytes() == two.model_path.read_bytes()


def test_tampered_or_incomplete_bundles_are_refused(tmp_path: Path) -> None:
    archive = write_bundle(_inputs(tmp_path), tmp_path / "out")
    root = extract_bundle(archive, tmp_path / "unpacked")
    original = (root / s.BUNDLE_POPULAR).read_bytes()
    (root / s.BUNDLE_POPULAR).write_bytes(original[::-1])  # same size, other bytes
    with pytest.raises(BundleError, match=r"checksum mismatch for popular\.parquet"):
        load_bundle(root)
    (root / s.BUNDLE_POPULAR).write_bytes(b"not parquet")
    with pytest.raises(BundleError, match=r"popular\.parquet is 11 bytes, the manifest says"):
        load_bundle(root)
    (root / s.BUNDLE_POPULAR).unlink()
    with pytest.raises(BundleError, match=r"missing bundle file popular\.parquet"):
        load_bundle(root)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope.tar.gz")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(BundleError, match=r"not a readable model\.tar\.gz"):
        load_bundle(broken)


def test_archive_with_path_traversal_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="../escape")
    with pytest.raises(BundleError, match="unsafe member"):
        load_bundle(evil)


def _scoring_parts(candidates: pd.DataFrame, directory: Path, users_per_part: list[list[int]]) -> Path:
    directory.mkdir()
    for number, users in enumerate(users_per_part):
        part = candidates.loc[candidates[s.USER_IDX].isin(users)].sort_values([s.USER_IDX, s.ITEM_IDX])
        part.to_parquet(directory / f"part-{number:05d}.parquet", index=False)
    return directory


def test_candidates_stream_from_scoring_parts_as_from_one_frame(tmp_path: Path) -> None:
    """ranker_data writes scoring/ as parts of ascending user ranges; the bundle copies them part by part
    (never the whole table in memory) and holds the same rows as when given one frame."""
    inputs = _inputs(tmp_path)
    assert isinstance(inputs.candidates, pd.DataFrame)
    parts = _scoring_parts(inputs.candidates, tmp_path / "scoring", [[0], [], [1, 3]])
    from_parts = load_bundle(write_bundle(replace(inputs, candidates=parts), tmp_path / "parts"))
    from_frame = load_bundle(write_bundle(inputs, tmp_path / "frame"))
    assert len(from_parts.candidate_part_paths) == 3 and len(from_frame.candidate_part_paths) == 1
    for user in range(5):
        pd.testing.assert_frame_equal(_candidate_rows(from_parts, user), _candidate_rows(from_frame, user))
    assert from_parts.manifest["counts"] == from_frame.manifest["counts"]
    assert from_parts.candidate_row_count == from_frame.candidate_row_count == 12


def test_scoring_parts_out_of_user_order_are_refused(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    assert isinstance(inputs.candidates, pd.DataFrame)
    parts = _scoring_parts(inputs.candidates, tmp_path / "scoring", [[1, 3], [0]])
    with pytest.raises(BundleError, match=r"part-00001\.parquet: rows are not sorted"):
        write_bundle(replace(inputs, candidates=parts), tmp_path / "out")


def test_candidate_part_without_a_feature_is_refused_at_load(tmp_path: Path) -> None:
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    part = next(load_bundle(root).iter_candidate_parts())
    _rewrite_part(root, part.drop(columns=["f_cat"]))
    with pytest.raises(BundleError, match=r"lacks columns \['f_cat'\]"):
        load_bundle(root)


@pytest.mark.parametrize("damage", ["shuffled", "duplicate row", "user beyond the map"])
def test_candidate_part_out_of_order_or_beyond_the_user_map_is_refused_when_read(tmp_path: Path,
                                                                                damage: str) -> None:
    """The footers pass (load_bundle reads no rows); reading the part refuses it."""
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    part = next(load_bundle(root).iter_candidate_parts())
    if damage == "shuffled":
        part = part.iloc[::-1]
    elif damage == "duplicate row":
        part = pd.concat([part.iloc[:1], part]).reset_index(drop=True)
    else:
        part = part.assign(**{s.USER_IDX: part[s.USER_IDX] + 5})
    _rewrite_part(root, part)
    bundle = load_bundle(root)
    with pytest.raises(BundleError, match="not sorted" if damage != "user beyond the map" else "beyond the 5-user"):
        list(bundle.iter_candidate_parts())


def test_the_bundle_step_leaves_no_scratch_behind(tiny_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from components.bundle import step
    from components.config import PipelineConfig

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    argv = [arg for name in step.INPUTS for arg in (f"--{name}", str(tiny_run / name))]
    step.main([*argv, "--output", str(tmp_path / "bundle"), "--config", PipelineConfig().to_json()])
    assert list(scratch_root.iterdir()) == []
    assert (tmp_path / "bundle" / s.MODEL_ARCHIVE).is_file()


def test_the_purchased_table_carries_how_often_and_how_recently(tiny_run: Path) -> None:
    """The console's explorer shows a user's history from the bundle alone: each bought item with its
    purchase days and days since the last event, as the test fold's user-item features have them."""
    bundle = load_bundle(tiny_run / "bundle" / s.MODEL_ARCHIVE)
    purchased = pd.read_parquet(bundle.root / s.BUNDLE_PURCHASED)
    features = pd.read_parquet(tiny_run / "etl" / s.FOLDS_DIR / s.TEST_FOLD / s.USER_ITEM_FEATURES)
    bought = features.loc[features[s.UI_PURCHASE_DAYS] > 0]
    keys = [s.USER_IDX, s.ITEM_IDX]
    merged = purchased.merge(bought[[*keys, s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST]], on=keys, suffixes=("", "_etl"))
    assert len(purchased) == len(bought) == len(merged) > 0
    for column in (s.UI_PURCHASE_DAYS, s.UI_DAYS_SINCE_LAST):
        assert np.allclose(merged[column].astype(float), merged[f"{column}_etl"].astype(float))


# The bundle is read only through its manifest (issue 13, findings 3, 4 and the manifest part of 10).

def _retar(root: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``root``'s files as a model.tar.gz, the manifest first, plus ``extra`` members."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / s.BUNDLE_MANIFEST, arcname=s.BUNDLE_MANIFEST)
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.name != s.BUNDLE_MANIFEST:
                tar.add(path, arcname=path.relative_to(root).as_posix())
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_members_the_manifest_does_not_list_are_refused_not_unpacked(tmp_path: Path) -> None:
    """Finding 3: a small archive whose unlisted members expand to gigabytes was unpacked, then ignored."""
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    evil = _retar(root, tmp_path / "evil.tar.gz", {"padding.bin": b"\0" * (4 << 20)})
    with pytest.raises(BundleError, match=r"member 'padding\.bin' is not listed in the manifest"):
        extract_bundle(evil, tmp_path / "dest")
    assert not (tmp_path / "dest" / "padding.bin").exists()
    assert load_bundle(_retar(root, tmp_path / "plain.tar.gz")).n_users == 5  # the same files, listed: fine


def test_unpacked_size_over_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = write_bundle(_inputs(tmp_path), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / s.BUNDLE_MANIFEST).read_text())
    total = sum(manifest["sizes"].values())
    with pytest.raises(BundleError, match=rf"{total} bytes unpacked, over the limit of {total - 1}"):
        extract_bundle(archive, tmp_path / "dest", BundleLimits(max_bytes=total - 1))
    assert list((tmp_path / "dest").iterdir()) == []
    extract_bundle(archive, tmp_path / "dest2", BundleLimits(max_bytes=total))


def test_a_member_larger_than_the_manifest_says_is_refused(tmp_path: Path) -> None:
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    manifest = json.loads((root / s.BUNDLE_MANIFEST).read_text())
    manifest["sizes"][s.BUNDLE_POPULAR] -= 1
    (root / s.BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"member 'popular\.parquet' is \d+ bytes, the manifest says"):
        extract_bundle(_retar(root, tmp_path / "big.tar.gz"), tmp_path / "dest")


@pytest.mark.parametrize("name", ["/etc/hostname", "candidates/../../outside.parquet", "./popular.parquet"])
def test_manifest_names_outside_the_bundle_are_refused(tmp_path: Path, name: str) -> None:
    """Finding 10: a listed name that leaves the folder made verify_bundle hash a server file (an oracle:
    a matching checksum loaded, a wrong one said so)."""
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(b"secret")
    manifest = json.loads((root / s.BUNDLE_MANIFEST).read_text())
    target = Path(name) if name.startswith("/") else root / name
    if target.is_file():
        manifest["files"][name] = sha256_file(target)
        manifest["sizes"][name] = target.stat().st_size
    else:
        manifest["files"][name], manifest["sizes"][name] = sha256_file(outside), 6
    (root / s.BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="is not a path inside the bundle"):
        load_bundle(root)


def test_a_listed_file_that_is_a_link_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    moved = tmp_path / "elsewhere.parquet"
    (root / s.BUNDLE_POPULAR).rename(moved)
    (root / s.BUNDLE_POPULAR).symlink_to(moved)
    with pytest.raises(BundleError, match=r"popular\.parquet is not a regular file inside the bundle"):
        load_bundle(root)


def test_row_counts_are_checked_from_the_footers_before_any_table_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4: a 169 KB table of 20M rows took the process to 1.33 GB. Its rows are now counted from
    the Parquet footer (against the manifest and ECOMREC_MAX_TABLE_ROWS) before pandas reads a row."""
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    many = pd.DataFrame({s.USER_IDX: np.zeros(200_000, dtype=np.int64), s.ITEM_IDX: np.ones(200_000, dtype=np.int64)})
    many.to_parquet(root / s.BUNDLE_PURCHASED, index=False)
    manifest = json.loads((root / s.BUNDLE_MANIFEST).read_text())
    _reseal(root, manifest, s.BUNDLE_PURCHASED)
    assert (root / s.BUNDLE_PURCHASED).stat().st_size < 10_000  # tiny on disk
    reads: list[str] = []
    real_read = pd.read_parquet

    def counted_read(path: Any, *args: Any, **kwargs: Any) -> pd.DataFrame:
        reads.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", counted_read)
    with pytest.raises(BundleError, match=r"purchased\.parquet has 200000 rows, over the limit of 100000"):
        load_bundle(root, BundleLimits(max_table_rows=100_000))
    assert reads == []
    manifest["rows"][s.BUNDLE_PURCHASED] = 3  # the manifest lies about the rows
    (root / s.BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"purchased\.parquet holds 200000 rows, the manifest says 3"):
        load_bundle(root)
    assert reads == []


def test_a_load_that_would_not_fit_in_memory_is_refused(tmp_path: Path) -> None:
    archive = write_bundle(_inputs(tmp_path), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / s.BUNDLE_MANIFEST).read_text())
    needed = estimate_load_bytes(manifest)
    with pytest.raises(BundleError, match="loading it would take about"):
        load_bundle(archive, BundleLimits(max_memory_bytes=needed - 1))
    assert load_bundle(archive, BundleLimits(max_memory_bytes=needed)).n_users == 5


def test_load_bundle_of_an_archive_leaves_no_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import tempfile

    archive = write_bundle(_inputs(tmp_path), tmp_path / "out")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    bundle = load_bundle(archive)
    assert len(list(bundle.iter_candidate_parts())) == 1  # the files are there while the bundle lives
    del bundle
    gc.collect()
    assert list(scratch.iterdir()) == []
    with pytest.raises(BundleError):
        load_bundle(archive, BundleLimits(max_bytes=1))
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("version", ["v1\nERROR forged log line", "\x1b[31mred", "", "x" * 200])
def test_a_version_string_that_would_reach_logs_raw_is_refused(tmp_path: Path, version: str) -> None:
    root = extract_bundle(write_bundle(_inputs(tmp_path), tmp_path / "out"), tmp_path / "unpacked")
    manifest = json.loads((root / s.BUNDLE_MANIFEST).read_text())
    manifest["version"] = version
    (root / s.BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"version .* is not 1-128 letters"):
        load_bundle(root)
