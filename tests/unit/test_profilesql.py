"""The SQL a mapping renders to: names quoted, sources cleaned by column kind, the seed's mapping."""

from __future__ import annotations

from profilesync.catalog import SEED_FACTS, ColumnFacts, TableFacts
from profilesync.mapping import DEFAULT, parse
from profilesync.profilesql import render, sync_profiles, update_trigger

ACCOUNTS = TableFacts(
    columns=(
        ColumnFacts("owner_id", "uuid", False, True, False, False),
        ColumnFacts("handle", "character varying(20)", True, True, False, False),
        ColumnFacts("Home_URL", "text", True, False, False, False),
        ColumnFacts("id", "text", True, False, False, False),
    ),
    primary_key=("owner_id",),
    user_key="owner_id",
    cascades=False,
)
CONFIG = """
[profile]
table = "App Schema.accounts"
[profile.columns]
handle = ["meta.user_name", "app_meta.handle"]
"Home_URL" = ["meta.website"]
id = ["phone"]
"""


def test_the_seed_renders_its_mapping() -> None:
    sql = sync_profiles(DEFAULT, SEED_FACTS)
    assert 'INSERT INTO "public"."user_profiles" AS p ("id", "email", "full_name", "avatar_url")' in sql
    assert 'nullif(pg_catalog.btrim("t"."email"), \'\') AS "v0"' in sql
    for key in ("full_name", "name", "user_name", "preferred_username"):
        assert f"profile_sync.clean_text(t.m -> '{key}', 200)" in sql
    assert "profile_sync.clean_url(t.m -> 'avatar_url')" in sql
    assert "profile_sync.clean_url(t.m -> 'picture')" in sql
    # email follows auth.users; the metadata's columns follow the policy
    assert '"email" = CASE WHEN \'email\' = ANY (dropped) THEN p."email" ELSE excluded."email" END' in sql
    assert 'apply_metadata_policy(metadata_policy, p."full_name", excluded."full_name")' in sql
    assert "updated_at = pg_catalog.now()" in sql
    assert 'SET "email" = NULL, "full_name" = NULL, "avatar_url" = NULL' in sql


def test_names_are_quoted_and_columns_cleaned_by_kind() -> None:
    sql = sync_profiles(parse(CONFIG), ACCOUNTS)
    assert 'INSERT INTO "App Schema"."accounts" AS p ("owner_id", "handle", "Home_URL", "id")' in sql
    assert 'ON CONFLICT ("owner_id")' in sql
    assert "profile_sync.clean_text(t.a -> 'handle', 200)" in sql
    assert "profile_sync.clean_url(t.m -> 'website')" in sql  # a URL column by its name
    assert 'nullif(pg_catalog.btrim("t"."phone"), \'\') AS "v2"' in sql
    # a NOT NULL column gets the user's id when its value is dropped or scrubbed; no updated_at to touch
    assert "CASE WHEN 'handle' = ANY (dropped) THEN l.id::text ELSE l.\"v0\" END" in sql
    assert '"handle" = p."owner_id"::text' in sql
    assert "updated_at" not in sql
    assert '\'"App Schema"."accounts"\'::regclass' in sql
    assert "ARRAY['handle', 'Home_URL', 'id']::text[]" in sql


def test_hostile_names_stay_names() -> None:
    config = '[profile]\ntable = "public.x\'); DROP TABLE y; --"\n[profile.columns]\n"a\'b" = ["meta.k"]\n'
    facts = TableFacts(
        columns=(
            ColumnFacts("id", "uuid", False, True, False, False),
            ColumnFacts("a'b", "text", True, False, False, False),
        ),
        primary_key=("id",),
        user_key="id",
        cascades=True,
    )
    sql = render(parse(config), facts)
    assert '"public"."x\'); DROP TABLE y; --"' in sql
    assert "'a''b' = ANY (dropped)" in sql


def test_a_profile_of_the_id_alone() -> None:
    sql = sync_profiles(parse('[profile]\ntable = "app.members"\n'), ACCOUNTS)
    assert 'INSERT INTO "app"."members" AS p ("owner_id")' in sql
    assert 'ON CONFLICT ("owner_id") DO NOTHING' in sql


def test_the_update_trigger_watches_the_mapped_sources() -> None:
    seed = update_trigger(DEFAULT)
    assert 'AFTER UPDATE OF "email", "phone", "raw_user_meta_data", "is_anonymous", "deleted_at"' in seed
    assert "OLD.\"raw_user_meta_data\" -> 'preferred_username'" in seed
    assert "raw_app_meta_data" not in seed
    app = update_trigger(parse(CONFIG))
    assert '"raw_user_meta_data", "raw_app_meta_data", "is_anonymous"' in app
    assert "ROW(OLD.\"raw_app_meta_data\" -> 'handle')" in app
    bare = update_trigger(parse('[profile]\ntable = "app.members"\n'))
    assert "raw_user_meta_data" not in bare


def test_an_apps_definitions_leave_out_the_seeds_tables() -> None:
    from profilesync.definitions import Context
    from profilesync.definitions import render as render_definitions

    seed = {d.name: d.sql for d in render_definitions(Context())}
    app = {d.name: d.sql for d in render_definitions(Context.of(parse(CONFIG), ACCOUNTS))}
    assert "02_seed_profile_checks" in seed and "02_seed_profile_checks" not in app
    for table in (
        "public.user_profiles",
        '"user_profiles"',
        "public.chat_conversations",
        '"chat_conversations"',
    ):
        assert all(table not in text for text in app.values()), table
    assert (
        'INSERT INTO "App Schema"."accounts" AS p ("owner_id", "handle", "Home_URL", "id")'
        in app["02_profiles"]
    )
    assert "'handle'" in app["03_auth_users"]
    assert (
        'INSERT INTO "public"."user_profiles" AS p ("id", "email", "full_name", "avatar_url")'
        in seed["02_profiles"]
    )
