"""A transparent TCP responder for local-termination deployments (``--local-responder PORT``).

The local mode's hook diverts TCP flows to PORT that arrive from a tunnel to this namespace (TPROXY): the
listener has IP_TRANSPARENT, so it accepts connections to any address and answers as the flow's original
destination. Its replies are routed back into the flow's tunnel by the hook, and the datapath returns them to
GWLB with the flow's header, as it does for any reply of a flow it has seen.

It stands for the service a real appliance terminates flows with (a proxy, a web filter's block page): an HTTP
request gets a short HTTP answer naming the flow, any other first message comes back reversed.
"""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger("gwlb-reference.responder")

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)  # <linux/in.h>
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)  # <linux/in6.h>
READ_TIMEOUT = 5.0  #: seconds a connection may take to send its first message


def answer(first: bytes, local: tuple[str, int], peer: tuple[str, int]) -> bytes:
    """What the responder sends back for a connection whose first message is ``first``."""
    if first.startswith((b"GET ", b"HEAD ", b"POST ")):
        body = f"answered locally by gwlb-reference for {peer[0]}:{peer[1]} -> {local[0]}:{local[1]}\n".encode()
        return (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(body) + body)
    return first[::-1]


class LocalResponder:
    """Listens on [::]:port (IPv4 too) with IP_TRANSPARENT; one short-lived thread per connection."""

    def __init__(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            sock.bind(("::", port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = port
        self._thread = threading.Thread(target=self._serve, name="local-responder", daemon=True)

    def start(self) -> LocalResponder:
        self._thread.start()
        log.info("answering TCP flows diverted to port %d (local termination)", self.port)
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn, peer), daemon=True).start()

    def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with conn:
            try:
                conn.settimeout(READ_TIMEOUT)
                first = conn.recv(65536)
                local = conn.getsockname()
                conn.sendall(answer(first, (_plain(local[0]), local[1]), (_plain(peer[0]), peer[1])))
            except OSError as e:
                log.debug("connection from %s: %s", peer, e)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _plain(address: str) -> str:
    """An IPv4 address as IPv4 (a dual-stack socket reports it as ::ffff:a.b.c.d)."""
    return address.removeprefix("::ffff:")
