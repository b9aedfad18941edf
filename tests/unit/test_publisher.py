from __future__ import annotations

import time

from profilesync.config import Settings
from profilesync.publisher.service import LINGER_QUIET, Publisher


def test_publisher_lingers_only_while_signups_come_faster_than_the_quiet_window() -> None:
    publisher = Publisher(Settings(listen_database_url=None))
    assert not publisher._steady(1)  # a lone signup: back to NOTIFY
    assert publisher._steady(1)  # a second one right after it: signups are streaming
    publisher._last_event = time.monotonic() - 2 * LINGER_QUIET
    assert not publisher._steady(1)  # the stream paused: alone again
    publisher._last_event = time.monotonic() - 2 * LINGER_QUIET
    assert publisher._steady(2)  # several events in one wake-up: a stream
