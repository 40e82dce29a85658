"""The monitoring stack's Grafana provisioner (cdk/grafana/ecomrec_grafana/provision.py) against a real HTTP
server that answers like Grafana's HTTP API, with the Amazon Managed Grafana API stubbed by botocore's
Stubber on the real service model (it validates every parameter; moto 5 has no grafana service).

What the fake Grafana checks, from Grafana's HTTP API reference (the version Amazon Managed Grafana runs,
10.4; AMG's own copies: https://docs.aws.amazon.com/grafana/latest/userguide/Grafana-API-Datasource.html):
- https://grafana.com/docs/grafana/v10.4/developers/http_api/data_source/ (grafana/grafana
  docs/sources/developers/http_api/data_source.md @ b8218c87): GET /api/datasources/uid/:uid (404 when
  missing), POST /api/datasources (name, type, url, access; 409 when the uid or name exists),
  PUT /api/datasources/uid/:uid;
- https://grafana.com/docs/grafana/v10.4/developers/http_api/dashboard/ (dashboard.md @ 1ae69250):
  POST /api/dashboards/db with {dashboard, overwrite, message}; an existing uid without overwrite is
  412 ``name-exists``; the answer names id, uid, url, status, version;
- every call: ``Authorization: Bearer <token>`` (service-account tokens are used like API keys,
  https://docs.aws.amazon.com/grafana/latest/userguide/service-accounts.html) and a JSON body.
The data source's jsonData (sigV4Auth, sigV4Region) is what Grafana's SigV4 option for Amazon Managed
Service for Prometheus stores (https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-onboard-query-standalone-grafana.html);
sigV4AuthType "ec2_iam_role" is the workspace's IAM role (grafana/grafana-aws-sdk pkg/awsds/types.go, ToAuthType).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "cdk" / "grafana"))

from ecomrec_grafana import provision as p  # noqa: E402

DASHBOARD_FILE = REPO / "containers" / "monitoring" / "grafana-dashboard.json"
WORKSPACE = "g-0123456789"
TOKEN = "glsa_test_token_key"
ACCOUNT_ID = "sa-1"
TOKEN_ID = "tok-1"
DS_UID, DS_NAME = "ecomrec-amp", "ecomrec Prometheus"
AMP_URL = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-abc/"


@dataclass
class FakeGrafana:
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_dashboards: bool = False


def _server(state: FakeGrafana) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            assert self.headers["Content-Type"] == "application/json"
            body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            return body

        def _handle(self) -> None:
            state.calls.append((self.command, self.path))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._answer(401, {"message": "Unauthorized"})
            ds_prefix = "/api/datasources/uid/"
            if self.command == "GET" and self.path.startswith(ds_prefix):
                found = state.datasources.get(self.path.removeprefix(ds_prefix))
                return self._answer(200, found) if found else self._answer(404, {"message": "Data source not found"})
            if self.command == "POST" and self.path == "/api/datasources":
                body = self._body()
                missing = {"name", "type", "url", "access"} - set(body)
                if missing:
                    return self._answer(400, {"message": f"missing {sorted(missing)}"})
                if body["uid"] in state.datasources or any(d["name"] == body["name"]
                                                           for d in state.datasources.values()):
                    return self._answer(409, {"message": "data source with the same uid or name already exists"})
                state.datasources[body["uid"]] = {**body, "id": len(state.datasources) + 1, "version": 1}
                return self._answer(200, {"id": 1, "message": "Datasource added", "name": body["name"]})
            if self.command == "PUT" and self.path.startswith(ds_prefix):
                uid = self.path.removeprefix(ds_prefix)
                if uid not in state.datasources:
                    return self._answer(404, {"message": "Data source not found"})
                old = state.datasources[uid]
                state.datasources[uid] = {**self._body(), "id": old["id"], "version": old["version"] + 1}
                return self._answer(200, {"id": old["id"], "message": "Datasource updated"})
            if self.command == "POST" and self.path == "/api/dashboards/db":
                if state.fail_dashboards:
                    return self._answer(500, {"message": "internal error"})
                body = self._body()
                dashboard = body["dashboard"]
                assert isinstance(dashboard, dict) and dashboard.get("title")
                uid = dashboard["uid"]
                if uid in state.dashboards and not body.get("overwrite"):
                    return self._answer(412, {"message": "A dashboard with the same uid already exists",
                                              "status": "name-exists"})
                version = state.dashboards.get(uid, {}).get("version", 0) + 1
                state.dashboards[uid] = {"dashboard": dashboard, "version": version}
                return self._answer(200, {"id": 7, "uid": uid, "url": f"/d/{uid}/ecomrec-inference",
                                          "status": "success", "version": version})
            return self._answer(404, {"message": "Not found"})

        do_GET = do_POST = do_PUT = _handle  # noqa: N815 (http.server dispatches on these names)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def grafana_http() -> Iterator[tuple[FakeGrafana, str]]:
    state = FakeGrafana()
    server = _server(state)
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def amg() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("grafana", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()  # every expected call (the deletions too) was made


def expect_token_lifecycle(stubber: Stubber, *, conflict: bool = False) -> None:
    create = {"workspaceId": WORKSPACE, "name": p.SERVICE_ACCOUNT, "grafanaRole": "ADMIN"}
    if conflict:  # a service account left by a cut-off invocation
        stubber.add_client_error("create_workspace_service_account", "ConflictException", http_status_code=409,
                                 expected_params=create)
        stubber.add_response("list_workspace_service_accounts", {"serviceAccounts": [
            {"id": "sa-other", "name": "someone-else", "grafanaRole": "VIEWER", "isDisabled": "false"},
            {"id": ACCOUNT_ID, "name": p.SERVICE_ACCOUNT, "grafanaRole": "ADMIN", "isDisabled": "false"},
        ], "workspaceId": WORKSPACE}, {"workspaceId": WORKSPACE})
    else:
        stubber.add_response("create_workspace_service_account", {
            "grafanaRole": "ADMIN", "id": ACCOUNT_ID, "name": p.SERVICE_ACCOUNT, "workspaceId": WORKSPACE}, create)
    stubber.add_response("create_workspace_service_account_token", {
        "serviceAccountId": ACCOUNT_ID, "workspaceId": WORKSPACE,
        "serviceAccountToken": {"id": TOKEN_ID, "key": TOKEN, "name": "cfn-req"}},
        {"workspaceId": WORKSPACE, "serviceAccountId": ACCOUNT_ID, "name": "cfn-req", "secondsToLive": p.TOKEN_TTL_S})
    stubber.add_response("delete_workspace_service_account_token", {
        "serviceAccountId": ACCOUNT_ID, "tokenId": TOKEN_ID, "workspaceId": WORKSPACE},
        {"workspaceId": WORKSPACE, "serviceAccountId": ACCOUNT_ID, "tokenId": TOKEN_ID})
    stubber.add_response("delete_workspace_service_account", {
        "serviceAccountId": ACCOUNT_ID, "workspaceId": WORKSPACE},
        {"workspaceId": WORKSPACE, "serviceAccountId": ACCOUNT_ID})


def event(url: str, request_type: str = "Create", dashboard: str | None = None) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "RequestId": "req",
        **({"PhysicalResourceId": f"{WORKSPACE}/{DS_UID}"} if request_type != "Create" else {}),
        "ResourceProperties": {
            "WorkspaceId": WORKSPACE, "GrafanaUrl": url, "PrometheusUrl": AMP_URL, "Region": "eu-west-1",
            "DataSourceUid": DS_UID, "DataSourceName": DS_NAME,
            "Dashboard": dashboard if dashboard is not None else DASHBOARD_FILE.read_text(),
        },
    }


def expected_dashboard() -> dict[str, Any]:
    """The repository's file with exactly one change: the datasource variable's saved choice."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    variable["current"] = {"selected": True, "text": DS_NAME, "value": DS_UID}
    return dashboard


