"""Simulated Supabase signups, shared by the demo, the tests and the benchmark.

A signup is the auth.users row Supabase's auth server writes for one kind of signup (email, phone, anonymous,
Google, GitHub, SSO): its columns and the raw_user_meta_data each provider brings. Every value derives from
the user id, so each simulated user is distinct and a test can predict its profile.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
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
            # 10 digits after the prefix: phone is unique in auth.users, and a long soak makes thousands
            phone = f"1555{user_id.int % 10**10:010d}"
            return Signup(user_id, kind, None, phone, {"phone_verified": False})
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


# -- as GoTrue writes them: one transaction per signup, the ORM's statements ---------------------------------


@contextmanager
def auth_server(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction as Supabase's auth server runs it: role supabase_auth_admin, search_path auth."""
    with conn.transaction():
        conn.execute("SET LOCAL ROLE supabase_auth_admin")
        conn.execute("SET LOCAL search_path = auth")
        yield


def gotrue_update(conn: psycopg.Connection[Any], user_id: uuid.UUID, **columns: Any) -> None:
    """One UPDATE as GoTrue's ORM writes it (UpdateOnly): the named columns and updated_at, nothing else."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder()) for name in columns
    )
    values = [Jsonb(v) if isinstance(v, dict) else v for v in columns.values()]
    conn.execute(
        sql.SQL('UPDATE "users" AS users SET {}, "updated_at" = now() WHERE users.id = %s').format(
            assignments
        ),
        [*values, user_id],
    )


def gotrue_signup(conn: psycopg.Connection[Any], s: Signup) -> None:
    """One signup transaction as GoTrue runs it: INSERT with role '', UPDATE role, and (except for anonymous
    users) UPDATE raw_user_meta_data to the identity data merged with the app's data."""
    with auth_server(conn):
        conn.execute(
            """
            INSERT INTO "users" ("instance_id", "id", "aud", "role", "email", "phone", "encrypted_password",
                                 "raw_app_meta_data", "raw_user_meta_data", "is_sso_user", "is_anonymous",
                                 "created_at", "updated_at")
            VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', '', %s, %s, '', %s, %s,
                    %s, %s, now(), now())
            """,
            (
                s.id,
                s.email,
                s.phone,
                Jsonb({} if s.is_anonymous else {"provider": s.kind, "providers": [s.kind]}),
                Jsonb(s.user_meta),
                s.is_sso_user,
                s.is_anonymous,
            ),
        )
        gotrue_update(conn, s.id, role="authenticated")
        if not s.is_anonymous:
            identity = {"sub": str(s.id), "email": s.email, "email_verified": False, "phone_verified": False}
            gotrue_update(conn, s.id, raw_user_meta_data={**s.user_meta, **identity})


def obfuscated(user_id: uuid.UUID, value: str) -> str:
    """GoTrue's obfuscateValue: the unpadded base64url SHA-256 of the user id followed by the value."""
    digest = hashlib.sha256(f"{user_id}{value}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def gotrue_soft_delete_user(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """The first UPDATE of GoTrue's SoftDeleteUser, inside an auth_server transaction: email and phone
    obfuscated (the phone, unique in auth.users, cut to 15 characters), secrets cleared, deleted_at set."""
    row = conn.execute(
        "SELECT coalesce(email, ''), coalesce(phone, ''), coalesce(email_change, ''),"
        " coalesce(phone_change, '') FROM users WHERE id = %s",
        (user_id,),
    ).fetchone()
    email, phone, email_change, phone_change = row or ("", "", "", "")
    gotrue_update(
        conn,
        user_id,
        email=obfuscated(user_id, email),
        phone=obfuscated(user_id, phone)[:15],
        encrypted_password=None,
        email_change=obfuscated(user_id, email_change),
        phone_change=obfuscated(user_id, phone_change)[:15],
        confirmation_token="",
        recovery_token="",
        email_change_token_current="",
        email_change_token_new="",
        phone_change_token="",
        deleted_at="now",
    )


def gotrue_soft_delete_rest(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """The rest of SoftDeleteUser's transaction: both metadata columns emptied."""
    gotrue_update(conn, user_id, raw_user_meta_data={})
    gotrue_update(conn, user_id, raw_app_meta_data={})


def gotrue_soft_delete(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """`auth.admin.deleteUser(id, true)`: GoTrue's SoftDeleteUser in one transaction."""
    with auth_server(conn):
        gotrue_soft_delete_user(conn, user_id)
        gotrue_soft_delete_rest(conn, user_id)
