"""The `profilesync` command. The composition root: settings, logging and connections are made here."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from profilesync import db, logs
from profilesync.config import Settings, redact
from profilesync.errors import ProfileSyncError

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from profilesync.migrate import migrate

    with db.connect(settings.database_url, autocommit=True) as conn:
        applied = migrate(conn, dev_auth_stub=args.dev_auth_stub)
    print(
        f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else " (up to date)")
    )
    return 0


def cmd_publisher(args: argparse.Namespace, settings: Settings) -> int:
    from publisher.service import Publisher

    stop = threading.Event()
    _stop_on_signals(stop)
    logs.get_logger("profilesync").info(
        "publisher starting", database=redact(settings.database_url), listen=redact(settings.listen_url)
    )
    Publisher(settings, stop).run()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.main import run

    run(settings, burst=args.burst)
    return 0


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="profilesync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply SQL migrations (idempotent)")
    p.add_argument(
        "--dev-auth-stub", action="store_true", help="create a Supabase-like auth schema (plain Postgres)"
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("publisher", help="LISTEN for signups and enqueue profile jobs")
    p.set_defaults(func=cmd_publisher)

    p = sub.add_parser("worker", help="run an RQ worker on the profiles queue")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"profilesync: invalid settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    func: Command = args.func
    try:
        return func(args, settings)
    except ProfileSyncError as exc:
        print(f"profilesync: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
