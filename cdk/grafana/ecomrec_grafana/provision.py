"""Custom resource of the monitoring stack: the Amazon Managed Grafana workspace gets the Amazon Managed
Service for Prometheus data source and the service dashboard (containers/monitoring/grafana-dashboard.json),
so nobody clicks them together after a deploy.

On Create and Update, with a Grafana service-account token that lives for this invocation only:

1. a workspace service account with the ADMIN Grafana role (creating data sources needs it), then a token
   for it: the Amazon Managed Grafana API's CreateWorkspaceServiceAccount and
   CreateWorkspaceServiceAccountToken (https://docs.aws.amazon.com/grafana/latest/APIReference/API_CreateWorkspaceServiceAccount.html,
   https://docs.aws.amazon.com/grafana/latest/APIReference/API_CreateWorkspaceServiceAccountToken.html);
   botocore has them since 1.34.106 (its CHANGELOG.rst), older than the SDK the Lambda Python 3.14 runtime
   includes (https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html#python-sdk-included);
2. the data source, by a fixed uid, through Grafana's HTTP API: GET /api/datasources/uid/:uid, then
   POST /api/datasources (404) or PUT /api/datasources/uid/:uid
   (https://grafana.com/docs/grafana/v10.4/developers/http_api/data_source/; the same pages in AMG:
   https://docs.aws.amazon.com/grafana/latest/userguide/Grafana-API-Datasource.html). It signs its queries
   with SigV4 (jsonData sigV4Auth + sigV4Region,
   https://docs.aws.amazon.com/prometheus/latest/userguide/AMP-onboard-query-standalone-grafana.html) as the
   workspace's IAM role: sigV4AuthType ``ec2_iam_role``, the value grafana/grafana-aws-sdk's
   pkg/awsds/types.go maps to AuthTypeEC2IAMRole, which Grafana's editor labels "Workspace IAM Role";
3. the dashboard, POST /api/dashboards/db with ``overwrite: true``
   (https://grafana.com/docs/grafana/v10.4/developers/http_api/dashboard/), its ``datasource`` variable set
   to that data source;
4. the token and the service account are deleted again, whatever happened in between.

Every step is an upsert keyed by uid, so an Update (a new dashboard file, a new endpoint) converges and a
repeated one changes nothing. Delete does nothing: the data source and the dashboard live inside the
workspace and go with it; removing them from a workspace that stays would only take the dashboard away.
"""

from __future__ import annotations

import copy
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)

SERVICE_ACCOUNT = "ecomrec-provisioner"
TOKEN_TTL_S = 900  # the whole invocation fits; the token is deleted at its end anyway
DATASOURCE_VARIABLE = "datasource"  # the dashboard's data-source template variable
HTTP_TIMEOUT_S = 30.0


class ProvisionError(RuntimeError):
    """A Grafana or Amazon Managed Grafana call failed; the message names the call."""


def datasource_body(uid: str, name: str, prometheus_url: str, region: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "name": name,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": True,
        "jsonData": {"httpMethod": "POST", "sigV4Auth": True, "sigV4AuthType": "ec2_iam_role", "sigV4Region": region},
    }


def dashboard_with_datasource(dashboard: dict[str, Any], uid: str, name: str) -> dict[str, Any]:
    """The dashboard with its data-source variable pointing at our data source (a copy). The panels keep
    ``${datasource}``, so a viewer can still switch; the saved choice is ours."""
    out = copy.deepcopy(dashboard)
    variables = [v for v in out.get("templating", {}).get("list", [])
                 if v.get("name") == DATASOURCE_VARIABLE and v.get("type") == "datasource"]
    if not variables:
        raise ProvisionError(f"the dashboard {out.get('uid')!r} has no templating variable "
                             f"{DATASOURCE_VARIABLE!r} of type datasource to point at the data source")
    variables[0]["current"] = {"selected": True, "text": name, "value": uid}
    out.pop("id", None)  # uid identifies it; an id from another Grafana would name a different dashboard
    return out


