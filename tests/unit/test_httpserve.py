"""The bounded HTTP server and the liveness record behind /healthz (sockets on 127.0.0.1, no database)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from profilesync import metrics
from profilesync.httpserve import Answer, BoundedHTTPServer
from profilesync.liveness import Liveness
from tests.harness import wait_for
from tests.scrape import get

CAP = 8


@pytest.fixture
def server() -> Iterator[BoundedHTTPServer]:
    def respond(path: str) -> Answer:
        return (200, b"ok\n", "text/plain") if path == "/healthz" else (404, b"no\n", "text/plain")

    served = BoundedHTTPServer(("127.0.0.1", 0), respond, max_connections=CAP, read_timeout=0.5)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    thread.join(5)
    assert not thread.is_alive()


def half_open(port: int, n: int) -> list[socket.socket]:
    clients = []
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(b"GET /healthz HTTP/1.1\r\n")  # never finished
        clients.append(client)
    return clients


def test_a_flood_costs_no_thread_keeps_at_most_the_cap_open_and_healthz_answers(
    server: BoundedHTTPServer,
) -> None:
    port = server.server_address[1]
    threads = threading.active_count()
    flood = half_open(port, 10 * CAP)
    try:
        assert threading.active_count() == threads
        assert wait_for(lambda: server.open_connections == CAP, timeout=5)
        assert get(port, "/healthz?x=1") == (200, "ok\n")  # a complete request is answered at once
        assert get(port, "/nothing")[0] == 404
    finally:
        for client in flood:
            client.close()


def test_a_connection_that_does_not_finish_its_request_in_time_is_closed(server: BoundedHTTPServer) -> None:
    (client,) = half_open(server.server_address[1], 1)
    with client:
        started = time.monotonic()
        for _ in range(20):  # a byte at a time does not extend the read timeout
            try:
                client.sendall(b"X")
            except OSError:
                break
            time.sleep(0.05)
        client.settimeout(5)
        assert client.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"POST /healthz HTTP/1.1\r\n\r\n", b"405"),
        (b"nonsense\r\n\r\n", b"400"),
        (b"GET " + b"x" * 9000, b"431"),
    ],
)
def test_what_is_not_a_get_is_answered_with_an_error(
    server: BoundedHTTPServer, request_: bytes, status: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as client:
        client.sendall(request_)
        assert client.recv(100).split()[1] == status


def test_liveness_names_the_server_that_failed_or_went_quiet() -> None:
    now = [100.0]
    liveness = Liveness(("database", "redis"), clock=lambda: now[0])
    assert liveness.problem(max_age=10) == "database: not reached yet"
    liveness.reached("database")
    liveness.reached("redis")
    assert liveness.problem(max_age=10) is None
    liveness.failed("redis", "Connection refused")
    assert liveness.problem(max_age=10) == "redis: Connection refused"
    now[0] += 1
    liveness.reached("redis")  # a contact after the failure heals it
    assert liveness.problem(max_age=10) is None
    now[0] += 11
    assert liveness.problem(max_age=10) == "database: no contact for 12s"
    assert liveness.quiet("redis") == 11


def test_a_cached_health_check_runs_at_most_once_per_interval() -> None:
    now, calls = [0.0], []
    check = metrics.cached(lambda: calls.append(now[0]) or None, 2.0, clock=lambda: now[0])
    for step in range(10):
        now[0] = step * 0.5
        assert check() is None
    assert calls == [0.0, 2.0, 4.0]
