"""Progress for long work: one updating line on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 every: float = 5.0) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if not self.tty else 0.1
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.every and (self.total is None or done < self.total):
            return
        self._last = now
        elapsed = now - self.start
        if self.total:
            pct = 100.0 * done / self.total
            eta = (elapsed / done * (self.total - done)) if done else 0.0
            text = f"{self.label}: {done:,}/{self.total:,} ({pct:5.1f}%), {elapsed:5.1f} s, eta {eta:5.1f} s"
        else:
            text = f"{self.label}: {done:,}, {elapsed:5.1f} s"
        if extra:
            text += f"  {extra}"
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = True

    def done(self, message: str = "") -> None:
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line of its own (keeps the progress line below it on a terminal)."""
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()
