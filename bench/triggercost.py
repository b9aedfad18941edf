"""signup_cost `trigger_cpu`: what each trigger variant costs one signup in PostgreSQL CPU, measured in one
backend.

Throughput (pgbench) on a shared 2-core box moves with everyone else's load; CPU time of a single backend
hardly does. Each variant's database gets `signups` one-row autocommit INSERTs (the signup of latency and
signup_cost) from one connection, pipelined and with synchronous_commit off so no fsync wait is in the way;
the backend's own CPU seconds are read from /proc before and after (local servers only). Variants are
interleaved and repeated; the median per variant, and what it adds to the no-trigger INSERT, are reported in
µs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from bench.cpu import parse_proc_stat
from profilesync.devkit.signups import insert_signup, make_signup
from profilesync.devkit.stats import percentile


def _backend_cpu(pid: int) -> float:
    return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())[1]


def _one(url: str, signups: int) -> float | None:
    """µs of backend CPU per signup, or None when the server's processes are not visible here."""
    made = [make_signup("google") for _ in range(signups)]
    rows = [m.replace(email=f"tc-{m.id.hex[:12]}@bench.example") for m in made]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        pid = conn.info.backend_pid
        try:
            before = _backend_cpu(pid)
        except OSError:
            return None
        with conn.pipeline():  # each INSERT its own (autocommit) transaction, no wait between them
            for row in rows:
                insert_signup(conn, row, prepare=True)
        return round((_backend_cpu(pid) - before) * 1e6 / signups, 1)


def measure(urls: dict[str, str], signups: int, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {variant: [] for variant in urls}
    for _ in range(rounds):
        for variant, url in urls.items():
            value = _one(url, signups)
            if value is None:
                return {}
            samples[variant].append(value)
    median = {v: round(percentile(s, 50), 1) for v, s in samples.items()}
    return {
        "signups_per_sample": signups,
        "rounds": rounds,
        "us_per_signup": median,
        "added_us_per_signup": {v: round(m - median["plain"], 1) for v, m in median.items()},
        "all_rounds_us": samples,
    }


# The auth server's transactions of bench.signups (GOTRUE_SIGNUP_SCRIPT …, CONFIRM_SCRIPT), run server-side
# by one backend N times, each committed: the CPU per transaction without a client or pgbench in the way.
# The update workloads pick LOGIN_FILL's users.
_SIGNUP_LOOP = """DO $$
DECLARE uid uuid;
BEGIN
  FOR i IN 1..{n} LOOP
    INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
      raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at)
    VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', '',
      'loop' || gen_random_uuid() || '@bench.example', '', '{"provider": "email", "providers": ["email"]}',
      '{first}', false, false, now(), now()) RETURNING id INTO uid;
    UPDATE auth.users SET role = 'authenticated', updated_at = now() WHERE id = uid;
    UPDATE auth.users SET raw_user_meta_data = '{second}', updated_at = now() WHERE id = uid;
    COMMIT;
  END LOOP;
END $$"""
_UPDATE_LOOP = """DO $$
DECLARE uid uuid;
BEGIN
  FOR i IN 1..{n} LOOP
    uid := md5('login' || (1 + floor(random() * 10000))::int)::uuid;
    {updates}
    COMMIT;
  END LOOP;
END $$"""
WORKLOAD_LOOPS = {
    "gotrue_signup": _SIGNUP_LOOP.replace("{first}", '{"full_name": "Bench User"}').replace(
        "{second}", '{"full_name": "Bench User", "sub": "x", "email_verified": false}'
    ),
    "gotrue_signup_named": _SIGNUP_LOOP.replace("{first}", "{}").replace(
        "{second}", '{"full_name": "Bench User", "picture": "https://x.example/a.png"}'
    ),
    "login": _UPDATE_LOOP.replace(
        "{updates}", "UPDATE auth.users SET last_sign_in_at = now(), updated_at = now() WHERE id = uid;"
    ),
    "confirm": _UPDATE_LOOP.replace(
        "{updates}",
        "UPDATE auth.users SET confirmation_token = '', email_confirmed_at = now() WHERE id = uid;"
        " UPDATE auth.users SET raw_user_meta_data = raw_user_meta_data"
        " || jsonb_build_object('email_verified', random() < 0.5) WHERE id = uid;",
    ),
}


def _loop_us(url: str, loop: str, transactions: int) -> float | None:
    """µs of backend CPU per transaction of `loop`, or None when the server's processes are not visible."""
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        try:
            before = _backend_cpu(pid)
        except OSError:
            return None
        conn.execute(loop.replace("{n}", str(transactions)).encode())
        spent = _backend_cpu(pid) - before
        conn.execute("TRUNCATE profile_sync.signup_events")  # the next sample starts from the same outbox
    return round(spent * 1e6 / transactions, 1)


def measure_workloads(urls: dict[str, str], transactions: int, rounds: int) -> dict[str, Any]:
    """Per workload of WORKLOAD_LOOPS and variant: the median µs of backend CPU per transaction, interleaved
    over `rounds`, and each variant's figure as a ratio of transactions per CPU second to no trigger."""
    samples: dict[str, dict[str, list[float]]] = {w: {v: [] for v in urls} for w in WORKLOAD_LOOPS}
    for _ in range(rounds):
        for workload, loop in WORKLOAD_LOOPS.items():
            for variant, url in urls.items():
                value = _loop_us(url, loop, transactions)
                if value is None:
                    return {}
                samples[workload][variant].append(value)
    median = {w: {v: round(percentile(s, 50), 1) for v, s in by_v.items()} for w, by_v in samples.items()}
    return {
        "transactions_per_sample": transactions,
        "rounds": rounds,
        "us_per_transaction": median,
        "ratio_vs_plain": {
            w: {v: round(by_v["plain"] / us, 2) if us and by_v["plain"] else None for v, us in by_v.items()}
            for w, by_v in median.items()
        },
    }
