"""Create or update the pipeline, start an execution, report its status: plain SageMaker API calls on
injected boto3 clients (the CLI creates them; tests pass moto's).

``upsert`` uploads the code the definition points at (versioned, idempotent) before the definition
itself, so no execution can start on a definition whose code is missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from components.errors import EcomrecError
from pipelines.sagemaker.code import upload_code
from pipelines.sagemaker.pipeline import PipelineSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient
else:
    S3Client = Any
    SageMakerClient = Any

log = logging.getLogger(__name__)

INLINE_DEFINITION_LIMIT = 100 * 1024  # CreatePipeline takes larger definitions from S3 only
TERMINAL = ("Succeeded", "Failed", "Stopped")


@dataclass(frozen=True)
class UpsertResult:
    pipeline_arn: str
    created: bool
    code_prefix: str
    definition_s3_uri: str = ""


@dataclass(frozen=True)
class StepStatus:
    name: str
    status: str
    started: str = ""
    ended: str = ""
    failure_reason: str = ""
    job_arn: str = ""


@dataclass(frozen=True)
class ExecutionStatus:
    arn: str
    status: str
    started: str = ""
    failure_reason: str = ""
    steps: list[StepStatus] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


def _message(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message", error))


def _already_exists(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    return code in ("ValidationException", "ResourceInUse") and "already exist" in _message(error)


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")


def upsert(definition: str, settings: PipelineSettings, *, sagemaker_client: SageMakerClient,
           s3_client: S3Client, description: str = "ecomrec: raw events to a registered recommender bundle",
           ) -> UpsertResult:
    from botocore.exceptions import ClientError

    code = settings.code
    upload_code(code, s3_client)
    log.info("code %s uploaded to %s", code.version, code.prefix)
    request: dict[str, Any] = {"PipelineName": settings.name, "RoleArn": settings.role,
                               "PipelineDescription": description}
    definition_uri = ""
    if len(definition.encode()) < INLINE_DEFINITION_LIMIT:
        request["PipelineDefinition"] = definition
    else:
        key = "/".join(part for part in (settings.prefix.strip("/"), "definitions", settings.name,
                                         f"{code.version}.json") if part)
        s3_client.put_object(Bucket=settings.bucket, Key=key, Body=definition.encode())
        request["PipelineDefinitionS3Location"] = {"Bucket": settings.bucket, "ObjectKey": key}
        definition_uri = f"s3://{settings.bucket}/{key}"
    try:
        arn = sagemaker_client.create_pipeline(**request)["PipelineArn"]
        created = True
    except ClientError as error:
        if not _already_exists(error):
            raise EcomrecError(f"CreatePipeline {settings.name} failed: {_message(error)}") from error
        try:
            arn = sagemaker_client.update_pipeline(**request)["PipelineArn"]
        except ClientError as update_error:
            raise EcomrecError(f"UpdatePipeline {settings.name} failed: "
                               f"{_message(update_error)}") from update_error
        created = False
    return UpsertResult(pipeline_arn=arn, created=created, code_prefix=code.prefix,
                        definition_s3_uri=definition_uri)


def start(pipeline_name: str, *, sagemaker_client: SageMakerClient,
          parameters: Mapping[str, str] | None = None, display_name: str = "") -> str:
    """Start an execution; ``parameters`` override the definition's defaults by name."""
    from botocore.exceptions import ClientError

    request: dict[str, Any] = {"PipelineName": pipeline_name}
    if parameters:
        request["PipelineParameters"] = [{"Name": k, "Value": str(v)} for k, v in parameters.items()]
    if display_name:
        request["PipelineExecutionDisplayName"] = display_name
    try:
        arn: str = sagemaker_client.start_pipeline_execution(**request)["PipelineExecutionArn"]
    except ClientError as error:
        raise EcomrecError(f"cannot start pipeline {pipeline_name!r}: {_message(error)} "
                           "(run `ecomrec pipeline upsert` first?)") from error
    return arn


def parameter_names(pipeline_name: str, *, sagemaker_client: SageMakerClient) -> list[str]:
    """The parameters the deployed definition declares (to check overrides before starting)."""
    from botocore.exceptions import ClientError

    try:
        described = sagemaker_client.describe_pipeline(PipelineName=pipeline_name)
    except ClientError as error:
        raise EcomrecError(f"pipeline {pipeline_name!r} not found: {_message(error)} "
                           "(run `ecomrec pipeline upsert` first)") from error
    definition = json.loads(described.get("PipelineDefinition") or "{}")
    return [parameter["Name"] for parameter in definition.get("Parameters", [])]


def latest_execution(pipeline_name: str, *, sagemaker_client: SageMakerClient) -> str:
    from botocore.exceptions import ClientError

    try:
        summaries = sagemaker_client.list_pipeline_executions(
            PipelineName=pipeline_name, SortBy="CreationTime", SortOrder="Descending", MaxResults=1,
        ).get("PipelineExecutionSummaries", [])
    except ClientError as error:
        raise EcomrecError(f"cannot list executions of {pipeline_name!r}: {_message(error)}") from error
    if not summaries:
        raise EcomrecError(f"pipeline {pipeline_name!r} has no executions yet (ecomrec pipeline start)")
    arn: str = summaries[0]["PipelineExecutionArn"]
    return arn


def status(execution_arn: str, *, sagemaker_client: SageMakerClient) -> ExecutionStatus:
    from botocore.exceptions import ClientError

    try:
        described = sagemaker_client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    except ClientError as error:
        raise EcomrecError(f"cannot describe execution {execution_arn}: {_message(error)}") from error
    steps: list[StepStatus] = []
    try:
        paginator = sagemaker_client.get_paginator("list_pipeline_execution_steps")
        for page in paginator.paginate(PipelineExecutionArn=execution_arn, SortOrder="Ascending"):
            for item in page.get("PipelineExecutionSteps", []):
                metadata = item.get("Metadata", {})
                job = next((value.get("Arn", "") for value in metadata.values()
                            if isinstance(value, dict) and "Arn" in value), "")
                steps.append(StepStatus(name=item.get("StepName", ""), status=item.get("StepStatus", ""),
                                        started=_iso(item.get("StartTime")), ended=_iso(item.get("EndTime")),
                                        failure_reason=item.get("FailureReason", ""), job_arn=job))
    except ClientError as error:
        log.warning("step list unavailable for %s: %s", execution_arn, _message(error))
    return ExecutionStatus(
        arn=execution_arn,
        status=described.get("PipelineExecutionStatus", ""),
        started=_iso(described.get("CreationTime")),
        failure_reason=described.get("FailureReason", ""),
        steps=steps,
    )
