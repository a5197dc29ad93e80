"""The messages between the supervisor and its datapath workers, typed, and their encoding on the wire.

One SOCK_SEQPACKET socket pair per worker carries one message per packet, JSON ``[op, field, ...]``; a
:class:`Ready` carries the worker's gwi- and gwo- queue descriptors as SCM_RIGHTS beside it::

    worker -> supervisor   Need(eni)        the worker's core saw a new endpoint: create its tunnel
                           Gone(eni, g)     generation g of the tunnel's devices was deleted under the appliance
                           Status(...)      every tick and when asked: counters, flows, tunnels' last use
                           Closed(eni)      answer to Closing: this worker let go of the tunnel
                           Keep(eni, t)     answer to Closing: this worker used it at t, after the supervisor's
                                            view (or is waiting for it): it stays
    supervisor -> worker   Ready(eni, g)    + the worker's gwi and gwo queue descriptors of generation g
                           Failed(eni)      creation failed (the worker's core retries later)
                           Closing(eni, t)  the tunnel looks idle (last used at t, by the reports): let go of it
                                            unless used since, and answer
                           Retire(eni)      the tunnel is being destroyed: forget it
                           Report()         send a Status now
                           Stop()
"""

from __future__ import annotations

import json
import socket
from typing import Any, NamedTuple


class Need(NamedTuple):
    eni: int


class Gone(NamedTuple):
    eni: int
    generation: int  #: of the devices that went (a late report of an earlier generation's is ignored)


class Status(NamedTuple):
    """A worker's counters: ``totals`` as in the status document, ``tunnels`` by ENI (decimal string) with
    each tunnel's counters and ``last_seen``."""

    worker: int
    heartbeat: float
    pid: int
    totals: dict[str, Any]
    tunnels: dict[str, dict[str, Any]]


class Ready(NamedTuple):
    eni: int
    generation: int  #: the supervisor's count of the tunnel's creations


class Failed(NamedTuple):
    eni: int


class Retire(NamedTuple):
    eni: int


class Closing(NamedTuple):
    eni: int
    since: float  #: the tunnel's last use as the supervisor knows it from the reports


class Closed(NamedTuple):
    eni: int


class Keep(NamedTuple):
    eni: int
    last_seen: float


class Report(NamedTuple):
    pass


class Stop(NamedTuple):
    pass


Message = Need | Gone | Status | Closed | Keep | Ready | Failed | Closing | Retire | Report | Stop
_BY_OP: dict[str, type[Message]] = {cls.__name__.lower(): cls for cls in (Need, Gone, Status, Closed, Keep, Ready,
                                                                          Failed, Closing, Retire, Report, Stop)}
_MAX = 1 << 16  # the longest message (a Status of many tunnels is a few kB)


class ProtocolError(ValueError):
    """A message that is not one of this protocol's."""


def encode(msg: Message) -> bytes:
    return json.dumps([type(msg).__name__.lower(), *msg]).encode()


def decode(data: bytes) -> Message:
    try:
        op, *fields = json.loads(data)
        return _BY_OP[op](*fields)
    except (ValueError, TypeError, KeyError) as e:
        raise ProtocolError(f"not a worker message: {data[:80]!r}") from e


def send(sock: socket.socket, msg: Message, fds: list[int] | None = None) -> None:
    data = encode(msg)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[Message | None, list[int]]:
    """The next message and the descriptors that came with it; None when the other side is gone."""
    data, fds, _flags, _addr = socket.recv_fds(sock, _MAX, 4)
    return (decode(data) if data else None), fds
