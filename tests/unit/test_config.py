from __future__ import annotations

import pytest
from pydantic import ValidationError

from profilesync.config import Settings, is_transaction_pooler, redact


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
        ("postgresql://u@host/db", False),
    ],
)
def test_transaction_pooler_detection(url: str, pooler: bool) -> None:
    assert is_transaction_pooler(url) is pooler


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
