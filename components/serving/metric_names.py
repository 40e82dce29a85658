"""Prometheus metric names the service exports. The Grafana dashboard, the Prometheus alert rules and
the CDK alarms read these names; tests check that each one is really exported."""

from typing import Final

REQUESTS_TOTAL: Final = "ecomrec_requests_total"  # counter{route, method, status}
REQUEST_LATENCY_SECONDS: Final = "ecomrec_request_latency_seconds"  # histogram{route, status}
# counter{route, reason}: users answered from the popular list (unknown_user, no_candidates), per route: an
# /invocations batch counts each of its users, so a share must divide by the same route's answers
FALLBACK_TOTAL: Final = "ecomrec_fallback_total"
# counter: candidate rows ranked for personal answers (their scores come from model load, not per request)
CANDIDATES_CONSIDERED_TOTAL: Final = "ecomrec_candidates_considered_total"
MODEL_INFO: Final = "ecomrec_model"  # info{version, group}: exported as ecomrec_model_info
MODEL_LOAD_SECONDS: Final = "ecomrec_model_load_seconds"  # gauge: duration of the last load
MODEL_LAST_LOAD_SUCCESS: Final = "ecomrec_model_last_load_success"  # gauge 1 or 0
MODEL_LOADS_TOTAL: Final = "ecomrec_model_loads_total"  # counter{result}: success, refused
CATALOG_ITEMS: Final = "ecomrec_catalog_items"  # gauge: items in the loaded bundle
ITEMS_SERVED_DISTINCT: Final = "ecomrec_items_served_distinct"  # gauge: distinct items answered since load
# counter{route}: requests whose client left before sending the whole body (answered 499, not a 5xx: the
# error-rate alert must not page for a client's dropped upload)
CLIENT_DISCONNECTS_TOTAL: Final = "ecomrec_client_disconnects_total"
# gauge 1/0: the served model is a registry version that has been Rejected (nothing Approved to go to)
MODEL_SERVED_REJECTED: Final = "ecomrec_model_served_rejected"
# Real time (components/realtime): counter{outcome, reason}: POST /events per event; outcome accepted,
# rejected (reason = the contract's) or already_received (an event_id retry)
EVENTS_TOTAL: Final = "ecomrec_events_total"
STORE_LATENCY_SECONDS: Final = "ecomrec_store_latency_seconds"  # histogram{operation}: online store calls
STORE_ERRORS_TOTAL: Final = "ecomrec_store_errors_total"  # counter{operation}: failed or timed-out calls
DEGRADED_TOTAL: Final = "ecomrec_degraded_total"  # counter{route}: answers made without the online store
# counter: fresh answers made by the fast path (the 16 counts and durations on the bundle rows) because the
# worker had spent its exact rebuilds of the second (ECOMREC_FRESH_EXACT_PER_S) or their CPU time
# (ECOMREC_FRESH_EXACT_SHARE)
FRESH_FAST_TOTAL: Final = "ecomrec_fresh_fast_answers_total"
