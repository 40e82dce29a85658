"""What the service holds for real time: the store (behind its guard), the log, the intake, the metrics."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from components.event_rules import EVENT_CHECKS
from components.realtime.fresh import FreshAnswers
from components.realtime.intake import EventIntake, IntakeResult, StoreGuard
from components.realtime.log import EventLog
from components.realtime.store import OnlineStore, SqliteStore, StoreLimits
from components.serving import metric_names as m
from components.serving.settings import ServingSettings

STORE_FILE = "online-store.sqlite"
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
ROUTES = ("/events", "/recommendations", "/invocations")
STORE_OPERATIONS = ("known", "add", "read")


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(m.EVENTS_TOTAL.removesuffix("_total"), "POST /events, per event",
                              ["outcome", "reason"], registry=registry)
        self.store_latency = Histogram(m.STORE_LATENCY_SECONDS, "Online store calls", ["operation"],
                                       buckets=STORE_BUCKETS, registry=registry)
        self.store_errors = Counter(m.STORE_ERRORS_TOTAL.removesuffix("_total"),
                                    "Online store calls that failed or timed out", ["operation"],
                                    registry=registry)
        self.degraded = Counter(m.DEGRADED_TOTAL.removesuffix("_total"),
                                "Answers made without the online store (the bundle alone)", ["route"],
                                registry=registry)
        # export zeros so rates and alerts see the series from the start
        for route in ROUTES:
            self.degraded.labels(route=route)
        self.events.labels(outcome="accepted", reason="")
        for operation in STORE_OPERATIONS:
            self.store_latency.labels(operation=operation)
            self.store_errors.labels(operation=operation)
        for reason in EVENT_CHECKS:
            self.events.labels(outcome="rejected", reason=reason)

    def store_call(self, operation: str, seconds: float) -> None:
        if operation.endswith("_error"):
            operation = operation.removesuffix("_error")
            self.store_errors.labels(operation=operation).inc()
        self.store_latency.labels(operation=operation).observe(seconds)

    def intake(self, result: IntakeResult) -> None:
        replays = set(result.already_received)
        self.events.labels(outcome="accepted", reason="").inc(len(result.accepted) - len(replays))
        if replays:
            self.events.labels(outcome="already_received", reason="").inc(len(replays))
        for rejected in result.rejected:
            self.events.labels(outcome="rejected", reason=str(rejected["reason"])).inc()
        if result.degraded:
            self.degraded.labels(route="/events").inc()


def open_store(settings: ServingSettings) -> OnlineStore:
    limits = StoreLimits(max_events=settings.store_max_events, max_days=settings.store_max_days,
                         key_ttl_days=settings.store_key_ttl_days)
    if settings.store_url:
        from components.realtime.redis_store import RedisStore

        return RedisStore(settings.store_url, limits=limits, timeout_s=settings.store_timeout_s)
    work_dir = settings.work_dir or Path(tempfile.gettempdir()) / "ecomrec-serving"
    return SqliteStore(settings.store_path or work_dir / STORE_FILE, limits=limits,
                       timeout_s=settings.store_timeout_s)


@dataclass
class Realtime:
    store: OnlineStore
    guard: StoreGuard
    intake: EventIntake
    metrics: RealtimeMetrics
    fresh: FreshAnswers

    def close(self) -> None:
        self.intake.log.close()
        self.store.close()


def build_realtime(settings: ServingSettings, registry: CollectorRegistry) -> Realtime | None:
    """None unless ECOMREC_EVENTS_RAW_ROOT is set. The metrics are registered either way (at zero), so
    dashboards and alert rules find every series on every deployment."""
    metrics = RealtimeMetrics(registry)
    if settings.events_raw_root is None:
        return None
    store = open_store(settings)
    guard = StoreGuard(store, retry_after_s=settings.store_retry_after_s, on_result=metrics.store_call)
    event_log = EventLog(settings.events_raw_root, fsync=settings.events_fsync)
    return Realtime(store=store, guard=guard, intake=EventIntake(event_log, guard), metrics=metrics,
                    fresh=FreshAnswers(guard))
