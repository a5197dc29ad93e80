"""A minimal GWLB appliance for proving the conformance suite: reflects each GENEVE datagram back to GWLB.

Correct by default (validates with the project's codec, returns the datagram unchanged with the outer
addresses swapped and the ports kept, answers HTTP health checks). Each ``--fault`` breaks it in one way a
real appliance can be broken, so the suite must fail it on a specific requirement.

Usage: reflector.py --health-port 8080 [--fault NAME ...]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gwlbsim import geneve
from gwlbsim.outer import build_ipv4_udp

FAULTS = {
    "drop-cookie": "returns the header without its flow cookie option",
    "rewrite-header": "returns the header with VNI and reserved bits zeroed",
    "swap-ports": "returns from port 6081 to GWLB's source port (ports swapped)",
    "originate": "also sends packets of flows it never received",
    "no-validation": "forwards whatever arrives, malformed or not",
    "crash-on-oversize": "dies on a datagram over 9000 bytes",
}


def rewrite(data: bytes, fault: set[str]) -> bytes:
    s = geneve.scan(data)
    hdr = geneve.GeneveHeader.from_bytes(data[:s.header_len])
    inner = data[s.header_len:]
    if "drop-cookie" in fault:
        hdr = geneve.GeneveHeader(hdr.protocol, hdr.vni, tuple(o for o in hdr.options if o.type != 3),
                                  hdr.oam, hdr.critical, hdr.reserved_flags, hdr.reserved)
    if "rewrite-header" in fault:
        hdr = geneve.GeneveHeader(hdr.protocol, 0, hdr.options)
    return hdr.to_bytes() + inner


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--health-port", type=int, default=8080)
    p.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS))
    args = p.parse_args()
    fault = set(args.fault)

    class Health(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *a: object) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer(("0.0.0.0", args.health_port), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", geneve.GENEVE_PORT))
    udp.setsockopt(socket.IPPROTO_IP, 8, 1)  # IP_PKTINFO: learn our own address
    rawsock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rng = random.Random(1)
    print("reflector ready", FAULTS.keys() & fault, flush=True)
    count = 0
    while True:
        data, anc, _flags, (src, sport) = udp.recvmsg(65535, 64)
        local = next((socket.inet_ntoa(d[8:12]) for lvl, typ, d in anc if lvl == 0 and typ == 8), "0.0.0.0")
        if len(data) > 9000 and "crash-on-oversize" in fault:
            os._exit(3)
        count += 1
        if "no-validation" not in fault:
            try:
                if geneve.scan(data).inner_len > geneve.GWLB_MTU:
                    continue
            except geneve.GeneveError:
                continue
        try:
            out = rewrite(data, fault) if fault & {"drop-cookie", "rewrite-header"} else data
        except geneve.GeneveError:
            out = data
        s_port, d_port = (geneve.GENEVE_PORT, sport) if "swap-ports" in fault else (sport, geneve.GENEVE_PORT)
        try:
            rawsock.sendto(build_ipv4_udp(local, src, s_port, d_port, out, ttl=64), (src, 0))
        except OSError as e:
            print(f"send failed: {e}", flush=True)
        if "originate" in fault and count % 3 == 0:
            try:
                s = geneve.scan(data)
                forged = geneve.build(bytes.fromhex("450000280001000040060000c0a80001c0a8000204000050"
                                                    "00000000000000005002200000000000"),
                                      s.eni_id, rng.getrandbits(32) | 1)
                rawsock.sendto(build_ipv4_udp(local, src, sport, geneve.GENEVE_PORT, forged, ttl=64), (src, 0))
            except geneve.GeneveError:
                pass


if __name__ == "__main__":
    sys.exit(main())
