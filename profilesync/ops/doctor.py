"""`profilesync doctor`: is the whole path from signup to profile healthy? Exit non-zero when not.

`gather` reads facts from PostgreSQL and Redis (a fact may instead carry the error that prevented reading it);
`evaluate` turns facts into checks against thresholds from Settings; both output formats are pure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
import redis
from rq import Worker
from rq.registry import FailedJobRegistry

from profilesync import db, definitions
from profilesync.config import Settings, is_transaction_pooler, redact
from profilesync.definitions import Context
from profilesync.explain import explain, first_line
from profilesync.migrate import pending
from profilesync.ops import objects
from profilesync.queueing import connect_redis, profiles_queue

Status = Literal["ok", "warn", "fail"]

SIGNUP_TRIGGER = objects.SIGNUP_TRIGGER
CHECKS = (
    "database",
    "migrations",
    "trigger",
    "objects",
    "definitions",
    "listen_url",
    "redis",
    "redis_policy",
    "workers",
    "failed_jobs",
    "backlog",
    "failed_events",
    "users_without_profiles",
    "publishers",
    "snapshots",
)
_DATABASE_CHECKS = (
    "migrations",
    "trigger",
    "objects",
    "definitions",
    "backlog",
    "failed_events",
    "users_without_profiles",
    "publishers",
    "snapshots",
)
_REDIS_CHECKS = ("redis_policy", "workers", "failed_jobs")

_TRIGGER = """
SELECT t.tgenabled::text FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = to_regclass('auth.users') AND t.tgname = %s
"""
_BACKLOG = """
SELECT count(*) FILTER (WHERE failed_at IS NULL),
       extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL))::float8,
       count(*) FILTER (WHERE failed_at IS NOT NULL)
FROM profile_sync.signup_events
"""
_WITHOUT_PROFILES = """
SELECT count(*),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = u.id))
FROM auth.users u
WHERE u.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = u.id)
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
    """What `gather` found. `errors[check]` explains a fact that could not be read."""

    listen_url: str
    errors: dict[str, str] = field(default_factory=dict)
    pending_migrations: list[str] | None = None
    trigger_enabled: str | None = (
        None  # pg_trigger.tgenabled: O/A fire, D disabled, R replica only; "" missing
    )
    missing_objects: list[str] | None = None  # objects.missing(): tables, functions, triggers, roles
    outdated_definitions: list[str] | None = None  # definitions this release renders that are not applied
    drifted_objects: list[str] | None = None  # objects that no longer match their applied definition
    maxmemory_policy: str | None = None
    workers: int | None = None
    failed_jobs: int | None = None
    pending_events: int | None = None
    oldest_event_age: float | None = None
    failed_events: int | None = None
    users_without_profiles: int | None = None
    unrecorded_users: int | None = None  # without a profile and without an outbox event: need a backfill
    live_publishers: int | None = None
    oldest_unclaimed_age: float | None = None  # seconds the oldest event waits for a publisher to claim it
    oldest_snapshot: Snapshot | None = None


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


# -- pure: facts → checks → output ---------------------------------------------------------------------------


def evaluate(facts: Facts, limits: Thresholds) -> list[Check]:
    checks = [_evaluate_one(name, facts, limits) for name in CHECKS]
    return [c for c in checks if c is not None]


