"""`profilesync doctor`: is the whole path from signup to profile healthy? Exit non-zero when not.

Every check is one row of `PROBES`: its `gather` reads facts from PostgreSQL or Redis into `Facts` (or records
in `Facts.errors` why it could not), its `evaluate` judges them against thresholds from Settings, purely; both
output formats are pure too. Only the selected checks run (`--only`), and each read is bounded: see `gather`.

Adding a check: a field on `Facts`, a `_read_…` function, a `_judge_…` function, a row in `PROBES`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg import sql
from rq import Worker
from rq.registry import FailedJobRegistry

from profilesync import catalog, db, definitions
from profilesync.config import Settings, is_transaction_pooler, redact
from profilesync.definitions import Context
from profilesync.errors import ConfigError
from profilesync.explain import explain, first_line
from profilesync.migrate import pending
from profilesync.ops import objects, probe
from profilesync.ops.printable import printable
from profilesync.queueing import connect_redis, profiles_queue

Status = Literal["ok", "warn", "fail"]
Verdict = tuple[Status, str]
Server = Literal["database", "redis"]

SIGNUP_TRIGGER = objects.SIGNUP_TRIGGER
WRITE_PROBE_KEY = (
    "profilesync:doctor:write-probe"  # a tiny key with a short TTL: the write probe's only trace
)

_TRIGGER = """
SELECT t.tgenabled::text FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = to_regclass('auth.users') AND t.tgname = %s
"""
_BACKLOG = """
SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
FROM profile_sync.signup_events WHERE failed_at IS NULL
"""
_DELETE_RULE = """
SELECT c.confdeltype::text FROM pg_catalog.pg_constraint c
WHERE c.conrelid = pg_catalog.to_regclass(%s) AND c.contype = 'f'
  AND c.confrelid = pg_catalog.to_regclass('auth.users')
ORDER BY c.confdeltype = 'c' DESC
LIMIT 1
"""
_FAILED_EVENTS = "SELECT count(*) FROM profile_sync.signup_events WHERE failed_at IS NOT NULL"
_WITHOUT_PROFILES = """
SELECT count(*),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = u.id))
FROM auth.users u
WHERE u.deleted_at IS NULL AND NOT {has_profile}
"""
# Profiles of soft-deleted users that still hold personal data, and how many of them no pending event will
# scrub (a failed event is not pending: `failed_events` reports it).
_DELETED_USERS_DATA = """
SELECT count(*),
       count(*) FILTER (WHERE NOT EXISTS (
         SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = u.id AND e.failed_at IS NULL))
FROM auth.users u JOIN public.user_profiles p ON p.id = u.id
WHERE u.deleted_at IS NOT NULL
  AND (p.email IS NOT NULL OR p.full_name IS NOT NULL OR p.avatar_url IS NOT NULL)
"""

# Publishers register their LISTEN backend's pid; a row whose backend is gone is a dead publisher's leftover.
# Events no publisher claimed for a while mean none is working, even if one is registered (wedged).
_PUBLISHERS = """
SELECT (SELECT count(*) FROM profile_sync.publishers p
        WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = p.backend_pid)),
       (SELECT extract(epoch FROM now() - min(e.created_at))::float8 FROM profile_sync.signup_events e
        WHERE e.enqueued_at IS NULL AND e.failed_at IS NULL)
"""
# The oldest snapshot held in this database (PostgreSQL 14+ keeps dead rows for backends of the same database
# only): while it is held, no dead outbox row can be removed and every poll of the outbox scans them all.
_OLDEST_SNAPSHOT = """
SELECT a.pid, a.application_name, a.state,
       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::float8,
       pg_catalog.age(a.backend_xmin)
FROM pg_catalog.pg_stat_activity a
WHERE a.backend_xmin IS NOT NULL AND a.datname = pg_catalog.current_database()
  AND a.pid <> pg_catalog.pg_backend_pid()
