"""Redis and PostgreSQL faults under the real processes: PostgreSQL stays the source of truth."""

from __future__ import annotations

import time

import pytest

from tests.faults.cluster import Target
from tests.faults.figures import Row, finish, settle
from tests.faults.load import Burst
from tests.harness import wait_for

BURST = 5000
_LISTENER = (
    " FROM profile_sync.publishers p "
    "JOIN pg_stat_activity a ON a.pid = p.backend_pid AND a.application_name = 'profilesync-listen'"
)
LISTEN_PID = "SELECT p.backend_pid" + _LISTENER  # the registered publisher's live LISTEN backend
LISTENERS = "SELECT count(*)" + _LISTENER


def test_redis_flushall_and_restart_mid_burst_still_give_every_user_a_profile(target: Target) -> None:
    target.start_pipeline(workers=2)
    burst = Burst(target.database_url, BURST, marks=(1500, 3500))
    burst.start()
    assert burst.reached[1500].wait(60)
    target.redis.flushall()  # every queued job, result and registry gone
    assert burst.reached[3500].wait(60)
    assert burst.committed < BURST, "the burst ended before the faults"
    faulted_at = time.monotonic()  # recovery counts the outage itself
    target.servers.redis.restart()  # no persistence: gone again, and every connection dropped
    assert burst.finish() == BURST
    state, recovery = settle(target, since=faulted_at, bound=60)
    assert state.profiles == BURST
    finish(target, Row("Redis FLUSHALL + restart mid-burst", BURST, "FLUSHALL, restart", state, recovery))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_burst_publisher_reconnects_and_drains(target: Target, mode: str) -> None:
    target.start_pipeline(workers=2)
    burst = Burst(target.database_url, BURST, marks=(2000,))
    burst.start()
    assert burst.reached[2000].wait(60)
    assert burst.committed < BURST, "the burst ended before the restart"
    restarted_at = time.monotonic()  # recovery counts the outage itself
    # fast: every session terminated, in-flight jobs fail; immediate: a crash, the start runs WAL recovery
    target.servers.postgres.stop(mode)
    target.servers.postgres.start()
    burst.finish()
    signups = target.count(
        "SELECT count(*) FROM auth.users"
    )  # a chunk whose commit reply was lost may be twice
    assert signups >= BURST
    state, recovery = settle(target, since=restarted_at, bound=60)
    assert state.profiles == signups
    assert target.count(LISTENERS) == 1  # listening again
    assert "publisher connection lost; reconnecting" in target.procs.log("publisher")
    finish(
        target,
        Row(f"PostgreSQL {mode} restart mid-burst", signups, f"stop -m {mode}, start", state, recovery),
    )


def test_terminated_listen_connection_is_reopened_and_relistened(target: Target) -> None:
    target.start_pipeline(workers=1)
    old_pid = target.count(LISTEN_PID)
    burst = Burst(target.database_url, 2000, marks=(500,))
    burst.start()
    assert burst.reached[500].wait(60)
    assert burst.committed < 2000, "the burst ended before the fault"
    assert target.count("SELECT pg_terminate_backend(%s)::int", (old_pid,)) == 1
    terminated_at = time.monotonic()
    assert burst.finish() == 2000
    state, recovery = settle(target, since=terminated_at, bound=30)
    assert wait_for(lambda: target.count(LISTENERS) == 1)
    assert target.count(LISTEN_PID) != old_pid
    # The publisher registers its LISTEN backend only after LISTEN succeeded: twice, once per session.
    # (its log line follows the registration: wait for it rather than read the log at once)
    assert wait_for(lambda: target.procs.log("publisher").count('"publisher listening"') == 2)
    finish(target, Row("LISTEN backend terminated mid-burst", 2000, "pg_terminate_backend", state, recovery))
