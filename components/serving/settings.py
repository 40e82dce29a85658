"""Typed service settings from ``ECOMREC_*`` environment variables (or keyword arguments in tests).

Everything is checked when the settings are built, so a bad deployment fails at start-up with a message
naming the variable, not on the first request.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from components.storage import is_s3_uri

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")  # where SageMaker unpacks ModelDataUrl before `serve`


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECOMREC_", extra="forbid", frozen=True)

    # The bundle: a model.tar.gz, an unpacked folder, or s3://bucket/key. Unset: the registry's latest
    # Approved version if a registry is configured, else SageMaker's /opt/ml/model.
    model: str | None = None
    registry_root: Path | None = None  # a LocalRegistry folder to watch for newly Approved versions
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
    # Real time (components/realtime, REALTIME.md): POST /events and fresh answers, on when events_raw_root
    # is set: the raw folder whose events/realtime/ receives the durable event log.
    events_raw_root: Path | None = None
    events_fsync: bool = True  # fsync the log before acknowledging (off only for throwaway benchmarks)
    max_events_per_request: int = Field(default=1000, ge=1)
    store_url: str | None = None  # redis:// or rediss:// (Redis, Valkey, ElastiCache); unset: embedded SQLite
    store_path: Path | None = None  # the embedded store's file; default <work_dir>/online-store.sqlite
    store_timeout_s: float = Field(default=0.05, gt=0)  # per store call; then the answer is degraded
    store_retry_after_s: float = Field(default=1.0, ge=0)  # after a store failure, skip it this long
    store_max_events: int = Field(default=500, ge=1)  # kept per user (the newest)
    store_max_days: float = Field(default=365.0, gt=0)  # kept per user: within this of their newest event
    store_key_ttl_days: float = Field(default=7.0, gt=0)  # how long an event_id retry is recognised

    @model_validator(mode="after")
    def _check(self) -> ServingSettings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"ECOMREC_DEFAULT_TOP_K ({self.default_top_k}) exceeds ECOMREC_MAX_TOP_K ({self.max_top_k})")
        if self.model and not is_s3_uri(self.model) and not Path(self.model).exists():
            raise ValueError(f"ECOMREC_MODEL: no such file or folder: {self.model}")
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