ORDER BY pg_catalog.age(a.backend_xmin) DESC
LIMIT 1
"""


@dataclass(frozen=True)
class Snapshot:
    """The backend holding the oldest snapshot (backend_xmin) in the database."""

    pid: int
    application_name: str
    state: str
    seconds: float
    xmin_age: int


@dataclass
class Facts:
    """What `gather` found. `errors[check]` explains a fact that could not be read; `errors["database"]` and
    `errors["redis"]` a server that could not be reached."""

    listen_url: str
    errors: dict[str, str] = field(default_factory=dict)
    pending_migrations: list[str] | None = None
    trigger_enabled: str | None = (
        None  # pg_trigger.tgenabled: O/A fire, D disabled, R replica only; "" missing
    )
    missing_objects: list[str] | None = None  # objects.missing(): tables, functions, triggers, roles
    outdated_definitions: list[str] | None = None  # definitions this release renders that are not applied
    drifted_objects: list[str] | None = None  # objects that no longer match their applied definition
    guards: definitions.Guards | None = None  # the columns referencing the profile table and their guards
    profile_delete_rule: str | None = None  # confdeltype of the profile table's key to auth.users; "" none
    maxmemory_policy: str | None = None
    redis_write_refused: str | None = None  # Redis's answer to the write probe when it refused it
    workers: int | None = None
    failed_jobs: int | None = None
    pending_events: int | None = None
    oldest_event_age: float | None = None
    failed_events: int | None = None
    users_without_profiles: int | None = None
    unrecorded_users: int | None = None  # without a profile and without an outbox event: need a backfill
    deleted_users_data: int | None = None  # profiles of soft-deleted users still holding personal data
    deleted_users_unscrubbed: int | None = None  # of those, without a pending event: no scrub will come
    live_publishers: int | None = None
    oldest_unclaimed_age: float | None = None  # seconds the oldest event waits for a publisher to claim it
    oldest_snapshot: Snapshot | None = None
    signup_path: list[str] | None = None  # what the rolled-back test signup found broken ([] nothing)


@dataclass(frozen=True)
class Thresholds:
    min_workers: int = 1
    max_failed: int = 0
    max_backlog_age: float = 60.0
    safety_interval: float = 5.0  # a live publisher claims every event within one
    max_snapshot_age: float = 300.0
    min_publishers: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            settings.doctor_min_workers,
            settings.doctor_max_failed_jobs,
            settings.doctor_max_backlog_age,
            settings.safety_interval,
            settings.doctor_max_snapshot_age,
            settings.doctor_min_publishers,
        )


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


class Sources:
    """The connections of one doctor run, opened on first use, and its deadline."""

    def __init__(self, settings: Settings, facts: Facts) -> None:
        self.settings = settings
        self.facts = facts
        self.deadline = time.monotonic() + settings.doctor_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._redis: redis.Redis | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None, "gather opens the database before a database check reads"
        return self._conn

    @property
    def client(self) -> redis.Redis:
        assert self._redis is not None, "gather opens Redis before a Redis check reads"
        return self._redis

    def open(self, server: Server) -> bool:
        """Connect to `server` unless connected; False (the reason in `facts.errors`) if unreachable."""
        if server in self.facts.errors:
            return False
        if server == "database" and self._conn is None:
            self._conn = self._connect_database()
        elif server == "redis" and self._redis is None:
            self._redis = self._connect_redis()
        return server not in self.facts.errors

    def _connect_database(self) -> psycopg.Connection[Any] | None:
        url = self.settings.database_url
        try:
            return db.connect(
                url,
                autocommit=True,
                application_name="profilesync-doctor",
                connect_timeout=max(2, int(self.remaining())),
            )
        except psycopg.Error as exc:
            reason = redact(first_line(exc)).removeprefix("connection failed: ")
            self.facts.errors["database"] = f"{redact(url)} (DATABASE_URL) unreachable: {reason}"
            return None

    def _connect_redis(self) -> redis.Redis | None:
        url = self.settings.redis_url
        client = connect_redis(url, timeout=max(0.5, min(5.0, self.remaining())))
        try:
            client.ping()
        except redis.RedisError as exc:
            self.facts.errors["redis"] = f"{redact(url)} (REDIS_URL) unreachable: {first_line(exc)}"
            client.close()
            return None
        return client

    @contextmanager
    def bounded(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction whose statements and lock waits end by the deadline, and lock waits within
        PROFILESYNC_LOCK_TIMEOUT: a VACUUM FULL or LOCK TABLE costs one check, not the whole run. Server-side
        (SET LOCAL, also behind a transaction pooler), so a killed doctor leaves no backend waiting."""
        left = max(1, int(self.remaining() * 1000))
        lock = min(left, max(1, round(self.settings.lock_timeout * 1000)))
        with self.conn.transaction():
            self.conn.execute(
                "SELECT pg_catalog.set_config('statement_timeout', %s, true),"
                " pg_catalog.set_config('lock_timeout', %s, true)",
                (f"{left}ms", f"{lock}ms"),
            )
            yield self.conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._redis is not None:
            self._redis.close()


