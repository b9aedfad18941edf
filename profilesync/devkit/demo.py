"""`profilesync demo`: the whole system on this machine, with nothing configured.

Starts an embedded PostgreSQL (with the dev auth stub) and Redis, runs `profilesync publisher` and
`profilesync worker` as real subprocesses, simulates a mix of Supabase signups (email, phone,
anonymous, Google, GitHub, SSO) as `supabase_auth_admin` would insert them, and opens a chat conversation
right after each signup (the chat must wait for a profile that is still on its way). It shows live progress,
then the verification report, and exits 0 only if every user has exactly one profile and every chat insert
succeeded.

Like cli.py this is a composition root: it may import chat, publisher and worker code (lazily).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psycopg

from profilesync.config import Settings
from profilesync.devkit.children import Children, sigterm_interrupts
from profilesync.devkit.signups import Signup, insert_signup, make_signup, mixed_kinds
from profilesync.devkit.stats import percentile
from profilesync.errors import ProfileSyncError
from profilesync.logs import get_logger
from profilesync.ops.backfill import VerificationReport, format_report, verification_report
from profilesync.ops.progress import StatusLine

log = get_logger(__name__)


class DemoError(ProfileSyncError):
    """The demo could not run"""


# -- pure: statistics and what the operator sees -------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float | None:
    """A percentile, or None before there are values (the progress line shows `-`)."""
    return percentile(values, q) if values else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


@dataclass(frozen=True)
class Snapshot:
    """One progress sample."""

    elapsed: float
    signups: int
    target: int
    profiles: int
    queued: int
    latency_p50: float | None
    latency_p99: float | None
    chats: int
    failed: int


def format_progress(s: Snapshot) -> str:
    return (
        f"{s.elapsed:5.1f}s  signups {s.signups}/{s.target}  profiles {s.profiles}  queue {s.queued}  "
        f"latency p50 {_ms(s.latency_p50)} p99 {_ms(s.latency_p99)}  chats {s.chats}  failed {s.failed}"
    )


@dataclass
class Outcome:
    """The run's measurements, filled while it runs."""

    target: int
    signups: int = 0
    chats: int = 0
    signup_errors: dict[str, int] = field(default_factory=dict)
    chat_errors: dict[str, int] = field(default_factory=dict)
    signup_ms: list[float] = field(default_factory=list)
    chat_ms: list[float] = field(default_factory=list)
    profile_ms: list[float] = field(default_factory=list)  # signup commit → profile insert, database clock
    failed_jobs: int = 0
    conversations: int = 0
    load_seconds: float = 0.0
    total_seconds: float = 0.0
    process_exit_codes: dict[str, int | None] = field(default_factory=dict)

    @property
    def chat_failures(self) -> int:
        return sum(self.chat_errors.values())


def problems(outcome: Outcome, report: VerificationReport) -> list[str]:
    """Why the demo failed; empty when every user has exactly one profile and every chat insert succeeded."""
    found = []
    if outcome.signups != outcome.target:
        errors = ", ".join(f"{name} x{n}" for name, n in sorted(outcome.signup_errors.items()))
        found.append(f"only {outcome.signups} of {outcome.target} signups were made {errors}".strip())
    if not report.complete or report.profiles != report.users:
        found.append("not every user has exactly one profile (see the report)")
    if outcome.chat_failures:
        errors = ", ".join(f"{name} x{n}" for name, n in sorted(outcome.chat_errors.items()))
        found.append(f"{outcome.chat_failures} chat insert(s) failed: {errors}")
    if outcome.conversations != outcome.signups:
        found.append(f"{outcome.conversations} conversations for {outcome.signups} signups")
    if outcome.failed_jobs:
        found.append(f"{outcome.failed_jobs} failed job(s)")
    unclean = {name: code for name, code in outcome.process_exit_codes.items() if code != 0}
    if unclean:
        found.append(f"processes did not stop cleanly: {unclean}")
    return found


