"""The client guarantee (sql/0006): Supabase clients' conversation inserts never hit the profile foreign key.

Every client statement runs as PostgREST runs it: one transaction, transaction-local role and JWT claims
(tests.harness.act_as), the insert issued the instant the user's signup commits.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import ConnectionPool

from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.devkit.signups import KINDS
from tests.harness import (
    PROFILES_OF,
    act_as,
    count,
    gotrue_signup,
    gotrue_soft_delete,
    process_env,
    signup,
    wait_for,
)

Conn = psycopg.Connection[Any]

INSERT = "INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, %s) RETURNING *"
PROFILE = "SELECT id, email, full_name, avatar_url FROM public.user_profiles WHERE id = %s"
EVENTS = "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s"


def client_insert(conn: Conn, user_id: uuid.UUID, *, role: str = "authenticated", sub: Any = "self") -> Any:
    """POST /chat_conversations with Prefer: return=representation, for the user `sub` ("self": user_id)."""
    with conn.transaction():
        act_as(conn, role, user_id if sub == "self" else sub, "/chat_conversations")
        return conn.execute(INSERT, (user_id, "first chat")).fetchone()


def ensure_profile(conn: Conn, user_id: uuid.UUID | None, role: str = "authenticated") -> Any:
    """POST /rpc/ensure_profile."""
    with conn.transaction():
        act_as(conn, role, user_id, "/rpc/ensure_profile")
        return conn.execute("SELECT * FROM public.ensure_profile()").fetchone()


def mapped_profile(conn: Conn, user_id: uuid.UUID) -> Any:
    """The profile the worker's mapping makes for this user, computed on a copy that is rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM public.user_profiles WHERE id = %s", (user_id,))
        conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", ([user_id],))
        return conn.execute(PROFILE, (user_id,)).fetchone()


@contextmanager
def pipeline(settings: Settings, tmp_path: Path, running: bool) -> Iterator[None]:
    """The real publisher and worker processes (running), or none at all (stopped)."""
    if not running:
        yield
        return
    env = process_env(settings)
    children = Children(env, tmp_path)
    children.start("publisher", "publisher")
    children.start("worker", "worker")
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            warmup = signup(conn)  # the pipeline flows before the test starts
            assert wait_for(lambda: count(conn, PROFILES_OF, ([warmup],)) == 1, timeout=30), children.logs()
        yield
    finally:
        codes = children.stop(timeout=15)
    assert codes == {"publisher": 0, "worker": 0}, children.logs()[-4000:]


# -- the first conversation, right after signup --------------------------------------------------------


@pytest.mark.parametrize("workers", ["running", "stopped"])
def test_every_signup_kind_inserts_its_first_conversation_at_once(
    conn: Conn, database_url: str, settings: Settings, tmp_path: Path, workers: str
) -> None:
    with pipeline(settings, tmp_path, workers == "running"), psycopg.connect(database_url) as client:
        users = {}
        for kind in KINDS:
            user_id = signup(conn, kind)  # autocommit: committed when this returns
            row = client_insert(client, user_id)
            users[kind] = user_id
            assert row is not None and row[1] == user_id and row[2] == "first chat", kind
    for kind, user_id in users.items():
        assert conn.execute(PROFILE, (user_id,)).fetchone() == mapped_profile(conn, user_id), kind
    assert count(conn, "SELECT count(*) FROM public.chat_conversations") == len(KINDS)


@pytest.mark.parametrize("workers", ["running", "stopped"])
def test_200_concurrent_first_conversations_right_after_signup(
    conn: Conn, database_url: str, settings: Settings, tmp_path: Path, workers: str
) -> None:
    n, lanes = 200, 16
    start = threading.Barrier(n)
    kinds = list(KINDS)
    with (
        pipeline(settings, tmp_path, workers == "running"),
        ConnectionPool(database_url, min_size=lanes, max_size=lanes, kwargs={"autocommit": True}) as auth,
        ConnectionPool(database_url, min_size=lanes, max_size=lanes) as postgrest,
    ):
        auth.wait()
        postgrest.wait()

        def new_user_chats(i: int) -> Any:
            start.wait()
            with auth.connection() as auth_conn, postgrest.connection() as client:
                user_id = signup(auth_conn, kinds[i % len(kinds)])
                return client_insert(client, user_id)

        with ThreadPoolExecutor(max_workers=n) as executor:
            futures = [executor.submit(new_user_chats, i) for i in range(n)]
            results = [f.exception(timeout=60) or f.result() for f in futures]
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        assert count(conn, "SELECT count(*) FROM public.chat_conversations") == n
        if workers == "running":  # the jobs of users the inserts served find their profiles and finish
            assert wait_for(lambda: count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0)
    users = [r[1] for r in results]
    assert count(conn, PROFILES_OF, (users,)) == n


