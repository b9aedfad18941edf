"""Ad hoc cost of the lifecycle trigger (docs/lifecycle.md): pgbench on GoTrue-shaped transactions.

    PYTHONPATH=. .venv/bin/python docs/lifecycle_pgbench.py postgresql://postgres@127.0.0.1:5432/postgres \\
        SECONDS ROUNDS durable|async|cpu [CLIENTS,…]

`cpu` runs each workload server-side in one backend (SECONDS x 1000 transactions per sample) and reports
transactions per CPU second of that backend: robust when other work shares the machine, unlike tps.

Creates database h12_lifecycle_bench_<mode> next to the given URL, 20,000 users with profiles, then runs each
workload with each trigger variant, interleaved over rounds, and prints tps medians and ratios.
Variants: plain (no trigger), ours_insert (the signup trigger only, before 0007), ours (0007), supabase
(Supabase's documented handle_new_user plus a synchronous AFTER UPDATE profile update on every UPDATE).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import psycopg

from bench.pgbench import parse_tps
from profilesync.migrate import migrate
from tests.servers import with_dbname

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
DB = "h12_lifecycle_bench"  # the mode is appended

WORKLOADS = {
    # GoTrue's signup transaction: INSERT with role '', UPDATE role, UPDATE metadata to the identity data.
    "signup": """BEGIN;
INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
  raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at)
VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', '',
  gen_random_uuid() || '@example.com', '', '{"provider": "email", "providers": ["email"]}',
  '{"full_name": "Bench User"}', false, false, now(), now()) RETURNING id AS uid \\gset
UPDATE auth.users AS users SET role = 'authenticated', updated_at = now() WHERE users.id = :uid;
UPDATE auth.users AS users
  SET raw_user_meta_data = '{"full_name": "Bench User", "sub": "x", "email_verified": false}',
      updated_at = now()
  WHERE users.id = :uid;
COMMIT;
""",
    # The same, when the identity data changes a key the profile reads: the update trigger's function runs
    # (and finds the signup's own event).
    "signup_named": """BEGIN;
INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
  raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at)
VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', '',
  gen_random_uuid() || '@example.com', '', '{"provider": "google", "providers": ["google"]}',
  '{}', false, false, now(), now()) RETURNING id AS uid \\gset
UPDATE auth.users AS users SET role = 'authenticated', updated_at = now() WHERE users.id = :uid;
UPDATE auth.users AS users
  SET raw_user_meta_data = '{"full_name": "Bench User", "picture": "https://x.example/a.png"}',
      updated_at = now()
  WHERE users.id = :uid;
COMMIT;
""",
    # Every sign-in: UpdateLastSignInAt.
    "login": """\\set n random(1, 20000)
UPDATE auth.users AS users SET last_sign_in_at = now(), updated_at = now()
  WHERE users.id = md5(:n::text)::uuid;
""",
    # Confirm: the token columns, then the metadata's email_verified.
    "confirm": """\\set n random(1, 20000)
BEGIN;
UPDATE auth.users AS users SET confirmation_token = '', email_confirmed_at = now(), updated_at = now()
  WHERE users.id = md5(:n::text)::uuid;
UPDATE auth.users AS users
  SET raw_user_meta_data = raw_user_meta_data || jsonb_build_object('email_verified', random() < 0.5),
      updated_at = now()
  WHERE users.id = md5(:n::text)::uuid;
COMMIT;
""",
}

# The same transactions run server-side by one backend (`cpu` mode), N at a time, each committed.
_SIGNUP_LOOP = """DO $$
DECLARE uid uuid;
BEGIN
  FOR i IN 1..%(n)s LOOP
    INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
      raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at)
    VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', '',
      gen_random_uuid() || '@example.com', '', '{"provider": "email", "providers": ["email"]}',
      '%(first)s', false, false, now(), now()) RETURNING id INTO uid;
    UPDATE auth.users AS users SET role = 'authenticated', updated_at = now() WHERE users.id = uid;
    UPDATE auth.users AS users SET raw_user_meta_data = '%(second)s', updated_at = now() WHERE users.id = uid;
    COMMIT;
  END LOOP;
END $$"""
_UPDATE_LOOP = """DO $$
DECLARE uid uuid;
BEGIN
  FOR i IN 1..%(n)s LOOP
    uid := md5((1 + floor(random() * 20000))::int::text)::uuid;
    %(updates)s
    COMMIT;
  END LOOP;
END $$"""
LOOPS = {
    "signup": _SIGNUP_LOOP
    % {
        "n": "%(n)s",
        "first": '{"full_name": "Bench User"}',
        "second": '{"full_name": "Bench User", "sub": "x", "email_verified": false}',
    },
    "signup_named": _SIGNUP_LOOP
    % {
        "n": "%(n)s",
        "first": "{}",
        "second": '{"full_name": "Bench User", "picture": "https://x.example/a.png"}',
    },
    "login": _UPDATE_LOOP
    % {
        "n": "%(n)s",
        "updates": "UPDATE auth.users SET last_sign_in_at = now(), updated_at = now() WHERE id = uid;",
    },
    "confirm": _UPDATE_LOOP
    % {
        "n": "%(n)s",
        "updates": "UPDATE auth.users SET confirmation_token = '', email_confirmed_at = now() WHERE id = uid;"
        " UPDATE auth.users SET raw_user_meta_data = raw_user_meta_data"
        " || jsonb_build_object('email_verified', random() < 0.5) WHERE id = uid;",
    },
}

SUPABASE_FUNCTIONS = """
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$ BEGIN
  INSERT INTO public.user_profiles (id, email, full_name, avatar_url)
  VALUES (new.id, new.email, new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'avatar_url');
  RETURN new;
