"""Grafana dashboard and Prometheus alert rules: valid, unit-tested, and naming only what the service exports.

No fakes: the exported series names come from the service's own metrics registry
(components/serving/metrics.py built on metric_names.py); promtool (Debian's prometheus package) checks
the rules, runs their unit tests (prometheus-rules.test.yml) and parses the dashboard's queries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.serving import metric_names

MONITORING = Path(__file__).resolve().parents[1] / "containers" / "monitoring"
RULES = MONITORING / "prometheus-rules.yml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SERIES = re.compile(r"\becomrec_[a-z0-9_]+\b")
RECORDED = re.compile(r"\becomrec:[a-z0-9_:]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",),
            "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name the service's registry exposes, from the metric families it registers."""
    prometheus_client = pytest.importorskip("prometheus_client", reason="the serving extra is not installed")
    from components.serving.metrics import ServiceMetrics

    registry = prometheus_client.CollectorRegistry()
    ServiceMetrics(registry)
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; `bash .ci/setup --dev` installs it)")
    return path


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> dict[str, str]:
    return {f"{p['title']}/{t['refId']}": t["expr"] for p in dashboard()["panels"] for t in p["targets"]}


def rule_exprs() -> dict[str, str]:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return {r.get("alert") or r["record"]: str(r["expr"]) for r in rules}


def test_exported_series_follow_metric_names() -> None:
    names = exported_series()
    assert metric_names.REQUESTS_TOTAL in names
    assert metric_names.REQUEST_LATENCY_SECONDS + "_bucket" in names
    assert metric_names.MODEL_INFO + "_info" in names
    assert metric_names.ITEMS_SERVED_DISTINCT in names


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_assets_name_only_exported_series(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    used = {name for expr in exprs.values() for name in SERIES.findall(expr)}
    unknown = used - exported_series()
    assert not unknown, f"{source} uses series the service does not export: {sorted(unknown)}"
    assert len(used) >= 5  # not vacuous: the regex does find the names


def test_dashboard_has_the_panels_the_team_needs() -> None:
    exprs = dashboard_exprs()
    text = "\n".join(exprs.values())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(ecomrec_request_latency_seconds_bucket" in text
    titles = {p["title"] for p in dashboard()["panels"]}
    assert {"Request rate", "Error rate (5xx)", "Latency p50 / p95 / p99", "Fallback rate", "Model version",
            "Catalog coverage of answers"} <= titles
    assert "ecomrec_items_served_distinct / ecomrec_catalog_items" in text
    assert "ecomrec_model_info" in text
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_the_fallback_share_divides_like_by_like() -> None:
    """Fallbacks are counted per answered user, on every route that answers (a 1,000-user /invocations
    batch is 1,000 of them): the share must take the numerator and the denominator on the same route, and
    count answers (200s) below, as each of those is one user answered."""
    shares = {title: expr for title, expr in dashboard_exprs().items()
              if metric_names.FALLBACK_TOTAL in expr and metric_names.REQUESTS_TOTAL in expr}
    assert shares, "the dashboard shows no fallback share"
    for title, expr in shares.items():
        numerator, denominator = expr.split(" / ")
        assert metric_names.FALLBACK_TOTAL in numerator and metric_names.REQUESTS_TOTAL in denominator, title
        routes = [re.findall(r'route="([^"]+)"', side) for side in (numerator, denominator)]
        assert routes[0] and routes[0] == routes[1], f"{title}: fallbacks of {routes[0]} over requests of {routes[1]}"
        assert 'status="200"' in denominator, title


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool has no query linter: every panel query becomes a recording rule and is checked as one."""
    exprs = dashboard_exprs()
    rules = [{"record": f"ecomrec:dashboard_{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, expr in enumerate(exprs.values())]
    path = tmp_path / "dashboard-as-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_promtool_accepts_the_rules() -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_fire_on_the_series_that_should_fire_them() -> None:
    proc = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=MONITORING, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {name for name in rule_exprs() if not RECORDED.fullmatch(name)}
    assert alerts == tested, "every alert has a unit test"


def test_rules_cover_error_rate_latency_traffic_and_model_loads() -> None:
    rules = rule_exprs()
    assert {"EcomrecHighErrorRate", "EcomrecLatencyP99OverBudget", "EcomrecNoTraffic",
            "EcomrecModelLoadFailures"} <= set(rules)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    by_name = {r.get("alert"): r for g in groups for r in g["rules"]}
    assert by_name["EcomrecHighErrorRate"]["for"] == "5m"
    assert by_name["EcomrecHighErrorRate"]["expr"].endswith("> 0.05")
