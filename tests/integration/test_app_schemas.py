"""Apps with their own profile table (PROFILESYNC_CONFIG): two schemas that are not the seed's.

`profiles`: public.profiles as Supabase's starters make it (a unique username with a CHECK on its length, a
reference to auth.users without ON DELETE CASCADE, the app's own RLS policies), referenced by posts.author_id
and channels.created_by. `accounts`: app.accounts keyed by account_id, a NOT NULL unique varchar handle,
referenced by app.notes.owner. Users sign up as GoTrue signs them up and insert their first row through
PostgREST's request shape at once, with the publisher and worker running or stopped.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg_pool import ConnectionPool

from profilesync import catalog, metrics
from profilesync.chat import ProfileGate
from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.devkit.signups import KINDS, make_signup
from profilesync.errors import ConfigError, MigrationError
from profilesync.mapping import load
from profilesync.migrate import auth_stub, migrate
from profilesync.ops import backfill, doctor
from tests.harness import act_as, count, drain_once, gotrue_signup, process_env, run_worker_burst, wait_for
from tests.servers import OWNER, DatabaseFactory, as_role, create_owned_database

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class App:
    name: str
    ddl: str
    config: str
    profile: str  # the profile table
    key: str  # its user id column
    columns: tuple[str, ...]  # the mapped columns, in config order
    first_insert: str  # the user's first row through PostgREST: %(uid)s is the user id


PROFILES = App(
    name="profiles",
    ddl="""
    CREATE TABLE public.profiles (
      id uuid PRIMARY KEY REFERENCES auth.users (id),
      username text UNIQUE CONSTRAINT username_length CHECK (char_length(username) >= 3),
      full_name text,
      website text,
      updated_at timestamptz
    );
    ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
    CREATE POLICY "Public profiles are viewable by everyone." ON public.profiles FOR SELECT USING (true);
    CREATE POLICY "Users can update own profile." ON public.profiles FOR UPDATE
      USING ((SELECT auth.uid()) = id);
    GRANT SELECT, UPDATE (username, full_name, website) ON public.profiles TO authenticated;

    CREATE TABLE public.posts (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      author_id uuid NOT NULL REFERENCES public.profiles (id),
      body text
    );
    ALTER TABLE public.posts ENABLE ROW LEVEL SECURITY;
    CREATE POLICY "Users write their own posts." ON public.posts FOR INSERT TO authenticated
      WITH CHECK (author_id = (SELECT auth.uid()));
    CREATE POLICY "Posts are public." ON public.posts FOR SELECT USING (true);
    GRANT SELECT, INSERT (author_id, body) ON public.posts TO authenticated, service_role;

    CREATE TABLE public.channels (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      created_by uuid NOT NULL REFERENCES public.profiles (id),
      slug text
    );
    ALTER TABLE public.channels ENABLE ROW LEVEL SECURITY;
    CREATE POLICY "Users create channels." ON public.channels FOR INSERT TO authenticated
      WITH CHECK (created_by = (SELECT auth.uid()));
    GRANT INSERT (created_by, slug) ON public.channels TO authenticated, service_role;
    """,
    config="""
    [profile]
    table = "public.profiles"
    [profile.columns]
    username = ["meta.user_name", "meta.preferred_username"]
    full_name = ["meta.full_name", "meta.name"]
    website = ["meta.website"]
    """,
    profile="public.profiles",
    key="id",
    columns=("username", "full_name", "website"),
    first_insert="INSERT INTO public.posts (author_id, body) VALUES (%(uid)s, 'hello')",
)

ACCOUNTS = App(
    name="accounts",
    ddl="""
    CREATE SCHEMA app;
    GRANT USAGE ON SCHEMA app TO authenticated, service_role;
    CREATE TABLE app.accounts (
      account_id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
      handle varchar(40) NOT NULL UNIQUE,
      contact text,
      avatar text,
      joined timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE app.accounts ENABLE ROW LEVEL SECURITY;
    CREATE POLICY accounts_own ON app.accounts FOR SELECT TO authenticated
      USING (account_id = (SELECT auth.uid()));
    GRANT SELECT ON app.accounts TO authenticated;

    CREATE TABLE app.notes (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      owner uuid NOT NULL REFERENCES app.accounts (account_id) ON DELETE CASCADE,
      body text
    );
    ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
    CREATE POLICY notes_own ON app.notes FOR ALL TO authenticated
      USING (owner = (SELECT auth.uid())) WITH CHECK (owner = (SELECT auth.uid()));
    GRANT SELECT, INSERT (owner, body) ON app.notes TO authenticated, service_role;
    """,
    config="""
    [profile]
    table = "app.accounts"
    [profile.columns]
    handle = ["meta.user_name", "meta.preferred_username", "email", "phone"]
    contact = ["email", "phone"]
    avatar = ["meta.avatar_url", "meta.picture"]
    """,
    profile="app.accounts",
    key="account_id",
    columns=("handle", "contact", "avatar"),
    first_insert="INSERT INTO app.notes (owner, body) VALUES (%(uid)s, 'first note')",
)

APPS = [PROFILES, ACCOUNTS]


@pytest.fixture(params=APPS, ids=lambda app: app.name)
def app(request: pytest.FixtureRequest) -> App:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def app_settings(
    app: App, database_factory: DatabaseFactory, settings: Settings, tmp_path: Path
) -> Iterator[Settings]:
    """A database of its own with the app's schema, migrated for the app's config by the owner."""
    name = f"profilesync_app_{uuid.uuid4().hex[:12]}"
    url = create_owned_database(database_factory.admin_url, name)
    config = tmp_path / "profilesync.toml"
    config.write_text(app.config)
    try:
        with psycopg.connect(as_role(url, OWNER), autocommit=True) as owner:
            owner.execute(auth_stub().encode())
            owner.execute(app.ddl.encode())
            migrate(owner, load(config))
        yield settings.model_copy(update={"database_url": url, "config": config})
    finally:
        database_factory.drop(url)


def _expected(app: App, signup: Any) -> dict[str, Any]:
    """The profile the app's mapping makes of a simulated signup (values of devkit.signups are clean)."""
    meta = signup.user_meta
    if app is PROFILES:
        return {
            "username": meta.get("user_name") or meta.get("preferred_username"),
            "full_name": meta.get("full_name") or meta.get("name"),
            "website": None,
        }
    return {
        # NOT NULL: a user with no source value (anonymous) gets their id
        "handle": meta.get("user_name")
        or meta.get("preferred_username")
        or signup.email
        or signup.phone
        or str(signup.id),
        "contact": signup.email or signup.phone,
        "avatar": meta.get("avatar_url") or meta.get("picture"),
    }


def _gotrue(conn: Conn, simulated: Any) -> uuid.UUID:
    """GoTrue's signup of exactly this simulated user."""
    fields = {k: v for k, v in dataclasses.asdict(simulated).items() if k != "kind"}
    return gotrue_signup(conn, simulated.kind, **fields)


def _profile(conn: Conn, app: App, user_id: uuid.UUID) -> dict[str, Any] | None:
    query = sql.SQL("SELECT {cols} FROM {table} WHERE {key} = %s").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in app.columns),
        table=sql.Identifier(*app.profile.split(".")),
        key=sql.Identifier(app.key),
    )
    row = conn.execute(query, (user_id,)).fetchone()
    return None if row is None else dict(zip(app.columns, row, strict=True))


