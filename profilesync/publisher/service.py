"""The long-running publisher: LISTEN first, then drain; again after every reconnect and on a safety timer.

An outbox row is only marked enqueued in the same transaction that claimed it, after Redis took its job; the
row itself is deleted by the worker once the profile exists. A killed publisher therefore loses nothing (its
transaction rolls back), and a Redis that lost its data is repaired by redelivery of stale rows.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import redis
from rq import Queue

from profilesync import db, listen, metrics
from profilesync.backoff import Backoff
from profilesync.config import Settings
from profilesync.logs import get_logger
from profilesync.publisher.jobstate import live_jobs, requeue_scheduled
from profilesync.publisher.planning import flatten, group_claimed, plan_jobs, valid_payload
from profilesync.queueing import JobPlan, connect_redis, enqueue_plans, profiles_queue

CHANNEL = "profile_sync_signup"
# After a drain that found events, poll every LINGER_POLL seconds until LINGER_QUIET seconds pass without any;
# every BACKLOG_POLL seconds while a job waits in the queue (workers are behind: latency is theirs anyway).
LINGER_POLL = 0.0005
BACKLOG_POLL = 0.005
LINGER_QUIET = 0.05
FIRST_RETRY = 0.5  # seconds before the first reconnect
# Claims read pending events above a cursor trailing the highest claimed id by CURSOR_LAG to 2 x CURSOR_LAG
# seconds: a signup whose id is lower than one already claimed, but which committed after it, is still above
# it. A signup transaction open for longer is found by the full sweep (from id 0) on the safety timer.
CURSOR_LAG = 1.0

log = get_logger(__name__)

# Claim and mark in one statement: rows are locked and marked in the claiming transaction, which commits only
# after Redis took their jobs (a failure before that rolls the marks back). Pending events are read through
# the primary key from `after` (see CURSOR_LAG). Duplicate events of a user land in the same job.
_CLAIM = """
WITH claimed AS (
  SELECT id, user_id FROM profile_sync.signup_events
  WHERE id > %(after)s::bigint AND enqueued_at IS NULL
  ORDER BY id
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
), jobs AS (
  SELECT id, %(prefix)s || ((dense_rank() OVER (ORDER BY user_id) - 1) / %(per_job)s) AS job_id FROM claimed
)
UPDATE profile_sync.signup_events e
SET enqueued_at = now(), job_id = j.job_id
FROM jobs j
WHERE e.id = j.id
RETURNING e.id, e.user_id, e.job_id
"""
_MARK = """
UPDATE profile_sync.signup_events e
SET enqueued_at = now(), job_id = v.job_id
FROM unnest(%s::bigint[], %s::text[]) AS v(id, job_id)
WHERE e.id = v.id
"""
# Oldest claims first, through signup_events_enqueued_idx: no scan and sort of a backlog.
_STALE = """
SELECT id, user_id, job_id FROM profile_sync.signup_events
WHERE enqueued_at < now() - make_interval(secs => %s) AND failed_at IS NULL
ORDER BY enqueued_at
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
_FORGET_DEAD = """
DELETE FROM profile_sync.publishers p
WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p.backend_pid)
"""
_REGISTER = """
INSERT INTO profile_sync.publishers (backend_pid, idle) VALUES (%s, false)
ON CONFLICT (backend_pid) DO UPDATE SET idle = false, updated_at = now()
"""
# Users with neither profile nor outbox row (the signup trigger gave up on a lock): recorded again.
_SWEEP = "SELECT last_id, recorded FROM profile_sync.record_unrecorded_users(%s, %s)"
# In id order so that the plan walks the primary key from the cursor, whatever the statistics say.
_PENDING = """
SELECT 1 FROM profile_sync.signup_events WHERE id > %s::bigint AND enqueued_at IS NULL ORDER BY id LIMIT 1
"""
_ANNOUNCE = "SELECT profile_sync.announce_publisher(%s, %s)"