def format_summary(outcome: Outcome, report: VerificationReport) -> str:
    rate = outcome.signups / outcome.load_seconds if outcome.load_seconds > 0 else 0.0
    lines = [
        format_report(report),
        "demo",
        f"  signups                 {outcome.signups:>10,}  ({rate:,.0f}/s over {outcome.load_seconds:.1f}s)",
        f"  conversations           {outcome.conversations:>10,}",
        f"  chat failures           {outcome.chat_failures:>10,}",
        f"  failed jobs             {outcome.failed_jobs:>10,}",
        "  signup → profile        "
        f"p50 {_ms(_pct(outcome.profile_ms, 50))}  p99 {_ms(_pct(outcome.profile_ms, 99))}  "
        f"max {_ms(max(outcome.profile_ms, default=None))}",
        "  signup insert           "
        f"p50 {_ms(_pct(outcome.signup_ms, 50))}  p99 {_ms(_pct(outcome.signup_ms, 99))}",
        "  chat (incl. wait)       "
        f"p50 {_ms(_pct(outcome.chat_ms, 50))}  p99 {_ms(_pct(outcome.chat_ms, 99))}",
        f"  total run time          {outcome.total_seconds:>9.1f}s",
    ]
    found = problems(outcome, report)
    lines.append("demo " + ("PASSED" if not found else "FAILED:\n  - " + "\n  - ".join(found)))
    return "\n".join(lines)


# -- I/O ----------------------------------------------------------------------------------------------------

_PROFILE_LATENCIES = """
SELECT extract(epoch FROM p.created_at - u.created_at)::float8 * 1000
FROM public.user_profiles p JOIN auth.users u ON u.id = p.id
"""


@dataclass(frozen=True)
class DemoOptions:
    users: int = 1000
    workers: int = 2
    concurrency: int = 8
    rate: float = 250.0  # signups per second; 0 = as fast as the clients go
    timeout: float = 60.0  # seconds to wait for the last profiles after the last signup
    seed: int = 1


def run_demo(options: DemoOptions, base: Settings, out: TextIO = sys.stdout) -> int:
    from profilesync.devkit import discovery
    from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis

    started = time.monotonic()
    discovery.check(base)  # both missing servers in one line, before anything starts
    with ExitStack() as stack, sigterm_interrupts():
        try:
            bindir, redis_binary = discovery.postgres_bindir(base), discovery.redis_server(base)
            out.write(f"starting PostgreSQL ({bindir}) and Redis ({redis_binary}) …\n")
            out.flush()
            pg = EmbeddedPostgres(durable=False, bindir=bindir)
            stack.callback(pg.destroy)
            pg.start()
            redis_server = EmbeddedRedis(binary=redis_binary)
            stack.callback(redis_server.destroy)
            redis_server.start()
            logdir = Path(tempfile.mkdtemp(prefix="profilesync-demo-logs-"))
            settings = base.model_copy(
                update={"database_url": pg.url, "redis_url": redis_server.url, "listen_database_url": None}
            )
            return _run(options, settings, logdir, stack, out, started)
        except KeyboardInterrupt:
            out.write("\ninterrupted: stopping processes and servers …\n")
            out.flush()
            return 130


def _run(
    options: DemoOptions, settings: Settings, logdir: Path, stack: ExitStack, out: TextIO, started: float
) -> int:
    """Migrate, start the processes, run the load while showing progress, then verify and report."""
    _migrate(settings, logdir, out)
    outcome = Outcome(target=options.users)
    processes, queue, monitor = _start_pipeline(options, settings, logdir, stack, outcome, out)
    load_thread = _start_load(options, settings, stack, outcome)
    _show_progress(options, processes, monitor, queue, outcome, load_thread, started, out)
    outcome.process_exit_codes.update(processes.stop())
    return _verify(monitor, queue, outcome, logdir, started, out)


def _migrate(settings: Settings, logdir: Path, out: TextIO) -> None:
    from profilesync import db
    from profilesync.migrate import migrate

    with db.connect(settings.database_url, autocommit=True) as conn:
        applied = migrate(conn, dev_auth_stub=True).migrations
    out.write(
        f"PostgreSQL {settings.database_url}, Redis {settings.redis_url}: migrated ({len(applied)} "
        f"migrations, dev auth stub); process logs in {logdir} (kept if the demo fails)\n"
    )


