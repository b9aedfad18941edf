"""A worker exits promptly: `--burst` on an empty queue, and a stop whatever its command thread is doing.

RQ's command thread waits up to 60 s at a time for a message; a worker whose exit waited for that wait took a
minute to leave a burst, and the finished jobs' 5 s / 60 s result TTLs ran out meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from rq.serializers import JSONSerializer

from profilesync.config import Settings
from profilesync.queueing import connect_redis, profiles_queue
from profilesync.worker import runtime
from profilesync.worker.main import ProfileSyncWorker
from tests.harness import process_env, wait_for

EXIT_BOUND = 20.0  # seconds for a stop; a healthy one takes well under one, the stall took 60
PROCESS_BOUND = 40.0  # seconds for a whole `worker --burst` process on a busy machine (usually 1-3)


def test_worker_burst_on_an_empty_queue_exits_promptly(settings: Settings) -> None:
    env = process_env(settings)
    for _ in range(3):  # the stall was a race: one run in six on a loaded machine
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "profilesync.cli", "worker", "--burst"],
            env=env,
            capture_output=True,
            timeout=90,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        assert elapsed < PROCESS_BOUND, f"worker --burst took {elapsed:.1f}s"


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
