"""Names shared by the Kubernetes manifests (cdk/stacks/k8s.py), the rollout function and its tests."""

from __future__ import annotations

from typing import Final

# The inference container reads its bundle from this variable (components/serving/settings.py:
# ServingSettings.model with env_prefix "ECOMREC_"). The only place the name is written.
MODEL_ENV_VAR: Final = "ECOMREC_MODEL"
# ... and refuses to serve other bytes than this sha256 (ServingSettings.model_sha256; "" = no check).
MODEL_SHA256_ENV_VAR: Final = "ECOMREC_MODEL_SHA256"
# The model package's CustomerMetadataProperties key holding that digest, recorded at registration
# (components/registry/base.py BUNDLE_SHA256_METADATA; tests/test_rollout_logic.py checks they agree).
BUNDLE_SHA256_METADATA: Final = "bundle_sha256"

NAMESPACE: Final = "ecomrec"
DEPLOYMENT: Final = "ecomrec-inference"
CONTAINER: Final = "inference"
SERVICE_ACCOUNT: Final = "ecomrec-inference"
PORT: Final = 8080  # SageMaker's serving port; /metrics is served there too

# Annotations on the Deployment and its pod template: which registry version is (being) served.
VERSION_ANNOTATION: Final = "ecomrec.io/model-package-version"
ARN_ANNOTATION: Final = "ecomrec.io/model-package-arn"

# Server-side apply field managers: CDK owns the shape of the objects, the rollout owns the model.
APPLY_FIELD_MANAGER: Final = "ecomrec-cdk"
ROLLOUT_FIELD_MANAGER: Final = "ecomrec-rollout"

# Environment of the rollout and apply functions (set by cdk/stacks/events.py and serving.py).
ENV_MODEL_PACKAGE_GROUP: Final = "MODEL_PACKAGE_GROUP"
ENV_LIVE_PARAMETER: Final = "LIVE_PARAMETER"
ENV_CLUSTER_NAME: Final = "CLUSTER_NAME"
ENV_CLUSTER_ENDPOINT: Final = "CLUSTER_ENDPOINT"
ENV_CLUSTER_CA: Final = "CLUSTER_CA"  # base64 PEM, as EKS returns certificateAuthority.data
ENV_NAMESPACE: Final = "K8S_NAMESPACE"
ENV_DEPLOYMENT: Final = "K8S_DEPLOYMENT"
ENV_ROLLOUT_TIMEOUT_S: Final = "ROLLOUT_TIMEOUT_S"
ENV_MODELS_BUCKET: Final = "MODELS_BUCKET"  # approved bundles are copied here before they go live

# SageMaker's EventBridge event for registry changes.
EVENT_SOURCE: Final = "aws.sagemaker"
EVENT_DETAIL_TYPE: Final = "SageMaker Model Package State Change"
APPROVED: Final = "Approved"
REJECTED: Final = "Rejected"
