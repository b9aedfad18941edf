"""`profilesync migrate --emit-supabase`: the files' names and content (no database)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from profilesync import cli, logs
from profilesync.migrate import available
from profilesync.ops import supabase


def test_one_file_per_migration_with_stable_ordered_timestamps(tmp_path: Path) -> None:
    written = supabase.emit(tmp_path / "migrations")
    names = [p.name for p in written]
    assert names == sorted(names)
    assert [re.sub(r"^\d{14}_", "", n) for n in names] == [
        "profilesync_" + m.name.split("_", 1)[1] + ".sql" for m in available()
    ]
    assert names[0] == "20261201000001_profilesync_tables.sql"
    first = {p.name: p.read_text() for p in written}
    assert [p.name for p in supabase.emit(tmp_path / "migrations")] == names  # not "now": the same again
    assert {p.name: p.read_text() for p in written} == first


def test_each_file_is_the_migration_framed_by_its_bookkeeping(tmp_path: Path) -> None:
    for migration, path in zip(available(), supabase.emit(tmp_path), strict=True):
        text = path.read_text()
        assert migration.read().strip() in text
        assert text.index("CREATE TABLE IF NOT EXISTS profile_sync.schema_migrations") < text.index(
            migration.read().strip()
        )
        record = text.rstrip().splitlines()[-1]
        assert record.startswith("INSERT INTO profile_sync.schema_migrations (version, name) VALUES")
        assert record.endswith(f"('{migration.version}', '{migration.name}');")
    outbox = next(p for p in tmp_path.iterdir() if p.name.endswith("_profilesync_outbox.sql")).read_text()
    assert re.search(
        r"CREATE TRIGGER profile_sync_on_auth_user_created\s+AFTER INSERT ON auth\.users", outbox
    )


def test_the_cli_writes_them_and_says_how_to_adopt_an_existing_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)  # keep capture_logs working
    assert cli.main(["migrate", "--emit-supabase", str(tmp_path / "supabase" / "migrations")]) == 0
    out = capsys.readouterr().out
    assert len(list((tmp_path / "supabase" / "migrations").glob("*_profilesync_*.sql"))) == len(available())
    assert "supabase migration repair --status applied 20261201000001 20261201000002" in out