Gather = Callable[[Sources, Facts], None]
Evaluate = Callable[[Facts, Thresholds], Verdict]


@dataclass(frozen=True)
class Probe:
    """One check: the server it reads (None: judged from the settings alone), its I/O, its judgement."""

    server: Server | None
    gather: Gather
    evaluate: Evaluate


# -- pure: facts → checks → output ---------------------------------------------------------------------------


def _verdict(ok: bool, good: str, bad: str) -> Verdict:
    return ("ok", good) if ok else ("fail", bad)


def _judge_database(f: Facts, limits: Thresholds) -> Verdict:
    return "ok", "reachable"


def _judge_migrations(f: Facts, limits: Thresholds) -> Verdict:
    waiting = f.pending_migrations or []
    return _verdict(not waiting, "up to date", f"pending: {', '.join(waiting)} (run profilesync migrate)")


def _judge_trigger(f: Facts, limits: Thresholds) -> Verdict:
    state = f.trigger_enabled or ""
    labels = {"D": "disabled", "R": "enabled for replica mode only", "": "missing"}
    return _verdict(
        state in ("O", "A"),
        f"{SIGNUP_TRIGGER} enabled",
        f"{SIGNUP_TRIGGER} {labels.get(state, state)}: signups are not recorded",
    )


def _judge_objects(f: Facts, limits: Thresholds) -> Verdict:
    missing = f.missing_objects or []
    if not missing:
        return "ok", "tables, functions, triggers and roles in place"
    shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
    return "fail", f"missing: {shown} (run profilesync migrate, or restore them)"


def _judge_definitions(f: Facts, limits: Thresholds) -> Verdict:
    outdated, drifted = f.outdated_definitions or [], f.drifted_objects or []
    if not outdated and not drifted:
        return "ok", "every function, trigger, policy and grant as defined"
    parts = []
    if outdated:
        parts.append(f"not applied: {', '.join(outdated)}")
    if drifted:
        shown = "; ".join(drifted[:5]) + (f"; and {len(drifted) - 5} more" if len(drifted) > 5 else "")
        parts.append(f"drifted from its definition: {shown}")
    return "fail", "; ".join(parts) + " (run profilesync migrate)"


def _judge_guards(f: Facts, limits: Thresholds) -> Verdict:
    found = f.guards
    if found is None:
        return "fail", "the guards' functions are missing (run profilesync migrate)"
    if found.unguarded:
        return (
            "fail",
            f"not guarded: {', '.join(found.unguarded)}: a client's insert right after signup can fail with "
            "23503 (run profilesync migrate)",
        )
    return "ok", f"{len(found.references)} column(s) referencing the profile table, each guarded for clients"


def _judge_delete_cascade(f: Facts, limits: Thresholds) -> Verdict:
    table = Context().profile
    rule = f.profile_delete_rule or ""
    if rule == "c":
        return "ok", f"deleting a user deletes its row in {table} (ON DELETE CASCADE)"
    if rule == "":
        return "warn", f"{table} has no foreign key to auth.users: profiles of deleted users stay"
    return (
        "warn",
        f"{table} references auth.users without ON DELETE CASCADE: deleting a user (dashboard, "
        "auth.admin.deleteUser) fails with 23503 (recreate that foreign key with ON DELETE CASCADE)",
    )


def _judge_listen_url(f: Facts, limits: Thresholds) -> Verdict:
    return _verdict(
        not is_transaction_pooler(f.listen_url),
        f"{redact(f.listen_url)} (direct or session mode)",
        f"{redact(f.listen_url)} is a transaction pooler: LISTEN needs port 5432 or a session pooler "
        "(set LISTEN_DATABASE_URL)",
    )


def _judge_redis(f: Facts, limits: Thresholds) -> Verdict:
    return "ok", "reachable"


def _judge_redis_policy(f: Facts, limits: Thresholds) -> Verdict:
    if f.maxmemory_policy is None:
        return "warn", "maxmemory-policy unreadable (CONFIG GET refused): make it noeviction"
    return _verdict(
        f.maxmemory_policy == "noeviction",
        "maxmemory-policy noeviction",
        f"maxmemory-policy {f.maxmemory_policy}: Redis may evict queued jobs (set noeviction)",
    )


