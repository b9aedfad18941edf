from __future__ import annotations

import pytest
from pydantic import ValidationError

from profilesync.config import Settings, describe_settings_error, is_transaction_pooler, redact


def test_conventional_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db:5432/app")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("PROFILESYNC_JOB_BATCH_SIZE", "17")
    settings = Settings()
    assert settings.database_url == "postgresql://app@db:5432/app"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.job_batch_size == 17
    assert settings.listen_url == settings.database_url


def test_listen_url_through_a_transaction_pooler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_DATABASE_URL", "postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres")
    with pytest.raises(ValidationError, match="transaction pooler"):
        Settings()


@pytest.mark.parametrize(
    ("url", "pooler"),
    [
        ("postgresql://u@db.abc.supabase.co:5432/postgres", False),
        ("postgresql://u@aws-0-eu.pooler.supabase.com:6543/postgres", True),
        ("postgresql://u@host/db?pgbouncer=true", True),
        ("postgresql://u@host/db?sslmode=require&PgBouncer=true", True),
        ("postgresql://u@host/db", False),
        ("host=aws-0-eu.pooler.supabase.com port=6543 user=u dbname=postgres", True),
        ("host=db.abc.supabase.co port=5432 user=u dbname=postgres", False),
        ("host = h  port = 6543", True),
        ("host=h1,h2 port=5432,6543", True),
        ("port=65430 host=h", False),
        ("host=h dbname=postgres", False),
        ("not a connection string", False),
    ],
)
def test_transaction_pooler_detection(url: str, pooler: bool) -> None:
    assert is_transaction_pooler(url) is pooler


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app:s3cret@db/app?sslmode=require", "postgres://app:***@db/app?sslmode=require"),
        ("postgresql://app:p@ss:w@rd@db/app", "postgresql://app:***@db/app"),  # unencoded @ and :
        (
            "postgresql://app@db/app?password=s3cret&sslmode=require",
            "postgresql://app@db/app?password=***&sslmode=require",
        ),
        (
            "postgresql://app@db/app?sslmode=require&PASSWORD=s3cret",
            "postgresql://app@db/app?sslmode=require&PASSWORD=***",
        ),
        ("host=db user=app password=s3cret dbname=app", "host=db user=app password=*** dbname=app"),
        ("host=db password = s3cret", "host=db password = ***"),
        ("host=db password='s3 cr\\'et' dbname=app", "host=db password=*** dbname=app"),
        ("password=s3cret", "password=***"),
        ("sslpassword=s3cret host=db", "sslpassword=*** host=db"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://default:s3cret@cache:6379/0", "redis://default:***@cache:6379/0"),
        (
            "cannot LISTEN through a pooler (postgresql://u:s3cret@h:6543/db); fix it",
            "cannot LISTEN through a pooler (postgresql://u:***@h:6543/db); fix it",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql://app@db:5432/app", "postgresql://app@db:5432/app"),
        ("host=db port=5432", "host=db port=5432"),
    ],
)
def test_redact_hides_every_form_of_password(text: str, redacted: str) -> None:
    assert redact(text) == redacted
    assert "s3" not in redact(text)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PROFILESYNC_JOB_BATCH_SIZE",
            "0",
            "PROFILESYNC_JOB_BATCH_SIZE: Input should be greater than or equal to 1",
        ),
        (
            "PROFILESYNC_JOB_BATCH_SIZE",
            "s3cret",
            "PROFILESYNC_JOB_BATCH_SIZE: Input should be a valid integer",
        ),
        (
            "PROFILESYNC_LOG_LEVEL",
            "LOUD",
            "PROFILESYNC_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        (
            "PROFILESYNC_LOG_FORMAT",
            "s3cret",
            "PROFILESYNC_LOG_FORMAT: Input should be 'auto', 'json' or 'console'",
        ),
        ("DATABASE_URL", "postgresql://u:s3cret@h/db?pgbouncer=true", "DATABASE_URL: drop pgbouncer=true"),
        (
            "DATABASE_URL",
            "s3cret garbage",
            "DATABASE_URL: not a PostgreSQL URL or key=value connection string",
        ),
        (
            "LISTEN_DATABASE_URL",
            "postgresql://u:s3cret@h:6543/db",
            "LISTEN_DATABASE_URL: a transaction pooler (port 6543) cannot LISTEN",
        ),
        (
            "LISTEN_DATABASE_URL",
            "host=h port=6543 password=s3cret",
            "LISTEN_DATABASE_URL: a transaction pooler",
        ),
        ("REDIS_URL", "http://:s3cret@h", "REDIS_URL: must start with redis://"),
    ],
)
def test_settings_errors_name_the_variable_never_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    described = describe_settings_error(raised.value)
    assert described.startswith(message)
    assert "s3cret" not in described and "pydantic" not in described and "\n" not in described


def test_log_levels_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILESYNC_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
