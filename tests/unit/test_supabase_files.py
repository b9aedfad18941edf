"""`profilesync migrate --emit-supabase`: the files' names and content (no database)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from profilesync import cli, logs
from profilesync.definitions import Context, Name, render
from profilesync.migrate import available
from profilesync.ops import supabase

MONDAY = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def test_released_migrations_keep_their_names_and_the_definitions_are_dated_at_emit_time(
    tmp_path: Path,
) -> None:
    written = [p.name for p in supabase.emit(tmp_path, now=MONDAY)]
    assert written == sorted(written)
    assert written[0] == "20261201000001_profilesync_tables.sql"
    assert written[8] == "20261201000009_profilesync_signup_ages.sql"
    assert [re.sub(r"^\d{14}_", "", n) for n in written[:9]] == [
        "profilesync_" + m.name.split("_", 1)[1] + ".sql" for m in available()[:9]
    ]
    later = [m.name for m in available()[9:]]  # dated now, one second apart, named with their number
    assert written[9:-1] == [f"2027030109300{i}_profilesync_{name}.sql" for i, name in enumerate(later)]
    assert re.fullmatch(
        rf"2027030109300{len(later)}_profilesync_definitions_[0-9a-f]{{12}}\.sql", written[-1]
    )


def test_emitting_again_keeps_every_name_and_a_change_adds_a_new_definitions_file(tmp_path: Path) -> None:
    first = [p.name for p in supabase.emit(tmp_path, now=MONDAY)]
    later = datetime(2027, 4, 2, tzinfo=UTC)
    assert [p.name for p in supabase.emit(tmp_path, now=later)] == first  # nothing new: the same names
    other = Context(profile=Name("app", "profiles"), chat=None)
    changed = [p.name for p in supabase.emit(tmp_path, now=later, context=other)]
    assert changed[:-1] == first[:-1]
    assert changed[-1].startswith("20270402000000_profilesync_definitions_")  # the only new file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*first, *changed})  # the applied one stays


def test_a_migration_file_runs_its_sql_only_once_and_records_it(tmp_path: Path) -> None:
    for migration, path in zip(available(), supabase.emit(tmp_path, now=MONDAY), strict=False):
        text = path.read_text()
        body = migration.read().strip()
        assert body in text
        assert text.index("CREATE TABLE IF NOT EXISTS profile_sync.schema_migrations") < text.index(body)
        guard = "IF EXISTS (SELECT 1 FROM profile_sync.schema_migrations WHERE version = '{}')"
        assert text.index(guard.format(migration.version)) < text.index(body)
        record = "INSERT INTO profile_sync.schema_migrations (version, name) VALUES ('{}', '{}');"
        assert text.index(body) < text.index(record.format(migration.version, migration.name))


def test_the_definitions_file_holds_every_definition_and_records_them(tmp_path: Path) -> None:
    text = supabase.emit(tmp_path, now=MONDAY)[-1].read_text()
    for definition in render(Context()):
        assert definition.sql.strip() in text
        assert f"('{definition.name}', '{definition.checksum}')" in text
    assert re.search(
        r"CREATE OR REPLACE TRIGGER profile_sync_on_auth_user_created\s+AFTER INSERT ON auth\.users", text
    )
    assert "INSERT INTO profile_sync.definition_objects (object, state)" in text


def test_the_cli_writes_them_and_says_they_are_safe_to_apply_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)  # keep capture_logs working
    assert cli.main(["migrate", "--emit-supabase", str(tmp_path / "supabase" / "migrations")]) == 0
    out = capsys.readouterr().out
    files = list((tmp_path / "supabase" / "migrations").glob("*_profilesync_*.sql"))
    assert len(files) == len(available()) + 1
    assert "apply them with `supabase db push` (each is safe to apply again" in out
