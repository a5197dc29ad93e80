"""A deliberately broken GWLB appliance, used only by the network fuzzer's tests.

It reflects every datagram ``gwlbsim.geneve`` accepts back to GWLB unchanged (which is a correct one-arm
appliance: same header, same inner packet) and has one planted bug, chosen with ``--bug``:

* ``crash-on-overrun``: its own option walk trusts each option's length; an option that runs past the option
  area raises, uncaught, and the process dies;
* ``unhealthy-after-control=N``: after the N-th datagram with the O (control) bit set, its state is
  "corrupted" and the health check answers 503 for good;
* ``stale-header``: it returns each flow's packets with the header of the flow's *first* packet, not the
  latest (gwlbtun's bug before its PR #15: GWLB drops returns whose cookie is stale).

Usage: ``python broken_appliance.py --health-port 8080 --bug crash-on-overrun``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gwlbsim import geneve
from gwlbsim.flowkey import InnerError, symmetric_key


def overruns(data: bytes) -> bool:
    """The planted bug's trigger: some option runs past the option area (walked without bounds checks)."""
    if len(data) < 8:
        return False
    end = 8 + (data[0] & 0x3F) * 4
    pos = 8
    while pos + 4 <= min(end, len(data)):
        length = (data[pos + 3] & 0x1F) * 4
        if pos + 4 + length > end:
            return True
        pos += 4 + length
    return False


def is_control(data: bytes) -> bool:
    return len(data) >= 8 and bool(data[1] & 0x80)


class State:
    def __init__(self) -> None:
        self.controls = 0
        self.healthy = True


def serve_health(port: int, state: State) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if state.healthy else 503)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--health-port", type=int, required=True)
    p.add_argument("--bug", required=True)
    args = p.parse_args()
    bug, _, arg = args.bug.partition("=")
    state = State()
    first_headers: dict[tuple[int, object], bytes] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", geneve.GENEVE_PORT))
    serve_health(args.health_port, state)
    while True:
        data, (src, _sport) = sock.recvfrom(65535)
        if bug == "crash-on-overrun" and overruns(data):
            (_length,) = struct.unpack_from("!H", data, len(data))  # reads past the end: struct.error, uncaught
        if bug == "unhealthy-after-control" and is_control(data):
            state.controls += 1
            if state.controls >= int(arg):
                state.healthy = False
        try:
            s = geneve.scan(data)
        except geneve.GeneveError:
            continue
        if bug == "stale-header":
            try:
                key = (s.eni_id, symmetric_key(data, s.header_len, s.header_len + s.inner_len))
            except InnerError:
                continue
            data = first_headers.setdefault(key, data[:s.header_len]) + data[s.header_len:]
        sock.sendto(data, (src, geneve.GENEVE_PORT))


if __name__ == "__main__":
    main()
