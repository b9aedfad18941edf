"""What an operator sees through a fault: the worker count survives a Redis restart without persistence."""

from __future__ import annotations

import time

from rq import Worker

from profilesync.queueing import profiles_queue
from tests.faults.cluster import Target
from tests.faults.figures import Row, finish, settle
from tests.harness import bulk_signup, wait_for

SIGNUPS = 200


def _registered_workers(target: Target) -> int:
    return len(Worker.all(queue=profiles_queue(target.redis)))


def test_workers_register_again_after_redis_loses_their_keys(target: Target) -> None:
    """RQ's heartbeat alone recreates only a `last_heartbeat` field: `rq info` and doctor counted 0 workers
    alive while both worked on. Now each worker re-registers at its next heartbeat."""
    target.start_pipeline(workers=2)
    assert wait_for(lambda: _registered_workers(target) == 2)
    faulted_at = time.monotonic()
    target.servers.redis.restart()  # no persistence: every worker key and registry gone
    assert wait_for(lambda: _registered_workers(target) == 2, timeout=30), target.procs.logs()[-3000:]
    registered_again = time.monotonic() - faulted_at
    print(f"both workers registered again {registered_again:.1f}s after the Redis restart")
    bulk_signup(target.conn, SIGNUPS)
    state, _ = settle(target, since=faulted_at, bound=60)
    assert _registered_workers(target) == 2
    finish(
        target,
        Row("Redis restart, idle workers: registered again", SIGNUPS, "restart", state, registered_again),
    )