def test_create_adds_the_sigv4_data_source_and_the_repository_dashboard(grafana_http, amg) -> None:
    state, url = grafana_http
    client, stubber = amg
    expect_token_lifecycle(stubber)
    out = p.on_event(event(url), client)
    assert out["PhysicalResourceId"] == f"{WORKSPACE}/{DS_UID}"
    assert out["Data"] == {"DataSourceUid": DS_UID, "DashboardPath": "/d/ecomrec-inference/ecomrec-inference"}
    ds = state.datasources[DS_UID]
    assert (ds["type"], ds["access"], ds["url"], ds["name"]) == ("prometheus", "proxy", AMP_URL, DS_NAME)
    assert ds["jsonData"] == {"httpMethod": "POST", "sigV4Auth": True, "sigV4AuthType": "ec2_iam_role",
                              "sigV4Region": "eu-west-1"}
    assert state.dashboards["ecomrec-inference"]["version"] == 1
    saved = state.dashboards["ecomrec-inference"]["dashboard"]
    assert saved == expected_dashboard()
    # Every panel still reads the variable, which now names our data source.
    assert {json.dumps(panel["datasource"]) for panel in saved["panels"]} == {
        json.dumps({"type": "prometheus", "uid": "${datasource}"})}
    assert state.calls == [("GET", f"/api/datasources/uid/{DS_UID}"), ("POST", "/api/datasources"),
                           ("POST", "/api/dashboards/db")]


