"""A deliberately naive GWLB appliance: the floor the reference is compared with.

What a first working version looks like: ``select()``, then one ``recvfrom`` -> parse -> one ``write`` to
the endpoint's TUN device for a GENEVE datagram, one ``read`` from a TUN device -> look the flow up ->
build the outer packet (checksums computed in full) -> one ``sendto`` on a raw socket for a return. One
packet per system call, no batching, nothing prepared in advance. It is correct (same header back,
addresses swapped, ports as received, one gwi-/gwo- pair per endpoint with gwlbtun's hook arguments), so
the benchmark checks it like any appliance.

    python -m gwlbsim.bench.naive -c 'sh passthrough.sh' [-p HEALTH_PORT]

``-p`` opens a TCP port that accepts and closes connections (readiness only).
"""

from __future__ import annotations

import argparse
import os
import select
import shlex
import signal
import socket
import subprocess
import sys

from gwlbsim.linuxio.tun import open_tun
from gwlbsim.wire import geneve
from gwlbsim.wire.eni import device_names, to_hex
from gwlbsim.wire.flowkey import InnerError, symmetric_key
from gwlbsim.wire.outer import build_ipv4_udp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gwlbsim-naive", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", dest="create_hook", help="command run as HOOK CREATE gwi gwo ENI after creating a tunnel")
    p.add_argument("-p", dest="health_port", type=int, help="TCP port that accepts connections (readiness)")
    p.add_argument("--listen", default="0.0.0.0")
    args = p.parse_args(argv)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    udp.bind((args.listen, geneve.GENEVE_PORT))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    health = None
    if args.health_port:
        health = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        health.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        health.bind(("0.0.0.0", args.health_port))
        health.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    tunnels: dict[int, tuple[int, int]] = {}  # ENI -> (gwi fd, gwo fd)
    fd_eni: dict[int, int] = {}
    flows: dict[tuple[int, tuple[int, int, int]], tuple[bytes, str, int, str]] = {}  # -> header, GWLB addr,
    # GWLB port, our address
    while True:
        sources: list[socket.socket | int] = [udp, *fd_eni, *([health] if health else [])]
        readable, _, _ = select.select(sources, [], [])
        for r in readable:
            if r is udp:
                data, (src, sport) = udp.recvfrom(65535)
                try:
                    s = geneve.scan(data)
                    inner = data[s.header_len:s.header_len + s.inner_len]
                    key = symmetric_key(inner)
                except (geneve.GeneveError, InnerError):
                    continue
                if s.eni_id not in tunnels:
                    tunnels[s.eni_id] = _create(s.eni_id, args.create_hook)
                    fd_eni.update({fd: s.eni_id for fd in tunnels[s.eni_id]})
                me = args.listen if args.listen != "0.0.0.0" else _local_address(src)
                flows[(s.eni_id, key)] = (data[:s.header_len], src, sport, me)
                os.write(tunnels[s.eni_id][0], inner)
            elif isinstance(r, socket.socket):  # the health listener
                conn, _ = r.accept()
                conn.close()
            else:
                pkt = os.read(r, 65535)
                try:
                    flow = flows.get((fd_eni[r], symmetric_key(pkt)))
                except InnerError:
                    continue
                if flow is None:
                    continue
                header, gwlb, gwlb_port, me = flow
                out = build_ipv4_udp(me, gwlb, gwlb_port, geneve.GENEVE_PORT, header + pkt, ttl=64)
                raw.sendto(out, (gwlb, 0))


_LOCAL: dict[str, str] = {}


def _local_address(peer: str) -> str:
    """Our address towards ``peer`` (what GWLB sent to, on a one-address appliance)."""
    if peer not in _LOCAL:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, geneve.GENEVE_PORT))
            _LOCAL[peer] = s.getsockname()[0]
    return _LOCAL[peer]


def _create(eni: int, hook: str | None) -> tuple[int, int]:
    gwi, gwo = device_names(eni)
    fds = (open_tun(gwi, mtu=geneve.GWLB_MTU, rp_filter=0, ipv6_link_local=False),
           open_tun(gwo, mtu=geneve.GWLB_MTU, rp_filter=0, ipv6_link_local=False))
    if hook:
        subprocess.run([*shlex.split(hook), "CREATE", gwi, gwo, to_hex(eni)], check=False, timeout=30)
    return fds


if __name__ == "__main__":
    sys.exit(main())
