"""A small Kubernetes API client over HTTPS (standard library only) and the EKS bearer-token provider.

Why not the kubernetes package or kubectl: the function needs four verbs on a handful of kinds, and a
Lambda layer with kubectl is what the serving stack avoids. The token provider is injected, so tests run
the client against a local HTTP server with a fixed token.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

TokenProvider = Callable[[], str]

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: server-side apply accepts it

# (apiVersion, kind) -> (plural, namespaced): the kinds the manifests use.
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Service"): ("services", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True),
    ("networking.k8s.io/v1", "Ingress"): ("ingresses", True),
    ("networking.k8s.io/v1", "IngressClass"): ("ingressclasses", False),
    ("eks.amazonaws.com/v1", "IngressClassParams"): ("ingressclassparams", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("v1", "ConfigMap"): ("configmaps", True),
}


class KubeApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"Kubernetes API {method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status


def object_path(obj: dict[str, Any]) -> str:
    """The API path of a manifest's object, e.g. /apis/apps/v1/namespaces/ns/deployments/name."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    try:
        plural, namespaced = RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"manifest kind {api_version}/{kind} is not in kube.RESOURCES") from None
    meta = obj.get("metadata", {})
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced:
        prefix += f"/namespaces/{meta['namespace']}"
    return f"{prefix}/{plural}/{meta['name']}"


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


class KubeClient:
    def __init__(self, server: str, token_provider: TokenProvider, *, ca_data_b64: str | None = None,
                 timeout_s: float = 15.0) -> None:
        self.server = server.rstrip("/")
        self._token = token_provider
        self._timeout = timeout_s
        self._ssl: ssl.SSLContext | None = None
        if self.server.startswith("https://"):
            # EKS hands out its CA as base64 PEM; trust exactly that CA for the cluster endpoint.
            cadata = base64.b64decode(ca_data_b64).decode() if ca_data_b64 else None
            self._ssl = ssl.create_default_context(cadata=cadata)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                content_type: str = "application/json",
                query: dict[str, str] | None = None) -> dict[str, Any]:
        url = self.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token()}", "Accept": "application/json",
            **({"Content-Type": content_type} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=self._timeout, context=self._ssl) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise KubeApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(payload) if payload else {}

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any],
                         field_manager: str) -> dict[str, Any]:
        return self.request("PATCH", deployment_path(namespace, name), patch, content_type=STRATEGIC_MERGE,
                            query={"fieldManager": field_manager})

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply (create or update), taking over fields from other managers."""
        return self.request("PATCH", object_path(obj), obj, content_type=APPLY_PATCH,
                            query={"fieldManager": field_manager, "force": "true"})

    def delete(self, obj: dict[str, Any]) -> bool:
        """Delete; False when it was already gone."""
        try:
            self.request("DELETE", object_path(obj))
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def eks_token_provider(cluster_name: str, region: str, session: Any = None,
                       ttl_s: float = 600.0) -> TokenProvider:
    """Bearer tokens as `aws eks get-token` makes them: a presigned STS GetCallerIdentity URL.

    Tokens live 15 minutes; one is reused for ``ttl_s`` seconds. ``session`` is a boto3 Session (created
    on first use when omitted, never at import).
    """
    cache: dict[str, Any] = {}

    def provide() -> str:
        if cache.get("expires", 0.0) > time.monotonic():
            return str(cache["token"])
        import boto3  # the Lambda runtime ships it; imported here so tests need no AWS for the client
        from botocore.signers import RequestSigner

        sess = session or boto3.session.Session()
        sts = sess.client("sts", region_name=region)
        credentials = sess.get_credentials()
        if credentials is None:
            raise RuntimeError(f"no AWS credentials to sign the EKS token for cluster {cluster_name}")
        signer = RequestSigner(sts.meta.service_model.service_id, region, "sts", "v4", credentials, sess.events)
        url = signer.generate_presigned_url(
            {"method": "GET", "url": f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity"
                                     "&Version=2011-06-15",
             "body": {}, "headers": {"x-k8s-aws-id": cluster_name}, "context": {}},
            region_name=region, expires_in=60, operation_name="")
        token = "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
        cache.update(token=token, expires=time.monotonic() + ttl_s)
        return token

    return provide