class Publisher:
    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        *,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        """`on_wake` is called each time the publisher stops waiting for a NOTIFY (one came, the safety
        deadline passed, or stop), before the drain that follows: a timing hook (the bench's stages)."""
        self.listen_url = listen.listen_url(settings)
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_wake = on_wake
        self.enqueued_total = 0
        self._last_event = 0.0  # monotonic time of the last wake-up that found events
        self._down: str | None = "not connected yet"  # why the publisher is unhealthy, None when it is not
        self._beat = time.monotonic()  # last pass of the wait loop or drain batch
        self._malformed = listen.MalformedPayloads(CHANNEL)
        self._swept_up_to: uuid.UUID | None = None  # the sweeper's place in auth.users (None: the start)
        self._claimed_max = 0  # the highest event id claimed
        self._after = 0  # claims read ids above this (see CURSOR_LAG)
        self._trail = 0  # _claimed_max when the cursor last moved; the cursor's next value
        self._cursor_moves_at = 0.0

    # -- main loop -------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until `stop` is set, reconnecting with backoff whenever Postgres or Redis fails.

        A missing privilege raises InsufficientPrivilegeError instead: that is configuration, not an outage.
        """
        listen.run_reconnecting(
            self._session,
            self.stop,
            what="publisher",
            backoff=Backoff(FIRST_RETRY, self.settings.reconnect_max_delay),
            errors=(psycopg.Error, redis.RedisError, OSError),
            on_lost=self._lost,
        )
        log.info("publisher stopped", enqueued_total=self.enqueued_total)

    def _lost(self, exc: BaseException) -> None:
        self._down = f"connection lost: {metrics.one_line(exc)}"

    def health(self) -> str | None:
        """None while connected and looping; else why not (served on /healthz)."""
        if self._down is not None:
            return self._down
        quiet = time.monotonic() - self._beat
        if quiet > 2 * self.settings.safety_interval + 10:
            return f"publisher loop stalled: no pass for {quiet:.0f}s"
        return None

    def _session(self) -> None:
        """One connected session: LISTEN, register, drain, then wait for wake-ups until stopped or broken."""
        with (
            connect_redis(self.settings.redis_url) as redis_conn,
            listen.connect(self.listen_url, CHANNEL, "profilesync-listen") as listener,
            db.connect(
                self.settings.database_url,
                autocommit=True,
                application_name="profilesync-publisher",
                timeouts=db.Timeouts.of(self.settings),
            ) as work,
        ):
            pid = listener.info.backend_pid
            # What this connection writes is soft state: a claim or mark lost in a crash is claimed or
            # redelivered again (duplicate jobs change nothing), the idle flag is recomputed. Not worth an
            # fsync on the way to every profile; the signup's event and the profile itself stay synchronous.
            work.execute("SET synchronous_commit = off")
            work.execute(_FORGET_DEAD)
            work.execute(_REGISTER, (pid,))
            work.execute(_ANNOUNCE, (pid, False))
            log.info("publisher listening", channel=CHANNEL, backend_pid=pid)
            self._down = None
            try:
                self.drain(work, redis_conn, full=True)
                self.redeliver(work, redis_conn)
                self._wait_loop(listener, work, redis_conn, pid)
            finally:
                if not work.closed and not work.broken:
                    work.execute("DELETE FROM profile_sync.publishers WHERE backend_pid = %s", (pid,))
                    work.execute(_ANNOUNCE, (pid, False))  # recount the idle publishers without this one

    def _wait_loop(
        self,
        listener: psycopg.Connection[Any],
        work: psycopg.Connection[Any],
        redis_conn: redis.Redis,
        pid: int,
    ) -> None:
        next_safety = time.monotonic() + self.settings.safety_interval
        next_sweep = time.monotonic() + self.settings.sweep_interval
        idle = False
        while not self.stop.is_set():
            self._beat = time.monotonic()
            found = 0
            if not idle:
                # Announce idleness, then drain once more: a signup that committed before the flag was visible
                # did not NOTIFY, and this drain picks it up. Anything later NOTIFYs (while we stay idle, a
                # signup during a drain too: its NOTIFY waits for the next _wait_for_notify).
                work.execute(_ANNOUNCE, (pid, True))
                idle = True
                found = self.drain(work, redis_conn)
            if found == 0:
                self._wait_for_notify(listener, until=next_safety)
                if self.on_wake is not None:
                    self.on_wake()
                found = self.drain(work, redis_conn)  # still announced idle: nothing before the claim
            if found and self._steady(found):
                # A stream: stop the signups' NOTIFYs (a cluster-wide lock at their commit) and poll instead.
                work.execute(_ANNOUNCE, (pid, False))
                idle = False
                self._linger(work, redis_conn, until=next_safety)
            if time.monotonic() >= next_safety:
                listener.execute("SELECT 1")  # liveness probe of the LISTEN connection
                self.drain(work, redis_conn, full=True)
                self.redeliver(work, redis_conn)
                next_safety = time.monotonic() + self.settings.safety_interval
            if time.monotonic() >= next_sweep:
                self.sweep(work)
                next_sweep = time.monotonic() + self.settings.sweep_interval

    def _steady(self, found: int) -> bool:
        """Whether signups come faster than one per LINGER_QUIET (then linger rather than go idle).

        Only after events: a safety-timer wake-up with nothing to do goes straight back to waiting. A lone
        signup goes back to NOTIFY too, which is cheap without concurrent signups, instead of LINGER_QUIET
        of polling (measured by the bench: 5x less publisher CPU per signup at 5 signups/s, same latency).
        """
        now = time.monotonic()
        steady = found > 1 or now - self._last_event < LINGER_QUIET
        self._last_event = now
        return steady

    def _linger(self, work: psycopg.Connection[Any], redis_conn: redis.Redis, until: float) -> None:
        """Keep draining on a short timer while signups keep coming; return after LINGER_QUIET without any.

        Not idle meanwhile, so a steady stream of signups pays for no NOTIFY (a cluster-wide lock at commit).
        While the workers have a job still waiting in the queue, pending events are left to grow the next job.
        Returns by `until` at the latest, so the safety timer still runs.
        """
        queue_key = profiles_queue(redis_conn, self.settings.queue).key
        quiet_since = time.monotonic()
        poll = LINGER_POLL
        while not self.stop.wait(poll) and time.monotonic() < until:
            poll = LINGER_POLL
            if redis_conn.llen(queue_key) > 0:
                quiet_since = time.monotonic()
                poll = BACKLOG_POLL
            elif work.execute(_PENDING, (self._after,)).fetchone():
                quiet_since = time.monotonic()
                self.drain(work, redis_conn)
            elif time.monotonic() - quiet_since >= LINGER_QUIET:
                return

    def _wait_for_notify(self, listener: psycopg.Connection[Any], until: float) -> None:
        """Block until a well-formed NOTIFY, the safety deadline, or stop; short slices keep SIGTERM
        responsive."""
        while not self.stop.is_set():
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            woke = False
            for notify in listener.notifies(timeout=min(remaining, 0.5), stop_after=1):
                if valid_payload(notify.payload):
                    woke = True
                else:  # any role may NOTIFY: a flood of junk costs no drains and one log line per interval
                    self._malformed.seen(notify.payload)
            if woke:
                return

    # -- work ------------------------------------------------------------------------------------------------

    def drain(self, work: psycopg.Connection[Any], redis_conn: redis.Redis, *, full: bool = False) -> int:
        """Claim pending events batch by batch and dispatch them; returns events handled.

        From the cursor, or from id 0 with `full` (a sweep for events that committed behind the cursor).
        """
        queue = profiles_queue(redis_conn, self.settings.queue)
        after = 0 if full else self._move_cursor()
        total = 0
        while not self.stop.is_set():
            params = {
                "after": after,
                "limit": self.settings.drain_batch_size,
                "prefix": f"profiles-{uuid.uuid4()}-",
                "per_job": self.settings.job_batch_size,
            }
            # Pipeline mode: BEGIN and the claim in one round trip, the COMMIT in another.
            with work.pipeline(), work.transaction():
                rows = work.execute(_CLAIM, params).fetchall()
                if not rows:
                    break
                plans = group_claimed(rows)
                self.dispatch(work, queue, plans)
            total += len(rows)
            self._beat = time.monotonic()
            metrics.EVENTS_ENQUEUED.inc(len(rows))
            after = max(after, max(row[0] for row in rows))  # the next batch: past this one
            self._claimed_max = max(self._claimed_max, after)
            log.info("events enqueued", events=len(rows), jobs=len(plans))
            if len(rows) < self.settings.drain_batch_size:
                break
        self.enqueued_total += total
        return total

    def _move_cursor(self) -> int:
        """The id claims start after: the highest claimed id as of CURSOR_LAG to 2 x CURSOR_LAG ago."""
        now = time.monotonic()
        if now >= self._cursor_moves_at:
            self._after, self._trail = self._trail, self._claimed_max
            self._cursor_moves_at = now + CURSOR_LAG
        return self._after

    def dispatch(self, work: psycopg.Connection[Any], queue: Queue, plans: list[JobPlan]) -> None:
        """In the claiming transaction, its events already marked: their jobs into Redis before it commits."""
        enqueue_plans(queue, plans, self.settings)

    def redeliver(self, work: psycopg.Connection[Any], redis_conn: redis.Redis) -> int:
        """Re-enqueue events whose job will not run: gone from Redis, unreadable, missing from its queue
        list or registry, or ended without retiring them (profilesync.publisher.jobstate). A job still
        waiting for one of RQ's retries goes back into the queue now: an event this old does not wait for
        RQ's scheduler."""
        queue = profiles_queue(redis_conn, self.settings.queue)
        with work.transaction():
            rows = work.execute(
                _STALE, (self.settings.redeliver_after, self.settings.drain_batch_size)
            ).fetchall()
            if not rows:
                return 0
            job_ids = sorted({row[2] for row in rows})
            live = live_jobs(redis_conn, queue, job_ids)
            requeued = requeue_scheduled(queue, [job_id for job_id in job_ids if job_id not in live])
            if requeued:  # their events wait for them again, from now on
                retry = [(event_id, job_id) for event_id, _, job_id in rows if job_id in requeued]
                work.execute(_MARK, ([e for e, _ in retry], [j for _, j in retry]))
                log.warning("jobs waiting for a retry requeued", jobs=len(requeued), events=len(retry))
            orphans = [
                (event_id, user_id)
                for event_id, user_id, job_id in rows
                if job_id not in live and job_id not in requeued
            ]
            if not orphans:
                return 0
            plans = plan_jobs(orphans, self.settings.job_batch_size)
            work.execute(_MARK, flatten(plans))
            self.dispatch(work, queue, plans)
        metrics.EVENTS_ENQUEUED.inc(len(orphans))
        log.warning("events redelivered", events=len(orphans), jobs=len(plans))
        return len(orphans)

    def sweep(self, work: psycopg.Connection[Any]) -> int:
        """Record users without an outbox row whose profile is out of step: live users without a profile
        (their signup's trigger gave up on a lock, or ran while our schema was broken) and soft-deleted users
        whose profile still holds personal data; returns how many. Each run looks at the next
        PROFILESYNC_SWEEP_LIMIT users by id, so one costs the same at any size; a lap covers them all."""
        row = work.execute(_SWEEP, (self._swept_up_to, self.settings.sweep_limit)).fetchone()
        assert row is not None
        self._swept_up_to, recorded = row[0], int(row[1])
        if recorded:
            metrics.SWEEPER_RECORDED.inc(recorded)
            log.warning("unrecorded users swept into the outbox", users=recorded)
        return recorded
