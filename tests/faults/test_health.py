"""/healthz of the real processes when their servers go away: 503 with a one-line reason, then 200 again."""

from __future__ import annotations

from profilesync.devkit.embedded import free_port
from tests.faults.cluster import Target
from tests.harness import wait_for
from tests.scrape import get

OK = (200, "ok\n")


def test_healthz_turns_503_with_a_reason_while_postgres_is_down(target: Target) -> None:
    ports = {"publisher": free_port(), "worker": free_port()}
    for name, port in ports.items():
        target.procs.start(name, name, env={"PROFILESYNC_METRICS_PORT": str(port)})
    for port in ports.values():
        assert wait_for(lambda port=port: get(port, "/healthz") == OK), target.procs.logs()[-3000:]

    target.servers.postgres.stop()
    try:
        for port in ports.values():
            assert wait_for(lambda port=port: get(port, "/healthz")[0] == 503), target.procs.logs()[-3000:]
        publisher, worker = (get(port, "/healthz")[1] for port in ports.values())
        assert publisher.startswith("connection lost: ") and publisher.count("\n") == 1, publisher
        assert worker.startswith("database: ") and worker.count("\n") == 1, worker
    finally:
        target.servers.postgres.start()

    for port in ports.values():
        assert wait_for(lambda port=port: get(port, "/healthz") == OK, timeout=30), target.procs.logs()[
            -3000:
        ]


def test_worker_healthz_turns_503_while_redis_is_down(target: Target) -> None:
    port = free_port()
    target.procs.start("worker", "worker", env={"PROFILESYNC_METRICS_PORT": str(port)})
    assert wait_for(lambda: get(port, "/healthz") == OK), target.procs.logs()[-3000:]
    target.servers.redis.stop()
    try:
        assert wait_for(lambda: get(port, "/healthz")[0] == 503)
        assert get(port, "/healthz")[1].startswith("redis: ")
    finally:
        target.servers.redis.start()
    assert wait_for(lambda: get(port, "/healthz") == OK, timeout=30), target.procs.logs()[-3000:]