def _first_insert(conn: Conn, app: App, user_id: uuid.UUID) -> None:
    """The user's first row, as PostgREST runs a POST with the user's JWT."""
    with conn.transaction():
        act_as(conn, "authenticated", user_id, "/" + app.first_insert.split()[2].split(".")[-1])
        conn.execute(app.first_insert, {"uid": user_id})


def _seed_tables(conn: Conn) -> int:
    return count(
        conn,
        "SELECT count(*) FROM pg_class WHERE oid IN "
        "(to_regclass('public.user_profiles'), to_regclass('public.chat_conversations'))",
    )


@pytest.mark.parametrize("workers", ["running", "stopped"])
def test_every_signup_kind_inserts_its_first_row_at_once(
    app: App, app_settings: Settings, tmp_path: Path, workers: str
) -> None:
    with psycopg.connect(app_settings.database_url, autocommit=True) as conn:
        assert _seed_tables(conn) == 0
        children = Children(process_env(app_settings, PROFILESYNC_CONFIG=str(app_settings.config)), tmp_path)
        signups: dict[uuid.UUID, Any] = {}
        if workers == "running":
            children.start("publisher", "publisher")
            children.start("worker", "worker")
        try:
            if workers == "running":  # the pipeline flows before the test starts
                warmup = make_signup("github")
                signups[_gotrue(conn, warmup)] = warmup
                assert wait_for(lambda: _profile(conn, app, warmup.id) is not None, timeout=30), (
                    children.logs()
                )
            for kind in KINDS:
                simulated = make_signup(kind)
                uid = _gotrue(conn, simulated)
                _first_insert(conn, app, uid)  # never 23503: psycopg raises on any error
                signups[uid] = simulated
            for uid, simulated in signups.items():
                assert _profile(conn, app, uid) == _expected(app, simulated), simulated.kind
            if workers == "running":
                assert wait_for(
                    lambda: count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0, timeout=30
                ), children.logs()[-3000:]
        finally:
            codes = children.stop(timeout=20)
        if workers == "running":
            assert codes == {"publisher": 0, "worker": 0}, children.logs()[-3000:]
        per_user = conn.execute(
            sql.SQL("SELECT {key}, count(*) FROM {table} GROUP BY 1").format(
                key=sql.Identifier(app.key), table=sql.Identifier(*app.profile.split("."))
            )
        ).fetchall()
        assert dict(per_user) == dict.fromkeys(signups, 1)


