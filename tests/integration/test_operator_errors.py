"""Every command against every operator mistake: a non-zero exit, at most 3 lines on stderr, no traceback,
the environment variable to fix named, no password printed in any form.

Long-running commands (publisher, worker) and a few others run as real `profilesync` console-script
processes; the rest run `cli.main` in-process, which takes the same path after the entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from profilesync import cli, logs
from profilesync.devkit.children import Children
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from profilesync.migrate import auth_stub, migrate
from tests.harness import PROFILES_OF, count, signup, wait_for
from tests.servers import DatabaseFactory, with_dbname

SECRET = f"hunter2-{uuid.uuid4().hex[:8]}"
PROFILESYNC = os.path.join(os.path.dirname(sys.executable), "profilesync")
APP_ROLE = "operator_app"  # owns the private cluster's databases; logs in with SECRET
NO_RIGHTS_ROLE = "operator_nobody"  # logs in with SECRET, holds no privilege on profile_sync


@dataclass(frozen=True)
class PasswordCluster:
    """A private cluster with password (scram) authentication: the machine's PostgreSQL trusts everyone."""

    port: int

    def url(self, role: str, password: str, dbname: str = "app") -> str:
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="module")
def password_cluster() -> Iterator[PasswordCluster]:
    with EmbeddedPostgres(durable=False) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            for role in (APP_ROLE, NO_RIGHTS_ROLE):
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(SECRET)
                    )
                )
            conn.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(APP_ROLE)))
            conn.execute(sql.SQL("CREATE DATABASE app OWNER {}").format(sql.Identifier(APP_ROLE)))
            (server.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
        with psycopg.connect(server.url_for("app"), autocommit=True) as conn:
            migrate(conn, dev_auth_stub=True)
        yield PasswordCluster(server.port)


@pytest.fixture(scope="module")
def unmigrated_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """A Supabase-like database (auth.users exists) on which `profilesync migrate` never ran."""
    name = f"profilesync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_factory.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(database_factory.admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(auth_stub())
    yield url
    database_factory.drop(url)


def _down_database() -> str:
    return f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/postgres"


def _down_redis() -> str:
    return f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"


# A bad input → what its one line must say (the variable to fix, and why).
BAD_INPUTS = {
    "unreachable database": ("(DATABASE_URL)", "Connection refused"),
    "wrong password": ("(DATABASE_URL)", f'password authentication failed for user "{APP_ROLE}"'),
    "missing schema": ("DATABASE_URL", "schema profile_sync missing: run profilesync migrate"),
    "no privilege": ("(DATABASE_URL)", f'role "{NO_RIGHTS_ROLE}" lacks a privilege'),
    "redis down": ("(REDIS_URL)", "Connection refused"),
}
DATABASE_COMMANDS = [
    ["migrate"],
    ["backfill", "--dry-run"],
    ["doctor"],
    ["replay", "--events"],
    ["failed"],
    ["publisher"],
    ["worker"],
]
REDIS_COMMANDS = [["doctor"], ["replay", "--all"], ["failed", "--json"], ["publisher"], ["worker"]]
LONG_RUNNING = ("publisher", "worker")  # before the start-up checks they ran (and reconnected) forever


def _environment(
    bad: str, cluster: PasswordCluster, unmigrated_url: str, database_url: str, redis_url: str
) -> dict[str, str]:
    values = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    if bad == "unreachable database":
        values["DATABASE_URL"] = _down_database()
    elif bad == "wrong password":
        values["DATABASE_URL"] = cluster.url(APP_ROLE, f"not-{SECRET}")
    elif bad == "missing schema":
        values["DATABASE_URL"] = unmigrated_url
    elif bad == "no privilege":
        values["DATABASE_URL"] = cluster.url(NO_RIGHTS_ROLE, SECRET)
    elif bad == "redis down":
        values["REDIS_URL"] = _down_redis()
    return values


def _cells() -> list[tuple[str, list[str]]]:
    cells = []
    for bad in BAD_INPUTS:
        commands = REDIS_COMMANDS if bad == "redis down" else DATABASE_COMMANDS
        for argv in commands:
            if argv == ["migrate"] and bad in ("missing schema", "no privilege"):
                continue  # migrate is the cure, and needs an owner: not this role's job
            cells.append((bad, argv))
    return cells


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def _run_process(argv: list[str], env: dict[str, str]) -> Outcome:
    base = {k: v for k, v in os.environ.items() if k != "LISTEN_DATABASE_URL"}
    done = subprocess.run(
        [PROFILESYNC, *argv],
        env={**base, "PROFILESYNC_LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def _run_in_process(
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Outcome:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)  # see tests/integration/test_ops
    monkeypatch.delenv("LISTEN_DATABASE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_one_line_error(outcome: Outcome, needle: str, *, on_stdout: bool = False) -> None:
    both = outcome.out + outcome.err
    assert outcome.code != 0, both
    assert "Traceback" not in both, both
    assert len(outcome.err.strip().splitlines()) <= 3, outcome.err
    assert needle in (both if on_stdout else outcome.err), both
    assert SECRET not in both, both


@pytest.mark.parametrize(("bad", "argv"), _cells(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_command_explains_a_bad_server_in_one_line(
    bad: str,
    argv: list[str],
    password_cluster: PasswordCluster,
    unmigrated_url: str,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = _environment(bad, password_cluster, unmigrated_url, database_url, redis_url)
    if argv[0] in LONG_RUNNING:
        outcome = _run_process(argv, env)
    else:
        outcome = _run_in_process(argv, env, monkeypatch, capsys)
    doctor = argv[0] == "doctor"  # its report is its output: the failing check says what is wrong
    for needle in BAD_INPUTS[bad]:
        assert_one_line_error(outcome, needle, on_stdout=doctor)


COMMANDS = [["migrate"], ["publisher"], ["worker"], ["backfill"], ["doctor"], ["replay", "--all"], ["failed"]]
INVALID_SETTINGS = {
    "batch size": ({"PROFILESYNC_JOB_BATCH_SIZE": "0"}, "PROFILESYNC_JOB_BATCH_SIZE"),
    "log level": ({"PROFILESYNC_LOG_LEVEL": "LOUD"}, "PROFILESYNC_LOG_LEVEL: must be one of DEBUG, INFO"),
    "garbage url": ({"DATABASE_URL": f"{SECRET} @ nowhere"}, "DATABASE_URL"),
    "prisma flag": ({"DATABASE_URL": f"postgresql://u:{SECRET}@h:6543/db?pgbouncer=true"}, "DATABASE_URL"),
    "pooler listen url": (
        {"LISTEN_DATABASE_URL": f"postgresql://u:{SECRET}@aws-0-eu.pooler.supabase.com:6543/postgres"},
        "LISTEN_DATABASE_URL: a transaction pooler",
    ),
    "pooler listen key=value": (
        {"LISTEN_DATABASE_URL": f"host=aws-0-eu.pooler.supabase.com port=6543 password={SECRET}"},
        "LISTEN_DATABASE_URL: a transaction pooler",
    ),
}


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda v: " ".join(v))
@pytest.mark.parametrize("case", INVALID_SETTINGS)
def test_every_command_names_an_invalid_variable_in_one_line(
    case: str, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env, needle = INVALID_SETTINGS[case]
    outcome = _run_in_process(argv, env, monkeypatch, capsys)
    assert outcome.code == 2
    assert_one_line_error(outcome, f"profilesync: invalid settings: {needle}")
    assert "pydantic" not in outcome.err and "job_batch_size" not in outcome.err


def test_the_console_script_reports_invalid_settings_in_one_line() -> None:
    outcome = _run_process(["worker"], {"PROFILESYNC_LOG_LEVEL": "LOUD"})
    assert_one_line_error(
        outcome, "PROFILESYNC_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
    outcome = _run_process(
        ["backfill"], {"LISTEN_DATABASE_URL": f"host=h port=6543 user=app password='{SECRET} x'"}
    )
    assert_one_line_error(outcome, "LISTEN_DATABASE_URL: a transaction pooler")


def test_publisher_refuses_a_pooler_database_url_in_key_value_form(redis_url: str) -> None:
    """No LISTEN_DATABASE_URL, so the publisher would LISTEN on DATABASE_URL: Supabase's port 6543."""
    dsn = f"host=127.0.0.1 port=6543 user=app password='{SECRET}' dbname=postgres"
    outcome = _run_process(["publisher"], {"DATABASE_URL": dsn, "REDIS_URL": redis_url})
    assert_one_line_error(outcome, "cannot LISTEN through a transaction pooler")
    assert outcome.code == 2  # a setting that cannot work, as an invalid one
    assert "password=***" in outcome.err and "LISTEN_DATABASE_URL" in outcome.err


def test_a_closed_pipe_ends_doctor_quietly(database_url: str, redis_url: str) -> None:
    """`profilesync doctor | head -5`, with a reader that is gone before doctor writes (deterministic)."""
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    env.pop("LISTEN_DATABASE_URL", None)
    done = subprocess.run(
        f"'{PROFILESYNC}' doctor | true; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stderr == "", done.stderr
    assert done.returncode == 141  # as if killed by SIGPIPE, like other Unix tools


def test_real_processes_never_print_a_password_in_any_form(
    password_cluster: PasswordCluster, tmp_path: Path
) -> None:
    """DATABASE_URL as key=value, LISTEN_DATABASE_URL with ?password=, REDIS_URL with one; DEBUG logs."""
    with EmbeddedRedis() as redis_server:
        with redis.Redis.from_url(redis_server.url) as client:
            client.config_set("requirepass", SECRET)
        port = password_cluster.port
        env = {k: v for k, v in os.environ.items() if k != "LISTEN_DATABASE_URL"}
        env.update(
            {
                "DATABASE_URL": f"host=127.0.0.1 port={port} user={APP_ROLE} password='{SECRET}' dbname=app",
                "LISTEN_DATABASE_URL": f"postgresql://{APP_ROLE}@127.0.0.1:{port}/app?password={SECRET}",
                "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0",
                "PROFILESYNC_LOG_LEVEL": "DEBUG",
                "PROFILESYNC_LOG_FORMAT": "json",
                "PROFILESYNC_SAFETY_INTERVAL": "0.5",
            }
        )
        children = Children(env, tmp_path)
        children.start("publisher", "publisher")
        children.start("worker", "worker")
        try:
            with psycopg.connect(password_cluster.url(APP_ROLE, SECRET), autocommit=True) as conn:
                users = [signup(conn, kind) for kind in ("email", "phone", "google")]
                assert wait_for(lambda: count(conn, PROFILES_OF, (users,)) == 3), children.logs()[-3000:]
            reports = [
                subprocess.run([PROFILESYNC, *argv], env=env, capture_output=True, text=True, timeout=60)
                for argv in (["doctor"], ["doctor", "--json"], ["failed"], ["backfill", "--dry-run"])
            ]
        finally:
            codes = children.stop(timeout=15)
    output = children.logs() + "".join(r.stdout + r.stderr for r in reports)
    assert codes == {"publisher": 0, "worker": 0}, children.logs()[-3000:]
    assert "password=***" in output  # the URLs are shown, redacted
    assert SECRET not in output
