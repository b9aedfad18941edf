"""Simulated Supabase signups, shared by the demo, the tests and the benchmark.

A signup is the auth.users row Supabase's auth server writes for one kind of signup (email, phone, anonymous,
Google, GitHub, SSO): its columns and the raw_user_meta_data each provider brings. Every value derives from
the user id, so each simulated user is distinct and a test can predict its profile.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Relative frequency of each kind of signup in a simulated mix.
KIND_WEIGHTS: dict[str, int] = {
    "email": 40,
    "google": 20,
    "anonymous": 15,
    "github": 10,
    "phone": 10,
    "sso": 5,
}
KINDS = tuple(KIND_WEIGHTS)


@dataclass(frozen=True)
class Signup:
    """An auth.users row as Supabase's auth server writes it for one kind of signup."""

    id: uuid.UUID
    kind: str
    email: str | None
    phone: str | None
    user_meta: dict[str, Any]
    is_anonymous: bool = False
    is_sso_user: bool = False

    def replace(self, **changes: Any) -> Signup:
        return dataclasses.replace(self, **changes)


def make_signup(kind: str, user_id: uuid.UUID | None = None) -> Signup:
    user_id = user_id or uuid.uuid4()
    tag = user_id.hex[:8]
    match kind:
        case "email":
            email = f"user-{tag}@example.com"
            return Signup(user_id, kind, email, None, {"email": email, "email_verified": False})
        case "phone":
            return Signup(user_id, kind, None, f"1555{user_id.int % 10**7:07d}", {"phone_verified": False})
        case "anonymous":
            return Signup(user_id, kind, None, None, {}, is_anonymous=True)
        case "google":
            email = f"g-{tag}@gmail.com"
            picture = f"https://lh3.googleusercontent.com/a/{tag}.jpg"
            meta = {
                "iss": "https://accounts.google.com",
                "name": f"Grace {tag}",
                "full_name": f"Grace {tag}",
                "picture": picture,
                "avatar_url": picture,
                "email": email,
                "email_verified": True,
            }
            return Signup(user_id, kind, email, None, meta)
        case "github":
            meta = {
                "user_name": f"octo-{tag}",
                "preferred_username": f"octo-{tag}",
                "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id.int % 10**8}",
            }
            return Signup(user_id, kind, f"{tag}@users.noreply.github.com", None, meta)
        case "sso":
            meta = {"custom_claims": {}, "name": f"Alan {tag}"}
            return Signup(user_id, kind, f"alan-{tag}@corp.example", None, meta, is_sso_user=True)
    raise ValueError(f"unknown signup kind {kind!r}")


def mixed_kinds(count: int, rng: random.Random) -> list[str]:
    """`count` signup kinds drawn by KIND_WEIGHTS, every kind present when count allows."""
    drawn = rng.choices(KINDS, weights=list(KIND_WEIGHTS.values()), k=max(0, count - len(KINDS)))
    mixed = list(KINDS[: min(count, len(KINDS))]) + drawn
    rng.shuffle(mixed)
    return mixed


_INSERT_USER = """
INSERT INTO auth.users (instance_id, id, aud, role, email, phone, raw_user_meta_data, raw_app_meta_data,
                        is_anonymous, is_sso_user, created_at, updated_at)
VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s, %s, %s, %s, %s, %s,
        now(), now())
"""


def insert_signup(conn: psycopg.Connection[Any], s: Signup, *, prepare: bool | None = None) -> None:
    """One INSERT INTO auth.users (autocommit: its own transaction, as a signup is)."""
    conn.execute(
        _INSERT_USER,
        (
            s.id,
            s.email,
            s.phone,
            Jsonb(s.user_meta),
            Jsonb({"provider": s.kind, "providers": [s.kind]}),
            s.is_anonymous,
            s.is_sso_user,
        ),
        prepare=prepare,
    )