def _judge_redis_writes(f: Facts, limits: Thresholds) -> Verdict:
    refused = f.redis_write_refused
    if refused is None:
        return "ok", "accepts writes"
    if "maxmemory" in refused:
        fix = "maxmemory reached: raise maxmemory or free memory"
    else:
        fix = "point REDIS_URL at a writable primary"
    return "fail", f"refuses writes ({refused}): no job can be enqueued ({fix})"


def _judge_workers(f: Facts, limits: Thresholds) -> Verdict:
    alive = f.workers or 0
    return _verdict(
        alive >= limits.min_workers,
        f"{alive} alive",
        f"{alive} alive, expected at least {limits.min_workers} (start profilesync worker)",
    )


def _judge_failed_jobs(f: Facts, limits: Thresholds) -> Verdict:
    failed = f.failed_jobs or 0
    return _verdict(
        failed <= limits.max_failed,
        f"{failed} failed",
        f"{failed} failed (see profilesync failed; profilesync replay --all once fixed)",
    )


def _judge_backlog(f: Facts, limits: Thresholds) -> Verdict:
    waiting = f.pending_events or 0
    age = f.oldest_event_age or 0.0
    return _verdict(
        age <= limits.max_backlog_age,
        f"{waiting} pending, oldest {age:.1f}s",
        f"{waiting} pending, oldest {age:.1f}s > {limits.max_backlog_age:g}s (publisher or workers down or "
        "too few)",
    )


def _judge_failed_events(f: Facts, limits: Thresholds) -> Verdict:
    failed = f.failed_events or 0
    return _verdict(
        failed <= limits.max_failed,
        f"{failed} failed",
        f"{failed} signup events failed permanently (once fixed: profilesync replay --all, or "
        "replay --events if their failed jobs are gone)",
    )


def _judge_users_without_profiles(f: Facts, limits: Thresholds) -> Verdict:
    without = f.users_without_profiles or 0
    unrecorded = f.unrecorded_users or 0
    return _verdict(
        unrecorded == 0,
        f"{without} without a profile, all in flight",
        f"{unrecorded} of {without} users without a profile have no signup event (run profilesync backfill)",
    )


def _judge_deleted_users_data(f: Facts, limits: Thresholds) -> Verdict:
    holding, stuck = f.deleted_users_data or 0, f.deleted_users_unscrubbed or 0
    return _verdict(
        stuck == 0,
        f"{holding} being scrubbed" if holding else "no soft-deleted user's profile holds personal data",
        f"{stuck} profile(s) of soft-deleted users still hold personal data and no scrub is pending (run "
        "profilesync backfill; the publisher's sweeper also records them, PROFILESYNC_SWEEP_LIMIT users "
        "every PROFILESYNC_SWEEP_INTERVAL)",
    )


def _judge_publishers(f: Facts, limits: Thresholds) -> Verdict:
    alive = f.live_publishers or 0
    age = f.oldest_unclaimed_age
    if alive < limits.min_publishers:
        if alive == 0:
            return "fail", "none alive: signups wait (start profilesync publisher)"
        return "fail", f"{alive} alive, expected at least {limits.min_publishers}"
    if alive > 0 and age is not None and age > limits.safety_interval:
        return (
            "fail",
            f"{alive} alive, but an event waits {age:.1f}s > {limits.safety_interval:g}s to be claimed "
            "(publisher stuck or disconnected: see its log)",
        )
    return "ok", f"{alive} alive"


def _judge_snapshots(f: Facts, limits: Thresholds) -> Verdict:
    held = f.oldest_snapshot
    if held is None or held.seconds <= limits.max_snapshot_age:
        age = f", oldest {held.seconds:.0f}s" if held is not None else ""
        return "ok", f"no snapshot older than {limits.max_snapshot_age:g}s{age}"
    return (
        "warn",
        f"pid {held.pid} ({held.application_name or 'no application_name'}, {held.state}) holds a snapshot "
        f"for {held.seconds:.0f}s ({held.xmin_age:,} transactions old): dead outbox rows pile up and polling "
        "slows down until that transaction ends",
    )


def _judge_signup_path(f: Facts, limits: Thresholds) -> Verdict:
    problems = f.signup_path or []
    return _verdict(
        not problems,
        "a test signup was recorded and ensure_profile() created its profile (rolled back)",
        "; ".join(problems),
    )


def evaluate(facts: Facts, limits: Thresholds, names: Iterable[str] | None = None) -> list[Check]:
    """The checks `names` (all, in table order, if None) judged from `facts`."""
    return [_judge(name, facts, limits) for name in selected(names)]


