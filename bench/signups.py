"""Signup load: open-loop senders and burst clients, each a process with its own autocommit connection.

A signup is one INSERT INTO auth.users shaped like Supabase's for a Google sign-in (the devkit's simulated
signup, shared with the demo and the tests); emails carry a tag so a scenario's figures can be read back from
the database (clock: the database's own `now()`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import time
from typing import Any

import psycopg

from bench.schedule import open_loop_offsets, split
from profilesync.devkit.signups import insert_signup, make_signup

# The same signup for pgbench (signup_cost), one per transaction.
PGBENCH_SCRIPT = """\\set r random(1, 9000000000000000000)
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data, created_at) \
VALUES (gen_random_uuid(), 'authenticated', 'authenticated', 'pgb' || :r || '@bench.example', \
'{"full_name": "Bench User", "avatar_url": "https://lh3.googleusercontent.com/a/bench.jpg"}', \
'{"provider": "google"}', now());
"""

# A signup as the auth server makes it (see /work/shared/SUPABASE_FACTS.md): one transaction of an INSERT with
# role '', the UPDATE to 'authenticated', and the metadata rewritten to the identity's data.
GOTRUE_SIGNUP_SCRIPT = """\\set r random(1, 9000000000000000000)
BEGIN;
INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data, \
raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at) \
VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', '', \
'gt' || :r || '@bench.example', '', '{"provider": "email", "providers": ["email"]}', \
'{"full_name": "Bench User"}', false, false, now(), now()) RETURNING id \\gset
UPDATE auth.users SET role = 'authenticated', updated_at = now() WHERE id = :id;
UPDATE auth.users SET raw_user_meta_data = jsonb_build_object('sub', :id::text, \
'email', 'gt' || :r || '@bench.example', 'email_verified', false, 'phone_verified', false, \
'full_name', 'Bench User'), updated_at = now() WHERE id = :id;
END;
"""

# The same signup when the identity data the auth server writes changes keys the profile reads (OAuth: the
# provider's name and picture arrive with the identity): the update trigger's function runs inside the signup.
GOTRUE_SIGNUP_NAMED_SCRIPT = GOTRUE_SIGNUP_SCRIPT.replace(
    """'{"full_name": "Bench User"}', false""", "'{}', false"
).replace("'full_name', 'Bench User'", "'full_name', 'Bench User', 'picture', 'https://x.example/a.png'")

# A login (or token refresh) of an existing user: the auth server's UPDATE of its sign-in time. The users are
# made by LOGIN_FILL with ids derived from a number, so pgbench can pick one at random.
LOGIN_SCRIPT = """\\set r random(1, 10000)
UPDATE auth.users SET last_sign_in_at = now(), updated_at = now() WHERE id = md5('login' || :r)::uuid;
"""
# An email confirmation of an existing user: the token columns, then the metadata's email_verified (two
# UPDATEs in one transaction, as the auth server confirms).
CONFIRM_SCRIPT = """\\set r random(1, 10000)
BEGIN;
UPDATE auth.users SET confirmation_token = '', email_confirmed_at = now(), updated_at = now() \
WHERE id = md5('login' || :r)::uuid;
UPDATE auth.users SET raw_user_meta_data = raw_user_meta_data \
|| jsonb_build_object('email_verified', random() < 0.5), updated_at = now() \
WHERE id = md5('login' || :r)::uuid;
END;
"""
LOGIN_FILL = """
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data, created_at)
SELECT md5('login' || g)::uuid, 'authenticated', 'authenticated', 'login' || g || '@bench.example',
       '{"full_name": "Bench User"}', '{"provider": "email"}', now()
FROM generate_series(1, 10000) g;
"""

# The auth server's own indexes on auth.users (beyond the primary key and phone), so that a signup without
# any trigger costs what it costs on Supabase and ratios are not flattered by a bare table.
GOTRUE_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users (email) WHERE is_sso_user = false;
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users (instance_id);
CREATE INDEX IF NOT EXISTS users_instance_id_email_idx ON auth.users (instance_id, lower(email::text));
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users (is_anonymous);
"""


def signup(conn: psycopg.Connection[Any], tag: str) -> str:
    """One signup (an autocommit INSERT); returns the user id."""
    simulated = make_signup("google")
    tagged = simulated.replace(email=f"{tag}-{simulated.id.hex[:12]}@bench.example")
    insert_signup(conn, tagged, prepare=True)
    return str(tagged.id)


# What a load process reports: the worst lag behind schedule (s) and each signup's commit time (the wall
# clock when the INSERT's autocommit returned), by user id.
Report = tuple[float, dict[str, float]]


def _open_loop_sender(url: str, tag: str, offsets: list[float], start: float, out: Any) -> None:
    """Send at the scheduled times whatever the replies take."""
    worst_lag = 0.0
    committed: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for offset in offsets:
            delay = start + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                worst_lag = max(worst_lag, -delay)
            user_id = signup(conn, tag)
            committed[user_id] = time.time()
    out.put((worst_lag, committed))


def _burst_client(url: str, tag: str, count: int, start: float, out: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(max(0.0, start - time.time()))
        for _ in range(count):
            signup(conn, tag)
    out.put((0.0, {}))


def _run(target: Any, jobs: list[tuple[Any, ...]]) -> Report:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.queues.Queue[Report] = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*job, out)) for job in jobs]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        if proc.exitcode != 0:
            raise RuntimeError(f"signup process {proc.pid} exited with {proc.exitcode}")
    return max(lag for lag, _ in results), {u: t for _, committed in results for u, t in committed.items()}


def open_loop(url: str, tag: str, rate: float, duration: float, senders: int) -> Report:
    """`rate` signups/s for `duration` s from `senders` processes: the worst lag (s), commit times."""
    start = time.time() + 1.5  # spawned processes need a moment to import and connect
    jobs = [(url, tag, open_loop_offsets(rate, duration, senders, i), start) for i in range(senders)]
    return _run(_open_loop_sender, jobs)


def burst(url: str, tag: str, total: int, clients: int) -> None:
    """`total` signups as fast as `clients` processes can insert them."""
    start = time.time() + 1.5
    _run(_burst_client, [(url, tag, count, start) for count in split(total, clients)])
