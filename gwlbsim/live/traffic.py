"""Ordinary traffic from an endpoint's client, through the fake GWLB, to its server namespace or (two-arm
deployments, ``internet=True``) to the internet namespace's server.

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


def far_side(s: GwlbSession, e: int, v6: bool, internet: bool) -> tuple[str, str]:
    """The namespace and address a client of endpoint ``e`` talks to: its server, or the internet's."""
    topo = s.running()[1]
    if internet:
        if topo.internet is None:
            raise ValueError("this topology has no internet namespace (a two-arm mode such as --mode nat has)")
        return topo.internet.ns, topo.internet.server_v6 if v6 else topo.internet.server_v4
    slot = topo.endpoints[e]
    return slot.server_ns, slot.server_v6 if v6 else slot.server_v4


@dataclass(frozen=True)
class Transfer:
    ok: bool
    detail: str  #: what went wrong, or a summary
    received: int  #: bytes the server got
    seconds: float


def tcp_transfer(s: GwlbSession, e: int = 0, port: int = 9000, size: int = 300_000, v6: bool = False,
                 timeout: float = 10.0, internet: bool = False) -> Transfer:
    """Client connects to the server through GWLB, sends ``size`` bytes; the server answers with the last
    1000 it got. ``ok`` when the handshake, every byte and the answer made it unchanged."""
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    ns, dst = far_side(s, e, v6, internet)
    srv = s.running()[0].socket(ns, fam, socket.SOCK_STREAM)
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
                 client_port: int = 0, timeout: float = 3.0, internet: bool = False) -> bytes | None:
    """One datagram client -> server and the server's answer (the payload reversed); None if either is lost."""
    lab, topo = s.running()
    slot = topo.endpoints[e]
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    ns, dst = far_side(s, e, v6, internet)
    src = slot.client_v6 if v6 else slot.client_v4
    srv = lab.socket(ns, fam)
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


def tcp_request(s: GwlbSession, e: int, port: int, payload: bytes, v6: bool = False,
                timeout: float = 5.0) -> bytes | None:
    """Client connects to its server's address and ``port`` through GWLB, sends ``payload`` and reads the answer
    until the other side closes; None if the connection fails. Whoever answers (the server, or an appliance
    that terminates the flow) is the caller's to judge."""
    lab, topo = s.running()
    slot = topo.endpoints[e]
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    dst = slot.server_v6 if v6 else slot.server_v4
    with lab.socket(slot.client_ns, fam, socket.SOCK_STREAM) as cli:
        cli.settimeout(timeout)
        try:
            cli.connect((dst, port))
            cli.sendall(payload)
            answer = b""
            while chunk := cli.recv(65536):
                answer += chunk
            return answer
        except OSError:
            return None
