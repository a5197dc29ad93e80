"""A bare GENEVE peer in a namespace: sends GWLB-shaped datagrams to an appliance and collects its returns.

This is the fake GWLB without its model: the caller decides every byte. Returns arrive at
``local:6081`` from ``(appliance address, the source port the flow was sent from)``; a datagram from any
other port of the peer is sent from a socket bound to that port.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from gwlbsim.linuxio import netns
from gwlbsim.linuxio.fastio import set_buffer
from gwlbsim.wire.geneve import GENEVE_PORT


@dataclass(frozen=True)
class Received:
    payload: bytes
    src: str
    sport: int
    at: float


class GenevePeer:
    def __init__(self, ns: str, local: str, remote: str, port: int = GENEVE_PORT) -> None:
        self.ns = ns
        self.local = local
        self.remote = remote
        self.port = port
        self.rx = netns.socket_in(ns)
        set_buffer(self.rx, socket.SO_RCVBUF, 8 << 20)  # past the system's limit where allowed
        self.rx.bind((local, port))
        self._tx: dict[int, socket.socket] = {}

    def _sender(self, sport: int) -> socket.socket:
        s = self._tx.get(sport)
        if s is None:
            if sport == self.port:
                s = self.rx
            else:
                s = netns.socket_in(self.ns)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.local, sport))
            self._tx[sport] = s
        return s

    def send(self, payload: bytes, sport: int = 60001, dport: int | None = None) -> None:
        self._sender(sport).sendto(payload, (self.remote, dport or self.port))

    def recv(self, timeout: float = 2.0) -> Received | None:
        r, _, _ = select.select([self.rx], [], [], timeout)
        if not r:
            return None
        data, (src, sport) = self.rx.recvfrom(65535)
        return Received(data, src, sport, time.monotonic())

    def recv_all(self, count: int, timeout: float = 2.0) -> list[Received]:
        """Up to ``count`` datagrams, waiting at most ``timeout`` for each."""
        out: list[Received] = []
        while len(out) < count:
            r = self.recv(timeout)
            if r is None:
                break
            out.append(r)
        return out

    def drain(self, quiet: float = 0.05) -> list[Received]:
        out = []
        while (r := self.recv(quiet)) is not None:
            out.append(r)
        return out

    def close(self) -> None:
        for s in {*self._tx.values(), self.rx}:
            s.close()

    def __enter__(self) -> GenevePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
