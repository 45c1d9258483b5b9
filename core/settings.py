"""One typed settings object, read once at start-up from the environment and `.env`.

Names follow the operators' docs (DATABASE_URL, REDIS_URL, DISPATCH_BATCH_SIZE, ...). A bad value
fails at start with the variable's name in the message (`load_settings` raises ConfigurationError).
Nothing below the CLI/web entry points reads the environment: the object is passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.database_urls import POSTGRES_DRIVER, POSTGRES_EXTRA_HINT, normalise_postgres_url, postgres_driver_installed
from core.domain import Mode
from core.exceptions import ConfigurationError
from core.scheduling import MAX_INTERVAL_MINUTES, MAX_RETENTION_DAYS, MIN_INTERVAL_MINUTES, MIN_RETENTION_DAYS

DEFAULT_SQLITE_FILE = "monitor-scheduler.db"
# Shortest secrets the web accepts outside --dev (docs/web.md "Secrets"): SECRET_KEY signs every
# token and cookie (HS256 wants a key of 256 bits: 32 random characters or more); CRON_SECRET only
# guards the dispatch trigger, and 16 random characters are past any online guessing.
MIN_SECRET_KEY_LENGTH = 32
MIN_CRON_SECRET_LENGTH = 16
# Most sync-mode runs at once: each holds a database connection at its start and its end (the
# engine's pool is sized for them: monitor_scheduler.wiring), and SQLite has one writer.
MAX_SYNC_THREADS = 256


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True, frozen=True
    )

    DATABASE_URL: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_FILE}",
        description="SQLAlchemy URL; mysql:// and mysql+pymysql:// both work, postgresql:// and postgresql+psycopg:// too "
                    "(the `postgres` extra). Default: a SQLite file in the working directory.",
    )
    REDIS_URL: str | None = Field(
        default=None, description="Redis for the RQ queue. Unset: dispatch runs jobs in-process (sync mode)."
    )
    QUEUE_NAME: str = Field(default="monitor-user-tasks", min_length=1, description="RQ queue name.")
    DISPATCH_BATCH_SIZE: int = Field(
        default=100_000, ge=1, description="Most users one dispatch pass claims (a cap per pass)."
    )
    DISPATCH_CHUNK_SIZE: int = Field(
        default=1_000, ge=1, le=10_000, description="Users claimed in one transaction and enqueued in one pipeline."
    )
    DISPATCH_LOCK_TTL: int = Field(
        default=900_000, ge=1_000, description="Lease length in milliseconds; a dead worker's user is due again after it."
    )
    QUEUE_MAX_DEPTH: int = Field(
        default=100_000, ge=1, description="Back-pressure: no enqueue while the queue holds this many jobs or more."
    )
    DEFAULT_INTERVAL_MINUTES: int = Field(
        default=5, ge=MIN_INTERVAL_MINUTES, le=MAX_INTERVAL_MINUTES, description="Interval of new schedules."
    )
    WORKER_CONCURRENCY: int = Field(default=2, ge=1, le=256, description="RQ worker processes `worker` starts.")
    WORKER_THREADS: int = Field(
        default=1, ge=1, le=1000,
        description="Runs one worker process executes at once, on threads (async tasks: on one event loop). 1: the plain RQ worker class.",
    )
    WORKER_CLASS: Literal["simple", "fork"] = Field(
        default="simple", description="simple: jobs run in the worker process; fork: a fresh process per job."
    )
    MONITOR_TASK: str = Field(
        default="worker.tasks:demo_task", description="package.module:function run for each user."
    )
    MONITOR_WEBHOOK_URL: str | None = Field(
        default=None, description="Where worker.webhook:WebhookTask POSTs each run (http:// or https://)."
    )
    MONITOR_WEBHOOK_SECRET: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the webhook's X-Monitor-Signature header."
    )
    MONITOR_WEBHOOK_TIMEOUT: float = Field(default=10.0, gt=0, le=300, description="Seconds the webhook may take.")
    JOB_TIMEOUT: int = Field(default=600, ge=1, description="Seconds a run may take before RQ stops it.")
    TASK_LOOP_STALL_WARNING: float = Field(
        default=1.0, ge=0, description="Seconds the async tasks' event loop may stay blocked before a WARNING names the run blocking it (0: no watch)."
    )
    SYNC_TIME_BUDGET: float = Field(
        default=50.0, gt=0, description="Seconds a sync-mode pass may spend before it stops claiming."
    )
    SYNC_THREADS: int = Field(
        default=4, ge=1, le=MAX_SYNC_THREADS,
        description="Runs a sync-mode dispatcher process executes at once, on threads (each held to JOB_TIMEOUT). 1: one at a time.",
    )
    HISTORY_RETENTION_DAYS: int = Field(
        default=30, ge=MIN_RETENTION_DAYS, le=MAX_RETENTION_DAYS,  # the range `prune --days` takes: beyond it the cutoff date overflows
        description="`prune` deletes run history older than this.",
    )
    HEALTH_MAX_PASS_AGE: int = Field(
        default=300, ge=1, description="`check` and /healthz/scheduler fail when no dispatch pass succeeded for this many seconds."
    )
    HEALTH_MAX_DUE_AGE: int = Field(
        default=300, ge=1, description="`check` and /healthz/scheduler fail when the oldest due schedule waited this many seconds."
    )
    HEALTH_MAX_OVERLOAD: int = Field(
        default=900, ge=1, description="`check` and /healthz/scheduler fail when demand stayed above capacity (per the dispatch passes' samples) for this many seconds."
    )
    CAPACITY_RUN_WINDOW: int = Field(
        default=60, ge=1, le=1440, description="Minutes of recent runs (succeeded or failed) whose durations give each user's average run time."
    )
    CAPACITY_DEFAULT_RUN_SECONDS: float = Field(
        default=10.0, gt=0, description="Run time assumed for every user while no run finished in the window at all (else users without runs get the window's average)."
    )
    CAPACITY_SAMPLE_RETENTION: int = Field(
        default=7, ge=1, description="Days of capacity samples (one per dispatch pass) kept for the admin chart and the overload check."
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = Field(default="text", description="json: one JSON object per log line.")
    CRON_SECRET: SecretStr | None = Field(
        default=None, description="Shared secret for POST /api/cron/one-click-start (header x-cron-secret). Unset: the endpoint answers 503."
    )
    SECRET_KEY: SecretStr | None = Field(
        default=None, description="HMAC key for sign-in tokens and session cookies. Unset: the web refuses to start (unless --dev)."
    )
    RUN_NOW_COOLDOWN: int = Field(
        default=60, ge=0, le=86_400,
        description="Seconds a user waits between two \"Run now\" requests (settings page, /api/schedules/me/run); 0: no limit. Admins and the CLI are exempt.",
    )
    SPREAD_START_TIMES: bool = Field(
        default=True,
        description="Give each interval schedule a stable phase within its interval (from the user id) when it is created or its "
                    "interval changes, so schedules created together do not all fall due on one second. false: due at once, as before.",
    )
    # When a run fails (issue 17); each schedule may override them (NULL columns take these).
    DEFAULT_RETRIES: int = Field(
        default=0, ge=0, le=10,
        description="Attempts after the first within one slot when a run fails, times out or is lost (0: none; the next slot runs as usual, "
        "but a lost run is still retried once).",
    )
    RETRY_BACKOFF_SECONDS: int = Field(
        default=30, ge=1, le=86_400,
        description="Base delay before a retry: doubled each attempt, capped at an hour (or the base), plus a stable per-user jitter of up to 25%.",
    )
    PAUSE_AFTER_FAILED_SLOTS: int = Field(
        default=0, ge=0, le=1000,
        description="Pause a schedule after this many consecutive failed slots, until the user or an admin resumes it (0: never).",
    )
    WEB_BASE_URL: str = Field(default="http://127.0.0.1:10111", description="Public base URL of the web app, for sign-in links.")

    @field_validator("DATABASE_URL")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("mysql://"):
            value = "mysql+pymysql://" + value[len("mysql://") :]
        elif value.startswith("mariadb://"):
            value = "mysql+pymysql://" + value[len("mariadb://") :]
        value = normalise_postgres_url(value)
        if not value.startswith(("sqlite://", "mysql+pymysql://", POSTGRES_DRIVER + "://")):
            raise ValueError("must start with sqlite:///, mysql://, mysql+pymysql://, postgresql:// or postgresql+psycopg://")
        if value.startswith(POSTGRES_DRIVER + "://") and not postgres_driver_installed():
            raise ValueError(f"PostgreSQL needs the psycopg driver: {POSTGRES_EXTRA_HINT}")
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value.strip()

    @field_validator("MONITOR_WEBHOOK_URL")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.strip()

    @field_validator("CRON_SECRET", "SECRET_KEY", "MONITOR_WEBHOOK_SECRET", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("MONITOR_TASK")
    @classmethod
    def _check_task_path(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError("must look like package.module:function")
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeat(self) -> Settings:
        # The lease is renewed every third of its length while a job runs (see core.executor), so a
        # running job keeps it whatever JOB_TIMEOUT is; a lease shorter than 3 s would need
        # renewals more often than a database round trip can be trusted to take.
        if self.DISPATCH_LOCK_TTL < 3_000 and self.JOB_TIMEOUT * 1000 > self.DISPATCH_LOCK_TTL:
            raise ValueError("DISPATCH_LOCK_TTL below 3000 ms needs JOB_TIMEOUT shorter than the lease")
        return self

    def weak_secrets(self) -> list[str]:
        """Problems with SECRET_KEY / CRON_SECRET that are set but too short, naming the variable.
        The web refuses to start on any of them unless --dev (web.app.resolve_secret)."""
        problems = []
        for name, minimum in (("SECRET_KEY", MIN_SECRET_KEY_LENGTH), ("CRON_SECRET", MIN_CRON_SECRET_LENGTH)):
            secret: SecretStr | None = getattr(self, name)
            if secret is not None and len(secret.get_secret_value()) < minimum:
                problems.append(f"invalid setting {name}: must be at least {minimum} characters (a long random value)")
        return problems

    @property
    def lease_seconds(self) -> float:
        return self.DISPATCH_LOCK_TTL / 1000

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / 3

    @property
    def queue_mode_available(self) -> bool:
        return self.REDIS_URL is not None

    @property
    def default_mode(self) -> Mode:
        """The mode of a pass or run-now that names none: queue when REDIS_URL is set, else sync
        (the one rule the CLI, the web and the services share)."""
        return Mode.QUEUE if self.queue_mode_available else Mode.SYNC


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Parse the environment once; raise ConfigurationError naming the variable on a bad value."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigurationError("invalid setting " + "; ".join(problems)) from None
