"""The registry watch and reload as a careless operator or a concurrent writer would meet them (issue 13,
findings 5, 7, 8, 9): substituted artifacts, versions rejected mid-load, every version rejected, corrupt
records, a vanished registry, a FIFO given to /admin/reload. Real LocalRegistry, real bundles (synthetic
shop, real CatBoost), real HTTP for the admin endpoint."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from components.bundle import Bundle
from components.registry.base import APPROVED, REJECTED
from components.registry.local import LocalRegistry
from components.serving.app import create_app
from components.serving.holder import ModelHolder
from components.serving.metrics import ServiceMetrics
from components.serving.settings import ServingSettings
from components.serving.source import BundleFetcher
from components.serving.synthetic import SyntheticShop, make_synthetic_bundle
from components.serving.testing import serve_in_thread
from components.serving.watcher import RegistryWatcher

GROUP = "shop"
TOKEN = "watch-test-token"


@pytest.fixture(scope="module")
def shops(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticShop, SyntheticShop]:
    root = tmp_path_factory.mktemp("watch")
    return (make_synthetic_bundle(root / "a", n_users=60, n_items=40, per_user=10, seed=1),
            make_synthetic_bundle(root / "b", n_users=60, n_items=40, per_user=10, seed=2, tag="b"))


def _watch(tmp_path: Path, registry: LocalRegistry) -> tuple[ModelHolder, RegistryWatcher, ServiceMetrics]:
    metrics = ServiceMetrics()
    holder = ModelHolder(BundleFetcher(tmp_path / "work"), metrics)
    return holder, RegistryWatcher(registry, GROUP, holder, interval_s=0), metrics


def _served_first(tmp_path: Path, shop: SyntheticShop) -> tuple[LocalRegistry, ModelHolder, RegistryWatcher,
                                                                   ServiceMetrics]:
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(GROUP, str(shop.archive), {})
    registry.set_status(GROUP, 1, APPROVED)
    holder, watcher, metrics = _watch(tmp_path, registry)
    assert watcher.poll_once() and holder.current is not None and holder.current.registry_version == 1
    return registry, holder, watcher, metrics


def test_the_loader_refuses_an_artifact_changed_after_approval(tmp_path: Path,
                                                                shops: tuple[SyntheticShop, SyntheticShop]) -> None:
    """Finding 5, the loading side: approved bytes replaced on disk by another valid bundle."""
    a, b = shops
    registry, holder, watcher, _ = _served_first(tmp_path, a)
    second = registry.register(GROUP, str(a.archive), {})
    registry.set_status(GROUP, second.version, APPROVED)
    shutil.copyfile(b.archive, second.model_data_url)  # a valid bundle, but not the approved bytes
    assert not watcher.poll_once()
    assert holder.current is not None and holder.current.registry_version == 1
    assert holder.last_result is not None and "is not the registered" in (holder.last_result.error or "")


def test_a_version_rejected_while_it_loads_is_not_published(tmp_path: Path,
                                                             shops: tuple[SyntheticShop, SyntheticShop]) -> None:
    """Finding 9: v2 was published ~6 s after it was rejected mid-load. The operator's rejection lands
    while the bundle is being read (the fetcher's open is where the load spends its time)."""
    a, b = shops
    registry, holder, watcher, _ = _served_first(tmp_path, a)
    registry.register(GROUP, str(b.archive), {})
    registry.set_status(GROUP, 2, APPROVED)
    fetcher = holder._fetcher
    real_open = fetcher.open

    @contextmanager
    def open_then_reject(location: str, **kwargs: Any) -> Iterator[Bundle]:
        with real_open(location, **kwargs) as bundle:
            registry.set_status(GROUP, 2, REJECTED, reason="bad canary")
            yield bundle

    fetcher.open = open_then_reject  # type: ignore[method-assign]
    assert not watcher.poll_once()
    assert holder.current is not None and holder.current.registry_version == 1
    assert "version 2 is Rejected now" in (holder.last_result.error or "")  # type: ignore[union-attr]


def test_every_version_rejected_keeps_serving_loudly(tmp_path: Path, shops: tuple[SyntheticShop, SyntheticShop],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Finding 9: the choice is to keep serving (as the EKS rollout does with nothing to roll back to),
    with an error log once and ecomrec_model_served_rejected 1 while it lasts."""
    a, _ = shops
    registry, holder, watcher, metrics = _served_first(tmp_path, a)
    served = holder.current
    registry.set_status(GROUP, 1, REJECTED)
    with caplog.at_level(logging.ERROR, logger="components.serving.watcher"):
        assert not watcher.poll_once()
        assert not watcher.poll_once()
    assert holder.current is served
    assert [r.getMessage() for r in caplog.records if "no Approved version" in r.getMessage()].__len__() == 1
    assert metrics.registry.get_sample_value("ecomrec_model_served_rejected") == 1
    registry.set_status(GROUP, 1, APPROVED)
    watcher.poll_once()
    assert metrics.registry.get_sample_value("ecomrec_model_served_rejected") == 0


def test_a_corrupt_record_or_a_vanished_registry_does_not_stop_the_watch(
        tmp_path: Path, shops: tuple[SyntheticShop, SyntheticShop], caplog: pytest.LogCaptureFixture) -> None:
    """Findings 8, 9: one corrupt file stopped the watcher for the whole group; a vanished registry was
    silent."""
    a, b = shops
    registry, holder, watcher, _ = _served_first(tmp_path, a)
    (registry.root / GROUP / "versions" / "7.json").write_text("{corrupt")
    registry.register(GROUP, str(b.archive), {})
    registry.set_status(GROUP, 8, APPROVED)
    assert watcher.poll_once() and holder.current is not None and holder.current.registry_version == 8
    moved = tmp_path / "moved"
    registry.root.rename(moved)
    with caplog.at_level(logging.WARNING):
        assert not watcher.poll_once()
    assert any("does not exist" in r.getMessage() for r in caplog.records)
    assert holder.current.registry_version == 8


def test_reload_refuses_a_fifo_and_reports_an_unreadable_registry(tmp_path: Path,
                                                                   shops: tuple[SyntheticShop, SyntheticShop]) -> None:
    """Findings 7, 8: a FIFO hung the loader forever (no swap until restart); a corrupt registry turned
    reload into a 500."""
    a, _ = shops
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(GROUP, str(a.archive), {})
    registry.set_status(GROUP, 1, APPROVED)
    fifo = tmp_path / "model.tar.gz"
    os.mkfifo(fifo)
    settings = ServingSettings(registry_root=registry.root, model_group=GROUP, watch_interval_s=0,
                               admin_token=TOKEN, work_dir=tmp_path / "work")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30, headers=auth) as client:
        started = time.monotonic()
        refused = client.post("/admin/reload", params={"wait": "true"}, json={"model": str(fifo)})
        assert refused.status_code == 422 and "not a regular file" in refused.json()["error"]
        assert time.monotonic() - started < 10
        assert client.post("/admin/reload", params={"wait": "true"}).status_code == 200  # not stuck
        registry.root.rename(tmp_path / "gone")
        gone = client.post("/admin/reload", params={"wait": "true"})
        assert gone.status_code == 503 and "does not exist" in gone.json()["error"]
        assert client.get("/recommendations", params={"user_id": a.user_ids[0]}).status_code == 200


def test_the_pod_refuses_to_start_on_other_bytes_than_the_rollout_approved(
        tmp_path: Path, shops: tuple[SyntheticShop, SyntheticShop]) -> None:
    """ECOMREC_MODEL_SHA256 is what the rollout sets from the approved package (cdk/rollout logic.py
    deployment_patch): a pod given other bytes never becomes ready, so the rollout stops and restores."""
    from components.checksum import sha256_file

    a, b = shops
    wrong = ServingSettings(model=str(a.archive), model_sha256=sha256_file(b.archive), watch_interval_s=0,
                            work_dir=tmp_path / "work")
    with pytest.raises(RuntimeError, match="stopped during start-up"), serve_in_thread(create_app(wrong)):
        pass
    right = ServingSettings(model=str(a.archive), model_sha256=sha256_file(a.archive), watch_interval_s=0,
                            work_dir=tmp_path / "work")
    with serve_in_thread(create_app(right)) as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    assert ServingSettings(model=str(a.archive), model_sha256="").model_sha256 is None  # the rollout's "unknown"