def test_a_referencing_table_added_after_migrate_is_named_then_guarded(
    app: App, app_settings: Settings
) -> None:
    schema = app.profile.split(".")[0]
    with psycopg.connect(app_settings.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " reviewer uuid NOT NULL REFERENCES {profile} ({key}));"
                " GRANT INSERT (reviewer) ON {table} TO authenticated"
            ).format(
                table=sql.Identifier(schema, "reviews"),
                profile=sql.Identifier(*app.profile.split(".")),
                key=sql.Identifier(app.key),
            )
        )
        facts = doctor.gather(app_settings, ["guards"])
        assert facts.guards is not None and facts.guards.unguarded == [f"{schema}.reviews.reviewer"]
        migrate(conn, load(app_settings.config))  # the fix doctor names
        user = gotrue_signup(conn, "email")
        with conn.transaction():
            act_as(conn, "authenticated", user, "/reviews")
            conn.execute(
                sql.SQL("INSERT INTO {} (reviewer) VALUES (%s)").format(sql.Identifier(schema, "reviews")),
                (user,),
            )
        assert _profile(conn, app, user) is not None


def _ensure_profile(conn: Conn, user_id: uuid.UUID) -> None:
    """POST /rpc/ensure_profile with the user's JWT."""
    with conn.transaction():
        act_as(conn, "authenticated", user_id, "/rpc/ensure_profile")
        conn.execute("SELECT 1 FROM public.ensure_profile()")


def _dropped(conn: Conn) -> list[tuple[uuid.UUID, str, str]]:
    return conn.execute(
        "SELECT user_id, column_name, reason FROM profile_sync.dropped_values ORDER BY id"
    ).fetchall()


USERNAME_TAKEN = {PROFILES.name: "profiles_username_key", ACCOUNTS.name: "accounts_handle_key"}


def test_values_the_app_rejects_are_dropped_never_the_profile(app: App, app_settings: Settings) -> None:
    """A taken or too-short username, on the worker's batch (the earliest signup keeps a unique value) and
    through ensure_profile(): every user has a profile, each dropped value is recorded, the other columns keep
    theirs. A NOT NULL handle gets the user's id instead of NULL."""
    with psycopg.connect(app_settings.database_url, autocommit=True) as conn:
        metas = [{"user_name": "taken"}, {"user_name": "taken"}, {"user_name": "ab"}, {"user_name": "fine"}]
        users = [gotrue_signup(conn, "github", user_meta={**meta, "full_name": "Ada"}) for meta in metas]
        assert drain_once(app_settings) >= len(users)
        run_worker_burst(app_settings)  # one batch with all of them
        late = gotrue_signup(conn, "github", user_meta={"user_name": "taken", "full_name": "Ada"})
        _ensure_profile(conn, late)

        column = app.columns[0]
        profiles = [_profile(conn, app, uid) for uid in [*users, late]]
        assert all(p is not None for p in profiles)
        expected = {
            PROFILES.name: ["taken", None, None, "fine", None],
            ACCOUNTS.name: ["taken", str(users[1]), "ab", "fine", str(late)],
        }[app.name]
        assert [p[column] for p in profiles if p is not None] == expected
        other = {PROFILES.name: "full_name", ACCOUNTS.name: "contact"}[app.name]
        assert all(p is not None and p[other] is not None for p in profiles)
        taken = USERNAME_TAKEN[app.name]
        reasons = [
            (users[1], column, taken),
            *([(users[2], column, "username_length")] if app is PROFILES else []),
        ]
        assert _dropped(conn) == [*reasons, (late, column, taken)]
        assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0  # none failed