def _start_pipeline(
    options: DemoOptions, settings: Settings, logdir: Path, stack: ExitStack, outcome: Outcome, out: TextIO
) -> tuple[Children, Any, psycopg.Connection[Any]]:
    """The publisher and workers as child processes, ready; the queue and a monitoring connection."""
    from profilesync import db
    from profilesync.queueing import connect_redis, profiles_queue

    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "LISTEN_DATABASE_URL": "",
        "PROFILESYNC_LISTEN_DATABASE_URL": "",
        "PROFILESYNC_LOG_FORMAT": "json",
    }
    processes = Children(env, logdir)
    stack.callback(lambda: outcome.process_exit_codes.update(processes.stop()))
    processes.start("publisher", "publisher")
    for n in range(options.workers):
        processes.start(f"worker-{n + 1}", "worker")

    redis_conn = connect_redis(settings.redis_url)
    stack.callback(redis_conn.close)
    queue = profiles_queue(redis_conn, settings.queue)
    monitor = db.connect(settings.database_url, autocommit=True, application_name="profilesync-demo")
    stack.enter_context(monitor)
    _await_processes(processes, monitor, queue, options.workers)
    pids = ", ".join(str(p.pid) for p in processes.running.values())
    out.write(
        f"publisher and {options.workers} worker(s) running (pids {pids}); "
        f"simulating {options.users} signups\n"
    )
    out.flush()
    return processes, queue, monitor


def _start_load(
    options: DemoOptions, settings: Settings, stack: ExitStack, outcome: Outcome
) -> threading.Thread:
    """The simulated users' thread: signups as the auth server inserts them, each followed by a chat."""
    from psycopg_pool import ConnectionPool

    from profilesync.chat import ChatService

    signup_pool = ConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=options.concurrency,
        kwargs={"autocommit": True, "options": "-c search_path=auth"},
        configure=_as_auth_admin,
        name="demo-signups",
    )
    stack.enter_context(signup_pool)
    chat_pool = ConnectionPool(
        settings.database_url, min_size=1, max_size=options.concurrency, name="demo-chat"
    )
    stack.enter_context(chat_pool)
    chat = stack.enter_context(ChatService(chat_pool, settings))

    load = _Load(options, outcome, signup_pool, chat)
    load_thread = threading.Thread(target=load.run, name="demo-load", daemon=True)
    stack.callback(load.stop.set)
    load_thread.start()
    return load_thread


def _show_progress(
    options: DemoOptions,
    processes: Children,
    monitor: psycopg.Connection[Any],
    queue: Any,
    outcome: Outcome,
    load_thread: threading.Thread,
    started: float,
    out: TextIO,
) -> None:
    """The live progress line, until every signup has its profile or `timeout` after the last signup."""
    line = StatusLine(out, plain_every=2.0)
    deadline: float | None = None
    while True:
        snapshot = _sample(monitor, queue, outcome, started)
        line.update(format_progress(snapshot))
        dead = processes.dead()
        if dead:
            line.finish()
            first = next(iter(dead))
            raise DemoError(f"{', '.join(dead)} exited early:\n{processes.log(first)[-2000:]}")
        if not load_thread.is_alive():
            deadline = deadline or time.monotonic() + options.timeout
            if snapshot.profiles >= outcome.signups or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    line.finish(format_progress(_sample(monitor, queue, outcome, started)))


def _verify(
    monitor: psycopg.Connection[Any], queue: Any, outcome: Outcome, logdir: Path, started: float, out: TextIO
) -> int:
    """The verification report and the summary; 0 when nothing went wrong (the logs are then removed)."""
    outcome.profile_ms = [row[0] for row in monitor.execute(_PROFILE_LATENCIES)]
    row = monitor.execute("SELECT count(*) FROM public.chat_conversations").fetchone()
    outcome.conversations = int(row[0]) if row else 0
    outcome.failed_jobs = _failed_jobs(queue)
    report = verification_report(monitor)
    outcome.total_seconds = time.monotonic() - started
    out.write(format_summary(outcome, report) + "\n")
    if problems(outcome, report):
        out.write(f"process logs kept in {logdir}\n")
        return 1
    shutil.rmtree(logdir, ignore_errors=True)
    out.write(NEXT_STEPS)
    return 0


