"""The soft delete racing a signup: GoTrue, the app and the worker all at one user within milliseconds."""

from __future__ import annotations

import heapq
import queue
import random
import threading
import time
import uuid
from contextlib import closing

import psycopg

from bench.chaos import schedule
from bench.chaos.schedule import Param
from bench.chaos.stage import Stage
from profilesync.devkit.postgrest import ensure_profile
from profilesync.devkit.signups import gotrue_signup, gotrue_soft_delete, make_signup

RACE_TIMEOUT = 30.0  # the race's actors end at the latest this long after their last user


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
    deleted: list[uuid.UUID] = []
    actors = [
        threading.Thread(target=_deleter, args=(stage, deletes, deleted), daemon=True),
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
        f"{len(deleted)} of {len(ids)} users soft-deleted {low} to {high} ms after their "
        f"signup; ensure_profile() on sign-in refused {len(refused)} {sorted(set(refused))} (deleted first)"
    )


def _deleter(
    stage: Stage, due: queue.Queue[tuple[float, uuid.UUID] | None], deleted: list[uuid.UUID]
) -> None:
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
                gotrue_soft_delete(conn, user_id)
                deleted.append(user_id)


def _signer_in(stage: Stage, users: queue.Queue[uuid.UUID | None], refused: list[str]) -> None:
    """The app on each user's sign-in: POST /rpc/ensure_profile (refused once the user is deleted)."""
    with closing(stage.connect()) as conn:
        while (user_id := users.get(timeout=RACE_TIMEOUT)) is not None:
            try:
                ensure_profile(conn, user_id)
            except psycopg.Error as exc:
                refused.append(exc.sqlstate or type(exc).__name__)
