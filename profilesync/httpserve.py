"""A small HTTP server for /metrics and /healthz that a flood of connections cannot starve.

One thread serves every connection (a selector loop): no thread per connection, however many arrive. At most
`max_connections` are open at a time; a new one beyond that closes the oldest one still sending its request.
Each connection has `read_timeout` seconds in total to send its request line and headers (one byte at a time
does not extend it), then it is closed. Every request is answered at once (GET only, no body read) and its
connection closed: no keep-alive. The answers must be cheap: they are computed in the serving thread.
"""

from __future__ import annotations

import contextlib
import http
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_CONNECTIONS = 64
READ_TIMEOUT = 5.0  # seconds a client has to send its whole request head
WRITE_TIMEOUT = 5.0  # seconds a client has to take the answer
MAX_HEAD = 8192  # bytes of request line and headers
_TICK = 0.5  # seconds between checks for expired connections and a shutdown request

Answer = tuple[int, bytes, str]
"""Status, body and content type of a response."""
Responder = Callable[[str], Answer]
"""The answer to GET of a path (query string removed)."""


@dataclass
class _Reading:
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class BoundedHTTPServer:
    """Bound at construction (OSError when the address is taken); serve_forever() in a thread of your own."""

    def __init__(
        self,
        address: tuple[str, int],
        respond: Responder,
        *,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._respond = respond
        self._max = max_connections
        self._read_timeout = read_timeout
        self._listener = socket.create_server(address, backlog=128)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._reading: dict[socket.socket, _Reading] = {}  # oldest first
        self._stop = threading.Event()
        self._stopped = threading.Event()

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        return len(self._reading)

    def serve_forever(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(self._next_timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._receive(key.fileobj)  # type: ignore[arg-type]
                self._expire()
        finally:
            for conn in list(self._reading):
                self._close(conn)
            self._selector.close()
            self._listener.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever and close every socket; returns once it has (or after a few seconds)."""
        self._stop.set()
        self._stopped.wait(5 * _TICK)

    def _next_timeout(self) -> float:
        if not self._reading:
            return _TICK
        oldest = next(iter(self._reading.values()))
        return min(_TICK, max(0.0, oldest.deadline - time.monotonic()))

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError:  # out of descriptors, or the client left already: make room, try later
                if self._reading:
                    self._close(next(iter(self._reading)))
                return
            if len(self._reading) >= self._max:
                self._close(next(iter(self._reading)))  # the oldest, still sending its request
            conn.setblocking(False)
            self._reading[conn] = _Reading(time.monotonic() + self._read_timeout)
            self._selector.register(conn, selectors.EVENT_READ)

    def _receive(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._close(conn)
            return
        head = self._reading[conn].head
        head += data
        if b"\r\n\r\n" in head or b"\n\n" in head:
            self._answer(conn, bytes(head))
        elif len(head) > MAX_HEAD:
            self._send(conn, (431, b"request head too large\n", "text/plain; charset=utf-8"))

    def _answer(self, conn: socket.socket, head: bytes) -> None:
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._send(conn, (400, b"bad request\n", "text/plain; charset=utf-8"))
        elif parts[0] != b"GET":
            self._send(conn, (405, b"only GET\n", "text/plain; charset=utf-8"))
        else:
            path = parts[1].decode("latin-1").split("?", 1)[0]
            self._send(conn, self._respond(path))

    def _send(self, conn: socket.socket, answer: Answer) -> None:
        status, body, content_type = answer
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            self._selector.unregister(conn)
            conn.settimeout(WRITE_TIMEOUT)
            conn.sendall(head.encode("latin-1") + body)
        except OSError:
            pass  # the client went away: nothing to answer
        finally:
            self._reading.pop(conn, None)
            conn.close()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._reading:
            conn, reading = next(iter(self._reading.items()))
            if reading.deadline > now:
                return
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        self._reading.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):  # never registered, or already unregistered
            self._selector.unregister(conn)
        conn.close()
