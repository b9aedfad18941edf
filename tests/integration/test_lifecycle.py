"""The profile follows auth.users after the signup: update events, the metadata policy, the soft-delete scrub,
and hard deletes racing a batch. auth.users is written as GoTrue writes it (tests.harness.gotrue_*)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry

from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.queueing import profiles_queue
from tests.harness import (
    IDLE_PUBLISHERS,
    auth_server,
    count,
    drain_once,
    gotrue_signup,
    gotrue_soft_delete,
    gotrue_update,
    run_worker_burst,
    wait_for,
)

Conn = psycopg.Connection[Any]
Profile = tuple[str | None, str | None, str | None]

EVENTS = "SELECT count(*) FROM profile_sync.signup_events"
AVATAR = "https://avatars.example.com/u/1.png"


def profile(conn: Conn, user_id: uuid.UUID) -> Profile | None:
    row = conn.execute(
        "SELECT email, full_name, avatar_url FROM public.user_profiles WHERE id = %s", (user_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def sync(conn: Conn, user_ids: list[uuid.UUID], policy: str = "fill-null") -> tuple[int, ...]:
    row = conn.execute(
        "SELECT created, updated, scrubbed, missing FROM profile_sync.sync_profiles(%s, %s)",
        (user_ids, policy),
    ).fetchone()
    assert row is not None
    return tuple(row)


def metadata(conn: Conn, user_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute("SELECT raw_user_meta_data FROM auth.users WHERE id = %s", (user_id,)).fetchone()
    assert row is not None
    return dict(row[0])


# -- GoTrue's flows after the signup (internal/models/user.go, internal/api/{admin,verify}.go) ---------------


def update_user_metadata(conn: Conn, user_id: uuid.UUID, **changes: Any) -> None:
    """auth.admin.updateUserById({password, user_metadata}): the password first, then the merged metadata."""
    with auth_server(conn):
        gotrue_update(conn, user_id, encrypted_password="$2a$10$new")
        gotrue_update(conn, user_id, raw_user_meta_data={**metadata(conn, user_id), **changes})


def confirm_email_change(conn: Conn, user_id: uuid.UUID, new_email: str, *, anonymous: bool = False) -> None:
    """updateUser({email}) records the pending change (no profile column); the verify link confirms it."""
    with auth_server(conn):
        gotrue_update(
            conn, user_id, email_change=new_email, email_change_token_new="tok", email_change_sent_at="now"
        )
    with auth_server(conn):
        if anonymous:
            gotrue_update(conn, user_id, is_anonymous=False)
        gotrue_update(
            conn,
            user_id,
            email=new_email,
            email_change="",
            email_change_token_current="",
            email_change_token_new="",
            email_change_confirm_status=0,
        )
        gotrue_update(conn, user_id, confirmation_token="", email_confirmed_at="now")
        gotrue_update(conn, user_id, raw_user_meta_data={**metadata(conn, user_id), "email_verified": True})


# -- events: exactly the changes that matter, one per transaction -------------------------------------------


def test_a_gotrue_signup_transaction_records_exactly_one_event(conn: Conn) -> None:
    users = [gotrue_signup(conn, kind) for kind in ("email", "phone", "anonymous", "google", "github", "sso")]
    rows = conn.execute("SELECT user_id, count(*) FROM profile_sync.signup_events GROUP BY 1").fetchall()
    assert dict(rows) == dict.fromkeys(users, 1)
    assert sync(conn, users) == (6, 0, 0, 0)
    assert count(conn, EVENTS) == 0


def test_several_updates_in_one_transaction_record_one_event_and_savepoints_are_honoured(conn: Conn) -> None:
    user = gotrue_signup(conn, "email")
    sync(conn, [user])
    # The admin update: an unrecorded column first, then the metadata -- the metadata change must be recorded.
    update_user_metadata(conn, user, full_name="Ada")
    assert count(conn, EVENTS) == 1
    sync(conn, [user])
    # The event of a rolled-back savepoint is gone with it: the next change records its own.
    with auth_server(conn):
        with conn.transaction(force_rollback=True):
            gotrue_update(conn, user, raw_user_meta_data={"full_name": "Ada L"})
        gotrue_update(conn, user, raw_user_meta_data={"full_name": "Ada B"})
    assert count(conn, EVENTS) == 1
    sync(conn, [user])
    # The event of a released savepoint covers the transaction's later changes.
    with auth_server(conn):
        with conn.transaction():
            gotrue_update(conn, user, email="ada@example.org")
        gotrue_update(conn, user, raw_user_meta_data={"full_name": "Ada C"})
    assert count(conn, EVENTS) == 1
    sync(conn, [user], "overwrite")
    assert profile(conn, user) == ("ada@example.org", "Ada C", None)


LOGIN_SHAPES: list[Callable[[int], dict[str, Any]]] = [
    lambda i: {"last_sign_in_at": "now"},  # every sign-in (UpdateLastSignInAt)
    lambda i: {"confirmation_token": f"t{i}", "confirmation_sent_at": "now"},  # magic link / OTP sent
    lambda i: {"recovery_token": f"r{i}", "recovery_sent_at": "now"},
    lambda i: {"confirmation_token": "", "email_confirmed_at": "now"},  # Confirm ...
    lambda i: {"raw_user_meta_data": {"email_verified": i % 2 == 0}},  # ... and its metadata write
    lambda i: {"banned_until": None},
    lambda i: {"encrypted_password": f"$2a$10${i}"},
]


def test_a_thousand_gotrue_logins_and_confirmations_record_no_event(conn: Conn) -> None:
    users = [gotrue_signup(conn, "google") for _ in range(10)]
    sync(conn, users)
    for i in range(1000):
        user = users[i % len(users)]
        with auth_server(conn):
            changes = LOGIN_SHAPES[i % len(LOGIN_SHAPES)](i)
            if "raw_user_meta_data" in changes:
                changes["raw_user_meta_data"] = {**metadata(conn, user), **changes["raw_user_meta_data"]}
            gotrue_update(conn, user, **changes)
    # An ORM writing every column unchanged names the watched columns: the WHEN still records nothing.
    conn.execute(
        "UPDATE auth.users SET email = email, phone = phone, raw_user_meta_data = raw_user_meta_data,"
        " is_anonymous = is_anonymous, deleted_at = deleted_at, updated_at = now()"
    )
    assert count(conn, EVENTS) == 0


def test_the_update_trigger_has_the_insert_triggers_safety(conn: Conn) -> None:
    row = conn.execute(
        "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'profile_sync.on_auth_user_updated'::regproc"
    ).fetchone()
    assert row == (True, ['search_path=""', "lock_timeout=150ms"])
    user = gotrue_signup(conn, "email")
    sync(conn, [user])
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("ALTER TABLE profile_sync.signup_events RENAME TO signup_events_gone")
    update_user_metadata(conn, user, full_name="Still Saved")
    assert metadata(conn, user)["full_name"] == "Still Saved"
    assert any("not recorded" in n for n in notices)


# -- the metadata policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("fill-null", ("grace@navy.mil", "Amazing Grace", AVATAR)),  # the user's edit kept, the NULL filled
        ("overwrite", ("grace@navy.mil", "Rear Admiral Hopper", AVATAR)),
        ("off", ("grace@navy.mil", "Amazing Grace", None)),  # email still follows
    ],
)
def test_metadata_policy(conn: Conn, policy: str, expected: Profile) -> None:
    user = gotrue_signup(conn, "google")
    sync(conn, [user])
    conn.execute(
        "UPDATE public.user_profiles SET full_name = 'Amazing Grace', avatar_url = NULL WHERE id = %s",
        (user,),
    )
    update_user_metadata(conn, user, full_name="Rear Admiral Hopper", avatar_url=AVATAR, picture=AVATAR)
    with auth_server(conn):
        gotrue_update(conn, user, email="grace@navy.mil")
    assert sync(conn, [user], policy) == (0, 1, 0, 0)
    assert profile(conn, user) == expected
    assert sync(conn, [user], policy) == (0, 0, 0, 0)  # in step: nothing written again


def test_overwrite_never_clears_a_field_the_metadata_lacks(conn: Conn) -> None:
    user = gotrue_signup(conn, "google")
    sync(conn, [user])
    before = profile(conn, user)
    assert None not in before
    with auth_server(conn):
        gotrue_update(conn, user, raw_user_meta_data={"iss": "https://accounts.google.com"})
    sync(conn, [user], "overwrite")
    assert profile(conn, user) == before


def test_an_unknown_policy_is_refused(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        sync(conn, [uuid.uuid4()], "merge")


def test_the_worker_applies_the_configured_policy(conn: Conn, settings: Settings) -> None:
    overwrite = settings.model_copy(update={"metadata_policy": "overwrite"})
    user = gotrue_signup(conn, "github")
    assert drain_once(overwrite) == 1
    run_worker_burst(overwrite)
    email, _, avatar = profile(conn, user)
    conn.execute("UPDATE public.user_profiles SET full_name = 'Linus' WHERE id = %s", (user,))
    update_user_metadata(conn, user, user_name="linus-t")
    assert drain_once(overwrite) == 1
    run_worker_burst(overwrite)
    assert profile(conn, user) == (email, "linus-t", avatar)


# -- soft and hard deletes -----------------------------------------------------------------------------------


def test_soft_delete_scrubs_the_profile_and_hard_delete_cascades(conn: Conn) -> None:
    user, other = gotrue_signup(conn, "google"), gotrue_signup(conn, "sso")
    sync(conn, [user, other])
    conn.execute("INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'kept')", (user,))
    gotrue_soft_delete(conn, user)
    assert count(conn, EVENTS) == 1
    assert sync(conn, [user]) == (0, 0, 1, 1)  # scrubbed; no live user
    assert profile(conn, user) == (None, None, None)
    assert count(conn, "SELECT count(*) FROM public.chat_conversations WHERE user_id = %s", (user,)) == 1
    conn.execute("DELETE FROM auth.users WHERE id = ANY(%s)", ([user, other],))
    assert count(conn, "SELECT count(*) FROM public.user_profiles") == 0


def test_a_hard_delete_racing_a_batch_is_missing_not_a_retry(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    kept, deleted = gotrue_signup(conn, "email"), gotrue_signup(conn, "email")
    one_per_job = settings.model_copy(update={"job_batch_size": 1})  # no batch to bisect around the failure
    assert drain_once(one_per_job) == 2
    queue = profiles_queue(redis_conn)
    waiting = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'profilesync-worker' AND wait_event_type = 'Lock'"
    )

    def commit_once_the_worker_waits(deleter: Conn) -> None:
        assert wait_for(lambda: count(conn, waiting) == 1)
        deleter.commit()

    # The delete has run but not committed when the worker reads the user: the worker waits on it.
    with psycopg.connect(settings.database_url) as deleter:
        deleter.execute("DELETE FROM auth.users WHERE id = %s", (deleted,))
        committer = threading.Thread(target=commit_once_the_worker_waits, args=(deleter,))
        committer.start()
        run_worker_burst(one_per_job)
        committer.join(timeout=30)
    jobs = Job.fetch_many(queue.finished_job_registry.get_job_ids(), redis_conn, serializer=queue.serializer)
    assert [job.retries_left for job in jobs if job] == [settings.job_retries] * 2  # not one transient retry
    results = [job.return_value() for job in jobs if job]
    assert sorted((r["created"], r["missing"], r["failed"]) for r in results) == [(0, 1, 0), (1, 0, 0)]
    assert FailedJobRegistry(queue=queue).count == 0
    assert profile(conn, kept) is not None
    assert profile(conn, deleted) is None


# -- the whole pipeline, real processes ----------------------------------------------------------------------


@pytest.fixture
def pipeline(conn: Conn, settings: Settings, tmp_path: Path) -> Iterator[Children]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    children = Children({**env, "PROFILESYNC_LOG_FORMAT": "json"}, tmp_path)
    children.start("publisher", "publisher")
    children.start("worker", "worker")
    try:
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        yield children
    finally:
        codes = children.stop(timeout=15)
        assert codes == {"publisher": 0, "worker": 0}, children.logs()[-4000:]


def reaches(conn: Conn, user_id: uuid.UUID, expected: Profile | None) -> float:
    """Seconds until the profile reads `expected` (bounded at 10 s)."""
    started = time.monotonic()
    assert wait_for(lambda: profile(conn, user_id) == expected, timeout=10, interval=0.01), profile(
        conn, user_id
    )
    return time.monotonic() - started


def test_each_lifecycle_step_reaches_the_profile_within_a_second(conn: Conn, pipeline: Children) -> None:
    ada, anon = gotrue_signup(conn, "email", email="ada@example.com"), gotrue_signup(conn, "anonymous")
    reaches(conn, ada, ("ada@example.com", None, None))
    reaches(conn, anon, (None, None, None))
    seconds = {}

    update_user_metadata(conn, ada, full_name="Ada Lovelace", avatar_url=AVATAR)  # createUser, then update
    seconds["metadata update"] = reaches(conn, ada, ("ada@example.com", "Ada Lovelace", AVATAR))

    confirm_email_change(conn, anon, "anon@example.com", anonymous=True)
    seconds["anonymous to email"] = reaches(conn, anon, ("anon@example.com", None, None))

    confirm_email_change(conn, ada, "ada@lovelace.org")
    seconds["email change"] = reaches(conn, ada, ("ada@lovelace.org", "Ada Lovelace", AVATAR))

    gotrue_soft_delete(conn, ada)
    seconds["soft delete"] = reaches(conn, ada, (None, None, None))

    assert max(seconds.values()) < 1.0, seconds
    assert wait_for(lambda: count(conn, EVENTS) == 0)