def test_an_apps_own_security_definer_rpc_is_guarded_too(conn: Conn, database_url: str) -> None:
    conn.execute(
        """
        CREATE FUNCTION public.start_chat(title text) RETURNS uuid
        LANGUAGE sql SECURITY DEFINER SET search_path = ''
        AS $$
          INSERT INTO public.chat_conversations (user_id, title) VALUES (auth.uid(), title) RETURNING id
        $$;
        GRANT EXECUTE ON FUNCTION public.start_chat(text) TO authenticated;
        """
    )
    user_id = signup(conn, "phone")
    with psycopg.connect(database_url) as client, client.transaction():
        act_as(client, "authenticated", user_id, "/rpc/start_chat")  # runs as the function's owner
        assert client.execute("SELECT public.start_chat('hi')").fetchone() is not None
    assert count(conn, PROFILES_OF, ([user_id],)) == 1


# -- users who signed up before profilesync was installed ------------------------------------------------


def test_users_from_before_the_install_insert_directly_or_call_ensure_profile(
    conn: Conn, database_url: str
) -> None:
    early, later = signup(conn, "google"), signup(conn, "github")
    conn.execute("DELETE FROM profile_sync.signup_events")  # as if they signed up before the trigger existed
    with psycopg.connect(database_url) as client:
        assert client_insert(client, early)[1] == early

        first = ensure_profile(client, later)
        again = ensure_profile(client, later)  # idempotent: the same row, not recreated
        assert first == again
        assert first[:4] == mapped_profile(conn, later)
        assert client_insert(client, later)[1] == later
    assert count(conn, PROFILES_OF, ([early, later],)) == 2


def test_ensure_profile_returns_the_existing_profile_without_writing(conn: Conn, database_url: str) -> None:
    user_id = signup(conn, "google")
    conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", ([user_id],))
    before = conn.execute(
        "SELECT xmin::text, * FROM public.user_profiles WHERE id = %s", (user_id,)
    ).fetchone()
    with psycopg.connect(database_url) as client:
        row = ensure_profile(client, user_id)
    assert row == before[1:]
    assert (
        conn.execute("SELECT xmin::text, * FROM public.user_profiles WHERE id = %s", (user_id,)).fetchone()
        == before
    )


# -- who may do what ---------------------------------------------------------------------------------------


def test_another_users_id_is_refused_by_rls_and_creates_no_profile(conn: Conn, database_url: str) -> None:
    mallory, victim = signup(conn), signup(conn)
    conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", ([mallory],))
    with psycopg.connect(database_url) as client:
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            client_insert(client, victim, sub=mallory)
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            client_insert(client, victim, sub=None)  # a token without a user id
        # Not PT404 for an id that is nobody's: the error does not tell which user ids exist.
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            client_insert(client, uuid.uuid4(), sub=mallory)
    assert count(conn, PROFILES_OF, ([victim],)) == 0
    assert count(conn, EVENTS, (victim,)) == 1  # the victim's signup is still the pipeline's to process


def test_service_role_inserts_for_any_existing_user_server_roles_keep_the_foreign_key(
    conn: Conn, database_url: str
) -> None:
    # Supabase's service_role bypasses RLS and holds default grants on public tables; the dev stub's does not.
    conn.execute("GRANT SELECT, INSERT ON public.chat_conversations TO service_role")
    conn.execute("CREATE POLICY service_role_all ON public.chat_conversations TO service_role USING (true)")
    user_id = signup(conn, "sso")
    # Our own server roles (ChatService) are not clients: they still get 23503 and wait for readiness.
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute(INSERT, (user_id, "server"))
    assert count(conn, PROFILES_OF, ([user_id],)) == 0
    with psycopg.connect(database_url) as client:
        row = client_insert(client, user_id, role="service_role", sub=None)
    assert row[1] == user_id
    assert conn.execute(PROFILE, (user_id,)).fetchone() == mapped_profile(conn, user_id)


def _deleted(conn: Conn) -> uuid.UUID:
    user_id = signup(conn)
    conn.execute("DELETE FROM auth.users WHERE id = %s", (user_id,))
    return user_id


def _soft_deleted(conn: Conn) -> uuid.UUID:
    user_id = signup(conn)
    conn.execute("UPDATE auth.users SET deleted_at = now() WHERE id = %s", (user_id,))
    return user_id


