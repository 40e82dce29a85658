"""The service's Prometheus metrics, in a registry per app (tests start several apps in one process).

Names come from ``metric_names`` (dashboards and alert rules read them). With several worker processes
each process exports its own series; on EKS run one worker per pod and let Prometheus sum the pods.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from components.realtime.metrics import RealtimeMetrics
from components.serving import metric_names as m
from components.serving.engine import FALLBACK_REASONS

# The routes that answer users: the fallback counter's route label, the same values as ecomrec_requests_total's.
RECOMMENDATIONS_ROUTE = "/recommendations"
INVOCATIONS_ROUTE = "/invocations"
ANSWERING_ROUTES = (RECOMMENDATIONS_ROUTE, INVOCATIONS_ROUTE)

# Fine buckets where the latency budget lives (p99 <= 20 ms), coarse ones for the tail.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(m.REQUESTS_TOTAL.removesuffix("_total"), "HTTP requests",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram(m.REQUEST_LATENCY_SECONDS, "Request latency from first byte in to last out",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter(m.FALLBACK_TOTAL.removesuffix("_total"),
                                 "Users answered from the popular list instead of the ranked candidates",
                                 ["route", "reason"], registry=r)
        self.candidates_considered = Counter(
            m.CANDIDATES_CONSIDERED_TOTAL.removesuffix("_total"),
            "Candidate rows ranked for personal answers (scored once at model load, not per request)",
            registry=r)
        self.model_info = Info(m.MODEL_INFO, "The model bundle being served", registry=r)
        self.load_seconds = Gauge(m.MODEL_LOAD_SECONDS, "Duration of the last bundle load", registry=r)
        self.last_load_success = Gauge(m.MODEL_LAST_LOAD_SUCCESS, "1 if the last bundle load succeeded",
                                       registry=r)
        self.loads = Counter(m.MODEL_LOADS_TOTAL.removesuffix("_total"), "Bundle loads by result",
                             ["result"], registry=r)
        self.catalog_items = Gauge(m.CATALOG_ITEMS, "Items in the served bundle's catalog", registry=r)
        self.items_served = Gauge(m.ITEMS_SERVED_DISTINCT, "Distinct items answered since the model loaded",
                                  registry=r)
        self.client_disconnects = Counter(m.CLIENT_DISCONNECTS_TOTAL.removesuffix("_total"),
                                          "Requests whose client left before sending the whole body",
                                          ["route"], registry=r)
        self.served_rejected = Gauge(m.MODEL_SERVED_REJECTED,
                                     "1 while the served model is a registry version that was Rejected",
                                     registry=r)
        for result in ("success", "refused"):
            self.loads.labels(result=result)  # export zeros so alert rules see the series from the start
        for route in ANSWERING_ROUTES:
            self.client_disconnects.labels(route=route)
            for reason in FALLBACK_REASONS:
                self.fallbacks.labels(route=route, reason=reason)
        self.realtime = RealtimeMetrics(r)  # events, online store, degraded answers (components/realtime)
