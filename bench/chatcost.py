"""chat_path: what `ChatService.create_conversation` adds over a raw INSERT when the profile already exists,
and what the client guarantee's trigger (sql/definitions/07_client_guard.sql) adds to a Supabase client's
insert through PostgREST."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bench.counting import counting_cursor_factory
from bench.servers import Servers
from bench.stats import summary_ms
from profilesync.chat import ChatService
from profilesync.config import Settings
from profilesync.devkit.stats import percentile

_RAW_INSERT = "INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, %s) RETURNING id"
_USERS_WITH_PROFILES = """
WITH made AS (
  INSERT INTO auth.users (id, aud, role, email, created_at)
  SELECT gen_random_uuid(), 'authenticated', 'authenticated', 'chat' || g || '@bench.example', now()
  FROM generate_series(1, %s) g
  RETURNING id
)
SELECT array_agg(id) FROM made
"""
_WARMUP = 20

# The raw twin of chat_conversations for the client comparison: same columns, defaults, index, foreign key,
# RLS policies and grants -- everything but the client guarantee's trigger.
_RAW_TWIN_SQL = """
CREATE TABLE public.raw_conversations (LIKE public.chat_conversations INCLUDING ALL);
ALTER TABLE public.raw_conversations
  ADD FOREIGN KEY (user_id) REFERENCES public.user_profiles (id) ON DELETE CASCADE;
ALTER TABLE public.raw_conversations ENABLE ROW LEVEL SECURITY;
CREATE POLICY select_own ON public.raw_conversations
  FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY insert_own ON public.raw_conversations
  FOR INSERT TO authenticated WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY delete_own ON public.raw_conversations
  FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
GRANT SELECT, INSERT (user_id, title), DELETE ON public.raw_conversations TO authenticated;
"""
# What PostgREST sets in each request's transaction before the query (role, JWT claims of a user's token).
_REQUEST = """
SELECT set_config('search_path', '"public", "extensions"', true), set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', %s, true), set_config('request.method', 'POST', true)
"""
_CLIENT_INSERTS = {
    "guarded": "INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'chat') RETURNING *",
    "raw": "INSERT INTO public.raw_conversations (user_id, title) VALUES (%s, 'chat') RETURNING *",
}


def _users_with_profiles(url: str, count: int) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(_USERS_WITH_PROFILES, (count,)).fetchone()
        assert row is not None
        ids = list(row[0])
        conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", (ids,))
    return ids


def measure(servers: Servers, calls: int) -> dict[str, Any]:
    return {**_chat_service(servers, calls), "client": _client_guard(servers, calls)}


def _client_guard(servers: Servers, calls: int) -> dict[str, Any]:
    """The guarded insert vs the same insert into the trigger-less twin, interleaved on one connection in
    alternating order, each in a PostgREST-shaped transaction as `authenticated` with the user's claims; the
    INSERT alone is timed."""
    url = servers.database("chat_path_client", _RAW_TWIN_SQL)
    ids = _users_with_profiles(url, calls + _WARMUP)
    cursor, counter = counting_cursor_factory()
    times: dict[str, list[float]] = {arm: [] for arm in _CLIENT_INSERTS}
    cpu: dict[str, list[float]] = {arm: [] for arm in _CLIENT_INSERTS}
    trips = dict.fromkeys(_CLIENT_INSERTS, 0)
    with psycopg.connect(url, cursor_factory=cursor) as conn:
        backend = _backend_cpu(conn)
        for i, user_id in enumerate(ids):
            claims = json.dumps({"aud": "authenticated", "sub": str(user_id), "role": "authenticated"})
            for arm in ("guarded", "raw") if i % 2 else ("raw", "guarded"):
                before = counter.count
                with conn.transaction():
                    conn.execute(_REQUEST, (claims,))
                    cpu_started = backend()
                    started = time.perf_counter()
                    conn.execute(_CLIENT_INSERTS[arm], (user_id,)).fetchone()
                    elapsed = time.perf_counter() - started
                    cpu_used = backend() - cpu_started
                if i >= _WARMUP:
                    times[arm].append(elapsed)
                    cpu[arm].append(cpu_used)
                    trips[arm] += counter.count - before
    guarded, raw = summary_ms(times["guarded"]), summary_ms(times["raw"])
    paired = [g - r for g, r in zip(times["guarded"], times["raw"], strict=True)]
    found = {
        "calls": calls,
        "guarded_insert": {**guarded, "round_trips_per_call": trips["guarded"] / calls},
        "raw_insert": {**raw, "round_trips_per_call": trips["raw"] / calls},
        "added_p50_ms": round(guarded["p50_ms"] - raw["p50_ms"], 3),
        # the median of each call's difference to its neighbour: robust to load that drifts during the run
        "added_p50_paired_ms": round(percentile(paired, 50) * 1000, 3),
        "added_round_trips": (trips["guarded"] - trips["raw"]) / calls,
    }
    if cpu["guarded"][0] >= 0:  # the server's CPU time per insert, which other load on the box barely moves
        cpu_p50 = {arm: percentile(used, 50) * 1000 for arm, used in cpu.items()}
        found["added_backend_cpu_p50_ms"] = round(cpu_p50["guarded"] - cpu_p50["raw"], 3)
    return found


def _backend_cpu(conn: psycopg.Connection[Any]) -> Callable[[], float]:
    """Seconds of CPU the connection's backend has run (/proc/PID/schedstat, in nanoseconds), or always -1
    when that backend is not a process on this machine."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    path = Path(f"/proc/{row[0]}/schedstat")
    try:
        local = "postgres" in (path.parent / "cmdline").read_text(errors="replace")
    except OSError:
        local = False
    if not local:
        return lambda: -1.0
    return lambda: int(path.read_text().split()[0]) / 1e9


def _chat_service(servers: Servers, calls: int) -> dict[str, Any]:
    url = servers.database("chat_path")
    ids = _users_with_profiles(url, 2 * (calls + _WARMUP))
    chat_ids, raw_ids = ids[: calls + _WARMUP], ids[calls + _WARMUP :]
    settings = Settings(database_url=url, redis_url=servers.redis_url, log_level="WARNING")
    chat_cursor, chat_count = counting_cursor_factory()
    raw_cursor, raw_count = counting_cursor_factory()
    chat_times: list[float] = []
    raw_times: list[float] = []
    with (
        ConnectionPool(url, min_size=1, max_size=1, kwargs={"cursor_factory": chat_cursor}) as pool,
        ChatService(pool, settings) as chat,
        psycopg.connect(url, autocommit=True, cursor_factory=raw_cursor) as raw,
    ):
        for i, (chat_id, raw_id) in enumerate(zip(chat_ids, raw_ids, strict=True)):
            if i == _WARMUP:
                chat_count.count = raw_count.count = 0
            started = time.perf_counter()
            chat.create_conversation(chat_id)
            middle = time.perf_counter()
            raw.execute(_RAW_INSERT, (raw_id, None)).fetchone()
            ended = time.perf_counter()
            if i >= _WARMUP:
                chat_times.append(middle - started)
                raw_times.append(ended - middle)
    chat_summary, raw_summary = summary_ms(chat_times), summary_ms(raw_times)
    return {
        "calls": calls,
        "chat": {**chat_summary, "round_trips_per_call": chat_count.count / calls},
        "raw_insert": {**raw_summary, "round_trips_per_call": raw_count.count / calls},
        "added_p50_ms": round(chat_summary["p50_ms"] - raw_summary["p50_ms"], 3),
        "added_round_trips": (chat_count.count - raw_count.count) / calls,
    }
