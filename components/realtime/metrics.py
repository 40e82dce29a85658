"""The real-time series (names in components/serving/metric_names.py). Registered by ServiceMetrics on
every deployment, at zero when events are off, so dashboards and alert rules always find them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

from components.event_rules import EVENT_CHECKS
from components.serving import metric_names as m

if TYPE_CHECKING:
    from components.realtime.intake import IntakeResult

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
        self.fresh_fast = Counter(m.FRESH_FAST_TOTAL.removesuffix("_total"),
                                  "Fresh answers by the fast path: the exact rebuilds' budget was spent",
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

    def fast_answer(self) -> None:
        self.fresh_fast.inc()

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
