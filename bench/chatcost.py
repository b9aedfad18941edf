"""M4: what `ChatService.create_conversation` adds over a raw INSERT when the profile already exists."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bench.counting import counting_cursor_factory
from bench.servers import Servers
from bench.stats import summary_ms
from chat import ChatService
from profilesync.config import Settings

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


def measure(servers: Servers, calls: int) -> dict[str, Any]:
    url = servers.database("m4")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(_USERS_WITH_PROFILES, (2 * (calls + _WARMUP),)).fetchone()
        assert row is not None
        ids = list(row[0])
        conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", (ids,))
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
