"""Values the app's constraints rejected from a profile (profile_sync.sync_profiles dropped them, so the
profile exists anyway): the server reports each as a WARNING with SQLSTATE PS001, the column in its COLUMN
field and the user id in its DETAIL, never the value. A connection that creates profiles (a worker's, the
chat service's) watches for them: a log line with user id and column, and the dropped-values counter."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.errors import Diagnostic

from profilesync import metrics
from profilesync.logs import get_logger

DROPPED_SQLSTATE = "PS001"

log = get_logger(__name__)


def report(diagnostic: Diagnostic) -> None:
    """A notice handler: count and log a dropped value; ignore every other notice."""
    if diagnostic.sqlstate != DROPPED_SQLSTATE or not diagnostic.column_name:
        return
    metrics.DROPPED_VALUES.inc()
    log.warning(
        "profile value dropped: rejected by the profile table's constraints",
        user_id=diagnostic.message_detail,
        column=diagnostic.column_name,
    )


def watch(conn: psycopg.Connection[Any]) -> None:
    """Report the values dropped by profiles this connection creates."""
    conn.add_notice_handler(report)
