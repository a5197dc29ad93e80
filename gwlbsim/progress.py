"""Progress for long work: one line rewritten in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A progress display for the command lines (``gwlbsim``, ``gwlb-fuzz``).

    :meth:`line` shows free text, :meth:`update` a count (``label: done/total (pct), elapsed, eta``),
    :meth:`note` a line of its own above the progress line, :meth:`done` ends it. On a terminal the progress
    line is rewritten at most ten times a second; otherwise a line is printed every ``every`` seconds (the
    first one at once, and whenever ``force`` is given).
    """

    def __init__(self, label: str = "", total: int | None = None, stream: TextIO | None = None, *,
                 every: float = 5.0, tty: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every
        self.start = time.monotonic()
        self._last = float("-inf")  # the first line always shows
        self._width = 0  # of the progress line on the terminal (0: none shown)

    def line(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < (0.1 if self.tty else self.every) and not force:
            return
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self._last = now
        self.stream.flush()

    def update(self, done: int, extra: str = "") -> None:
        elapsed = time.monotonic() - self.start
        if self.total:
            # no estimate before anything is done (nor in the first half second: too little to go on)
            eta = _duration(elapsed / done * (self.total - done)) if done and elapsed >= 0.5 else "--"
            text = (f"{self.label}: {done:,}/{self.total:,} ({100.0 * done / self.total:5.1f}%), {elapsed:5.1f} s, "
                    f"eta {eta}")
        else:
            text = f"{self.label}: {done:,}, {elapsed:5.1f} s"
        self.line(f"{text}  {extra}" if extra else text, force=self.total is not None and done >= self.total)

    def note(self, text: str) -> None:
        """A line of its own (the progress line, if any, is drawn again by the next update)."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, message: str = "") -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    """``42.0 s``, ``12 min 5 s``, ``3 h 20 min``."""
    if seconds < 60:
        return f"{seconds:5.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