class GrafanaApi:
    """Grafana's HTTP API with a bearer token (service-account tokens are used like API keys)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             ok_missing: bool = False) -> dict[str, Any] | None:
        """The JSON answer; None for a 404 when ``ok_missing``; any other failure raises, naming the call."""
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                     "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as error:
            if ok_missing and error.code == 404:
                return None
            detail = error.read()[:300].decode(errors="replace")
            raise ProvisionError(f"Grafana {method} {path}: HTTP {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise ProvisionError(f"Grafana {method} {path}: {error.reason}") from None


def upsert_datasource(api: GrafanaApi, body: dict[str, Any]) -> None:
    uid = body["uid"]
    if api.call("GET", f"/api/datasources/uid/{uid}", ok_missing=True) is None:
        api.call("POST", "/api/datasources", body)
        log.info("created data source %s", uid)
    else:
        api.call("PUT", f"/api/datasources/uid/{uid}", body)
        log.info("updated data source %s", uid)


def put_dashboard(api: GrafanaApi, dashboard: dict[str, Any]) -> dict[str, Any]:
    answer = api.call("POST", "/api/dashboards/db",
                      {"dashboard": dashboard, "overwrite": True, "message": "ecomrec: deployed by CloudFormation"})
    assert answer is not None
    log.info("saved dashboard %s: %s", dashboard.get("uid"), answer.get("url"))
    return answer


def _code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _find_service_account(grafana: Any, workspace_id: str) -> str | None:
    kwargs: dict[str, Any] = {"workspaceId": workspace_id}
    while True:
        page = grafana.list_workspace_service_accounts(**kwargs)
        for account in page.get("serviceAccounts", []):
            if account["name"] == SERVICE_ACCOUNT:
                return str(account["id"])
        if not page.get("nextToken"):
            return None
        kwargs["nextToken"] = page["nextToken"]


@contextmanager
def service_account_token(grafana: Any, workspace_id: str, token_name: str) -> Iterator[str]:
    """A short-lived ADMIN token; the token and its service account are deleted on the way out. A service
    account left by an invocation that was cut off is found by name and reused (names are unique)."""
    try:
        account_id = str(grafana.create_workspace_service_account(
            workspaceId=workspace_id, name=SERVICE_ACCOUNT, grafanaRole="ADMIN")["id"])
    except Exception as error:
        if _code(error) != "ConflictException":
            raise ProvisionError(f"CreateWorkspaceServiceAccount {workspace_id}: {error}") from error
        found = _find_service_account(grafana, workspace_id)
        if found is None:
            raise ProvisionError(f"CreateWorkspaceServiceAccount {workspace_id}: {error}") from error
        account_id = found
    try:
        token = grafana.create_workspace_service_account_token(
            workspaceId=workspace_id, serviceAccountId=account_id, name=token_name, secondsToLive=TOKEN_TTL_S
        )["serviceAccountToken"]
        try:
            yield str(token["key"])
        finally:
            grafana.delete_workspace_service_account_token(
                workspaceId=workspace_id, serviceAccountId=account_id, tokenId=token["id"])
    finally:
        grafana.delete_workspace_service_account(workspaceId=workspace_id, serviceAccountId=account_id)


def on_event(event: dict[str, Any], grafana: Any) -> dict[str, Any]:
    """onEvent of the CDK provider framework (it reports the result to CloudFormation)."""
    props = event["ResourceProperties"]
    if event["RequestType"] == "Delete":
        physical_id = event["PhysicalResourceId"]
        log.info("delete %s: nothing to do (the workspace holds the data source and the dashboard)", physical_id)
        return {"PhysicalResourceId": physical_id}
    # Named after the workspace: another workspace is another resource (CloudFormation then deletes the old
    # one, which does nothing).
    physical_id = f"{props['WorkspaceId']}/{props['DataSourceUid']}"
    uid, name = props["DataSourceUid"], props["DataSourceName"]
    dashboard = dashboard_with_datasource(json.loads(props["Dashboard"]), uid, name)
    token_name = f"cfn-{event.get('RequestId', 'request')}"[:128]
    with service_account_token(grafana, props["WorkspaceId"], token_name) as token:
        api = GrafanaApi(props["GrafanaUrl"], token)
        upsert_datasource(api, datasource_body(uid, name, props["PrometheusUrl"], props["Region"]))
        saved = put_dashboard(api, dashboard)
    return {"PhysicalResourceId": physical_id,
            "Data": {"DataSourceUid": uid, "DashboardPath": str(saved.get("url", ""))}}


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    import boto3  # in the Lambda runtime

    return on_event(event, boto3.client("grafana"))
