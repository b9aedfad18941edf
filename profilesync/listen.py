"""The one LISTEN helper: a dedicated autocommit connection, and the reconnect loop around its sessions.

Used by the publisher (`profile_sync_signup`) and the chat service's readiness listener
(`profile_sync_ready`). NOTIFY is only ever a wake-up: whoever LISTENs re-reads the tables after every
(re)connect, since notifications sent while nobody listened are lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from profilesync import db
from profilesync.backoff import Backoff
from profilesync.config import Settings, is_transaction_pooler, redact
from profilesync.errors import ConfigError
from profilesync.logs import get_logger
from profilesync.ratelimit import RateLimit

log = get_logger(__name__)

MALFORMED_LOG_INTERVAL = 10.0  # seconds between two warnings about malformed payloads on one channel


def listen_url(settings: Settings) -> str:
    """The URL to LISTEN on; refuses a transaction pooler, where LISTEN silently stops working."""
    url = settings.listen_url
    if is_transaction_pooler(url):
        raise ConfigError(
            f"cannot LISTEN through a transaction pooler ({redact(url)}); "
            "set LISTEN_DATABASE_URL to a direct or session-mode connection"
        )
    return url


def connect(url: str, channel: str, application_name: str) -> psycopg.Connection[Any]:
    """An autocommit connection that LISTENs on `channel` (a fixed identifier of ours, not user input)."""
    conn = db.connect(url, autocommit=True, application_name=application_name)
    try:
        conn.execute(f"LISTEN {channel}")
    except BaseException:
        conn.close()
        raise
    return conn


class MalformedPayloads:
    """Counts NOTIFY payloads that are not what the channel carries; one warning per interval, not per
    payload (any role may NOTIFY: 20,000 bogus payloads must not become 20,000 log lines)."""

    def __init__(self, channel: str, interval: float = MALFORMED_LOG_INTERVAL) -> None:
        self.channel = channel
        self._limit = RateLimit(interval)

    def seen(self, payload: str) -> None:
        suppressed = self._limit.take(time.monotonic())
        if suppressed is not None:
            log.warning(
                "ignoring malformed NOTIFY payload",
                channel=self.channel,
                payload=payload[:100],
                suppressed_since_last=suppressed,
            )


def run_reconnecting(
    session: Callable[[], None],
    stop: threading.Event,
    *,
    what: str,
    backoff: Backoff,
    errors: tuple[type[BaseException], ...] = (psycopg.Error, OSError),
    on_lost: Callable[[BaseException], None] | None = None,
) -> None:
    """Run `session` until `stop` is set, again after every lost connection, with jittered backoff that
    starts over after a healthy session.

    A missing privilege (SQLSTATE 42501) is not a lost connection: it raises InsufficientPrivilegeError at
    once instead of retrying forever.
    """
    while not stop.is_set():
        started = time.monotonic()
        try:
            session()
        except errors as exc:
            db.raise_if_denied(exc, f"the {what} runs as the database role of its URL")
            if on_lost is not None:
                on_lost(exc)
            delay = backoff.next_delay(time.monotonic() - started)
            log.warning(f"{what} connection lost; reconnecting", error=str(exc), retry_in=round(delay, 3))
            stop.wait(delay)
