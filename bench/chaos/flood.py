"""A half-open /healthz flood: connections whose request never ends, each holding a thread of the process
(without a read timeout or a connection cap) until the flood lets go."""

from __future__ import annotations

import os
import resource
import selectors
import socket
import time
from contextlib import ExitStack, closing, suppress

from bench.chaos.schedule import Param
from bench.chaos.stage import TERMINATE, Stage

FLOOD_IN_FLIGHT = 200  # connects in progress at once
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # the blank line that ends it never comes


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
                    row = conn.execute(TERMINATE).fetchone()
                terminated, halfway = int(row[0]) if row else 0, 0.0
            flood.step(min(0.1, max(0.0, started + hold - now)))
        threads = _threads(stage.children.running[name].pid) if name in stage.children.running else None
    return (
        f"{flood.opened} half-open connections to {name} in {hold:.1f} s ({threads} threads in it then), "
        f"{terminated} backends terminated halfway; /healthz answered {answered} of {probes} probes"
    )
