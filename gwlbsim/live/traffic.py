"""Ordinary traffic between an endpoint's client and server namespaces, through the fake GWLB.

Real sockets on both sides: a TCP connection that moves data and gets an answer, and UDP request/answer
exchanges. Used by the demo, the end-to-end tests and the conformance suite.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gwlbsim.live.session import GwlbSession


@dataclass(frozen=True)
class Transfer:
    ok: bool
    detail: str  #: what went wrong, or a summary
    received: int  #: bytes the server got
    seconds: float


def tcp_transfer(s: GwlbSession, e: int = 0, port: int = 9000, size: int = 300_000, v6: bool = False,
                 timeout: float = 10.0) -> Transfer:
    """Client connects to the server through GWLB, sends ``size`` bytes; the server answers with the last
    1000 it got. ``ok`` when the handshake, every byte and the answer made it unchanged."""
    assert s.topo is not None
    slot = s.topo.endpoints[e]
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    dst = slot.server_v6 if v6 else slot.server_v4
    srv = s.server_socket(e, fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((dst, port))
    srv.listen(1)
    srv.settimeout(timeout)
    data = bytes(i % 253 for i in range(size))
    got = bytearray()

    def serve() -> None:
        try:
            c, _ = srv.accept()
            with c:
                c.settimeout(timeout)
                while len(got) < size and (chunk := c.recv(65536)):
                    got.extend(chunk)
                c.sendall(got[-1000:])
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cli = s.client_socket(e, fam, socket.SOCK_STREAM)
    cli.settimeout(timeout)
    start = time.monotonic()
    answer = b""
    try:
        try:
            cli.connect((dst, port))
        except OSError as err:
            return Transfer(False, f"TCP handshake to {dst}:{port} through GWLB failed: {err}", 0,
                            time.monotonic() - start)
        cli.sendall(data)
        while len(answer) < 1000 and (chunk := cli.recv(1000)):
            answer += chunk
    except OSError as err:
        return Transfer(False, f"TCP transfer to {dst}:{port} broke: {err} ({len(got)} of {size} bytes arrived)",
                        len(got), time.monotonic() - start)
    finally:
        cli.close()
        t.join(timeout)
        srv.close()
    took = time.monotonic() - start
    if bytes(got) != data:
        return Transfer(False, f"TCP data changed or lost: {len(got)} of {size} bytes arrived", len(got), took)
    if answer != data[-1000:]:
        return Transfer(False, "TCP answer from the server changed or lost", len(got), took)
    return Transfer(True, f"{size} bytes to {dst}:{port} and an answer back in {took:.2f} s", len(got), took)


def udp_exchange(s: GwlbSession, e: int = 0, port: int = 5353, payload: bytes = b"ping", v6: bool = False,
                 client_port: int = 0, timeout: float = 3.0) -> bytes | None:
    """One datagram client -> server and the server's answer (the payload reversed); None if either is lost."""
    assert s.topo is not None
    slot = s.topo.endpoints[e]
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    dst, src = (slot.server_v6, slot.client_v6) if v6 else (slot.server_v4, slot.client_v4)
    srv = s.server_socket(e, fam)
    cli = s.client_socket(e, fam)
    try:
        srv.bind((dst, port))
        if client_port:
            cli.bind((src, client_port))
        cli.settimeout(timeout)
        srv.settimeout(timeout)
        cli.sendto(payload, (dst, port))
        data, addr = srv.recvfrom(65535)
        srv.sendto(data[::-1], addr)
        return cli.recv(65535)
    except OSError:
        return None
    finally:
        cli.close()
        srv.close()