def _evaluate_one(name: str, f: Facts, limits: Thresholds) -> Check | None:
    if name in f.errors:
        return Check(name, "fail", f.errors[name])
    if name in _DATABASE_CHECKS and "database" in f.errors:
        return Check(name, "fail", "not checked: database unreachable")
    if name in _REDIS_CHECKS and "redis" in f.errors:
        return Check(name, "fail", "not checked: Redis unreachable")

    def check(ok: bool, good: str, bad: str) -> Check:
        return Check(name, "ok" if ok else "fail", good if ok else bad)

    match name:
        case "database":
            return Check(name, "ok", "reachable")
        case "migrations":
            pending = f.pending_migrations or []
            return check(
                not pending, "up to date", f"pending: {', '.join(pending)} (run profilesync migrate)"
            )
        case "trigger":
            state = f.trigger_enabled or ""
            labels = {"D": "disabled", "R": "enabled for replica mode only", "": "missing"}
            return check(
                state in ("O", "A"),
                f"{SIGNUP_TRIGGER} enabled",
                f"{SIGNUP_TRIGGER} {labels.get(state, state)}: signups are not recorded",
            )
        case "objects":
            return _evaluate_objects(f.missing_objects or [])
        case "definitions":
            return _evaluate_definitions(f.outdated_definitions or [], f.drifted_objects or [])
        case "listen_url":
            pooled = is_transaction_pooler(f.listen_url)
            return check(
                not pooled,
                f"{redact(f.listen_url)} (direct or session mode)",
                f"{redact(f.listen_url)} is a transaction pooler: LISTEN needs port 5432 or a session pooler "
                "(set LISTEN_DATABASE_URL)",
            )
        case "redis":
            return Check(name, "ok", "reachable")
        case "redis_policy":
            if f.maxmemory_policy is None:
                return Check(
                    name, "warn", "maxmemory-policy unreadable (CONFIG GET refused): make it noeviction"
                )
            return check(
                f.maxmemory_policy == "noeviction",
                "maxmemory-policy noeviction",
                f"maxmemory-policy {f.maxmemory_policy}: Redis may evict queued jobs (set noeviction)",
            )
        case "workers":
            alive = f.workers or 0
            return check(
                alive >= limits.min_workers,
                f"{alive} alive",
                f"{alive} alive, expected at least {limits.min_workers} (start profilesync worker)",
            )
        case "failed_jobs":
            failed = f.failed_jobs or 0
            return check(
                failed <= limits.max_failed,
                f"{failed} failed",
                f"{failed} failed (inspect with rq info; profilesync replay --all once fixed)",
            )
        case "backlog":
            waiting = f.pending_events or 0
            age = f.oldest_event_age or 0.0
            return check(
                age <= limits.max_backlog_age,
                f"{waiting} pending, oldest {age:.1f}s",
                f"{waiting} pending, oldest {age:.1f}s > {limits.max_backlog_age:g}s (publisher or workers "
                "down or too few)",
            )
        case "failed_events":
            failed = f.failed_events or 0
            return check(
                failed <= limits.max_failed,
                f"{failed} failed",
                f"{failed} signup events failed permanently (once fixed: profilesync replay --all, or "
                "replay --events if their failed jobs are gone)",
            )
        case "users_without_profiles":
            without = f.users_without_profiles or 0
            unrecorded = f.unrecorded_users or 0
            return check(
                unrecorded == 0,
                f"{without} without a profile, all in flight",
                f"{unrecorded} of {without} users without a profile have no signup event "
                "(run profilesync backfill)",
            )
        case "publishers":
            return _publishers(f, limits)
        case "snapshots":
            return _snapshots(f, limits)
    raise ValueError(f"unknown check {name}")


def _evaluate_objects(missing: list[str]) -> Check:
    if not missing:
        return Check("objects", "ok", "tables, functions, triggers and grants in place")
    shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
    return Check("objects", "fail", f"missing: {shown} (run profilesync migrate, or restore them)")


def _evaluate_definitions(outdated: list[str], drifted: list[str]) -> Check:
    if not outdated and not drifted:
        return Check("definitions", "ok", "every function, trigger, policy and grant as defined")
    parts = []
    if outdated:
        parts.append(f"not applied: {', '.join(outdated)}")
    if drifted:
        shown = "; ".join(drifted[:5]) + (f"; and {len(drifted) - 5} more" if len(drifted) > 5 else "")
        parts.append(f"drifted from its definition: {shown}")
    return Check("definitions", "fail", "; ".join(parts) + " (run profilesync migrate)")


def _publishers(f: Facts, limits: Thresholds) -> Check:
    alive = f.live_publishers or 0
    age = f.oldest_unclaimed_age
    if alive < limits.min_publishers:
        if alive == 0:
            return Check("publishers", "fail", "none alive: signups wait (start profilesync publisher)")
        return Check("publishers", "fail", f"{alive} alive, expected at least {limits.min_publishers}")
    if alive > 0 and age is not None and age > limits.safety_interval:
        return Check(
            "publishers",
            "fail",
            f"{alive} alive, but an event waits {age:.1f}s > {limits.safety_interval:g}s to be claimed "
            "(publisher stuck or disconnected: see its log)",
        )
    return Check("publishers", "ok", f"{alive} alive")


def _snapshots(f: Facts, limits: Thresholds) -> Check:
    held = f.oldest_snapshot
    if held is None or held.seconds <= limits.max_snapshot_age:
        age = f", oldest {held.seconds:.0f}s" if held is not None else ""
        return Check("snapshots", "ok", f"no snapshot older than {limits.max_snapshot_age:g}s{age}")
    return Check(
        "snapshots",
        "warn",
        f"pid {held.pid} ({held.application_name or 'no application_name'}, {held.state}) holds a snapshot "
        f"for {held.seconds:.0f}s ({held.xmin_age:,} transactions old): dead outbox rows pile up and polling "
        "slows down until that transaction ends",
    )


def healthy(checks: list[Check]) -> bool:
    return all(c.status != "fail" for c in checks)


