"""The container images of the pipeline and where each one's name comes from.

- The SageMaker Spark 3.5 processing image (Python 3.12): the base of the steps image, and the steps' image
  when the run-time pip install is chosen. Tag ``3.5-cpu-py312-v1.3``: the newest 3.5 py312 release of
  aws/sagemaker-spark-container (its git tags 3.5-cpu-py312-v1.0 ... v1.3; v1.3 = commit 7d90eeb,
  2026-04-22); the registry account per region from the SageMaker SDK's image_uri_config/spark.json.
- The steps image (containers/steps/Dockerfile): the Spark image + ecomrec + its hash-locked closure, in
  this account's ECR repository ``<prefix>-steps`` (the CDK ml stack creates it). Its tag is a hash of what
  goes into it (the code, the Dockerfile, the lock), so a definition names the image built from its own
  code, and ECR's immutable tags keep meaning one image.
- The built-in CatBoost image, script and model: pipelines/sagemaker/jumpstart.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from components.errors import EcomrecError
from pipelines.sagemaker.code import REPO_ROOT, code_version

SPARK_FRAMEWORK_VERSION = "3.5"
SPARK_PY_VERSION = "py312"  # our code needs Python >= 3.11; the 3.5 images come as py39 or py312
SPARK_CONTAINER_VERSION = "v1.3"
SPARK_REPOSITORY = "sagemaker-spark-processing"
SPARK_TAG = f"{SPARK_FRAMEWORK_VERSION}-cpu-{SPARK_PY_VERSION}-{SPARK_CONTAINER_VERSION}"
STEPS_REPOSITORY_SUFFIX = "-steps"  # <prefix>-steps, as the CDK ml stack names it (config.steps_repo)
STEPS_DIR = Path("containers") / "steps"
# What the steps image is built from, besides the code packages (Dockerfile.dockerignore sends only these).
STEPS_IMAGE_FILES = ("Dockerfile", "Dockerfile.dockerignore", "requirements.lock")


def spark_image(region: str) -> str:
    """The Spark processing image for ``region``, from the SDK's bundled image config (no network)."""
    from sagemaker.core import image_uris

    try:
        uri: str = image_uris.retrieve("spark", region, version=SPARK_FRAMEWORK_VERSION,
                                       py_version=SPARK_PY_VERSION, container_version=SPARK_CONTAINER_VERSION)
    except ValueError as error:
        raise EcomrecError(f"no SageMaker Spark {SPARK_FRAMEWORK_VERSION} image known for region {region!r}: "
                           f"{error}") from error
    return uri


def steps_image_tag(root: Path = REPO_ROOT) -> str:
    """A hash of the code packages and of the steps image's own files: same inputs, same tag."""
    digest = hashlib.sha256(code_version(root).encode() + b"\0")
    for name in STEPS_IMAGE_FILES:
        path = root / STEPS_DIR / name
        if not path.is_file():
            raise EcomrecError(f"{path} not found: the steps image tag is computed from a source checkout "
                               "(or pass the image with --steps-image)")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def steps_repository(prefix: str) -> str:
    return f"{prefix.strip('/').replace('/', '-')}{STEPS_REPOSITORY_SUFFIX}"


def steps_image_uri(account: str, region: str, prefix: str, root: Path = REPO_ROOT) -> str:
    """This account's steps image for the current code (build and push it first: CD does)."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{steps_repository(prefix)}:{steps_image_tag(root)}"
