from __future__ import annotations

from typing import Any

import psycopg

from profilesync.config import Settings
from tests.harness import bulk_signup, count, run_worker_burst, running_publisher, wait_for

PENDING = "SELECT count(*) FROM profile_sync.signup_events WHERE enqueued_at IS NULL"
WITHOUT_PROFILE = (
    "SELECT count(*) FROM auth.users u LEFT JOIN public.user_profiles p USING (id) WHERE p.id IS NULL"
)


def test_bulk_signup_in_one_statement_gives_each_user_exactly_one_profile(
    conn: psycopg.Connection[Any], settings: Settings
) -> None:
    with running_publisher(settings):
        bulk_signup(conn, 2000)
        assert wait_for(lambda: count(conn, PENDING) == 0)
    run_worker_burst(settings)
    assert count(conn, "SELECT count(*) FROM public.user_profiles") == 2000
    assert count(conn, WITHOUT_PROFILE) == 0
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0