def test_update_converges_without_duplicates(grafana_http, amg) -> None:
    """A second run (an Update: new dashboard file) updates in place: PUT the data source, overwrite the
    dashboard; a plain POST of either would be refused (409 / 412) by Grafana."""
    state, url = grafana_http
    client, stubber = amg
    expect_token_lifecycle(stubber)
    p.on_event(event(url), client)
    expect_token_lifecycle(stubber)
    changed = json.loads(DASHBOARD_FILE.read_text())
    changed["title"] = "ecomrec inference v2"
    p.on_event(event(url, "Update", json.dumps(changed)), client)
    assert list(state.datasources) == [DS_UID] and state.datasources[DS_UID]["version"] == 2
    assert ("PUT", f"/api/datasources/uid/{DS_UID}") in state.calls
    assert state.dashboards["ecomrec-inference"]["dashboard"]["title"] == "ecomrec inference v2"
    assert state.dashboards["ecomrec-inference"]["version"] == 2


def test_a_leftover_service_account_is_reused_and_then_deleted(grafana_http, amg) -> None:
    state, url = grafana_http
    client, stubber = amg
    expect_token_lifecycle(stubber, conflict=True)
    p.on_event(event(url), client)
    assert DS_UID in state.datasources


def test_the_token_is_deleted_when_grafana_fails(grafana_http, amg) -> None:
    state, url = grafana_http
    state.fail_dashboards = True
    client, stubber = amg
    expect_token_lifecycle(stubber)  # the fixture asserts the two deletions happened
    with pytest.raises(p.ProvisionError, match=r"POST /api/dashboards/db: HTTP 500"):
        p.on_event(event(url), client)


def test_delete_touches_nothing(grafana_http, amg) -> None:
    """Delete calls neither AWS (the Stubber has no responses queued: any call would raise) nor Grafana."""
    state, url = grafana_http
    client, _ = amg
    assert p.on_event(event(url, "Delete"), client) == {"PhysicalResourceId": f"{WORKSPACE}/{DS_UID}"}
    assert state.calls == []


def test_a_dashboard_without_the_datasource_variable_is_refused() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    dashboard["templating"]["list"] = []
    with pytest.raises(p.ProvisionError, match="no templating variable 'datasource'"):
        p.dashboard_with_datasource(dashboard, DS_UID, DS_NAME)


def test_the_runtime_sdk_has_the_service_account_operations() -> None:
    """The Lambda runtime's boto3 is newer than botocore 1.34.106, which added these operations (botocore
    CHANGELOG.rst: "grafana: This release adds new ServiceAccount and ServiceAccountToken APIs"); the venv's
    botocore, on which the Stubber validates, has them under these names."""
    import botocore

    assert tuple(int(x) for x in botocore.__version__.split(".")[:3]) >= (1, 34, 106)
    operations = set(boto3.client("grafana", region_name="eu-west-1").meta.service_model.operation_names)
    assert {"CreateWorkspaceServiceAccount", "CreateWorkspaceServiceAccountToken", "ListWorkspaceServiceAccounts",
            "DeleteWorkspaceServiceAccountToken", "DeleteWorkspaceServiceAccount"} <= operations
