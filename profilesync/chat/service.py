"""ChatService: create a conversation for a user whose profile may still be on its way."""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from profilesync.chat.gate import ProfileGate
from profilesync.chat.model import Conversation, parse_user_id
from profilesync.config import Settings

_INSERT = """
INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, %s)
RETURNING id, user_id, title, created_at
"""


class ChatService:
    """Conversations (public.chat_conversations, the seed's table) for users whose profile a worker creates
    asynchronously after signup: one user of ProfileGate, which holds the whole contract (insert first, wait
    for the profile on a foreign key error, bounded, then the fallback of `settings.chat_fallback`)."""

    def __init__(self, pool: ConnectionPool[Any], settings: Settings) -> None:
        self._gate: ProfileGate[Conversation] = ProfileGate(pool, settings)

    def __enter__(self) -> ChatService:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the gate's LISTEN thread (callers still waiting take the fallback at once)."""
        self._gate.close()

    def create_conversation(self, user_id: uuid.UUID | str, title: str | None = None) -> Conversation:
        uid = parse_user_id(user_id)

        def insert(conn: psycopg.Connection[Any]) -> Conversation:
            row = conn.execute(_INSERT, (uid, title)).fetchone()
            assert row is not None
            return Conversation(*row)

        return self._gate.run(uid, insert)
