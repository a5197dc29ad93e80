"""One event loop for every driver: epoll over descriptors with their handlers, a wake-up pipe, a periodic tick.

The reference appliance's datapath, its workers' supervisor and the fake GWLB's datapath thread all run on it::

    loop = EventLoop(tick=0.25)
    loop.watch(sock.fileno(), on_socket)          # handler(now) when the descriptor is readable
    loop.run(on_tick=tick, on_wake=drain_queue)   # until loop.stop(); then the caller tears down
    loop.close()

Other threads hand work over with :meth:`EventLoop.wake` (a byte down a non-blocking pipe, unless one is on its
way already): the loop drains the pipe and calls ``on_wake``. The tick runs at most once per ``tick`` seconds of
the injected clock, also when the descriptors are busy. ``heartbeat`` is the clock's time of the loop's latest
turn (a stalled loop shows in health).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable

Handler = Callable[[float], None]


def _nothing(now: float) -> None:
    pass


class EventLoop:
    """An epoll loop with a wake-up pipe and a tick; see the module's docstring."""

    def __init__(self, tick: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.tick = tick
        self.clock = clock
        self.heartbeat = clock()
        self.stopping = threading.Event()
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._woken = False  # a byte is in the pipe and on_wake has not started yet: another wake needs none
        self._epoll.register(self._wake_r, select.EPOLLIN)

    def watch(self, fd: int, handler: Handler) -> None:
        """Call ``handler(now)`` whenever ``fd`` is readable (or in error: the handler finds out reading it)."""
        self._handlers[fd] = handler
        self._epoll.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (no error if it was not watched, or is closed already)."""
        self._handlers.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._handlers

    def wake(self) -> None:
        """From any thread: have the loop call its ``on_wake`` soon (after whatever the caller handed over
        before this call). Many wakes before the loop turns cost one write."""
        if self._woken:
            return
        self._woken = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def stop(self) -> None:
        """From any thread (or a signal handler): end :meth:`run` after the current turn."""
        self.stopping.set()
        self.wake()

    def run(self, on_tick: Handler = _nothing, on_wake: Handler = _nothing) -> None:
        """Turn until :meth:`stop`: handlers of ready descriptors, ``on_wake`` after a :meth:`wake`, ``on_tick``
        every ``tick`` seconds. A descriptor with no handler any more is dropped from the epoll set."""
        ep, handlers, wake_r, clock, tick = self._epoll, self._handlers, self._wake_r, self.clock, self.tick
        next_tick = clock() + tick
        while not self.stopping.is_set():
            events = ep.poll(tick)
            now = self.heartbeat = clock()
            for fd, _ev in events:
                if fd == wake_r:
                    self._drain()
                    self._woken = False  # after the pipe is empty, before on_wake looks: work handed over
                    on_wake(now)  # from now on wakes it again
                    continue
                handler = handlers.get(fd)
                if handler is None:  # closed or handed away meanwhile
                    with contextlib.suppress(OSError):
                        ep.unregister(fd)
                    continue
                handler(now)
            if now >= next_tick:
                next_tick = now + tick
                on_tick(now)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def close(self) -> None:
        """Close the epoll set and the wake-up pipe (the watched descriptors are their owners' to close)."""
        self._handlers.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._epoll.close()

    def wake_fds(self) -> tuple[int, int]:
        """The wake-up pipe's two ends (a forked child closes them)."""
        return self._wake_r, self._wake_w