def format_table(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"{c.status.upper():<4}  {c.name:<{width}}  {c.detail}" for c in checks]
    problems = sum(c.status == "fail" for c in checks)
    lines.append("healthy" if problems == 0 else f"{problems} problem(s)")
    return "\n".join(lines)


def format_json(checks: list[Check]) -> str:
    return json.dumps({"healthy": healthy(checks), "checks": [asdict(c) for c in checks]}, indent=2)


# -- I/O: read the facts -------------------------------------------------------------------------------------


def gather(settings: Settings) -> Facts:
    facts = Facts(listen_url=settings.listen_url)
    _gather_database(settings, facts)
    _gather_redis(settings, facts)
    return facts


def _gather_database(settings: Settings, facts: Facts) -> None:
    try:
        conn = db.connect(settings.database_url, autocommit=True, application_name="profilesync-doctor")
    except psycopg.Error as exc:
        reason = redact(first_line(exc)).removeprefix("connection failed: ")
        facts.errors["database"] = f"{redact(settings.database_url)} (DATABASE_URL) unreachable: {reason}"
        return
    with conn:
        for name, read in (
            ("migrations", _read_migrations),
            ("trigger", _read_trigger),
            ("objects", _read_objects),
            ("definitions", _read_definitions),
            ("backlog", _read_backlog),
            ("users_without_profiles", _read_without_profiles),
            ("publishers", _read_publishers),
            ("snapshots", _read_oldest_snapshot),
        ):
            try:
                read(conn, facts)
            except psycopg.Error as exc:
                facts.errors[name] = f"cannot read: {explain(exc, settings)}"
        if "backlog" in facts.errors:
            facts.errors["failed_events"] = facts.errors["backlog"]


def _read_migrations(conn: psycopg.Connection[Any], facts: Facts) -> None:
    facts.pending_migrations = [m.name for m in pending(conn)]


def _read_trigger(conn: psycopg.Connection[Any], facts: Facts) -> None:
    row = conn.execute(_TRIGGER, (SIGNUP_TRIGGER,)).fetchone()
    facts.trigger_enabled = row[0] if row else ""


def _read_objects(conn: psycopg.Connection[Any], facts: Facts) -> None:
    facts.missing_objects = objects.missing(conn, Context())


def _read_definitions(conn: psycopg.Connection[Any], facts: Facts) -> None:
    facts.outdated_definitions = definitions.outdated(conn, definitions.render(Context()))
    # A missing or disabled signup trigger is the `trigger` check's to report, once.
    own = {f"trigger {SIGNUP_TRIGGER} on auth.users {how}" for how in ("missing", "disabled", "replica only")}
    facts.drifted_objects = [line for line in definitions.drift(conn) if line not in own]


def _read_backlog(conn: psycopg.Connection[Any], facts: Facts) -> None:
    row = conn.execute(_BACKLOG).fetchone()
    assert row is not None
    facts.pending_events = int(row[0])
    facts.oldest_event_age = row[1]
    facts.failed_events = int(row[2])


def _read_without_profiles(conn: psycopg.Connection[Any], facts: Facts) -> None:
    row = conn.execute(_WITHOUT_PROFILES).fetchone()
    assert row is not None
    facts.users_without_profiles = int(row[0])
    facts.unrecorded_users = int(row[1])


def _read_publishers(conn: psycopg.Connection[Any], facts: Facts) -> None:
    row = conn.execute(_PUBLISHERS).fetchone()
    assert row is not None
    facts.live_publishers = int(row[0])
    facts.oldest_unclaimed_age = row[1]


def _read_oldest_snapshot(conn: psycopg.Connection[Any], facts: Facts) -> None:
    row = conn.execute(_OLDEST_SNAPSHOT).fetchone()
    if row is not None and row[3] is not None:
        facts.oldest_snapshot = Snapshot(int(row[0]), row[1] or "", row[2] or "", float(row[3]), int(row[4]))


def _gather_redis(settings: Settings, facts: Facts) -> None:
    client = connect_redis(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        facts.errors["redis"] = f"{redact(settings.redis_url)} (REDIS_URL) unreachable: {first_line(exc)}"
        client.close()
        return
    try:
        try:
            policy = client.config_get("maxmemory-policy")
            facts.maxmemory_policy = policy.get("maxmemory-policy")
        except redis.ResponseError:
            facts.maxmemory_policy = None
        queue = profiles_queue(client, settings.queue)
        facts.workers = len(Worker.all(queue=queue))
        facts.failed_jobs = FailedJobRegistry(queue=queue).count
    except redis.RedisError as exc:
        facts.errors["workers"] = facts.errors["failed_jobs"] = f"cannot read: {first_line(exc)}"
    finally:
        client.close()
