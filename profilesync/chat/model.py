"""Values the chat service returns and accepts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from profilesync.chat.errors import InvalidUserIdError


@dataclass(frozen=True)
class Conversation:
    id: uuid.UUID
    user_id: uuid.UUID
    title: str | None
    created_at: datetime


def parse_user_id(value: object) -> uuid.UUID:
    """A UUID, or its canonical/hex string form; anything else raises InvalidUserIdError."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidUserIdError(repr(value)[:80])
