"""The wheel, installed as a user installs it: built from this tree, installed into a fresh virtualenv in
a temporary directory (away from the checkout); then migrate, a publisher + worker burst and doctor run from
that install against a scratch database.

The virtualenv gets only the wheel (pip --no-deps); the third-party dependencies come from the test
environment's site-packages through a .pth line (appended to sys.path after the wheel's own files, without
running that environment's .pth files, so its editable install of profilesync stays invisible). So the run
proves the wheel carries every module and the SQL, without downloading the dependencies again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from profilesync.db import with_dbname
from profilesync.definitions import Context, render, templates
from profilesync.devkit.signups import KINDS
from profilesync.migrate import available
from tests.harness import PENDING, PROFILES_OF, count, signup, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            "-w",
            dist,
            ROOT,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = dist.glob("profilesync-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True, timeout=120)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_profilesync_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return root


@pytest.fixture
def scratch_url(pg_admin_url: str) -> Iterator[str]:
    """An empty database: nothing migrated."""
    name = f"profilesync_wheel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_wheel_holds_the_packages_and_the_sql_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"profilesync"}  # one import name: nothing an app's own `worker` or `chat` collides with
    (info,) = {n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD")}
    assert zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").split() == [b"profilesync"]
    source = {str(init.parent.relative_to(ROOT)) for init in (ROOT / "profilesync").rglob("__init__.py")}
    assert {
        n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")
    } >= source  # no subpackage left out
    for migration in available():
        assert f"profilesync/sql/{migration.filename}" in names
    assert "profilesync/sql/dev/auth_stub.sql" in names
    for name, _ in templates():
        assert f"profilesync/sql/definitions/{name}.sql" in names


def test_the_installed_wheel_migrates_runs_a_burst_and_passes_doctor(
    venv: Path, scratch_url: str, redis_url: str, tmp_path: Path
) -> None:
    bin_dir = venv / "bin"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DATABASE_URL": scratch_url,
        "REDIS_URL": redis_url,
        "PROFILESYNC_LOG_FORMAT": "json",
        "PROFILESYNC_SAFETY_INTERVAL": "0.5",
    }

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr[-3000:]}"
        return done

    where = run(
        bin_dir / "python",
        "-c",
        "import sys, profilesync.publisher, profilesync.worker, profilesync.chat; print(sys.prefix)",
    )
    assert where.stdout.strip() == str(venv)
    for absent in ("bench", "tests", "publisher", "worker", "chat"):
        probe = subprocess.run(
            [bin_dir / "python", "-c", f"import {absent}"], cwd=tmp_path, env=env, capture_output=True
        )
        assert probe.returncode != 0, f"{absent} is importable from the installed wheel"

    migrated = run(bin_dir / "profilesync", "migrate", "--dev-auth-stub")
    assert f"applied {len(available())} migration(s)" in migrated.stdout
    assert f"applied {len(render(Context()))} definition(s)" in migrated.stdout
    again = run(bin_dir / "python", "-m", "profilesync", "migrate").stdout
    assert "(up to date)" in again and "definitions up to date" in again
    emitted = run(bin_dir / "profilesync", "migrate", "--emit-supabase", tmp_path / "supabase")
    files = list((tmp_path / "supabase").glob("*_profilesync_*.sql"))
    assert len(files) == len(available()) + 1, emitted.stdout  # and one of every definition

    with psycopg.connect(scratch_url, autocommit=True) as conn:
        users = [signup(conn, kind) for kind in KINDS for _ in range(5)]
        log = (tmp_path / "publisher.log").open("wb")
        publisher = subprocess.Popen(
            [bin_dir / "profilesync", "publisher"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            assert wait_for(lambda: count(conn, PENDING) == 0), (tmp_path / "publisher.log").read_text()
            run(bin_dir / "profilesync", "worker", "--burst")
            assert count(conn, PROFILES_OF, (users,)) == len(users)
            assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0
            env["PROFILESYNC_DOCTOR_MIN_WORKERS"] = "0"  # the burst worker has exited
            assert run(bin_dir / "profilesync", "doctor").stdout.strip().endswith("healthy")
        finally:
            publisher.send_signal(signal.SIGTERM)
            assert publisher.wait(timeout=30) == 0
            log.close()
