"""Typed service settings from ``ECOMREC_*`` environment variables (or keyword arguments in tests).

Everything is checked when the settings are built, so a bad deployment fails at start-up with a message
naming the variable, not on the first request.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from components.storage import is_s3_uri

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")  # where SageMaker unpacks ModelDataUrl before `serve`


class ServerLimits(BaseSettings):
    """What one client connection may cost the HTTP server (components/serving/server.py enforces them).
    Read from ``ECOMREC_*`` too, so every worker process of ``uvicorn --workers N`` gets the same ones."""

    model_config = SettingsConfigDict(env_prefix="ECOMREC_", extra="ignore", frozen=True)

    # Request line plus headers. 64 KB holds the longest valid GET /recommendations (a 4,000-character
    # `exclude` fully %-encoded) with room to spare; more is answered 431 and the connection closed.
    max_header_bytes: int = Field(default=64 << 10, ge=1024)
    # From the connection's start (after the TLS handshake) or its first byte after an answer, until the
    # request's headers are complete: a client that opens and says nothing, or trickles a header, is cut.
    header_timeout_s: float = Field(default=10.0, gt=0)
    # From the headers until the last body byte (6 MB at 100 KB/s is 60 s).
    body_timeout_s: float = Field(default=60.0, gt=0)
    # Idle between an answer and the next request. Longer than the 60 s idle timeout of AWS load balancers,
    # so they never reuse a connection the server closed.
    keep_alive_s: float = Field(default=75.0, gt=0)
    # Open connections (and requests in flight) per worker; beyond it new requests get 503 (uvicorn's
    # limit_concurrency). The load balancer keeps a few dozen; the probes and the scraper a few.
    max_connections: int = Field(default=1000, ge=1)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECOMREC_", extra="forbid", frozen=True)

    # The bundle: a model.tar.gz, an unpacked folder, or s3://bucket/key. Unset: the registry's latest
    # Approved version if a registry is configured, else SageMaker's /opt/ml/model.
    model: str | None = None
    registry_root: Path | None = None  # a LocalRegistry folder to watch for newly Approved versions
    # sha256 of the model.tar.gz at ECOMREC_MODEL: the rollout sets it from the approved model package, and
    # the service refuses to start on other bytes
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    model_group: str = "ecomrec"
    watch_interval_s: float = Field(default=15.0, ge=0.0)  # 0 = no watch (admin reload works)
    default_top_k: int = Field(default=10, ge=1)
    max_top_k: int = Field(default=100, ge=1)
    max_batch: int = Field(default=1000, ge=1)  # users per /invocations request
    smoke_users: int = Field(default=16, ge=1)  # users scored as the check of a new bundle before a swap
    work_dir: Path | None = None  # downloads and unpacked bundles; default: $TMPDIR/ecomrec-serving
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (tests, MinIO); unset = AWS
    admin_token: str | None = None  # /admin/* is disabled unless set; then it needs `Bearer <token>`
    fast_path: bool = True  # answer valid GET /recommendations without FastAPI's machinery (fastpath.py)
    # CatBoost threads scoring a bundle's candidates at load; 1 leaves the other cores to the live model
    # while a swap loads in the background (requests never run CatBoost)
    scoring_threads: int = Field(default=1, ge=1)
    # POST /admin/reload?wait=true answers 504 after this long; the load goes on in the background and
    # GET /admin/model tells how it ended
    reload_wait_s: float = Field(default=300.0, gt=0)
    max_body_bytes: int = Field(default=6 << 20, ge=1024)  # POST /invocations (SageMaker's own limit is 6 MB)
    admin_max_body_bytes: int = Field(default=16 << 10, ge=64)  # POST /admin/reload: a path or URI
    # A bundle's unpacked files (the EKS scratch volume is 4 GiB, and a swap unpacks a second bundle
    # beside nothing else: the first one's files are deleted once it is loaded).
    max_bundle_bytes: int = Field(default=3 << 30, ge=1)
    # Rows in any one bundle table or candidate part, read from the Parquet footer before the table is read.
    max_table_rows: int = Field(default=50_000_000, ge=1)
    # Refuse a load whose estimated peak (bundle.format.estimate_load_bytes) exceeds this share of the
    # memory the process may still take (cgroup room, else MemAvailable): the serving model must survive it.
    load_memory_share: float = Field(default=0.8, gt=0, le=1)

    # Real time (components/realtime, REALTIME.md): POST /events and fresh answers, on when events_raw_root
    # is set: the raw folder whose events/realtime/ receives the durable event log.
    events_raw_root: Path | None = None
    # On AWS instead: the Firehose delivery stream that writes the log to the raw bucket (firehose_log.py)
    events_firehose_stream: str | None = None
    # POST /events needs `Authorization: Bearer <token>` when a token is configured: ECOMREC_EVENTS_TOKEN
    # (local use), or ECOMREC_EVENTS_TOKEN_SECRET, a Secrets Manager secret id or ARN whose string is the
    # token, read once at start-up (EKS sets it: no token in the manifest or template). Neither: open
    # (a local default; the internet-facing deployment always sets the secret).
    events_token: str | None = Field(default=None, min_length=16)
    events_token_secret: str | None = None
    events_fsync: bool = True  # fsync the log before acknowledging (off only for throwaway benchmarks)
    max_events_per_request: int = Field(default=1000, ge=1)
    # POST /events refuses an event stamped further than this ahead of the server's clock (intake.py)
    events_max_ahead_s: float = Field(default=3600.0, ge=0)
    store_url: str | None = None  # redis:// or rediss:// (Redis, Valkey, ElastiCache); unset: embedded SQLite
    # ElastiCache IAM authentication: the cache's name; the password of store_url's user is then a fresh IAM
    # token (redis_store.ElastiCacheIamCredentials), signed with the pod's AWS credentials
    store_iam_cache: str | None = None
    store_cluster: bool = False  # the store runs in cluster mode (ElastiCache Serverless): redis-py's cluster client
    store_path: Path | None = None  # the embedded store's file; default <work_dir>/online-store.sqlite
    # exact fresh answers (one build_features call, ~4 ms of CPU on Online Retail) a worker makes a second
    # at most (100: under half a core); beyond, the fast path until the budget refills
    # (components/realtime/fresh.py): an event storm slows nobody's answers. inf: no limit
    fresh_exact_per_s: float = Field(default=100.0, ge=0)
    # and at most this many CPU seconds in them a second, a share of one core (a rebuild's cost grows with
    # the user's stored events: ~5 ms at a few, ~14 ms at 500 on Online Retail); inf: no limit, 0: never
    fresh_exact_share: float = Field(default=0.5, ge=0)
    store_timeout_s: float = Field(default=0.05, gt=0)  # per store call; then the answer is degraded
    store_retry_after_s: float = Field(default=1.0, ge=0)  # after a store failure, skip it this long
    store_max_events: int = Field(default=500, ge=1)  # kept per user (the newest)
    store_max_days: float = Field(default=365.0, gt=0)  # kept per user: within this of their newest event
    store_key_ttl_days: float = Field(default=7.0, gt=0)  # how long an event_id retry is recognised

    @property
    def events_on(self) -> bool:
        """POST /events and fresh answers: a durable log is configured (a folder, or Firehose on AWS)."""
        return self.events_raw_root is not None or bool(self.events_firehose_stream)

    @field_validator("model_sha256", mode="before")
    @classmethod
    def _no_digest(cls, value: object) -> object:
        return None if value == "" else value  # the rollout writes "" for versions recorded without one

    @model_validator(mode="after")
    def _check(self) -> ServingSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"ECOMREC_DEFAULT_TOP_K ({self.default_top_k}) exceeds ECOMREC_MAX_TOP_K ({self.max_top_k})")
        if self.model and not is_s3_uri(self.model) and not Path(self.model).exists():
            raise ValueError(f"ECOMREC_MODEL: no such file or folder: {self.model}")
        if self.events_raw_root is not None and self.events_firehose_stream:
            raise ValueError("ECOMREC_EVENTS_RAW_ROOT and ECOMREC_EVENTS_FIREHOSE_STREAM both set: the event log "
                             "is one of them (a folder, or the Firehose stream on AWS)")
        if self.events_token and self.events_token_secret:
            raise ValueError("ECOMREC_EVENTS_TOKEN and ECOMREC_EVENTS_TOKEN_SECRET both set: the POST /events "
                             "token is one of them (the token itself, or the Secrets Manager secret holding it)")
        if self.store_iam_cache and not (self.store_url or "").startswith("rediss://"):
            raise ValueError("ECOMREC_STORE_IAM_CACHE needs ECOMREC_STORE_URL=rediss://USER@HOST:PORT (IAM "
                             "authentication works over TLS only, with the IAM-enabled user's name)")
        if self.registry_root is not None and not self.registry_root.is_dir():
            raise ValueError(f"ECOMREC_REGISTRY_ROOT: not a folder: {self.registry_root}")
        if self.model is None and self.registry_root is None and not SAGEMAKER_MODEL_DIR.exists():
            raise ValueError(
                "no model: set ECOMREC_MODEL (path or s3:// URI) or ECOMREC_REGISTRY_ROOT, "
                f"or mount a bundle at {SAGEMAKER_MODEL_DIR}")
        return self

    def initial_model(self) -> str | None:
        """The bundle to load at start-up; None means: ask the registry."""
        if self.model:
            return self.model
        if self.registry_root is not None:
            return None
        return str(SAGEMAKER_MODEL_DIR)
