"""Rendering the definitions and reading what they create (no database)."""

from __future__ import annotations

import pytest

from profilesync.definitions import (
    Context,
    Name,
    inventory,
    quote_ident,
    render,
    render_one,
    templates,
)
from profilesync.errors import MigrationError
from profilesync.migrate import available


def test_the_seed_context_renders_every_definition_without_a_placeholder_left() -> None:
    rendered = render(Context())
    assert [d.name for d in rendered] == [name for name, _ in templates()]
    for definition in rendered:
        assert "{{" not in definition.sql
    profiles = next(d for d in rendered if d.name == "02_profiles").sql
    assert 'INSERT INTO "public"."user_profiles" AS p ("id", "email", "full_name", "avatar_url")' in profiles


def test_another_profile_table_is_quoted_where_needed_and_changes_the_checksums() -> None:
    other = Context(profile=Name("App", "user"), profile_id="user id", chat=None)
    rendered = {d.name: d for d in render(other)}
    assert '"App"."user"' in rendered["04_readiness"].sql
    assert 'n."user id"' in rendered["04_readiness"].sql
    seed = {d.name: d.checksum for d in render(Context())}
    assert rendered["04_readiness"].checksum != seed["04_readiness"]
    assert rendered["01_cleaning"].checksum == seed["01_cleaning"]  # nothing of the context in it


def test_a_definition_that_needs_the_chat_tables_is_left_out_without_them() -> None:
    names = {d.name for d in render(Context(chat=None))}
    assert "08_policies" not in names
    assert {"07_client_guard", "09_grants"} <= names


def test_an_unknown_placeholder_is_one_clear_error() -> None:
    with pytest.raises(MigrationError, match=r"definitions/x\.sql: no value for \{\{nope\}\}"):
        render_one("x", "SELECT {{nope}}", {})


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("user_profiles", "user_profiles"), ("Profiles", '"Profiles"'), ("user", '"user"'), ('a"b', '"a""b"')],
)
def test_identifiers_are_quoted_as_postgresql_would(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_the_inventory_is_read_from_the_definitions() -> None:
    made = inventory(render(Context()))
    assert "profile_sync.sync_profiles(uuid[], text)" in made.functions
    assert "profile_sync.watch_profile(uuid, integer, uuid)" in made.functions
    assert "public.ensure_profile()" in made.functions
    assert "profile_sync.profile_gap()" in made.functions  # OUT parameters are not part of its identity
    assert ("auth.users", "profile_sync_on_auth_user_created") in made.triggers
    assert ("auth.users", "profile_sync_on_auth_user_updated") in made.triggers
    assert ("public.user_profiles", "profile_sync_on_user_profiles_inserted") in made.triggers
    assert len(set(made.functions)) == len(made.functions)


def test_migrations_hold_no_functions_triggers_policies_or_grants() -> None:
    for migration in available():
        text = migration.read().upper()
        for statement in (
            "CREATE FUNCTION",
            "CREATE OR REPLACE",
            "CREATE TRIGGER",
            "CREATE POLICY",
            "GRANT ",
        ):
            assert statement not in text, f"{migration.filename}: {statement}"
