"""sweeper: what the publisher's sweeper (`profile_sync.record_unrecorded_users`) costs at scale.

Every user has a profile but 1,000 (signups whose trigger gave up on a lock). Two laps over every user,
PROFILESYNC_SWEEP_LIMIT users per run as the publisher does: the first records the 1,000, the second finds
nothing. Per run and per lap.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from bench.servers import Servers

_USERS = """
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, created_at)
SELECT gen_random_uuid(), 'authenticated', 'authenticated', %s || g || '@bench.example', '{}', now()
FROM generate_series(1, %s) g
"""
_PROFILES = "INSERT INTO public.user_profiles (id, email) SELECT id, email FROM auth.users"
_SWEEP = "SELECT last_id, recorded FROM profile_sync.record_unrecorded_users(%s, %s)"
_LIMIT = 50_000  # PROFILESYNC_SWEEP_LIMIT's default
_UNRECORDED = 1_000


def measure(servers: Servers, users: int) -> dict[str, Any]:
    url = servers.database("sweeper")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE auth.users DISABLE TRIGGER profile_sync_on_auth_user_created")
        conn.execute(_USERS, ("sweep", users))
        conn.execute(_PROFILES)
        conn.execute(_USERS, ("unrecorded", _UNRECORDED))  # neither profile nor event: what the sweep is for
        conn.execute("ALTER TABLE auth.users ENABLE TRIGGER profile_sync_on_auth_user_created")
        conn.execute("VACUUM ANALYZE auth.users")
        conn.execute("VACUUM ANALYZE public.user_profiles")
        first, recorded = _lap(conn)
        second, again = _lap(conn)
    assert again == 0
    runs = first + second
    return {
        "users": users + _UNRECORDED,
        "limit": _LIMIT,
        "recorded": recorded,
        "runs_per_lap": len(first),
        "run_ms_median": round(statistics.median(runs), 1),
        "run_ms_max": round(max(runs), 1),
        "lap_ms": round(sum(second), 1),
    }


def _lap(conn: psycopg.Connection[Any]) -> tuple[list[float], int]:
    """Milliseconds of every run of one lap, and the users recorded."""
    times: list[float] = []
    recorded, after = 0, None
    while True:
        started = time.perf_counter()
        row = conn.execute(_SWEEP, (after, _LIMIT)).fetchone()
        times.append((time.perf_counter() - started) * 1000)
        assert row is not None
        after, recorded = row[0], recorded + row[1]
        if after is None:
            return times, recorded
