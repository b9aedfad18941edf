"""`profilesync backfill` as the operator watches it: progress lines while users are scanned and while the
workers create the profiles, then one summary line each (the work itself is in ops.backfill)."""

from __future__ import annotations

import time
from typing import Any, TextIO

import psycopg

from profilesync.catalog import SEED_TABLE, ProfileTable
from profilesync.ops import backfill
from profilesync.ops.progress import StatusLine, bar


def record_showing_progress(
    conn: psycopg.Connection[Any],
    chunk_size: int,
    progress: TextIO,
    out: TextIO,
    profile: ProfileTable = SEED_TABLE,
) -> backfill.BackfillResult:
    """Record an event for every user without a profile, a progress bar over the users scanned."""
    total = backfill.count_users(conn)
    line = StatusLine(progress)
    result = backfill.record_missing(
        conn,
        chunk_size=chunk_size,
        on_chunk=lambda scanned, recorded: line.update(
            f"scanning users {bar(scanned, total)} {scanned:,}/{total:,}  recorded {recorded:,}"
        ),
        profile=profile,
    )
    line.finish()
    rate = result.scanned / result.seconds if result.seconds > 0 else 0.0
    print(
        f"recorded {result.recorded:,} of {result.scanned:,} users in {result.chunks} chunk(s), "
        f"{result.seconds:.1f}s ({rate:,.0f} users/s scanned)",
        file=out,
    )
    return result


def wait_showing_progress(
    conn: psycopg.Connection[Any], recorded: int, timeout: float, progress: TextIO, out: TextIO
) -> bool:
    """Wait (at most `timeout` s) until the recorded events are done, a progress bar over the profiles."""
    line = StatusLine(progress)
    started = time.monotonic()

    def show(pending: int) -> None:
        done = max(0, recorded - pending)
        elapsed = time.monotonic() - started
        rate = f"  {done / elapsed:,.0f}/s" if elapsed >= 1 else ""
        line.update(f"creating profiles {bar(done, recorded)} {done:,}/{recorded:,}{rate}")

    drained = backfill.wait_until_drained(conn, timeout=timeout, on_progress=show)
    line.finish()
    print(f"profiles created in {time.monotonic() - started:.1f}s after recording", file=out)
    if not drained:
        print(f"gave up waiting after {timeout:g}s: are the publisher and workers running?", file=out)
    return drained
