"""A worker's stop is prompt whatever its command thread is doing (the processes' exits: test_processes).

RQ's command thread waits up to 60 s at a time for a message; a worker whose exit waited for that wait took a
minute to leave a burst, and the finished jobs' 5 s / 60 s result TTLs ran out meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from rq.serializers import JSONSerializer

from profilesync.config import Settings
from profilesync.queueing import connect_redis, profiles_queue
from profilesync.worker import runtime
from profilesync.worker.main import ProfileSyncWorker
from tests.harness import wait_for

EXIT_BOUND = 20.0  # seconds for a stop; a healthy one takes well under one, the stall took 60


def test_a_worker_whose_command_thread_saw_the_unsubscribe_reply_still_exits_promptly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving that stalled, made certain: the command thread handles the UNSUBSCRIBE reply and is
    back in its wait before the worker stops the thread."""
    runtime.configure(settings)
    redis_conn = connect_redis(settings.redis_url)
    worker = ProfileSyncWorker(
        [profiles_queue(redis_conn, settings.queue)], connection=redis_conn, serializer=JSONSerializer
    )
    try:
        worker.subscribe()
        pubsub: Any = worker.pubsub
        assert wait_for(lambda: pubsub.subscribed, timeout=10)
        send_unsubscribe = pubsub.unsubscribe

        def unsubscribe_then_let_the_thread_loop(*args: Any) -> Any:
            result = send_unsubscribe(*args)
            assert wait_for(lambda: not pubsub.subscribed, timeout=10)  # the thread handled the reply
            time.sleep(0.3)  # and went back to its loop before the worker goes on
            return result

        monkeypatch.setattr(pubsub, "unsubscribe", unsubscribe_then_let_the_thread_loop)
        stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
        stopping.start()
        stopping.join(timeout=EXIT_BOUND)
        assert not stopping.is_alive(), "the worker waited for its command thread's 60 s wait"
        assert not worker.pubsub_thread.is_alive()
    finally:
        runtime.close()
        redis_conn.close()