END $$;
CREATE FUNCTION public.handle_user_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$ BEGIN
  UPDATE public.user_profiles SET email = new.email, full_name = new.raw_user_meta_data ->> 'full_name',
    avatar_url = new.raw_user_meta_data ->> 'avatar_url' WHERE id = new.id;
  RETURN new;
END $$;
"""
DROP_ALL = """
DROP TRIGGER IF EXISTS profile_sync_on_auth_user_created ON auth.users;
DROP TRIGGER IF EXISTS profile_sync_on_auth_user_updated ON auth.users;
DROP TRIGGER IF EXISTS on_auth_user_created ON auth.users;
DROP TRIGGER IF EXISTS on_auth_user_updated ON auth.users;
"""
SUPABASE = """
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();
CREATE TRIGGER on_auth_user_updated AFTER UPDATE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_user_updated();
"""


def main(admin_url: str, seconds: int, rounds: int, clients: list[int], mode: str) -> None:
    durable, name = mode == "durable", f"{DB}_{mode}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
        if not durable:  # commits without waiting for the WAL flush: what remains is the triggers' CPU cost
            admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    url = with_dbname(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, dev_auth_stub=True)
        conn.execute(
            "INSERT INTO auth.users (id, email, role, raw_user_meta_data)"
            " SELECT md5(g::text)::uuid, 'seed' || g || '@example.com', 'authenticated',"
            " jsonb_build_object('full_name', 'Seed ' || g) FROM generate_series(1, 20000) g"
        )
        conn.execute("SELECT profile_sync.create_profiles(array_agg(id)) FROM auth.users")
        conn.execute(SUPABASE_FUNCTIONS)
        ours = [
            row[0]
            for row in conn.execute(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass"
                " AND tgname LIKE 'profile_sync_%' ORDER BY tgname"
            )
        ]
        variants = {
            "plain": "",
            "ours_insert": ours[0] + ";",
            "ours": ";\n".join(ours) + ";",
            "supabase": SUPABASE,
        }
        tps: dict[tuple[str, int, str], list[float]] = {}
        names = list(variants)
        for r in range(rounds):
            for workload, script in WORKLOADS.items():
                for c in clients:
                    for variant in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
                        conn.execute(DROP_ALL + variants[variant])
                        if mode == "cpu":  # transactions per CPU second of the one backend running them
                            measured = per_cpu_second(conn, LOOPS[workload], seconds * 1000)
                        else:
                            measured = run(url, script, c, seconds)
                        tps.setdefault((workload, c, variant), []).append(measured)
                        reset(conn)
        events = conn.execute("SELECT count(*) FROM profile_sync.signup_events").fetchone()
    print(f"events left by the last run: {events}")
    print(
        "| workload | clients | "
        + " | ".join(variants)
        + " | ours/plain | ours/ours_insert | ours/supabase |"
    )
    print("|---|---|" + "---|" * (len(variants) + 3))
    for workload in WORKLOADS:
        for c in clients:
            med = {v: statistics.median(tps[(workload, c, v)]) for v in variants}
            cells = " | ".join(f"{med[v]:.0f}" for v in variants)
            ratios = f"{med['ours'] / med['plain']:.2f} | {med['ours'] / med['ours_insert']:.2f} | "
            print(f"| {workload} | {c} | {cells} | {ratios}{med['ours'] / med['supabase']:.2f} |")


def per_cpu_second(conn: psycopg.Connection[Any], loop: str, n: int) -> float:
    """Run `n` transactions in this session's backend; its user+system CPU time from /proc (same host)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None

    def ticks() -> int:
        with open(f"/proc/{row[0]}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    before = ticks()
    conn.execute(loop % {"n": n})
    return n / ((ticks() - before) / os.sysconf("SC_CLK_TCK"))


def reset(conn: psycopg.Connection[Any]) -> None:
    """Back to the seeded state, so every run starts from the same table sizes."""
    conn.execute("DELETE FROM auth.users WHERE email NOT LIKE 'seed%'")
    conn.execute("TRUNCATE profile_sync.signup_events")
    conn.execute("VACUUM auth.users, public.user_profiles, profile_sync.signup_events")
    conn.execute("CHECKPOINT")


def run(url: str, script: str, clients: int, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        argv = [PGBENCH, "-n", "-M", "prepared", "-f", f.name, "-c", str(clients), "-j", str(min(clients, 2))]
        out = subprocess.run([*argv, "-T", str(seconds), url], capture_output=True, text=True, check=True)
    return parse_tps(out.stdout)


if __name__ == "__main__":
    args = sys.argv[1:]
    clients = [int(c) for c in args[4].split(",")] if len(args) > 4 else [8, 32]
    main(args[0], int(args[1]), int(args[2]), clients, mode=args[3])
