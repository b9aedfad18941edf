"""The soak itself: private servers, real `profilesync` processes, steady signups, the faults on schedule, a
supervisor restarting whatever died, then the audit. Everything it starts is stopped on the way out, on
Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
import redis
from rq import Worker

from bench.chaos import audit, schedule
from bench.chaos.faults import FAULTS
from bench.chaos.load import SteadySignups
from bench.chaos.schedule import Planned, Ran
from bench.chaos.stage import Stage
from bench.servers import Servers
from profilesync.devkit.children import Children, sigterm_interrupts
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from profilesync.devkit.faults import AUDIT, LOST, OUTBOX, QUICK_TIMERS, WORKER_KILL_BOUND, child_env
from profilesync.queueing import profiles_queue

START_TIMEOUT = 60.0
QUIET_TIMEOUT = 30.0
POLL = 0.2


@dataclass(frozen=True)
class ChaosOptions:
    minutes: float
    seed: int = 1
    rate: float = 20.0  # signups per second
    senders: int = 4
    interval: tuple[float, float] = (20.0, 40.0)  # seconds between faults
    workers: int = 2
    flood: int = 1100  # half-open connections per /healthz flood
    open_files: int = 1024  # the children's soft limit (a service manager's usual default)
    settle: float = float(WORKER_KILL_BOUND)  # seconds after the load for the last users to get a profile

    @property
    def processes(self) -> tuple[str, ...]:
        return ("publisher", *(f"worker-{n}" for n in range(1, self.workers + 1)))


@dataclass
class Soak:
    """What happened, filled as it runs."""

    options: ChaosOptions
    planned: list[Planned]
    ran: list[Ran] = field(default_factory=list)
    exits: list[dict[str, Any]] = field(default_factory=list)  # processes that died on their own, when
    stop_codes: dict[str, int | None] = field(default_factory=dict)
    keep_logs: bool = False  # the processes' logs outlive the run when it failed


def _scalar(url: str, query: str) -> int | None:
    """One count, or None while PostgreSQL does not answer."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(query.encode()).fetchone()
            return int(row[0]) if row else None
    except psycopg.OperationalError:
        return None


