"""Health probes as GWLB makes them, against real servers on loopback (HTTP, HTTPS with TLS 1.2+, TCP)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gwlbsim.httpprobe import http_probe, tcp_probe


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
