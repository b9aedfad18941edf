"""Requests as a Supabase client's reach the database through PostgREST: shared by the tests and the bench."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg


def jwt_claims(role: str, user_id: uuid.UUID | None) -> dict[str, Any]:
    """The claims of a Supabase client's JWT: a user's access token, or the anon / service key (no sub)."""
    now = int(time.time())
    if user_id is None:
        return {"iss": "supabase", "ref": "localdev", "role": role, "iat": now, "exp": now + 3600}
    return {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": "http://127.0.0.1:54321/auth/v1",
        "sub": str(user_id),
        "email": "",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": role,
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }


def act_as(conn: psycopg.Connection[Any], role: str, user_id: uuid.UUID | None, path: str = "/") -> None:
    """In the open transaction, what PostgREST sets before a request's query: transaction-local settings of
    search_path, role and the JWT claims (auth.uid() reads `sub`; None: a token without one)."""
    conn.execute(
        """
        SELECT set_config('search_path', '"public", "extensions"', true),
               set_config('role', %s, true),
               set_config('request.jwt.claims', %s, true),
               set_config('request.method', 'POST', true),
               set_config('request.path', %s, true)
        """,
        (role, json.dumps(jwt_claims(role, user_id)), path),
    )


def ensure_profile(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """POST /rpc/ensure_profile with the user's session, as an app calls it on sign-in (one transaction)."""
    with conn.transaction():
        act_as(conn, "authenticated", user_id, "/rpc/ensure_profile")
        conn.execute("SELECT 1 FROM public.ensure_profile()")
