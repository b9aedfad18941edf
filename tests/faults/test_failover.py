"""A failover as the services see it: every backend of theirs terminated, again and again, during signups."""

from __future__ import annotations

import threading
import time

import pytest

from tests.faults.cluster import Target
from tests.faults.figures import Row, finish, settle
from tests.harness import bulk_signup

pytestmark = pytest.mark.faults

FAILOVER_S = 30.0  # how long backends keep being terminated
TICK_S = 1.0  # one round of terminations per tick, as a failing-over server or a pooler resets them
SIGNUPS_PER_TICK = 67  # about 2,000 signups during the failover
RECOVERY_BOUND = 30.0  # every user profiled within this many seconds of the last termination
LONGEST_WAIT = """
SELECT coalesce(max(extract(epoch FROM p.created_at - u.created_at)), 0)::float8
FROM auth.users u JOIN public.user_profiles p ON p.id = u.id
"""


def test_backends_terminated_every_second_recover_within_seconds(target: Target) -> None:
    target.start_pipeline(workers=2)
    pace = threading.Event()  # never set: its bounded wait paces the fault, nothing waits on a condition
    signups = terminated = 0
    ends = time.monotonic() + FAILOVER_S
    while time.monotonic() < ends:
        bulk_signup(target.conn, SIGNUPS_PER_TICK)
        signups += SIGNUPS_PER_TICK
        pace.wait(TICK_S / 2)  # the jobs of these signups are in flight when the next round lands
        terminated += target.terminate_backends()
        pace.wait(TICK_S / 2)
    last_termination = time.monotonic()
    state, recovery = settle(target, since=last_termination, bound=RECOVERY_BOUND)
    assert state.profiles == signups
    assert state.duplicated == 0
    longest = target.conn.execute(LONGEST_WAIT).fetchone()[0]  # type: ignore[index]
    faults = (
        f"{terminated} backends terminated over {FAILOVER_S:.0f} s, one round a second; "
        f"longest signup→profile {longest:.1f} s"
    )
    finish(target, Row("profilesync backends terminated every second", signups, faults, state, recovery))