def _judge(name: str, f: Facts, limits: Thresholds) -> Check:
    if name in f.errors:
        return Check(name, "fail", f.errors[name])
    server = PROBES[name].server
    if server is not None and server in f.errors:
        return Check(name, "fail", f"not checked: {'Redis' if server == 'redis' else server} unreachable")
    status, detail = PROBES[name].evaluate(f, limits)
    return Check(name, status, detail)


def selected(names: Iterable[str] | None) -> list[str]:
    wanted = set(DEFAULT_CHECKS if names is None else names)
    return [name for name in CHECKS if name in wanted]


def healthy(checks: list[Check]) -> bool:
    return all(c.status != "fail" for c in checks)


def format_table(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"{c.status.upper():<4}  {c.name:<{width}}  {printable(c.detail)}" for c in checks]
    problems = sum(c.status == "fail" for c in checks)
    lines.append("healthy" if problems == 0 else f"{problems} problem(s)")
    return "\n".join(lines)


def format_json(checks: list[Check]) -> str:
    return json.dumps({"healthy": healthy(checks), "checks": [asdict(c) for c in checks]}, indent=2)


# -- I/O: read the facts -------------------------------------------------------------------------------------


def gather(settings: Settings, names: Iterable[str] | None = None) -> Facts:
    """Run the gather of each check in `names` (all if None), and nothing else.

    Bounded by PROFILESYNC_DOCTOR_TIMEOUT: a check that starts after it is not run; a database check's every
    statement ends by it (server-side, see `Sources.bounded`); Redis answers within min(5 s, what is left).
    """
    facts = Facts(listen_url=settings.listen_url)
    sources = Sources(settings, facts)
    try:
        for name in selected(names):
            _run(name, sources, facts)
    finally:
        sources.close()
    return facts


def _run(name: str, sources: Sources, facts: Facts) -> None:
    probe = PROBES[name]
    if sources.remaining() <= 0:
        facts.errors[name] = (
            f"not checked: doctor ran out of time ({sources.settings.doctor_timeout:g}s, "
            "PROFILESYNC_DOCTOR_TIMEOUT)"
        )
        return
    if probe.server is not None and not sources.open(probe.server):
        return
    try:
        probe.gather(sources, facts)
    except psycopg.Error as exc:
        facts.errors[name] = f"could not read: {_database_error(exc, sources)}"
        if sources.conn.broken:
            facts.errors["database"] = facts.errors[name]
    except redis.RedisError as exc:
        facts.errors[name] = f"could not read: {first_line(exc)}"
    except ConfigError as exc:  # PROFILESYNC_CONFIG unreadable: the checks of the profile table cannot run
        facts.errors[name] = f"could not read: {exc}"


def _database_error(exc: psycopg.Error, sources: Sources) -> str:
    if isinstance(exc, pg_errors.LockNotAvailable):
        return "lock timeout (another session holds a conflicting lock, e.g. VACUUM FULL or LOCK TABLE)"
    if isinstance(exc, pg_errors.QueryCanceled):
        return "statement timeout (doctor's time is up)"
    return explain(exc, sources.settings) or first_line(exc)


def _read_nothing(sources: Sources, facts: Facts) -> None:
    """Reaching the server is the whole check."""