def _wait(predicate: Callable[[], bool], timeout: float, tick: Callable[[], None]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        tick()
        time.sleep(POLL)
    return predicate()


def _workers(redis_url: str) -> int:
    try:
        with redis.Redis.from_url(redis_url, socket_timeout=2) as conn:
            return int(Worker.count(connection=conn))
    except redis.RedisError:
        return 0


def _quiet(redis_url: str) -> bool:
    """No job queued, running or waiting for a retry: every delivery, redundant or not, has run."""
    try:
        with redis.Redis.from_url(redis_url, socket_timeout=2) as conn:
            queue = profiles_queue(conn)
            registries = (queue.started_job_registry, queue.scheduled_job_registry)
            return queue.count == 0 and all(registry.count == 0 for registry in registries)
    except redis.RedisError:
        return False


class Supervisor:
    """Starts a process again when it died on its own, as systemd or Docker would; records that it died."""

    def __init__(self, children: Children, soak: Soak, out: TextIO) -> None:
        self.children = children
        self.soak = soak
        self.out = out

    def tick(self) -> None:
        for name, code in self.children.dead().items():
            self.soak.exits.append({"process": name, "exit_code": code, "at": round(time.time(), 1)})
            self.out.write(f"  supervisor: {name} exited ({code}) on its own; started again\n")
            self.children.restart(name)


def run(options: ChaosOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """The soak; returns the results (see bench.chaos.report). Raises KeyboardInterrupt after cleaning up."""
    duration = options.minutes * 60
    planned = schedule.plan(options.seed, duration, options.interval, options.processes, options.flood)
    soak = Soak(options, planned)
    out.write(f"chaos soak: {options.minutes:g} min, seed {options.seed}, {len(planned)} faults planned:\n")
    for p in planned:
        out.write(f"  {p.at:7.1f} s  {p.describe()}\n")
    out.flush()
    started = time.monotonic()
    with ExitStack() as stack, sigterm_interrupts():
        stage, servers, logdir = _start(stack, soak)
        supervisor = Supervisor(stage.children, soak, out)
        load = SteadySignups(stage.database_url, options.rate, duration, options.senders, options.seed)
        stack.callback(load.stop.set)
        load.start()
        out.write(f"signups: {options.rate:g}/s from {options.senders} connections; logs in {logdir}\n")
        out.flush()
        _inject(load, stage, soak, supervisor, out)
        if not load.join(timeout=60):
            raise RuntimeError("signup senders did not finish")
        _settle(stage, options, supervisor, out)
        with closing(stage.connect()) as conn:
            facts = audit.gather(conn)
        soak.stop_codes.update(stage.children.stop())
        results = _results(soak, facts, load, servers, time.monotonic() - started)
        if not all(check["ok"] for check in results["checks"]):
            soak.keep_logs = True
            out.write(f"process logs kept in {logdir}\n")
        return results


def _start(stack: ExitStack, soak: Soak) -> tuple[Stage, Servers, Path]:
    """Private servers, the migrated and audited database, the processes (each with a /healthz port)."""
    options = soak.options
    postgres = EmbeddedPostgres(durable=True)
    stack.callback(postgres.destroy)
    postgres.start()
    redis_server = EmbeddedRedis()
    stack.callback(redis_server.destroy)
    redis_server.start()
    servers = Servers(postgres.url, redis_server.url, embedded=True)
    servers.build_template()
    database_url = servers.database("chaos", AUDIT)
    logdir = Path(tempfile.mkdtemp(prefix="bench-chaos-logs-"))
    stack.callback(_remove_unless_kept, soak, logdir)
    children = Children(child_env(database_url, redis_server.url), logdir, open_files=options.open_files)
    stack.callback(lambda: soak.stop_codes.update(children.stop()))
    ports = {name: free_port() for name in options.processes}
    for name in options.processes:
        command = "publisher" if name == "publisher" else "worker"
        children.start(name, command, env={"PROFILESYNC_METRICS_PORT": str(ports[name])})
    ready = _wait(
        lambda: (
            bool(_scalar(database_url, "SELECT count(*) FROM profile_sync.publishers WHERE idle"))
            and _workers(redis_server.url) >= options.workers
        ),
        START_TIMEOUT,
        lambda: None,
    )
    if not ready:
        soak.keep_logs = True
        raise RuntimeError(f"publisher and workers not ready in {START_TIMEOUT:.0f} s; logs in {logdir}")
    return Stage(postgres, redis_server, database_url, children, ports), servers, logdir


def _remove_unless_kept(soak: Soak, logdir: Path) -> None:
    if not soak.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)


def _settle(stage: Stage, options: ChaosOptions, supervisor: Supervisor, out: TextIO) -> None:
    """After the load: until every live user has a profile and every job ran (bounded by `settle`)."""
    ended = time.monotonic()
    settled = _wait(
        lambda: _scalar(stage.database_url, LOST) == 0 and _scalar(stage.database_url, OUTBOX) == 0,
        options.settle,
        supervisor.tick,
    )
    quiet = _wait(lambda: _quiet(stage.redis.url), QUIET_TIMEOUT, supervisor.tick)
    verdict = "settled" if settled else "NOT settled"
    jobs = "" if quiet else ", jobs still queued or running"
    out.write(f"after the load: {verdict} in {time.monotonic() - ended:.1f} s{jobs}\n")


def _inject(load: SteadySignups, stage: Stage, soak: Soak, supervisor: Supervisor, out: TextIO) -> None:
    """The faults at their planned times while the signups run; the supervisor between them."""
    pending = list(soak.planned)
    while load.running():
        supervisor.tick()
        if pending and time.time() >= load.start_at + pending[0].at:
            planned = pending.pop(0)
            began = time.time()
            note = FAULTS[planned.kind](stage, **planned.params)
            soak.ran.append(Ran(planned, began, time.time(), note))
            out.write(f"  [{began - load.start_at:7.1f} s] {planned.describe()}: {note}\n")
            out.flush()
            continue
        time.sleep(POLL)
    for planned in pending:
        out.write(f"  not run (the load had ended): {planned.describe()}\n")


def _results(
    soak: Soak, facts: audit.Facts, load: SteadySignups, servers: Servers, seconds: float
) -> dict[str, Any]:
    options = soak.options
    checks = audit.checks(facts, load.attempts, soak.ran, soak.stop_codes)
    return {
        "meta": {
            "kind": "chaos",
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"python -m bench --chaos {options.minutes:g} --seed {options.seed}",
            "options": {**asdict(options), "interval": list(options.interval)},
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "timers": QUICK_TIMERS,
            "seconds": round(seconds, 1),
            **servers.versions(),
        },
        "faults": [
            {
                "at_s": round(r.started - load.start_at, 1),
                "fault": r.planned.kind,
                "params": r.planned.params,
                "took_s": round(r.ended - r.started, 1),
                "note": r.note,
                "worst_wait_s": worst,
            }
            for r, worst in zip(soak.ran, audit.worst_wait_after(soak.ran, facts.waits), strict=True)
        ],
        "checks": [asdict(check) for check in checks],
        "figures": {
            **audit.figures(facts, load.attempts, soak.ran),
            "exited_on_their_own": [
                {**gone, "at": round(gone["at"] - load.start_at, 1)} for gone in soak.exits
            ],
            "exit_codes_at_stop": soak.stop_codes,
        },
    }