def test_a_client_insert_right_after_signup_drops_a_taken_username(app: App, app_settings: Settings) -> None:
    with psycopg.connect(app_settings.database_url, autocommit=True) as conn:
        first = gotrue_signup(conn, "github", user_meta={"user_name": "taken"})
        _first_insert(conn, app, first)
        second = gotrue_signup(conn, "github", user_meta={"user_name": "taken"})
        _first_insert(conn, app, second)  # the guard creates the profile without the taken name
        column = app.columns[0]
        assert (_profile(conn, app, first) or {}).get(column) == "taken"
        assert (_profile(conn, app, second) or {}).get(column) == (None if app is PROFILES else str(second))
        assert _dropped(conn) == [(second, column, USERNAME_TAKEN[app.name])]


def test_server_code_waits_for_the_profile_with_profile_gate(app: App, app_settings: Settings) -> None:
    """ProfileGate on the app's own table, workers stopped: the insert waits (bounded), the fallback creates
    the profile, a taken username is dropped (counted by the dropped-values metric), the row goes in."""
    settings = app_settings.model_copy(update={"chat_wait_timeout": 0.3, "chat_fallback": "create"})
    table = app.first_insert.split()[2]
    column = {PROFILES.name: "author_id", ACCOUNTS.name: "owner"}[app.name]
    insert = sql.SQL("INSERT INTO {} ({}) VALUES (%s) RETURNING {}").format(
        sql.Identifier(*table.split(".")), sql.Identifier(column), sql.Identifier(column)
    )
    registry = CollectorRegistry()
    registry.register(metrics.DROPPED_VALUES)

    def dropped() -> float:
        return registry.get_sample_value("profilesync_dropped_values_total") or 0.0

    with (
        psycopg.connect(app_settings.database_url, autocommit=True) as conn,
        ConnectionPool(app_settings.database_url, min_size=1, max_size=2) as pool,
        ProfileGate[Any](pool, settings) as gate,
    ):
        first = gotrue_signup(conn, "github", user_meta={"user_name": "taken"})
        assert gate.run(first, lambda c: c.execute(insert, (first,)).fetchone()) == (first,)
        before = dropped()
        second = gotrue_signup(conn, "github", user_meta={"user_name": "taken"})
        assert gate.run(second, lambda c: c.execute(insert, (second,)).fetchone()) == (second,)
        assert dropped() == before + 1
        assert (_profile(conn, app, first) or {}).get(app.columns[0]) == "taken"
        assert _dropped(conn) == [(second, app.columns[0], USERNAME_TAKEN[app.name])]


def test_backfill_and_doctor_read_the_apps_table(app: App, app_settings: Settings) -> None:
    """Users from before the install (no outbox row): backfill records them for the app's table, the worker
    creates their profiles, the verification report and doctor count the app's table."""
    with psycopg.connect(app_settings.database_url, autocommit=True) as conn:
        users = [gotrue_signup(conn, kind) for kind in KINDS]
        conn.execute("DELETE FROM profile_sync.signup_events")  # as if they signed up before the install
        profile = catalog.profile_table(conn, load(app_settings.config))
        assert backfill.count_candidates(conn, profile) == len(users)
        doctor_facts = doctor.gather(app_settings, ["users_without_profiles"])
        assert (doctor_facts.users_without_profiles, doctor_facts.unrecorded_users) == (
            len(users),
            len(users),
        )
        assert backfill.record_missing(conn, profile=profile).recorded == len(users)
        assert drain_once(app_settings) == len(users)
        run_worker_burst(app_settings)
        report = backfill.verification_report(conn, profile=profile)
        assert report.complete and report.profiles == len(users), report
        assert doctor.gather(app_settings, ["users_without_profiles"]).users_without_profiles == 0


