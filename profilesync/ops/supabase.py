"""`profilesync migrate --emit-supabase DIR`: our SQL as Supabase CLI migration files.

A Supabase project keeps its schema in supabase/migrations/<YYYYMMDDHHMMSS>_<name>.sql and `supabase db
push` applies each file it has not recorded yet, in a transaction, as `postgres`. Written here: one file per
migration (sql/NNNN_*.sql) and one file with every definition (sql/definitions/, the CREATE TRIGGER ... ON
auth.users included: `supabase db diff`/`pull` do not capture triggers on auth tables, so it must live in a
file), each framed by the bookkeeping `profilesync migrate` does, so `profilesync migrate` and `profilesync
doctor` see the same state whichever tool applied the SQL.

Every file is safe to apply twice, and on a database `profilesync migrate` set up: a migration file runs its
SQL only when profile_sync.schema_migrations has not recorded it, and the definitions are idempotent.

File names. The Supabase CLI records versions (the timestamp), so a name once emitted must never change, and
a new file must sort after what the project already applied. A file already in DIR keeps its name (its
content is rewritten); migrations 0001-0009 are dated EPOCH + N seconds, as first emitted; any other new file
is dated at emit time. The definitions file is named after a digest of its content: unchanged definitions keep
their file, changed ones get a new file (the old one stays, applied, in the project's history).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from profilesync.definitions import Context, render, script
from profilesync.migrate import BOOTSTRAP, Migration, available

EPOCH = datetime(2026, 12, 1, tzinfo=UTC)  # 0001 -> 20261201000001, ..., 0009 -> 20261201000009
EPOCH_DATED_THROUGH = 9
_TAG = "$profilesync_migration$"

_HEADER = """\
-- profilesync {what}, written by `profilesync migrate --emit-supabase`. Do not edit: emit again instead.
-- Apply with `supabase db push` (or `psql -1 -f`) as the database owner (`postgres` on Supabase); applying it
-- again, or on a database `profilesync migrate` set up, changes nothing.

-- profilesync's bookkeeping, as `profilesync migrate` keeps it.
"""
_GUARDED = """
DO $profilesync$
BEGIN
  IF EXISTS (SELECT 1 FROM profile_sync.schema_migrations WHERE version = '{version}') THEN
    RAISE NOTICE 'profilesync migration {name} is applied already';
    RETURN;
  END IF;
  EXECUTE {tag}
{body}{tag};
  -- Recorded as applied: `profilesync migrate` skips it and `profilesync doctor` reports it.
  INSERT INTO profile_sync.schema_migrations (version, name) VALUES ('{version}', '{name}');
END
$profilesync$;
"""


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


# For an app's own profile table (PROFILESYNC_CONFIG): sql/0001_tables.sql then creates no seed table.
_NO_SEED_TABLES = "SELECT pg_catalog.set_config('profile_sync.seed_tables', 'off', true);\n"


def _label(migration: Migration) -> str:
    """The part of the file name after `profilesync_`: the released migrations' names had no number; every
    later one carries it (names repeat: 0003_readiness, 0011_readiness)."""
    if int(migration.version) <= EPOCH_DATED_THROUGH:
        return migration.name.removeprefix(f"{migration.version}_")
    return migration.name


def render_migration(migration: Migration, seed_tables: bool = True) -> str:
    body = migration.read().rstrip("\n") + "\n"
    if _TAG in body:
        raise ValueError(f"{migration.filename} contains {_TAG}")
    return (
        _HEADER.format(what=f"migration {migration.name} (sql/{migration.filename})")
        + BOOTSTRAP
        + ("" if seed_tables else _NO_SEED_TABLES)
        + _GUARDED.format(version=migration.version, name=migration.name, tag=_TAG, body=body)
    )


def render_definitions(context: Context) -> tuple[str, str]:
    """(label, content) of the definitions file; the label carries a digest of the content."""
    header = _HEADER.format(what="definitions (sql/definitions/)")
    content = header + BOOTSTRAP + "\n" + script(render(context))
    return f"definitions_{hashlib.sha256(content.encode()).hexdigest()[:12]}", content


def emit(directory: Path, now: datetime | None = None, context: Context | None = None) -> list[Path]:
    """Write (or rewrite) the migration files and the definitions file into `directory`; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = {path.name.split("_", 1)[1]: path.name for path in directory.glob("*_profilesync_*.sql")}
    clock = now or datetime.now(UTC)
    fresh = 0

    def name_for(label: str, epoch_version: int | None) -> str:
        nonlocal fresh
        suffix = f"profilesync_{label}.sql"
        if suffix in existing:
            return existing[suffix]
        if epoch_version is not None and epoch_version <= EPOCH_DATED_THROUGH:
            return f"{_stamp(EPOCH + timedelta(seconds=epoch_version))}_{suffix}"
        fresh += 1
        return f"{_stamp(clock + timedelta(seconds=fresh - 1))}_{suffix}"

    context = context or Context()
    files = [
        (name_for(_label(m), int(m.version)), render_migration(m, seed_tables=context.mapping.is_seed))
        for m in available()
    ]
    label, content = render_definitions(context)
    files.append((name_for(label, None), content))
    written = []
    for name, text in files:
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def format_emitted(written: list[Path]) -> str:
    """The files written, then how to apply them."""
    return "\n".join(
        [
            *map(str, written),
            f"wrote {len(written)} Supabase migration file(s); apply them with `supabase db push` "
            "(each is safe to apply again, also on a database that `profilesync migrate` set up)",
        ]
    )
