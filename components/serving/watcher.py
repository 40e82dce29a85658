"""Follow the registry: when its latest Approved version of the group changes, load it in the
background (the local counterpart of the EventBridge approval event that triggers a rollout on EKS).

The watcher reacts to changes, not to drift: a model an operator loaded by hand (/admin/reload) stays
until the registry's latest Approved version changes again, and a refused version is not retried.

Every load is of the registered bytes (the version's bundle_sha256) and is re-checked just before the swap:
a version rejected while it was loading is not published. When no version is Approved any more (every one
was rejected) the service keeps serving what it has, as the EKS rollout does when it has nothing to roll
back to, but says so: an error log on the change and ``ecomrec_model_served_rejected`` 1 while the model it
serves is one the registry rejected. An unreadable or vanished registry is logged at each poll and changes
nothing."""

from __future__ import annotations

import logging
import threading

from components.errors import EcomrecError
from components.registry.base import APPROVED, REJECTED, ModelRegistry, ModelVersion
from components.serving.holder import ModelHolder

log = logging.getLogger(__name__)


class RegistryWatcher:
    def __init__(self, registry: ModelRegistry, group: str, holder: ModelHolder, interval_s: float) -> None:
        self.registry = registry
        self.group = group
        self.holder = holder
        self.interval_s = interval_s
        self._seen: str | None = None  # the latest Approved model_data_url already acted on
        self._none_approved = False  # the last poll found no Approved version
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> ModelVersion | None:
        return self.registry.latest_approved(self.group)

    def load(self, version: ModelVersion) -> bool:
        """Load ``version``'s registered bytes; refuse the swap if it is no longer Approved by then."""

        def still_approved() -> str | None:
            try:
                status = self.registry.describe(self.group, version.version).status
            except EcomrecError as error:
                return f"cannot re-check version {version.version} before the swap: {error}"
            return None if status == APPROVED else f"version {version.version} is {status} now"

        return self.holder.load(version.model_data_url, registry_version=version.version,
                                expected_sha256=version.bundle_sha256 or None, still_wanted=still_approved).ok

    def poll_once(self) -> bool:
        """Load the latest Approved version if it is not the one being served; True if one was loaded."""
        try:
            latest = self.latest()
        except EcomrecError as error:
            log.warning("registry poll of group %r failed, still serving what is loaded: %s", self.group, error)
            return False
        self._check_served()
        if latest is None:
            if not self._none_approved:
                current = self.holder.current
                log.error("registry: group %r has no Approved version (all rejected?); still serving %s: "
                          "approve a version or stop the service", self.group,
                          current.version if current else "nothing")
            self._none_approved = True
            self._seen = None
            return False
        self._none_approved = False
        if latest.model_data_url == self._seen:
            return False
        self._seen = latest.model_data_url
        current = self.holder.current
        if current is not None and current.source == latest.model_data_url:
            return False
        log.info("registry: group %r version %d is Approved; loading %s", self.group, latest.version,
                 latest.model_data_url)
        return self.load(latest)

    def _check_served(self) -> None:
        """``ecomrec_model_served_rejected``: 1 while the served registry version is Rejected."""
        current = self.holder.current
        rejected = False
        if current is not None and current.registry_version is not None:
            try:
                rejected = self.registry.describe(self.group, current.registry_version).status == REJECTED
            except EcomrecError as error:
                log.warning("registry: cannot read the served version %d: %s", current.registry_version, error)
                return
        self.holder.set_served_rejected(rejected)

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
