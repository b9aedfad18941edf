"""`profilesync doctor --probe`: a test signup through the real path (GoTrue's insert as supabase_auth_admin,
the outbox, ensure_profile() as a PostgREST client would call it), always rolled back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from profilesync.config import Settings
from tests.harness import count, process_env

TRACES = """
SELECT (SELECT count(*) FROM auth.users) + (SELECT count(*) FROM profile_sync.signup_events)
       + (SELECT count(*) FROM public.user_profiles)
"""


def probe(settings: Settings, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profilesync", "doctor", "--probe", "--only", "signup_path"],
        env=process_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_probe_passes_on_a_healthy_database_and_leaves_no_trace(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    before = count(conn, TRACES)
    conn.execute("LISTEN profile_sync_signup")
    conn.execute("SELECT setval('profile_sync.idle_publishers', 1)")  # as if a publisher waited: it NOTIFYs
    done = probe(settings, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK    signup_path  a test signup was recorded" in done.stdout
    assert count(conn, TRACES) == before
    assert list(conn.notifies(timeout=0.5, stop_after=1)) == []  # a rolled-back NOTIFY is never delivered


def test_the_probe_fails_with_one_line_when_the_trigger_is_disabled(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    conn.execute("ALTER TABLE auth.users DISABLE TRIGGER profile_sync_on_auth_user_created")
    done = probe(settings, tmp_path)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if "signup_path" in line)
    assert line.startswith("FAIL") and "the trigger on auth.users is missing, disabled or failing" in line
    assert "Traceback" not in done.stderr


def test_the_probe_fails_when_clients_cannot_ensure_their_profile(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    conn.execute("REVOKE EXECUTE ON FUNCTION public.ensure_profile() FROM authenticated")
    done = probe(settings, tmp_path)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if "signup_path" in line)
    assert "ensure_profile() failed for the test user" in line and "42501" in line, line
