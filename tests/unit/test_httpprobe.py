"""Health probes as GWLB makes them, against real servers on loopback (HTTP, HTTPS with TLS 1.2+, TCP)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gwlbsim.linuxio.httpprobe import ProbeResult, http_probe, tcp_probe


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"fine" if self.path == "/health" else b"missing"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None = None) -> tuple[ThreadingHTTPServer, int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


@pytest.fixture
def http() -> Iterator[int]:
    srv, port = _serve()
    yield port
    srv.shutdown()
    srv.server_close()


def test_http_status_and_body(http: int) -> None:
    r = http_probe("127.0.0.1", http, "/health", timeout=3)
    assert (r.ok, r.status, r.body) == (True, 200, b"fine")
    r = http_probe("127.0.0.1", http, "/other", timeout=3)
    assert (r.ok, r.status) == (True, 404)


def test_tcp_probe_and_refusals(http: int) -> None:
    assert tcp_probe("127.0.0.1", http, timeout=3).ok
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert not tcp_probe("127.0.0.1", port, timeout=3).ok
    r = http_probe("127.0.0.1", port, timeout=3)
    assert not r.ok and r.status is None and r.error


def test_not_http_is_a_failed_probe() -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)

    def answer() -> None:
        c, _ = lst.accept()
        c.recv(1000)
        c.sendall(b"SSH-2.0-nope\r\n")
        c.close()

    threading.Thread(target=answer, daemon=True).start()
    r = http_probe("127.0.0.1", lst.getsockname()[1], timeout=3)
    lst.close()
    assert not r.ok and "not an HTTP response" in r.error


def _one_shot(response: bytes, hold: float = 0.0) -> tuple[socket.socket, threading.Thread]:
    """A plain socket server that reads one request head, writes ``response`` as is, keeps the connection open
    ``hold`` seconds (so a probe must stop at Content-Length, not wait for the close), then closes."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)

    def answer() -> None:
        c, _ = lst.accept()
        with c:
            c.settimeout(3)
            head = b""
            while b"\r\n\r\n" not in head and (chunk := c.recv(1000)):
                head += chunk
            c.sendall(response)
            if hold:
                c.settimeout(hold)
                with contextlib.suppress(OSError):
                    c.recv(1)  # returns at the probe's close, or times out

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    return lst, t


def _probe_one(response: bytes, hold: float = 0.0, timeout: float = 3.0) -> ProbeResult:
    lst, t = _one_shot(response, hold)
    try:
        return http_probe("127.0.0.1", lst.getsockname()[1], "/health", timeout=timeout)
    finally:
        t.join(5)
        lst.close()


def test_bare_lf_response_is_accepted() -> None:
    r = _probe_one(b"HTTP/1.1 200 OK\nContent-Length: 3\nConnection: close\n\nok\n")
    assert (r.ok, r.status, r.body, r.error) == (True, 200, b"ok\n", ""), r


def test_bare_lf_response_ends_at_content_length_without_a_close() -> None:
    start = time.monotonic()
    r = _probe_one(b"HTTP/1.1 503 Service Unavailable\nContent-Length: 4\n\nbusy", hold=2.5, timeout=5)
    assert (r.ok, r.status, r.body) == (True, 503, b"busy"), r
    assert time.monotonic() - start < 2, "the probe waited for the close instead of stopping at Content-Length"


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\nConnection: close\r\n\nok\n",
    b"HTTP/1.1 200 OK\nContent-Length: 3\r\nConnection: close\n\r\nok\n",
    b"HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\nok\n",
    b"HTTP/1.0 200 OK\r\ncontent-length:3\r\n\nok\n",
], ids=["crlf-then-lf-end", "lf-then-crlf-end", "lf-status-line", "http10-mixed"])
def test_mixed_crlf_and_lf_is_accepted(response: bytes) -> None:
    start = time.monotonic()
    r = _probe_one(response, hold=2.5, timeout=5)
    assert (r.ok, r.status, r.body) == (True, 200, b"ok\n"), r
    assert time.monotonic() - start < 2, "Content-Length was not found: the probe waited for the close"


def test_bare_lf_body_cut_short_is_still_a_failure() -> None:
    r = _probe_one(b"HTTP/1.1 200 OK\nContent-Length: 10\n\nok\n")
    assert not r.ok and r.status == 200 and "cut short" in r.error, r


@pytest.mark.parametrize("response", [
    b"hello\n\nworld",
    b"SSH-2.0-nope\n\n",
    b"HTTP/1.1 200 OK\nContent-Length: 3\n",  # the header block never ends
    b"\nHTTP/1.1 200 OK\n\n",
    b"HTTP/2 200\n\n",
    b"HTTP/1.1 OK 200\n\n",
], ids=["text", "ssh", "unterminated", "leading-empty-line", "http2", "no-status-code"])
def test_bare_lf_non_http_is_still_rejected(response: bytes) -> None:
    r = _probe_one(response)
    assert not r.ok and r.status is None and "not an HTTP response" in r.error, r


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_https_probe_like_gwlb(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=appliance"], check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv, port = _serve(ctx)
    try:
        r = http_probe("127.0.0.1", port, "/health", timeout=5, tls=True)
        assert (r.ok, r.status, r.body) == (True, 200, b"fine"), r
        plain = http_probe("127.0.0.1", port, "/health", timeout=3)
        assert not plain.ok or plain.status != 200, "plain HTTP to a TLS port is not a healthy answer"
    finally:
        srv.shutdown()
        srv.server_close()
