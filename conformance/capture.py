"""Packet capture on the fake GWLB's side of the wire (AF_PACKET on each zone bridge in the gwlb namespace).

Every frame between the GWLB and the appliances is kept in a bounded ring with its time; a test that fails
writes the frames of its own time span to a pcap file that Wireshark opens.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from pathlib import Path

from gwlbsim.linuxio import netns
from gwlbsim.linuxio.fastio import BatchReceiver, set_buffer
from gwlbsim.wire import pcap

ETH_P_ALL = 0x0003
IDLE_POLL = 0.02  #: seconds the reader waits for frames before it notes that it has read everything
BATCH = 64  #: frames read from one socket in one system call (recvmmsg)
ROUNDS = 4  #: batches read from one socket in a row (the others get their turn)


class Capture:
    def __init__(self, ns: str, interfaces: list[str], limit: int = 200_000) -> None:
        self.frames: deque[tuple[float, bytes]] = deque(maxlen=limit)
        self._socks = []
        for ifname in interfaces:
            s = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((ifname, 0))
            set_buffer(s, socket.SO_RCVBUF, 8 << 20)  # past the system's limit where allowed
            s.setblocking(False)
            self._socks.append(s)
        self._rx = {s: BatchReceiver(s, BATCH) for s in self._socks}
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._idle_at = 0.0  #: when the reader last found nothing left to read
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select(self._socks, [], [], IDLE_POLL)
            if not r:
                with self._idle:
                    self._idle_at = time.time()
                    self._idle.notify_all()
            for s in r:
                rx = self._rx[s]
                with contextlib.suppress(OSError):
                    for _ in range(ROUNDS):
                        n = rx.recv()
                        t = time.time()
                        self.frames.extend((t, bytes(rx.views[i][:rx.lengths[i]])) for i in range(n))
                        if n < BATCH:
                            break

    def since(self, t0: float) -> list[tuple[float, bytes]]:
        return [(t, d) for t, d in list(self.frames) if t >= t0]

    def settle(self, timeout: float = 1.0) -> None:
        """Return once every frame on the wire before this call has been read (the reader found its sockets
        empty after it), or after ``timeout``."""
        asked = time.time()
        with self._idle:
            self._idle.wait_for(lambda: self._idle_at >= asked, timeout)

    def settled_since(self, t0: float) -> list[tuple[float, bytes]]:
        """:meth:`since`, with the frames still in the sockets read first."""
        self.settle()
        return self.since(t0)

    def write(self, path: Path, t0: float, t1: float | None = None) -> int:
        """Write the frames captured from ``t0`` (to ``t1``) as an Ethernet pcap; returns their number."""
        frames = [(t, d) for t, d in self.settled_since(t0) if t1 is None or t <= t1]
        path.parent.mkdir(parents=True, exist_ok=True)
        with pcap.Writer(path, linktype=pcap.LINKTYPE_ETHERNET) as w:
            for t, d in frames:
                w.write(d, t)
        return len(frames)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s in self._socks:
            s.close()
