"""Round-trip counters: a Redis connection class and a psycopg cursor class that count what they send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from redis.connection import Connection


@dataclass
class Counter:
    count: int = 0


def counting_redis(
    url: str, base: type[Connection] = Connection, **kwargs: Any
) -> tuple[redis.Redis, Counter]:
    """A Redis client counting each request written to the socket (one command, or a whole pipeline)."""
    counter = Counter()

    class CountingConnection(base):  # type: ignore[valid-type,misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            super().send_packed_command(command, check_health)

    return redis.Redis.from_url(url, connection_class=CountingConnection, **kwargs), counter


def counting_cursor_factory() -> tuple[type[psycopg.Cursor[Any]], Counter]:
    """A cursor class (pass as `cursor_factory`) counting statements sent; `conn.execute` goes through it."""
    counter = Counter()

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> None:
            counter.count += 1
            super().executemany(*args, **kwargs)

    return CountingCursor, counter


def redis_commands(url: str) -> int:
    """The server's total_commands_processed (this INFO call included)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def count_process_round_trips() -> Counter:
    """Count every Redis request this process writes from now on, whoever made the client (RQ makes its own
    pipelines): for a consumer process the bench starts, never for the bench itself."""
    counter = Counter()
    send = Connection.send_packed_command

    def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    Connection.send_packed_command = counted  # type: ignore[method-assign,assignment]
    return counter
