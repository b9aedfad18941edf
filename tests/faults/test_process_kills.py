"""kill -9 of the real publisher and worker: nothing lost, nothing created twice, bounded recovery."""

from __future__ import annotations

import time

import psycopg
from rq.registry import StartedJobRegistry

from profilesync.queueing import profiles_queue
from tests.faults.cluster import WORKER_KILL_BOUND, Target
from tests.faults.figures import Row, finish, settle
from tests.faults.load import Burst
from tests.harness import PENDING, bulk_signup, wait_for

BURST = 5000


def test_publisher_killed_mid_burst_loses_and_duplicates_nothing(target: Target) -> None:
    procs = target.procs
    target.start_pipeline(workers=2)
    burst = Burst(target.database_url, BURST, marks=(1500, 3500))
    burst.start()
    killed_at = 0.0
    for mark in burst.reached:
        assert burst.reached[mark].wait(60)
        procs.kill("publisher")  # whatever it was doing: claiming, enqueueing, marking
        killed_at = time.monotonic()
        assert burst.committed < BURST, "the burst ended before the kill"
        procs.start("publisher", "publisher")
    assert burst.finish() == BURST
    state, recovery = settle(target, since=killed_at, bound=60)
    assert state.profiles == BURST
    assert target.count("SELECT count(*) FROM profile_sync.publishers") == 1  # the dead ones were forgotten
    finish(target, Row("kill -9 publisher mid-burst, restart", BURST, "2 x SIGKILL", state, recovery))


def test_worker_killed_mid_batch_has_its_job_retried_and_completed(target: Target) -> None:
    procs = target.procs
    target.start_pipeline(workers=1)
    started = StartedJobRegistry(queue=profiles_queue(target.redis))
    with psycopg.connect(target.database_url) as blocker:
        # Hold the worker inside its first batch: its INSERT waits on this lock, so the kill lands mid-batch.
        blocker.execute("LOCK TABLE public.user_profiles IN SHARE MODE")
        bulk_signup(target.conn, 1000)
        assert wait_for(lambda: started.count == 1 and target.waiting_on_lock("profilesync-worker") == 1)
        procs.kill("worker-1")
        killed_at = time.monotonic()
        procs.start("worker-2", "worker")
        # The dead worker's statement then runs to its end: one statement on an autocommit connection, it
        # commits its batch whole (profiles and retired events), or nothing if it fails.
        blocker.rollback()
    state, recovery = settle(target, since=killed_at, bound=WORKER_KILL_BOUND)
    assert state.profiles == 1000
    # The abandoned job leaves the started registry once its execution expires; its retry finds the work done.
    assert wait_for(lambda: started.count == 0, timeout=WORKER_KILL_BOUND)
    finish(target, Row("kill -9 worker mid-batch, restart", 1000, "1 x SIGKILL", state, recovery))


# Holds the publisher between "Redis has the jobs" and the commit of its claim (which marked the events) while
# the test holds the lock: a deferred trigger on the mark runs at commit.
GATE = """
CREATE FUNCTION faults_audit.gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(4242);
  RETURN NEW;
END
$$;
CREATE CONSTRAINT TRIGGER faults_gate AFTER UPDATE OF enqueued_at ON profile_sync.signup_events
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faults_audit.gate();
"""


def test_publisher_killed_after_enqueue_before_commit_redelivers_and_changes_nothing(target: Target) -> None:
    users = 500
    target.conn.execute(GATE)
    target.conn.execute("SELECT pg_advisory_lock(4242)")
    procs = target.procs
    procs.start("publisher", "publisher")
    bulk_signup(target.conn, users)
    queue = profiles_queue(target.redis)
    assert wait_for(lambda: queue.count >= 1 and target.waiting_on_lock("profilesync-publisher") == 1)
    first_jobs = queue.count
    procs.kill("publisher")  # its jobs are in Redis, its claim not committed: the transaction never commits
    killed_at = time.monotonic()
    # Its backend already has the COMMIT (held by the gate); a publisher killed before sending it leaves a
    # backend that rolls back at the closed socket: end the backend the same way.
    target.conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        ("profilesync-publisher",),
    )
    assert wait_for(lambda: target.waiting_on_lock("profilesync-publisher") == 0)
    target.conn.execute("SELECT pg_advisory_unlock(4242)")
    procs.start("publisher", "publisher")
    assert wait_for(lambda: target.count(PENDING) == 0)
    assert queue.count == 2 * first_jobs  # every user's job is in Redis twice now
    procs.start("worker-1", "worker")
    state, recovery = settle(target, since=killed_at, bound=30)
    faults = "1 x SIGKILL after enqueue, before commit"
    final = finish(target, Row("kill -9 publisher between Redis and commit", users, faults, state, recovery))
    assert final.profiles == users
    assert final.redundant == users  # both copies ran; the second changed nothing
