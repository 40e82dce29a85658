"""The ecomrec CDK app: one stack per concern, wired in data-flow order.

data (buckets) -> ml (ECR, SageMaker role, model package group, pipeline) -> serving (EKS + Deployment)
-> events (approval -> rollout, scheduled retraining) -> monitoring (alarms -> SNS); github (the CD role).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk

CDK_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = CDK_DIR.parent
# The rollout package (Lambda asset) and the project's packages (pipeline definition) import from here.
for _path in (CDK_DIR / "rollout", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from stacks import nag  # noqa: E402
from stacks.config import EcomrecConfig  # noqa: E402
from stacks.data import DataStack  # noqa: E402
from stacks.events import EventsStack  # noqa: E402
from stacks.github import GithubStack  # noqa: E402
from stacks.ml import MlStack  # noqa: E402
from stacks.monitoring import MonitoringStack  # noqa: E402
from stacks.serving import ServingStack  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class EcomrecApp:
    config: EcomrecConfig
    data: DataStack
    ml: MlStack
    serving: ServingStack
    events: EventsStack
    monitoring: MonitoringStack
    github: GithubStack

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.data, self.ml, self.serving, self.events, self.monitoring, self.github]


def cdk_json_context(**overrides: object) -> dict[str, object]:
    """cdk.json's context (defaults + feature flags) as the CLI would pass it, for apps built in tests."""
    context: dict[str, object] = json.loads((CDK_DIR / "cdk.json").read_text())["context"]
    return {**context, **overrides}


def pipeline_definition(config: EcomrecConfig, *, bucket: str, role_arn: str, inference_image: str) -> str | None:
    """The SageMaker pipeline definition from ``pipelines.sagemaker`` (built offline), or None.

    It needs concrete names (an account, a region, the bucket and role names), so only an app with
    ``account`` and ``region`` context gets it; and the ``sagemaker`` extra must be installed. Built with
    ``pipelineInStack=false`` too: the execution role's grants on the built-in artifacts it names come
    from it, whoever owns the pipeline.
    """
    if not (config.account and config.region):
        return None
    try:
        from pipelines.sagemaker.pipeline import PipelineSettings, definition_json
    except ImportError as exc:  # the SDK is an optional extra: the CD workflow upserts instead
        log.warning(
            "pipeline definition not built (%s): the ml stack leaves the pipeline to `ecomrec pipeline upsert`",
            exc,
        )
        return None
    settings = PipelineSettings(
        role=role_arn,
        bucket=bucket,
        region=config.region,
        prefix=config.prefix,
        name=config.pipeline_name,
        inference_image_uri=inference_image,
    )
    return definition_json(settings)


def build(app: cdk.App, *, with_nag: bool = True) -> EcomrecApp:
    config = EcomrecConfig.from_context(app)
    env = cdk.Environment(account=config.account, region=config.region) if config.account and config.region else None
    data = DataStack(app, "EcomrecData", config=config, env=env)
    definition = pipeline_definition(
        config,
        bucket=config.bucket_name("processed") or "",
        role_arn=config.sagemaker_role_arn or "",
        inference_image=config.inference_image_uri or "",
    )
    if definition is not None:  # a misspelt override would fail every scheduled StartPipelineExecution
        declared = {parameter["Name"] for parameter in json.loads(definition)["Parameters"]}
        unknown = sorted(set(config.retrain_parameters) - declared)
        if unknown:
            raise ValueError(f"ecomrec:retrainParameters names {unknown}, which the pipeline does not declare "
                             f"(it declares {', '.join(sorted(declared))})")
    ml = MlStack(
        app,
        "EcomrecMl",
        config=config,
        raw_bucket=data.raw_bucket,
        processed_bucket=data.processed_bucket,
        pipeline_definition=definition,
        env=env,
    )
    serving = ServingStack(
        app,
        "EcomrecServing",
        config=config,
        models_bucket=data.models_bucket,
        raw_bucket=data.raw_bucket,
        inference_repo=ml.inference_repo,
        env=env,
    )
    # Parameter names of pipelines/sagemaker/params.py: the scheduled run reads the raw bucket and registers
    # into the group the rollout rule listens to, whatever defaults the definition was built with.
    retrain = {
        "InputDataUri": data.raw_bucket.s3_url_for_object(config.raw_prefix),
        "ModelPackageGroup": config.model_package_group,
        **config.retrain_parameters,
    }
    events = EventsStack(
        app,
        "EcomrecEvents",
        config=config,
        cluster=serving.icluster,
        cluster_security_group=serving.cluster.cluster_security_group,
        vpc=serving.vpc,
        pipeline_arn=ml.pipeline_arn,
        retrain_parameters=retrain,
        runs_bucket=data.processed_bucket,
        models_bucket=data.models_bucket,
        env=env,
    )
    monitoring = MonitoringStack(
        app,
        "EcomrecMonitoring",
        config=config,
        pipeline_arn=ml.pipeline_arn,
        rollout_function=events.rollout_fn,
        alb_full_name=serving.alb_full_name,
        cluster=serving.icluster,
        cluster_security_group_id=serving.cluster.cluster_security_group_id,
        subnets=serving.scraper_subnets,
        rollout_dlq=events.dlq,
        delivery_dlq=events.delivery_dlq,
        retrain_dlq=events.retrain_dlq,
        env=env,
    )
    github = GithubStack(
        app,
        "EcomrecGithub",
        config=config,
        processed_bucket=data.processed_bucket,
        raw_bucket=data.raw_bucket,
        repositories=[ml.inference_repo, ml.steps_repo],
        sagemaker_role=ml.role,
        env=env,
    )
    if ml.pipeline is not None:
        events.node.add_dependency(ml)  # the schedule targets the pipeline the ml stack creates
    for stack in (data, ml, serving, events, monitoring, github):
        cdk.Tags.of(stack).add("project", config.prefix)
    if with_nag:
        nag.enable(app)
    return EcomrecApp(config, data, ml, serving, events, monitoring, github)
