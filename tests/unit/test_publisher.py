from __future__ import annotations

import time

from profilesync.config import Settings
from profilesync.publisher.service import Publisher


def test_publisher_lingers_only_once_signups_stream_fast() -> None:
    publisher = Publisher(Settings(listen_database_url=None))
    assert not publisher._steady(1)  # a lone signup: back to NOTIFY
    assert not publisher._steady(2)  # two at once are no stream yet
    assert publisher._steady(40)  # dozens within the rate's horizon: linger
    publisher._arrivals.at = time.monotonic() - 5.0  # the stream stopped long ago
    assert not publisher._steady(1)
    assert not publisher._keep_lingering(0.0)