def _read_migrations(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        facts.pending_migrations = [m.name for m in pending(conn)]


def _read_trigger(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_TRIGGER, (SIGNUP_TRIGGER,)).fetchone()
    facts.trigger_enabled = row[0] if row else ""


def _context(sources: Sources, conn: psycopg.Connection[Any]) -> Context:
    """What the definitions are rendered for: PROFILESYNC_CONFIG's profile table (ConfigError if unusable)."""
    mapping = sources.settings.profile_mapping()
    return Context.of(mapping, catalog.read_table(conn, mapping) or catalog.SEED_FACTS)


def _read_objects(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        facts.missing_objects = objects.missing(conn, _context(sources, conn))


def _read_definitions(sources: Sources, facts: Facts) -> None:
    # A missing or disabled signup trigger is the `trigger` check's to report, once.
    own = {f"trigger {SIGNUP_TRIGGER} on auth.users {how}" for how in ("missing", "disabled", "replica only")}
    with sources.bounded() as conn:
        facts.outdated_definitions = definitions.outdated(conn, definitions.render(_context(sources, conn)))
        facts.drifted_objects = [line for line in definitions.drift(conn) if line not in own]


def _read_guards(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        facts.guards = definitions.guards(conn)


def _read_delete_rule(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_DELETE_RULE, (_context(sources, conn).profile.sql(),)).fetchone()
    facts.profile_delete_rule = row[0] if row else ""


def _read_backlog(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_BACKLOG).fetchone()
    assert row is not None
    facts.pending_events = int(row[0])
    facts.oldest_event_age = row[1]


def _read_failed_events(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_FAILED_EVENTS).fetchone()
    assert row is not None
    facts.failed_events = int(row[0])


def _read_without_profiles(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        profile = catalog.profile_table(conn, sources.settings.profile_mapping())
        query = sql.SQL(_WITHOUT_PROFILES).format(has_profile=profile.has_profile(sql.SQL("u.id")))
        row = conn.execute(query).fetchone()
    assert row is not None
    facts.users_without_profiles = int(row[0])
    facts.unrecorded_users = int(row[1])


def _read_deleted_users_data(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_DELETED_USERS_DATA).fetchone()
    assert row is not None
    facts.deleted_users_data = int(row[0])
    facts.deleted_users_unscrubbed = int(row[1])


def _read_publishers(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_PUBLISHERS).fetchone()
    assert row is not None
    facts.live_publishers = int(row[0])
    facts.oldest_unclaimed_age = row[1]


def _read_oldest_snapshot(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        row = conn.execute(_OLDEST_SNAPSHOT).fetchone()
    if row is not None and row[3] is not None:
        facts.oldest_snapshot = Snapshot(int(row[0]), row[1] or "", row[2] or "", float(row[3]), int(row[4]))


def _read_redis_policy(sources: Sources, facts: Facts) -> None:
    try:
        facts.maxmemory_policy = sources.client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:  # CONFIG is often disabled on managed Redis
        facts.maxmemory_policy = None


def _read_redis_writes(sources: Sources, facts: Facts) -> None:
    try:
        sources.client.set(WRITE_PROBE_KEY, "1", ex=10)
    except redis.ResponseError as exc:  # OOM (maxmemory under noeviction), READONLY replica, MISCONF
        facts.redis_write_refused = first_line(exc)


def _read_workers(sources: Sources, facts: Facts) -> None:
    facts.workers = len(Worker.all(queue=profiles_queue(sources.client, sources.settings.queue)))


def _read_failed_jobs(sources: Sources, facts: Facts) -> None:
    queue = profiles_queue(sources.client, sources.settings.queue)
    facts.failed_jobs = FailedJobRegistry(queue=queue).count


def _read_signup_path(sources: Sources, facts: Facts) -> None:
    with sources.bounded() as conn:
        facts.signup_path = probe.signup_path(conn)


PROBES: dict[str, Probe] = {
    "database": Probe("database", _read_nothing, _judge_database),
    "migrations": Probe("database", _read_migrations, _judge_migrations),
    "trigger": Probe("database", _read_trigger, _judge_trigger),
    "objects": Probe("database", _read_objects, _judge_objects),
    "definitions": Probe("database", _read_definitions, _judge_definitions),
    "guards": Probe("database", _read_guards, _judge_guards),
    "delete_cascade": Probe("database", _read_delete_rule, _judge_delete_cascade),
    "listen_url": Probe(None, _read_nothing, _judge_listen_url),
    "redis": Probe("redis", _read_nothing, _judge_redis),
    "redis_policy": Probe("redis", _read_redis_policy, _judge_redis_policy),
    "redis_writes": Probe("redis", _read_redis_writes, _judge_redis_writes),
    "workers": Probe("redis", _read_workers, _judge_workers),
    "failed_jobs": Probe("redis", _read_failed_jobs, _judge_failed_jobs),
    "backlog": Probe("database", _read_backlog, _judge_backlog),
    "failed_events": Probe("database", _read_failed_events, _judge_failed_events),
    "users_without_profiles": Probe("database", _read_without_profiles, _judge_users_without_profiles),
    "deleted_users_data": Probe("database", _read_deleted_users_data, _judge_deleted_users_data),
    "publishers": Probe("database", _read_publishers, _judge_publishers),
    "snapshots": Probe("database", _read_oldest_snapshot, _judge_snapshots),
    "signup_path": Probe("database", _read_signup_path, _judge_signup_path),
}
CHECKS = tuple(PROBES)
# A test signup writes (always rolled back): only on request, `doctor --probe` or `--only signup_path`.
DEFAULT_CHECKS = tuple(name for name in CHECKS if name != "signup_path")