def _soft_deleted_with_profile(conn: Conn) -> uuid.UUID:
    """GoTrue's soft delete of a user whose profile exists, once the worker scrubbed it; the user's JWT is
    still valid until it expires."""
    user_id = gotrue_signup(conn, "google")
    conn.execute("SELECT profile_sync.sync_profiles(%s)", ([user_id],))
    gotrue_soft_delete(conn, user_id)
    conn.execute("SELECT profile_sync.sync_profiles(%s)", ([user_id],))
    return user_id


@pytest.mark.parametrize(
    "make_user",
    [_deleted, _soft_deleted, _soft_deleted_with_profile, lambda _: uuid.uuid4()],
    ids=["deleted", "soft-deleted", "soft-deleted with its profile", "nonexistent"],
)
@pytest.mark.parametrize("call", ["insert", "service_role insert", "ensure_profile"])
def test_a_user_who_is_gone_gets_pt404_with_a_hint_never_23503(
    conn: Conn, database_url: str, make_user: Any, call: str
) -> None:
    conn.execute("GRANT SELECT, INSERT ON public.chat_conversations TO service_role")
    conn.execute("CREATE POLICY service_role_all ON public.chat_conversations TO service_role USING (true)")
    user_id = make_user(conn)
    before = conn.execute(PROFILE, (user_id,)).fetchone()
    with psycopg.connect(database_url) as client, pytest.raises(psycopg.Error) as raised:
        if call == "insert":
            client_insert(client, user_id)  # a session whose account is gone
        elif call == "service_role insert":
            client_insert(client, user_id, role="service_role", sub=None)
        else:
            ensure_profile(client, user_id)
    diag = raised.value.diag
    assert (raised.value.sqlstate, diag.message_primary) == (
        "PT404",
        f"profile_sync: user {user_id} does not exist or was deleted",
    )
    assert diag.message_hint is not None and "signOut" in diag.message_hint
    assert conn.execute(PROFILE, (user_id,)).fetchone() == before  # none made, a scrubbed one left as it was
    assert before is None or before[1:] == (None, None, None)


def test_a_soft_deleted_user_cannot_put_personal_data_back_into_the_profile(
    conn: Conn, database_url: str
) -> None:
    """PATCH /user_profiles with a soft-deleted user's still-valid JWT: PT404 for name or avatar, as for a
    deleted user; clearing a field and editing preferences stay allowed; a live user edits as before."""
    gone, live = _soft_deleted_with_profile(conn), gotrue_signup(conn, "github")
    conn.execute("SELECT profile_sync.sync_profiles(%s)", ([live],))
    patch = "UPDATE public.user_profiles SET {} WHERE id = %s"
    with psycopg.connect(database_url) as client:
        for change in ("full_name = 'Back again'", "avatar_url = 'https://cdn.example.com/a.png'"):
            with pytest.raises(psycopg.Error) as raised, client.transaction():
                act_as(client, "authenticated", gone, "/user_profiles")
                client.execute(patch.format(change), (gone,))
            assert raised.value.sqlstate == "PT404"
        with client.transaction():
            act_as(client, "authenticated", gone, "/user_profiles")
            client.execute(patch.format('full_name = NULL, preferences = \'{"theme": "dark"}\''), (gone,))
            act_as(client, "authenticated", live, "/user_profiles")
            client.execute(patch.format("full_name = 'Still here'"), (live,))
    assert conn.execute(PROFILE, (gone,)).fetchone()[1:] == (None, None, None)
    assert conn.execute(PROFILE, (live,)).fetchone()[2] == "Still here"


def test_ensure_profile_needs_a_signed_in_user_and_the_authenticated_role(
    conn: Conn, database_url: str
) -> None:
    user_id = signup(conn)
    with psycopg.connect(database_url) as client:
        with pytest.raises(psycopg.Error) as raised:
            ensure_profile(client, None)
        assert raised.value.sqlstate == "PT401"
        for role in ("anon", "service_role"):
            with pytest.raises(errors.InsufficientPrivilege):
                ensure_profile(client, user_id, role=role)
    assert count(conn, PROFILES_OF, ([user_id],)) == 0
    row = conn.execute(
        """
        SELECT p.prosecdef, p.proconfig, has_function_privilege('authenticated', p.oid, 'EXECUTE'),
               EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)
        FROM pg_proc p WHERE p.oid = 'public.ensure_profile()'::regprocedure
        """
    ).fetchone()
    assert row == (True, ['search_path=""'], True, False)
