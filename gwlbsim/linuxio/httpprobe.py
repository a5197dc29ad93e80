"""Health probes as GWLB makes them: TCP connect, or an HTTP/1.1 GET read to the end, then close.

Probes can be made from inside a network namespace (the socket is created there), which is how the fake
GWLB checks its targets.

Line ends accepted: CRLF or bare LF, mixed too (RFC 9112 2.2 allows it; AWS documents only the status matcher).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass

from gwlbsim.linuxio import netns


@dataclass(frozen=True)
class ProbeResult:
    ok: bool  #: connected (TCP) or got a status code (HTTP)
    status: int | None  #: HTTP status code
    body: bytes
    seconds: float
    error: str = ""


def _connect(host: str, port: int, timeout: float, ns: str | None, tls: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = netns.socket_in(ns, family, socket.SOCK_STREAM) if ns else socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        if tls:
            # as GWLB: TLS 1.2 or later, no certificate check (targets use self-signed certificates)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=host)
    except BaseException:
        s.close()
        raise
    return s


def tcp_probe(host: str, port: int, timeout: float = 5.0, ns: str | None = None) -> ProbeResult:
    start = time.monotonic()
    try:
        _connect(host, port, timeout, ns).close()
    except OSError as e:
        return ProbeResult(False, None, b"", time.monotonic() - start, str(e) or type(e).__name__)
    return ProbeResult(True, None, b"", time.monotonic() - start)


def http_probe(host: str, port: int, path: str = "/", timeout: float = 5.0, ns: str | None = None,
               method: str = "GET", tls: bool = False) -> ProbeResult:
    """One complete HTTP/1.1 (or HTTPS) exchange: request, whole response (Content-Length or until close)."""
    start = time.monotonic()
    deadline = start + timeout
    try:
        s = _connect(host, port, timeout, ns, tls)
    except OSError as e:
        return ProbeResult(False, None, b"", time.monotonic() - start, str(e) or type(e).__name__)
    try:
        hosthdr = f"[{host}]" if ":" in host else host
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {hosthdr}:{port}\r\nUser-Agent: gwlbsim-health-checker\r\n"
                  f"Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = _split_head(data)
            if sep:
                length = _content_length(head)
                if length is not None and len(body) >= length:
                    break
    except OSError as e:
        return ProbeResult(False, None, b"", time.monotonic() - start, str(e) or type(e).__name__)
    finally:
        s.close()
    head, sep, body = _split_head(data)
    parts = head.split(b"\n", 1)[0].split()
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return ProbeResult(False, None, body, time.monotonic() - start,
                           f"not an HTTP response: {data[:60]!r}")
    length = _content_length(head)
    if length is not None and len(body) < length and method != "HEAD":
        return ProbeResult(False, int(parts[1]), body, time.monotonic() - start,
                           f"response body cut short ({len(body)} of {length} bytes)")
    return ProbeResult(True, int(parts[1]), body, time.monotonic() - start)


#: the empty line that ends the header block: a line terminator (LF, the CR before it belongs to the line it
#: ends) followed by an empty line (CRLF or LF)
_HEAD_END = re.compile(rb"\n\r?\n")


def _split_head(data: bytes) -> tuple[bytes, bool, bytes]:
    """(header block, whether its end was seen, body). The header block's lines are separated by LF; each may
    still end in the CR of a CRLF, which the callers' whitespace stripping and splitting ignore."""
    m = _HEAD_END.search(data)
    if m is None:
        return data, False, b""
    return data[:m.start()], True, data[m.end():]


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def wait_healthy(host: str, port: int, timeout: float = 15.0, ns: str | None = None, path: str = "/") -> ProbeResult:
    """Probe until a 200 or the timeout; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        r = http_probe(host, port, path, timeout=2.0, ns=ns)
        if r.status == 200 or time.monotonic() >= deadline:
            return r
        time.sleep(0.1)