NEXT_STEPS = """
next: run it on your own database (README, "Point it at your Supabase project"):
  export DATABASE_URL=… REDIS_URL=…      # your project's direct connection, as postgres; your Redis
  profilesync migrate                    # the trigger, the outbox and the grants
  profilesync publisher & profilesync worker &
  profilesync doctor --probe             # a rolled-back test signup proves the whole path
"""


def _as_auth_admin(conn: psycopg.Connection[Any]) -> None:
    """Sign users up as Supabase's auth server does: role supabase_auth_admin, search_path auth."""
    conn.execute("SET ROLE supabase_auth_admin")


def _await_processes(processes: Children, monitor: psycopg.Connection[Any], queue: Any, workers: int) -> None:
    from rq import Worker

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dead = processes.dead()
        if dead:
            first = next(iter(dead))
            raise DemoError(f"{first} exited at start:\n{processes.log(first)[-2000:]}")
        row = monitor.execute("SELECT count(*) FROM profile_sync.publishers WHERE idle").fetchone()
        if row and row[0] >= 1 and len(Worker.all(queue=queue)) >= workers:
            return
        time.sleep(0.1)
    raise DemoError("publisher and workers did not become ready within 60s")


def _failed_jobs(queue: Any) -> int:
    from rq.registry import FailedJobRegistry

    return int(FailedJobRegistry(queue=queue).count)


def _sample(monitor: psycopg.Connection[Any], queue: Any, outcome: Outcome, started: float) -> Snapshot:
    latencies = [row[0] for row in monitor.execute(_PROFILE_LATENCIES)]
    return Snapshot(
        elapsed=time.monotonic() - started,
        signups=outcome.signups,
        target=outcome.target,
        profiles=len(latencies),
        queued=int(queue.count),
        latency_p50=_pct(latencies, 50),
        latency_p99=_pct(latencies, 99),
        chats=outcome.chats,
        failed=_failed_jobs(queue) + outcome.chat_failures,
    )


class _Load:
    """Signups paced at `rate`, each followed at once by a chat conversation, from `concurrency` threads."""

    def __init__(self, options: DemoOptions, outcome: Outcome, signup_pool: Any, chat: Any) -> None:
        self.options = options
        self.outcome = outcome
        self.signup_pool = signup_pool
        self.chat = chat
        self.stop = threading.Event()
        self._lock = threading.Lock()
        kinds = mixed_kinds(options.users, random.Random(options.seed))
        self.signups = [make_signup(kind, uuid.uuid4()) for kind in kinds]

    def run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="demo-user") as pool:
            for n, s in enumerate(self.signups):
                pool.submit(self._one, s, start + n / self.options.rate if self.options.rate > 0 else start)
        self.outcome.load_seconds = time.monotonic() - start

    def _one(self, s: Signup, at: float) -> None:
        if self.stop.wait(max(0.0, at - time.monotonic())):
            return
        t0 = time.perf_counter()
        try:
            with self.signup_pool.connection() as conn:
                insert_signup(conn, s)
        except Exception as exc:  # counted and reported: the demo then fails
            self._count_error(self.outcome.signup_errors, exc, "signup failed", s)
            return
        t1 = time.perf_counter()
        with self._lock:
            self.outcome.signups += 1
            self.outcome.signup_ms.append((t1 - t0) * 1000)
        try:
            self.chat.create_conversation(s.id, title=f"Welcome ({s.kind})")
        except Exception as exc:  # counted and reported: the demo then fails
            self._count_error(self.outcome.chat_errors, exc, "chat insert failed", s)
            return
        t2 = time.perf_counter()
        with self._lock:
            self.outcome.chats += 1
            self.outcome.chat_ms.append((t2 - t1) * 1000)

    def _count_error(self, errors: dict[str, int], exc: Exception, message: str, s: Signup) -> None:
        log.warning(message, user_id=str(s.id), kind=s.kind, error=str(exc))
        with self._lock:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
