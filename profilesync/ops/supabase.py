"""`profilesync migrate --emit-supabase DIR`: our migrations as Supabase CLI migration files.

A Supabase project keeps its schema in supabase/migrations/<YYYYMMDDHHMMSS>_<name>.sql and
`supabase db push` applies each new file in a transaction as `postgres`. Each file written here is one of our
migrations, verbatim (the CREATE TRIGGER ... ON auth.users included: `supabase db diff`/`pull` do not capture
triggers on auth tables, so it must live in a file), framed by the bookkeeping `profilesync migrate` does: the
profile_sync.schema_migrations bootstrap before it and the row recording it after it. `profilesync migrate`
and `profilesync doctor` therefore see the same state whichever tool applied the SQL.

Timestamps are derived from the migration's number (EPOCH + N seconds), never from the clock: emitting again
writes the same file names, so Supabase's migration history never sees a profilesync migration twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from profilesync.migrate import BOOTSTRAP, Migration, available

EPOCH = datetime(2026, 12, 1, tzinfo=UTC)  # 0001 -> 20261201000001, 0002 -> 20261201000002, ...

_HEADER = """\
-- profilesync migration {name}, written by `profilesync migrate --emit-supabase` from profilesync's
-- sql/{filename}. Do not edit: emit again instead. Apply with `supabase db push` (or `psql -1 -f`), as the
-- database owner (`postgres` on Supabase).

-- profilesync's bookkeeping, as `profilesync migrate` keeps it.
"""
_FOOTER = """
-- Recorded as applied: `profilesync migrate` skips it and `profilesync doctor` reports it.
INSERT INTO profile_sync.schema_migrations (version, name) VALUES ('{version}', '{name}');
"""


def timestamp(migration: Migration) -> str:
    return (EPOCH + timedelta(seconds=int(migration.version))).strftime("%Y%m%d%H%M%S")


def filename(migration: Migration) -> str:
    label = migration.name.removeprefix(f"{migration.version}_")
    return f"{timestamp(migration)}_profilesync_{label}.sql"


def render(migration: Migration) -> str:
    body = migration.read().rstrip("\n") + "\n"
    return (
        _HEADER.format(name=migration.name, filename=migration.filename)
        + BOOTSTRAP
        + "\n"
        + body
        + _FOOTER.format(version=migration.version, name=migration.name)
    )


def emit(directory: Path) -> list[Path]:
    """Write (or rewrite) one Supabase CLI file per migration into `directory`; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for migration in available():
        path = directory / filename(migration)
        path.write_text(render(migration), encoding="utf-8")
        written.append(path)
    return written


def format_emitted(written: list[Path]) -> str:
    """The files written, then how to apply them (or record them where `profilesync migrate` ran)."""
    versions = " ".join(path.name.split("_", 1)[0] for path in written)
    return "\n".join(
        [
            *map(str, written),
            f"wrote {len(written)} Supabase migration file(s); apply them with `supabase db push`. "
            "On a database that `profilesync migrate` already set up, record them instead: "
            f"supabase migration repair --status applied {versions}",
        ]
    )
