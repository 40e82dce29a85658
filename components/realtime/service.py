"""What the service holds for real time: the store (behind its guard), the log, the intake, the metrics."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.errors import EcomrecError
from components.realtime.fresh import FreshAnswers
from components.realtime.intake import EventIntake, StoreGuard
from components.realtime.log import DurableLog, EventLog
from components.realtime.metrics import RealtimeMetrics
from components.realtime.store import OnlineStore, SqliteStore, StoreLimits
from components.serving.settings import ServingSettings

STORE_FILE = "online-store.sqlite"


def open_store(settings: ServingSettings) -> OnlineStore:
    limits = StoreLimits(max_events=settings.store_max_events, max_days=settings.store_max_days,
                         key_ttl_days=settings.store_key_ttl_days)
    if settings.store_url:
        from components.realtime.redis_store import RedisStore

        credentials = None
        if settings.store_iam_cache:
            from components.realtime.redis_store import ElastiCacheIamCredentials

            credentials = ElastiCacheIamCredentials.from_url(settings.store_url, settings.store_iam_cache)
        return RedisStore(settings.store_url, limits=limits, timeout_s=settings.store_timeout_s,
                          credential_provider=credentials, cluster=settings.store_cluster)
    work_dir = settings.work_dir or Path(tempfile.gettempdir()) / "ecomrec-serving"
    return SqliteStore(settings.store_path or work_dir / STORE_FILE, limits=limits,
                       timeout_s=settings.store_timeout_s)


@dataclass
class Realtime:
    store: OnlineStore
    guard: StoreGuard
    intake: EventIntake
    metrics: RealtimeMetrics
    fresh: FreshAnswers
    token: str | None = None  # POST /events needs `Bearer <token>` when set

    def close(self) -> None:
        self.intake.log.close()
        self.store.close()


def open_log(settings: ServingSettings) -> DurableLog | None:
    """The durable event log: the Firehose stream (AWS) or files under the raw folder; None: events off."""
    if settings.events_firehose_stream:
        from components.realtime.firehose_log import FirehoseEventLog

        return FirehoseEventLog(settings.events_firehose_stream)
    if settings.events_raw_root is not None:
        return EventLog(settings.events_raw_root, fsync=settings.events_fsync)
    return None


def events_token(settings: ServingSettings) -> str | None:
    """The bearer token of POST /events: ECOMREC_EVENTS_TOKEN, or the string of the Secrets Manager secret
    ECOMREC_EVENTS_TOKEN_SECRET (read once, here at start-up); None: the route is open."""
    if not settings.events_token_secret:
        return settings.events_token
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    secret = settings.events_token_secret
    try:
        token = boto3.client("secretsmanager").get_secret_value(SecretId=secret).get("SecretString", "").strip()
    except (BotoCoreError, ClientError) as error:
        raise EcomrecError(f"ECOMREC_EVENTS_TOKEN_SECRET: cannot read the secret {secret}: {error}") from error
    if not token or len(token) < 16:
        raise EcomrecError(f"ECOMREC_EVENTS_TOKEN_SECRET: the secret {secret} holds no string of 16+ characters")
    return token


def build_realtime(settings: ServingSettings, metrics: RealtimeMetrics) -> Realtime | None:
    """None unless ECOMREC_EVENTS_RAW_ROOT or ECOMREC_EVENTS_FIREHOSE_STREAM is set."""
    if not settings.events_on:
        return None
    token = events_token(settings)  # first: a secret that cannot be read stops the start, naming it
    event_log = open_log(settings)
    assert event_log is not None  # events_on
    store = open_store(settings)
    guard = StoreGuard(store, retry_after_s=settings.store_retry_after_s, on_result=metrics.store_call)
    intake = EventIntake(event_log, guard, max_ahead_s=settings.events_max_ahead_s)
    return Realtime(store=store, guard=guard, intake=intake, metrics=metrics,
                    fresh=FreshAnswers(guard, exact_per_s=settings.fresh_exact_per_s,
                                       exact_share=settings.fresh_exact_share, on_fast=metrics.fast_answer),
                    token=token)
