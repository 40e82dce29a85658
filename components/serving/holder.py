"""The model being served and the safe swap.

Requests read ``holder.current`` once and use that object to the end, so a swap (one reference
assignment, atomic in CPython) never mixes two models inside a request and never makes one fail. A new
bundle is fetched, verified (manifest, checksums), loaded, scored and checked entirely off to the side; only
then is it published. A bundle that fails any of that is refused and logged; the old model keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.errors import BundleError
from components.memory import release_memory
from components.serving.engine import ServingModel, build_serving_model
from components.serving.metrics import ServiceMetrics
from components.serving.source import BundleFetcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    location: str
    ok: bool
    version: str | None
    seconds: float
    error: str | None = None


class ModelHolder:
    def __init__(self, fetcher: BundleFetcher, metrics: ServiceMetrics, *, smoke_users: int = 16,
                 scoring_threads: int = 1, feature_dir: Path | None = None) -> None:
        self._fetcher = fetcher
        self._feature_dir = feature_dir  # real time: where models keep their candidates' feature rows
        self._metrics = metrics
        self._smoke_users = smoke_users
        self._scoring_threads = scoring_threads
        self._current: ServingModel | None = None
        self._load_lock = threading.Lock()  # one load at a time; requests never take it
        self._worker: threading.Thread | None = None
        self.last_result: LoadResult | None = None

    @property
    def current(self) -> ServingModel | None:
        return self._current

    @property
    def loading(self) -> bool:
        return self._load_lock.locked()

    def load(self, location: str, *, registry_version: int | None = None, expected_sha256: str | None = None,
             still_wanted: Callable[[], str | None] | None = None) -> LoadResult:
        """Fetch, check and publish the bundle at ``location`` (blocking). Never raises for a bad bundle:
        the result says whether it was refused. ``expected_sha256``: the archive's registered digest.
        ``still_wanted``: asked after the load, just before the swap; a reason (e.g. the version was
        rejected meanwhile) refuses the swap."""
        with self._load_lock:
            started = time.perf_counter()
            try:
                with self._fetcher.open(location, expected_sha256=expected_sha256) as bundle:
                    model = build_serving_model(bundle, source=location, registry_version=registry_version,
                                                scoring_threads=self._scoring_threads,
                                                smoke_users=self._smoke_users,
                                                feature_dir=self._feature_dir)
            except BundleError as error:
                return self._record(LoadResult(location, False, None, time.perf_counter() - started,
                                               str(error)))
            except Exception as error:  # e.g. a corrupt Parquet file: refuse it too, with the traceback
                log.exception("unexpected failure loading bundle %s", location)
                return self._record(LoadResult(location, False, None, time.perf_counter() - started,
                                               f"{type(error).__name__}: {error}"))
            veto = still_wanted() if still_wanted is not None else None
            if veto is not None:
                del model, bundle
                release_memory()
                return self._record(LoadResult(location, False, None, time.perf_counter() - started,
                                               f"not swapped in: {veto}"))
            previous = self._current.version if self._current else "nothing"
            self._current = model  # the swap; requests still running keep their own reference to the old one
            del bundle
            release_memory()  # the bundle's tables (and, after a swap, the old model) go back to the OS
            result = self._record(LoadResult(location, True, model.version, time.perf_counter() - started))
            log.info("serving bundle %s from %s (was %s), loaded in %.2f s", model.version, location, previous,
                     result.seconds)
            return result

    def load_in_background(self, location: str, *, registry_version: int | None = None,
                           expected_sha256: str | None = None) -> bool:
        """Start a load in a daemon thread; False if a load is already running."""
        if self._worker is not None and self._worker.is_alive():
            return False
        self._worker = threading.Thread(target=self.load, args=(location,),
                                        kwargs={"registry_version": registry_version,
                                                "expected_sha256": expected_sha256},
                                        name="ecomrec-model-load", daemon=True)
        self._worker.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background load (if any) ends."""
        if self._worker is not None:
            self._worker.join(timeout)

    def set_served_rejected(self, rejected: bool) -> None:
        self._metrics.served_rejected.set(1 if rejected else 0)

    def _record(self, result: LoadResult) -> LoadResult:
        m = self._metrics
        m.load_seconds.set(result.seconds)
        m.last_load_success.set(1 if result.ok else 0)
        m.loads.labels(result="success" if result.ok else "refused").inc()
        if result.ok and self._current is not None:
            model = self._current
            m.model_info.info({"version": model.version, "group": model.group, "source": model.source,
                               "registry_version": str(model.registry_version or "")})
            m.catalog_items.set(model.n_items)
            m.items_served.set(0)
        else:
            log.error("refused bundle %s, still serving %s: %s", result.location[:300],
                      self._current.version if self._current else "nothing", result.error)
        self.last_result = result
        return result
