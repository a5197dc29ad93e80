"""A deliberately broken GWLB appliance, used only by the network fuzzer's tests.

It reflects every datagram ``gwlbsim.wire.geneve`` accepts back to GWLB unchanged (which is a correct one-arm
appliance: same header, same inner packet) and has the planted bugs chosen with ``--bug`` (one or more):

* ``crash-on-overrun``: its own option walk trusts each option's length; an option that runs past the option
  area raises, uncaught, and the process dies;
* ``unhealthy-after-control=N``: after the N-th datagram with the O (control) bit set, its state is
  "corrupted" and the health check answers 503 for good;
* ``stale-header``: it returns each flow's packets with the header of the flow's *first* packet, not the
  latest (gwlbtun's bug before its PR #15: GWLB drops returns whose cookie is stale);
* ``pass-bad-inner``: it also reflects datagrams whose GENEVE header is valid but whose inner packet is
  malformed (``truncated_inner``: its IP length field claims more bytes than are present, or its header is
  cut short; ``protocol_mismatch``: its IP version contradicts the protocol type), as an appliance that never
  looks at the inner packet would;
* ``crash-on-oversize=N``: a datagram of more than N bytes (default 9000) raises, uncaught, and the process
  dies.

Usage: ``python broken_appliance.py --health-port 8080 --bug crash-on-overrun``, or
``--bug pass-bad-inner --bug crash-on-oversize=9000``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gwlbsim.fuzz.findings import INNER_REASONS

from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import InnerError, symmetric_key


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
    p.add_argument("--bug", required=True, action="append")
    args = p.parse_args()
    bugs = dict(b.partition("=")[::2] for b in args.bug)
    state = State()
    first_headers: dict[tuple[int, object], bytes] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", geneve.GENEVE_PORT))
    serve_health(args.health_port, state)
    while True:
        data, (src, _sport) = sock.recvfrom(65535)
        if "crash-on-overrun" in bugs and overruns(data):
            (_length,) = struct.unpack_from("!H", data, len(data))  # reads past the end: struct.error, uncaught
        if "crash-on-oversize" in bugs and len(data) > int(bugs["crash-on-oversize"] or 9000):
            raise MemoryError(f"planted bug: no buffer for a {len(data)}-byte datagram")
        if "unhealthy-after-control" in bugs and is_control(data):
            state.controls += 1
            if state.controls >= int(bugs["unhealthy-after-control"]):
                state.healthy = False
        try:
            s = geneve.scan(data)
        except geneve.GeneveError as e:
            if "pass-bad-inner" in bugs and e.reason in INNER_REASONS:
                sock.sendto(data, (src, geneve.GENEVE_PORT))
            continue
        if "stale-header" in bugs:
            try:
                key = (s.eni_id, symmetric_key(data, s.header_len, s.header_len + s.inner_len))
            except InnerError:
                continue
            data = first_headers.setdefault(key, data[:s.header_len]) + data[s.header_len:]
        sock.sendto(data, (src, geneve.GENEVE_PORT))


if __name__ == "__main__":
    main()
