"""The inference service's Kubernetes objects, as plain dicts (applied by the serving stack's custom
resource with server-side apply, and asserted on directly by tests/test_cdk_stacks.py).

Why these settings: a model switch is a rolling update. ``maxUnavailable: 0`` + ``maxSurge: 1`` keep full
capacity while one new pod at a time loads the bundle; the readiness probe (``/readyz`` answers 200 only
with a model loaded) decides when it takes traffic; ``preStop`` sleep lets the ALB deregister a pod before
it stops; the PodDisruptionBudget keeps node drains from taking more than one pod at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ecomrec_rollout import constants as c

APP_LABEL = {"app.kubernetes.io/name": c.DEPLOYMENT, "app.kubernetes.io/part-of": "ecomrec"}
READY_PATH = "/readyz"  # 200 once a bundle is loaded and smoke-scored, 503 before (routers/health.py)
LIVE_PATH = "/healthz"  # 200 while the process answers
METRICS_PATH = "/metrics"
# What the internet-facing ALB forwards to the pods: the public API and nothing else. The pods also answer
# /metrics (it names the model's S3 location), /docs, /openapi.json, /admin/* and the probes; Prometheus
# scrapes /metrics inside the cluster and the kubelet probes the pods directly, so none of those needs the
# ALB. /ping and /invocations are SageMaker's hosting contract, called by SageMaker when the container runs
# as an endpoint, not by callers of the EKS service: they stay off the ALB too. Anything else gets the
# ALB's default answer (404) without reaching a pod.
# POST /events (REALTIME.md) is the shops' way in: the same listener, the same TLS.
PUBLIC_PATHS = ("/recommendations", "/events")
UID = 10001
# A rolling update is judged by Kubernetes: no progress for this long -> ProgressDeadlineExceeded (the rollout
# function's cue to undo it). Each new pod may take the startup probe's budget to load its bundle.
PROGRESS_DEADLINE_S = 480
STARTUP_PERIOD_S, STARTUP_FAILURES = 5, 60
MIN_READY_S = 10


def healthy_rollout_s(p: ManifestParams) -> int:
    """The longest a healthy rolling update can take: maxSurge 1 replaces the pods one at a time (up to the
    HPA's maxReplicas), each allowed the startup probe's budget plus minReadySeconds."""
    return p.max_replicas * (STARTUP_PERIOD_S * STARTUP_FAILURES + MIN_READY_S)


@dataclass(frozen=True)
class ManifestParams:
    image: str  # initial image; the rollout function replaces it per approved model package
    model_uri: str  # initial ECOMREC_MODEL; empty until the first approval
    model_group: str
    certificate_arn: str  # ACM certificate for the HTTPS listener (a CloudFormation parameter)
    load_balancer_name: str
    replicas: int = 3
    max_replicas: int = 12
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1536Mi"
    memory_limit: str = "3Gi"  # the bundle lives in memory; a swap briefly holds two
    tmp_size: str = "4Gi"  # downloaded + unpacked bundles (ECOMREC_WORK_DIR)
    # Where the internet-facing ALB's addresses come from (its nodes sit in the public subnets): the only
    # sources besides the scraper the NetworkPolicy lets reach the pods.
    load_balancer_cidrs: tuple[str, ...] = ()
    scraper_cidrs: tuple[str, ...] = ()  # the subnets of AMP's managed scraper's ENIs (no pod there)
    # Real time (cdk/stacks/realtime.py): the event log's Firehose stream, the store's rediss:// URL (with the
    # IAM-enabled user) and the cache's name for IAM authentication; empty: POST /events is off.
    events_firehose_stream: str = ""
    store_url: str = ""
    store_iam_cache: str = ""
    store_cluster: bool = False  # the store runs in cluster mode (ElastiCache Serverless does)
    # The Secrets Manager secret holding POST /events's bearer token; required with the event log, since the
    # route is on the internet-facing load balancer.
    events_token_secret: str = ""
    region: str = ""  # AWS_REGION and AWS_DEFAULT_REGION for the pods' SDK calls (Firehose, the IAM token)

    def __post_init__(self) -> None:
        if self.events_firehose_stream and not self.events_token_secret:
            raise ValueError("ManifestParams.events_token_secret: POST /events is public, it needs the token's secret")


def namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": c.NAMESPACE,
            "labels": {
                # The restricted Pod Security Standard: the API server refuses root or privileged pods here.
                "pod-security.kubernetes.io/enforce": "restricted"
            },
        },
    }


def service_account() -> dict[str, Any]:
    # EKS Pod Identity binds the models-bucket reader role to this account (no annotation needed).
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": c.SERVICE_ACCOUNT, "namespace": c.NAMESPACE, "labels": APP_LABEL},
    }


def deployment(p: ManifestParams) -> dict[str, Any]:
    probe = {"httpGet": {"path": READY_PATH, "port": "http"}, "timeoutSeconds": 2}
    container = {
        "name": c.CONTAINER,
        "image": p.image,
        "ports": [{"name": "http", "containerPort": c.PORT, "protocol": "TCP"}],
        "env": [
            {"name": c.MODEL_ENV_VAR, "value": p.model_uri},
            {"name": "ECOMREC_MODEL_GROUP", "value": p.model_group},
            {"name": "ECOMREC_WATCH_INTERVAL_S", "value": "0"},  # the rollout function switches models
            {"name": "ECOMREC_WORK_DIR", "value": "/tmp/ecomrec"},
            *[{"name": name, "value": value} for name, value in (
                ("AWS_REGION", p.region),
                # boto3 reads a client's region from AWS_DEFAULT_REGION, not AWS_REGION, and Pod Identity
                # injects credentials only: without it the Firehose client has no region (NoRegionError).
                ("AWS_DEFAULT_REGION", p.region),
                ("ECOMREC_EVENTS_FIREHOSE_STREAM", p.events_firehose_stream),
                ("ECOMREC_EVENTS_TOKEN_SECRET", p.events_token_secret),
                ("ECOMREC_STORE_URL", p.store_url),
                ("ECOMREC_STORE_IAM_CACHE", p.store_iam_cache),
                ("ECOMREC_STORE_CLUSTER", "true" if p.store_cluster else ""),
            ) if value],
        ],
        "resources": {
            "requests": {"cpu": p.cpu_request, "memory": p.memory_request},
            "limits": {"cpu": p.cpu_limit, "memory": p.memory_limit},
        },
        # Startup allows a slow bundle download; liveness only starts after it succeeded once.
        "startupProbe": {**probe, "periodSeconds": STARTUP_PERIOD_S, "failureThreshold": STARTUP_FAILURES},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2, "successThreshold": 1},
        "livenessProbe": {
            **probe,
            "httpGet": {"path": LIVE_PATH, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},  # outlive the ALB's deregistration
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": c.DEPLOYMENT, "namespace": c.NAMESPACE, "labels": APP_LABEL},
        "spec": {
            # No "replicas": the HPA owns the count (minReplicas = p.replicas). Server-side apply with force
            # would otherwise set it back on every deploy, whatever the HPA had scaled to; a new Deployment
            # starts at 1 and the HPA raises it to minReplicas at once.
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
            "minReadySeconds": MIN_READY_S,
            "selector": {"matchLabels": APP_LABEL},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": APP_LABEL,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(c.PORT),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": {
                    "serviceAccountName": c.SERVICE_ACCOUNT,
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": APP_LABEL},
                        }
                    ],
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": p.tmp_size}}],
                },
            },
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": c.DEPLOYMENT, "namespace": c.NAMESPACE, "labels": APP_LABEL},
        "spec": {
            "type": "ClusterIP",
            "selector": APP_LABEL,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(p: ManifestParams) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": c.DEPLOYMENT, "namespace": c.NAMESPACE, "labels": APP_LABEL},
        "spec": {"minAvailable": max(1, p.replicas - 1), "selector": {"matchLabels": APP_LABEL}},
    }


def autoscaler(p: ManifestParams) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": c.DEPLOYMENT, "namespace": c.NAMESPACE, "labels": APP_LABEL},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": c.DEPLOYMENT},
            "minReplicas": p.replicas,
            "maxReplicas": p.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
                }
            ],
            # Scale down slowly: a new pod pays a bundle download before it is ready.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


INGRESS_CLASS = "ecomrec-alb"


def ingress_class() -> list[dict[str, Any]]:
    """EKS Auto Mode's built-in load balancer controller: no Helm chart, no kubectl layer."""
    return [
        {
            "apiVersion": "eks.amazonaws.com/v1",
            "kind": "IngressClassParams",
            "metadata": {"name": INGRESS_CLASS},
            "spec": {"scheme": "internet-facing"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": INGRESS_CLASS},
            "spec": {
                "controller": "eks.amazonaws.com/alb",
                "parameters": {
                    "apiGroup": "eks.amazonaws.com",
                    "kind": "IngressClassParams",
                    "name": INGRESS_CLASS,
                },
            },
        },
    ]


def ingress(p: ManifestParams) -> dict[str, Any]:
    annotations = {
        "alb.ingress.kubernetes.io/load-balancer-name": p.load_balancer_name,
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTP": 80}, {"HTTPS": 443}]),
        "alb.ingress.kubernetes.io/ssl-redirect": "443",
        "alb.ingress.kubernetes.io/certificate-arn": p.certificate_arn,
        "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
        # The target group's health check goes to each pod IP directly, not through the listener rules
        # below, so it reaches /readyz although the Ingress does not route it.
        "alb.ingress.kubernetes.io/healthcheck-path": READY_PATH,
        "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "10",
        "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=10",
    }
    backend = {"service": {"name": c.DEPLOYMENT, "port": {"name": "http"}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": c.DEPLOYMENT,
            "namespace": c.NAMESPACE,
            "labels": APP_LABEL,
            "annotations": annotations,
        },
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            # Exact: /recommendations/anything is not an endpoint either.
            "rules": [
                {"http": {"paths": [{"path": path, "pathType": "Exact", "backend": backend} for path in PUBLIC_PATHS]}}
            ],
        },
    }


def network_policy(p: ManifestParams) -> dict[str, Any]:
    """Only the load balancer and the metrics scraper reach the pods, and only on the serving port: no
    other pod in the cluster can call /admin/*, /invocations or /metrics (issue 13, finding 1).

    The ALB targets pod IPs (target-type ip) from its nodes in the public subnets, so it is allowed by
    those subnets' CIDRs (not the VPC's: the pods themselves have private-subnet addresses). AMP's managed
    scraper is no pod either: it scrapes from ENIs in the subnets it is given, the VPC's dedicated scraper
    subnets (serving.SCRAPER_SUBNETS), allowed by their CIDRs. The kubelet's
    probes need no rule: "traffic to and from the node where a Pod is running is always allowed"
    (https://kubernetes.io/docs/concepts/services-networking/network-policies/). EKS Auto Mode enforces
    NetworkPolicy once its network policy controller is on (network_policy_controller())."""
    port = [{"protocol": "TCP", "port": c.PORT}]
    sources = [{"ipBlock": {"cidr": cidr}} for cidr in (*p.load_balancer_cidrs, *p.scraper_cidrs)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": c.DEPLOYMENT, "namespace": c.NAMESPACE, "labels": APP_LABEL},
        "spec": {
            "podSelector": {"matchLabels": APP_LABEL},
            "policyTypes": ["Ingress"],  # egress stays open: S3, the registry, DNS
            "ingress": [{"from": sources, "ports": port}],
        },
    }


def network_policy_controller() -> dict[str, Any]:
    """EKS Auto Mode accepts NetworkPolicy objects but enforces them only with this ConfigMap
    (https://docs.aws.amazon.com/eks/latest/userguide/auto-net-pol.html)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "amazon-vpc-cni", "namespace": "kube-system"},
        "data": {"enable-network-policy-controller": "true"},
    }


def inference_manifests(p: ManifestParams) -> list[dict[str, Any]]:
    """All objects in apply order (namespace first; deletion runs in reverse)."""
    return [
        namespace(),
        service_account(),
        *ingress_class(),
        deployment(p),
        service(),
        pod_disruption_budget(p),
        autoscaler(p),
        ingress(p),
        network_policy_controller(),
        network_policy(p),
    ]


def find(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == kind)
