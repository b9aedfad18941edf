"""The faults, one small function each: do it, undo it (restart, release, close), say what happened.

Every fault is bounded in time and leaves nothing behind: a killed process is started again as a supervisor
would, a restarted server is up again, a lock is released, every flood socket is closed.
"""

from __future__ import annotations

import heapq
import os
import queue
import random
import resource
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.chaos import schedule
from bench.chaos.schedule import Param
from profilesync.devkit.children import Children
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from profilesync.devkit.postgrest import ensure_profile
from profilesync.devkit.signups import gotrue_signup, make_signup, soft_delete

CONNECT_TIMEOUT = 2
LOCK_WAIT = "5s"  # a lock fault that cannot get its lock within this gives up (and says so)
RACE_TIMEOUT = 30.0  # the race's actors end at the latest this long after their last user
FLOOD_IN_FLIGHT = 200  # connects in progress at once
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line that ends it never comes


@dataclass
class Stage:
    """What the faults act on: the soak's own servers, database and processes."""

    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    database_url: str
    children: Children
    metrics_ports: dict[str, int]
    soft_deleted: list[str]

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def kill_process(stage: Stage, process: Param) -> str:
    """kill -9 of the process's group, then started again at once, as a supervisor does."""
    name = str(process)
    pid = stage.children.running[name].pid if name in stage.children.running else None
    stage.children.restart(name)
    return f"SIGKILL {name} (pid {pid}), started again (pid {stage.children.running[name].pid})"


def postgres_restart(stage: Stage) -> str:
    """pg_ctl stop -m fast (every session terminated, a checkpoint), then start."""
    started = time.monotonic()
    stage.postgres.stop("fast")
    stage.postgres.start()
    return f"PostgreSQL down and up again in {time.monotonic() - started:.1f} s"


def redis_restart(stage: Stage) -> str:
    """Redis stopped and started again, without persistence: every job, registry and worker key gone."""
    started = time.monotonic()
    stage.redis.restart()
    return f"Redis down and up again in {time.monotonic() - started:.1f} s, empty"


_TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'profilesync%' AND pid <> pg_backend_pid()
"""


def terminate_backends(stage: Stage, seconds: Param) -> str:
    """Every profilesync backend terminated, once a second for `seconds` s (a failover that flaps)."""
    terminated = 0
    with closing(stage.connect()) as conn:
        for n in range(int(seconds)):
            row = conn.execute(_TERMINATE).fetchone()
            terminated += int(row[0]) if row else 0
            if n + 1 < int(seconds):
                time.sleep(1.0)
    return f"{terminated} backends terminated in {int(seconds)} rounds"


def lock_table(stage: Stage, table: Param, seconds: Param) -> str:
    """ACCESS EXCLUSIVE on the table for `seconds` s, then released (a migration or VACUUM FULL)."""
    with closing(stage.connect()) as conn:
        conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
        asked = time.monotonic()
        with conn.transaction(force_rollback=True):
            try:
                conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # table: one of ours
            except psycopg.errors.LockNotAvailable:
                return f"could not lock {table} within {LOCK_WAIT}: not injected"
            waited = time.monotonic() - asked
            time.sleep(float(seconds))
    return f"{table} locked for {float(seconds):.1f} s (after waiting {waited:.2f} s for the lock)"


def soft_delete_race(stage: Stage, users: Param, seed: Param) -> str:
    """`users` GoTrue signups back to back; each user's app calls ensure_profile() on sign-in at once, and
    GoTrue's SoftDeleteUser (another connection) deletes the user 5 to 40 ms after its signup: three actors
    racing the worker that is creating the same profile."""
    rng = random.Random(int(seed))
    low, high = schedule.RACE_DELAY_MS
    delays = [rng.uniform(low, high) / 1000 for _ in range(int(users))]
    kinds = [rng.choice(("email", "google", "github")) for _ in delays]
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in delays]
    deletes: queue.Queue[tuple[float, uuid.UUID] | None] = queue.Queue()
    sign_ins: queue.Queue[uuid.UUID | None] = queue.Queue()
    refused: list[str] = []
    before = len(stage.soft_deleted)
    actors = [
        threading.Thread(target=_deleter, args=(stage, deletes), daemon=True),
        threading.Thread(target=_signer_in, args=(stage, sign_ins, refused), daemon=True),
    ]
    for actor in actors:
        actor.start()
    try:
        with closing(stage.connect()) as auth:
            for user_id, kind, delay in zip(ids, kinds, delays, strict=True):
                gotrue_signup(auth, make_signup(kind, user_id))
                sign_ins.put(user_id)
                deletes.put((time.monotonic() + delay, user_id))
    finally:
        deletes.put(None)
        sign_ins.put(None)
        for actor in actors:
            actor.join(RACE_TIMEOUT)
    return (
        f"{len(stage.soft_deleted) - before} of {len(ids)} users soft-deleted {low} to {high} ms after their "
        f"signup; ensure_profile() on sign-in refused {len(refused)} {sorted(set(refused))} (deleted first)"
    )


def _deleter(stage: Stage, due: queue.Queue[tuple[float, uuid.UUID] | None]) -> None:
    """GoTrue's SoftDeleteUser for each user at its time (they come in signup order, 5 to 40 ms apart)."""
    pending: list[tuple[float, uuid.UUID]] = []  # a heap
    done = False
    with closing(stage.connect()) as conn:
        while not done or pending:
            timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else RACE_TIMEOUT
            try:
                item = due.get(timeout=timeout)
                if item is None:
                    done = True
                else:
                    heapq.heappush(pending, item)
            except queue.Empty:
                if not pending:
                    return  # the signer is gone
            while pending and pending[0][0] <= time.monotonic():
                user_id = heapq.heappop(pending)[1]
                soft_delete(conn, user_id)
                stage.soft_deleted.append(str(user_id))


