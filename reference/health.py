"""The health-check port (gwlbtun's ``-p``): a small HTTP/1.1 server answering 200 or 503.

The body is human-readable statistics by default, JSON with ``-j`` (schema ``gwlbsim.reference.status/1``,
documented in the README), or empty with ``-s``. Every answer closes the connection, as GWLB's probes expect.
``/metrics`` answers the same status in the Prometheus text format (:mod:`gwlbsim.reference.metrics`), with 200
whenever it can.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gwlbsim.reference import metrics

log = logging.getLogger("gwlb-reference.health")

Status = dict[str, Any]

TEXT, JSON, SIMPLE = "text", "json", "simple"


def render_text(st: Status) -> str:
    lines = [f"gwlb-reference {st['version']}: {'healthy' if st['healthy'] else 'UNHEALTHY'}"]
    for r in st["reasons"]:
        lines.append(f"  reason: {r}")
    t = st["totals"]
    lines.append(f"uptime {st['uptime_seconds']:.0f} s; GENEVE in {t['packets_in']} packets / {t['bytes_in']} "
                 f"bytes; returned {t['packets_out']} packets / {t['bytes_out']} bytes; flows {t['flows']} "
                 f"(evicted {t['flow_evictions']})")
    if t["drops"]:
        lines.append("drops: " + ", ".join(f"{k}={v}" for k, v in sorted(t["drops"].items())))
    h = st["hooks"]
    lines.append(f"hooks: create ok {h['create_ok']} failed {h['create_failed']}, "
                 f"destroy ok {h['destroy_ok']} failed {h['destroy_failed']}")
    lines.append(f"tunnels: {len(st['tunnels'])}")
    for tun in st["tunnels"]:
        lines.append(f"  {tun['ingress']}/{tun['egress']} ENI {tun['eni_id']} {tun['state']} "
                     f"(generation {tun['generation']}, idle {tun['idle_seconds']:.1f} s): "
                     f"in {tun['packets_in']} pkts/{tun['bytes_in']} B, out {tun['packets_out']} pkts/"
                     f"{tun['bytes_out']} B, flows {tun['flows']}"
                     + (", drops " + ", ".join(f"{k}={v}" for k, v in sorted(tun["drops"].items()))
                        if tun["drops"] else ""))
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gwlb-reference"
    timeout = 5  # seconds to read a request: a stuck prober must not hold a thread

    def _answer(self, with_body: bool) -> None:
        # (type: ignore below) socketserver says BaseServer; ours is a HealthServer
        server: HealthServer = self.server  # type: ignore[assignment]
        try:
            st = server.status_fn()
        except Exception:  # the status source itself failing is a reason to report 503, not to crash
            log.exception("status source failed")
            st = None
        healthy = bool(st and st["healthy"])
        body = b""
        ctype = "text/plain; charset=utf-8"
        code = 200 if healthy else 503
        if self.path.split("?")[0] == "/metrics":  # Prometheus: 200 whenever there are metrics, health a gauge
            body, ctype, code = (metrics.render(st).encode(), metrics.CONTENT_TYPE, 200) if st is not None else \
                (b"", ctype, 503)
        elif st is not None and server.mode == JSON:
            body = (json.dumps(st, indent=1, sort_keys=True) + "\n").encode()
            ctype = "application/json"
        elif st is not None and server.mode == TEXT:
            body = render_text(st).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if with_body:
            self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], status_fn: Callable[[], Status], mode: str = TEXT) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.status_fn = status_fn
        self.mode = mode
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
