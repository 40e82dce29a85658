"""What one running service holds (settings, metrics, the model holder, the registry watch) and the
one function every endpoint answers through."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components.errors import BundleError
from components.registry.base import ModelRegistry
from components.serving.engine import ServingModel
from components.serving.holder import ModelHolder
from components.serving.metrics import ServiceMetrics
from components.serving.settings import ServingSettings
from components.serving.watcher import RegistryWatcher

if TYPE_CHECKING:
    from components.realtime.service import Realtime

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: ServingSettings
    metrics: ServiceMetrics
    holder: ModelHolder
    registry: ModelRegistry | None = None
    watcher: RegistryWatcher | None = None
    realtime: Realtime | None = None  # events and fresh answers (components/realtime); None when off

    def start(self) -> None:
        """Load the first bundle (blocking) and start the registry watch. A first bundle that cannot be
        loaded stops the start-up: better no pod than a pod that never becomes ready."""
        location = self.settings.initial_model()
        registry_version = None
        if location is None:
            assert self.registry is not None  # settings guarantee a registry when no model is given
            latest = self.registry.latest_approved(self.settings.model_group)
            if latest is None:
                raise BundleError(f"registry {self.settings.registry_root} has no Approved version of group "
                                  f"{self.settings.model_group!r}; set ECOMREC_MODEL or approve one")
            location, registry_version = latest.model_data_url, latest.version
            expected_sha256 = latest.bundle_sha256 or None
        else:
            expected_sha256 = self.settings.model_sha256
        result = self.holder.load(location, registry_version=registry_version, expected_sha256=expected_sha256)
        if not result.ok:
            raise BundleError(f"cannot serve {location}: {result.error}")
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def answer(self, model: ServingModel, user_id: str, top_k: int, *, route: str,
               exclude_purchased: bool = False, exclude: Sequence[str] = (),
               category: str | None = None, at_us: int | None = None) -> dict[str, object]:
        """Recommend and account for it in the metrics (fallbacks of ``route``, candidates considered,
        distinct items)."""
        rec, degraded = None, False
        if self.realtime is not None:  # the user's events since the cutoff, scored per request
            # at_us: "as of" another time than now (the replay evaluation asks as of each basket's start)
            rec, degraded = self.realtime.fresh.recommend(model, user_id, top_k, exclude_purchased=exclude_purchased,
                                                          exclude=exclude, category=category, at_us=at_us)
            if degraded:
                self.realtime.metrics.degraded.labels(route=route).inc()
        if rec is None:
            rec = model.recommend(user_id, top_k, exclude_purchased=exclude_purchased, exclude=exclude,
                                  category=category)
        m = self.metrics
        if rec.fallback is not None:
            m.fallbacks.labels(route=route, reason=rec.fallback).inc()
        elif rec.candidates_considered:
            m.candidates_considered.inc(rec.candidates_considered)
        if model is self.holder.current:  # a request finishing on the old model must not reset the gauge
            m.items_served.set(model.items_served)
        payload = model.to_payload(rec)
        payload["degraded"] = degraded
        return payload
