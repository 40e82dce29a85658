"""Follow the registry: when its latest Approved version of the group changes, load it in the
background (the local counterpart of the EventBridge approval event that triggers a rollout on EKS).

The watcher reacts to changes, not to drift: a model an operator loaded by hand (/admin/reload) stays
until the registry's latest Approved version changes again, and a refused version is not retried."""

from __future__ import annotations

import logging
import threading

from components.errors import EcomrecError
from components.registry.base import ModelRegistry, ModelVersion
from components.serving.holder import ModelHolder

log = logging.getLogger(__name__)


class RegistryWatcher:
    def __init__(self, registry: ModelRegistry, group: str, holder: ModelHolder, interval_s: float) -> None:
        self.registry = registry
        self.group = group
        self.holder = holder
        self.interval_s = interval_s
        self._seen: str | None = None  # the latest Approved model_data_url already acted on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> ModelVersion | None:
        return self.registry.latest_approved(self.group)

    def poll_once(self) -> bool:
        """Load the latest Approved version if it is not the one being served; True if one was loaded."""
        try:
            latest = self.latest()
        except EcomrecError as error:
            log.warning("registry poll of group %r failed: %s", self.group, error)
            return False
        if latest is None or latest.model_data_url == self._seen:
            return False
        self._seen = latest.model_data_url
        current = self.holder.current
        if current is not None and current.source == latest.model_data_url:
            return False
        log.info("registry: group %r version %d is Approved; loading %s", self.group, latest.version,
                 latest.model_data_url)
        return self.holder.load(latest.model_data_url, registry_version=latest.version).ok

    def start(self) -> None:
        """Start polling; what is Approved right now counts as seen (start-up already chose a model)."""
        if self.interval_s <= 0 or self._thread is not None:
            return
        try:
            latest = self.latest()
        except EcomrecError as error:
            log.warning("registry poll of group %r failed: %s", self.group, error)
            latest = None
        self._seen = latest.model_data_url if latest else None
        self._thread = threading.Thread(target=self._run, name="ecomrec-registry-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # the watcher must outlive any surprise; the traceback goes to the log
                log.exception("registry watcher poll failed")
