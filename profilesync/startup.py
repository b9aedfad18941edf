"""What a long-running command checks before it starts: the failures reconnecting never fixes."""

from __future__ import annotations

from profilesync import db
from profilesync.config import Settings
from profilesync.migrate import require_schema
from profilesync.queueing import connect_redis


def check_start(settings: Settings, *, listen: bool) -> None:
    """Fail at start, with one line, on what reconnecting never fixes (a wrong URL or password, `migrate` not
    run, a server that is not there). Once running, the publisher and worker ride out outages."""
    with connect_redis(settings.redis_url) as redis_conn:
        redis_conn.ping()
    with db.connect(settings.database_url, autocommit=True, application_name="profilesync-check") as conn:
        require_schema(conn)
    if listen and settings.listen_url != settings.database_url:
        db.connect(settings.listen_url, autocommit=True, application_name="profilesync-check").close()
