"""A progress display: one line rewritten in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, interval: float = 5.0, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self._last = float("-inf")  # the first update always shows
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last < 0.1 and not force:
                return
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            if now - self._last < self.interval and not force:
                return
            self.stream.write(text + "\n")
        self._last = now
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (the progress line, if any, is redrawn after it)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