def _signer_in(stage: Stage, users: queue.Queue[uuid.UUID | None], refused: list[str]) -> None:
    """The app on each user's sign-in: POST /rpc/ensure_profile (refused once the user is deleted)."""
    with closing(stage.connect()) as conn:
        while (user_id := users.get(timeout=RACE_TIMEOUT)) is not None:
            try:
                ensure_profile(conn, user_id)
            except psycopg.Error as exc:
                refused.append(exc.sqlstate or type(exc).__name__)


def _healthz(port: int) -> bool:
    """Whether /healthz answers at all (any status) within a second."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def _enough_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class _HalfOpen:
    """Connections that each sent HALF_REQUEST, many connecting at once (non-blocking); closed with `sockets`.

    A server with a short listen backlog accepts them only as fast as it starts a thread for each, so the
    flood keeps connecting for as long as it lasts."""

    def __init__(self, port: int, limit: int, sockets: ExitStack) -> None:
        self.port, self.limit, self.sockets = port, limit, sockets
        self.opened = 0
        self.connecting: dict[int, socket.socket] = {}
        self.selector = sockets.enter_context(selectors.DefaultSelector())

    def step(self, timeout: float) -> None:
        """Start connects up to FLOOD_IN_FLIGHT, then wait at most `timeout` s for some to complete."""
        while self.opened + len(self.connecting) < self.limit and len(self.connecting) < FLOOD_IN_FLIGHT:
            sock = self.sockets.enter_context(socket.socket())
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self.selector.register(sock, selectors.EVENT_WRITE)
            self.connecting[sock.fileno()] = sock
        if not self.connecting:
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout=timeout):
            sock = self.connecting.pop(key.fd)
            self.selector.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                with suppress(OSError):
                    sock.send(HALF_REQUEST)
                    self.opened += 1
            else:
                sock.close()


def _threads(pid: int) -> int | None:
    """The process's threads (Linux /proc), None where that cannot be read."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def healthz_flood(stage: Stage, process: Param, connections: Param, seconds: Param) -> str:
    """Up to `connections` half-open requests to the process's /healthz (the request never ends), opened
    throughout `seconds` s and all held to the end, while /healthz is probed once a second. Halfway, every
    profilesync backend is terminated once: the processes must reconnect under the flood, as after any
    database hiccup."""
    name, hold = str(process), float(seconds)
    port = stage.metrics_ports[name]
    _enough_open_files(int(connections) + FLOOD_IN_FLIGHT + 512)
    answered = probes = terminated = 0
    started = time.monotonic()
    next_probe, halfway = started, started + hold / 2
    with ExitStack() as sockets:
        flood = _HalfOpen(port, int(connections), sockets)
        while (now := time.monotonic()) < started + hold:
            if now >= next_probe:
                probes, answered, next_probe = probes + 1, answered + _healthz(port), now + 1.0
            if halfway and now >= halfway:
                with closing(stage.connect()) as conn:
                    row = conn.execute(_TERMINATE).fetchone()
                terminated, halfway = int(row[0]) if row else 0, 0.0
            flood.step(min(0.1, max(0.0, started + hold - now)))
        threads = _threads(stage.children.running[name].pid) if name in stage.children.running else None
    return (
        f"{flood.opened} half-open connections to {name} in {hold:.1f} s ({threads} threads in it then), "
        f"{terminated} backends terminated halfway; /healthz answered {answered} of {probes} probes"
    )


FAULTS: dict[str, Callable[..., str]] = {
    schedule.KILL: kill_process,
    schedule.POSTGRES_RESTART: postgres_restart,
    schedule.REDIS_RESTART: redis_restart,
    schedule.TERMINATE: terminate_backends,
    schedule.LOCK: lock_table,
    schedule.SOFT_DELETE_RACE: soft_delete_race,
    schedule.FLOOD: healthz_flood,
}
