"""The Supabase CLI path: `--emit-supabase` files applied as `supabase db push` does, by a non-superuser."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from profilesync import cli, logs
from profilesync.config import Settings
from profilesync.devkit.discovery import postgres_bindir
from profilesync.migrate import Migrated, auth_stub, available, migrate
from profilesync.ops.doctor import DEFAULT_CHECKS
from tests.harness import count, signup
from tests.servers import OWNER, DatabaseFactory, as_role, create_owned_database


def _psql() -> str:
    found = shutil.which("psql") or str(postgres_bindir(Settings()) / "psql")
    assert Path(found).exists(), "psql is needed to apply the files as the Supabase CLI does"
    return found


def test_emitted_files_applied_with_psql_by_a_non_superuser_give_a_healthy_database(
    database_factory: DatabaseFactory,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    url = create_owned_database(database_factory.admin_url, f"profilesync_supa_{uuid.uuid4().hex[:12]}")
    owner_url = as_role(url, OWNER)
    try:
        with psycopg.connect(owner_url, autocommit=True) as owner:
            owner.execute(auth_stub().encode())  # what a Supabase project already has
        assert cli.main(["migrate", "--emit-supabase", str(tmp_path)]) == 0
        files = sorted(tmp_path.glob("*.sql"))
        assert len(files) == len(available()) + 1  # and the definitions
        for path in [*files, *files]:  # as `supabase db push`: each file in one transaction, as the owner;
            applied = subprocess.run(  # then all of them again, as a second push that lost its history would
                [_psql(), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(path), owner_url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert applied.returncode == 0, f"{path.name}: {applied.stderr}"

        with psycopg.connect(owner_url, autocommit=True) as owner:
            assert migrate(owner) == Migrated([], [])  # profilesync migrate agrees: nothing left to apply
            user = signup(owner, "google")
            assert (
                count(owner, "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s", (user,))
                == 1
            )

        monkeypatch.setenv("DATABASE_URL", owner_url)
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("PROFILESYNC_DOCTOR_MIN_WORKERS", "0")
        monkeypatch.setenv("PROFILESYNC_DOCTOR_MIN_PUBLISHERS", "0")
        monkeypatch.delenv("LISTEN_DATABASE_URL", raising=False)
        capsys.readouterr()
        code = cli.main(["doctor", "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0, report
        assert {c["name"]: c["status"] for c in report["checks"]} == dict.fromkeys(DEFAULT_CHECKS, "ok")
    finally:
        database_factory.drop(url)