def _cli(settings: Settings, config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = process_env(settings, PROFILESYNC_CONFIG=str(config), PROFILESYNC_LOG_FORMAT="console")
    profilesync = os.path.join(os.path.dirname(sys.executable), "profilesync")
    return subprocess.run([profilesync, *argv], env=env, capture_output=True, text=True, timeout=120)


def test_config_check_and_dry_run_name_the_problem_and_change_nothing(
    app: App, app_settings: Settings, tmp_path: Path
) -> None:
    assert app_settings.config is not None
    done = _cli(app_settings, app_settings.config, "config", "check")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.startswith(f"{app.profile}: 3 mapped column(s) fit")
    assert ("ON DELETE CASCADE" in done.stdout) is (app is PROFILES)  # advice: posts would block a delete

    bad = tmp_path / "bad.toml"
    bad.write_text(app.config.replace(f'{app.columns[1]} = ["', 'nickname = ["meta.nick", "'))
    done = _cli(app_settings, bad, "config", "check")
    assert done.returncode == 2 and done.stdout == ""
    problem = f"profile.columns.nickname: {app.profile} has no column nickname"
    assert done.stderr == f"profilesync: Invalid configuration: {problem}\n"
    with psycopg.connect(app_settings.database_url, autocommit=True) as conn:
        before = count(conn, "SELECT count(*) FROM profile_sync.definitions")
        done = _cli(app_settings, bad, "migrate")
        assert done.returncode == 2 and "profile.columns.nickname" in done.stderr
        # another (fitting) mapping: --dry-run prints what migrate would apply, and applies nothing
        other = tmp_path / "other.toml"
        other.write_text(app.config.replace(f"{app.columns[2]} = ", "# "))  # one column fewer
        done = _cli(app_settings, other, "migrate", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "CREATE OR REPLACE FUNCTION profile_sync.sync_profiles" in done.stdout
        assert sql.Identifier(*app.profile.split(".")).as_string() in done.stdout
        checksums = conn.execute("SELECT name, checksum FROM profile_sync.definitions ORDER BY 1").fetchall()
        assert len(checksums) == before
        done = _cli(app_settings, other, "migrate")  # the mapping changed: its definitions are applied
        assert done.returncode == 0 and "applied 0 migration(s)" in done.stdout, done.stderr
        assert (
            conn.execute("SELECT name, checksum FROM profile_sync.definitions ORDER BY 1").fetchall()
            != checksums
        )


def test_supabase_files_for_an_app_make_no_seed_tables(
    app: App, app_settings: Settings, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """`--emit-supabase` with the app's config, applied as `supabase db push` applies files (each in its own
    transaction) to a database with the app's schema: the app's table is served, no seed table is made."""
    assert app_settings.config is not None
    done = _cli(app_settings, app_settings.config, "migrate", "--emit-supabase", str(tmp_path / "migrations"))
    assert done.returncode == 0, done.stderr
    url = create_owned_database(database_factory.admin_url, f"profilesync_app_{uuid.uuid4().hex[:12]}")
    try:
        with psycopg.connect(as_role(url, OWNER), autocommit=True) as owner:
            owner.execute(auth_stub().encode())
            owner.execute(app.ddl.encode())
            for path in sorted((tmp_path / "migrations").iterdir()):
                with owner.transaction():
                    owner.execute(path.read_text().encode())
            assert _seed_tables(owner) == 0
        with psycopg.connect(url, autocommit=True) as conn:  # GoTrue and PostgREST, as the platform runs them
            user = gotrue_signup(conn, "github", user_meta={"user_name": "octo"})
            _first_insert(conn, app, user)
            assert (_profile(conn, app, user) or {}).get(app.columns[0]) == "octo"
    finally:
        database_factory.drop(url)


def test_migrate_refuses_a_config_that_does_not_fit_and_changes_nothing(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    url = create_owned_database(database_factory.admin_url, f"profilesync_app_{uuid.uuid4().hex[:12]}")
    try:
        with psycopg.connect(as_role(url, OWNER), autocommit=True) as owner:
            owner.execute(auth_stub().encode())
            owner.execute(PROFILES.ddl.encode())
            owner.execute("ALTER TABLE public.profiles ADD COLUMN bio text NOT NULL")
            config = tmp_path / "c.toml"
            config.write_text(PROFILES.config)
            with pytest.raises(ConfigError, match=r"profile\.columns\.bio: .* NOT NULL without a default"):
                migrate(owner, load(config))
            assert count(owner, "SELECT count(*) FROM pg_namespace WHERE nspname = 'profile_sync'") == 0
            assert count(owner, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'profile_sync%%'") == 0

            # A step failing half-way (here the last migration, on an object in its way): nothing of the
            # earlier ones stays, the signup trigger on auth.users included.
            owner.execute("ALTER TABLE public.profiles DROP COLUMN bio")
            owner.execute("CREATE SCHEMA profile_sync; CREATE TABLE profile_sync.dropped_values ()")
            with pytest.raises(MigrationError, match=r"0012_dropped_values\.sql"):
                migrate(owner, load(config))
            assert (
                count(
                    owner, "SELECT count(*) FROM pg_class WHERE relnamespace = 'profile_sync'::regnamespace"
                )
                == 1
            )
            assert count(owner, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'profile_sync%%'") == 0
            owner.execute("DROP SCHEMA profile_sync CASCADE")
            assert migrate(owner, load(config)).migrations[-1] == "0012_dropped_values"
    finally:
        database_factory.drop(url)
