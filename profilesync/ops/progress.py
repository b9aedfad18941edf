"""Live progress for the operator commands: one refreshing line on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def bar(done: int, total: int, width: int = 24) -> str:
    """`[######----------]  37%`; an empty total counts as complete."""
    fraction = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}"


class StatusLine:
    """Rewrites one line in place on a TTY; elsewhere (logs, CI) prints a line every `plain_every` seconds."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        plain_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._plain_every = plain_every
        self._clock = clock
        self._last_plain: float | None = None
        self._width = 0
        self._last_text = ""
        self._last_printed = ""

    def update(self, text: str) -> None:
        self._last_text = text
        if self._tty:
            padding = " " * max(0, self._width - len(text))
            self._stream.write(f"\r{text}{padding}")
            self._width = len(text)
            self._stream.flush()
            return
        now = self._clock()
        if self._last_plain is None or now - self._last_plain >= self._plain_every:
            self._last_plain = now
            self._last_printed = text
            self._stream.write(text + "\n")
            self._stream.flush()

    def finish(self, text: str | None = None) -> None:
        """End the line: on a TTY keep the last state visible; elsewhere print the final state once."""
        final = self._last_text if text is None else text
        if self._tty:
            self.update(final)
            self._stream.write("\n")
        elif final and final != self._last_printed:
            self._last_printed = final
            self._stream.write(final + "\n")
        self._stream.flush()
