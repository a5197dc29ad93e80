"""The reference's kernel fast path alone: its two programs per packet (``gwlbsim bench --only fastpath-programs``).

The programs of :mod:`gwlbsim.reference.kernelpath` loaded as the appliance loads them, in a namespace of their
own with an uplink (a veth) and one tunnel's TUN devices, the tunnel ready and GWLB's next hop known. Each
packet is one BPF_PROG_RUN (a fresh packet each time, nothing sent; the kernel times the run itself), so the
figures are the programs and their helpers with warm caches, without the receive path, the hooks or the
device queues around them (``gwlbsim bench --split-cpus --generator xdp`` measures the whole):

* ``in``: ``geneve_in`` on a GENEVE datagram of the flow in GWLB's layout, outer UDP checksum zero (as the
  benchmark's traffic: nothing to check), up to the redirect into ``gwi-``;
* ``in, sum checked``: the same with a UDP checksum that no device checked, which the program verifies;
* ``out``: ``tunnel_out`` on the inner packet leaving ``gwo-``, up to the redirect to the uplink: flow
  lookup, outer headers, the UDP checksum of the return;
* ``floor``: ``geneve_in`` on a frame that is not IPv4 (its first test): the test run's own cost, which every
  figure above includes.

Inner packets up to 3000 bytes (a test run's packet fits a page). Each figure is the best of five rounds'
medians. Every measured run must end in a redirect, so a program that
stopped taking the fast path would show as an error, not as a fast figure.
"""

from __future__ import annotations

import argparse
import socket
import statistics
from typing import Any

from gwlbsim.bench.extra import register
from gwlbsim.linuxio.netns import Lab, entered, require_root
from gwlbsim.reference.kernelpath import KernelPath, available
from gwlbsim.traffic.inner import ipv4, udp_datagram
from gwlbsim.wire import geneve
from gwlbsim.wire.outer import build_ipv4_udp

TC_ACT_REDIRECT = 7
ROUNDS, RUNS = 5, 2000
#: a test run's packet is one page at most, its own headroom and tail taken off
MAX_SIZE = 3000
ENI = 0x2B8EE1D4DB0C5177
GWLB, SELF = "10.51.0.1", "10.51.0.2"
#: the inner source: a test run reads an Ethernet header even on a TUN device, whose packets start at the IP
#: header, so bytes 12-13 (the source address's first two) must read as IPv4's EtherType for the run to see IPv4
INNER_SRC, INNER_DST = "8.0.1.1", "172.16.0.1"
MACS = (b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02")  # GWLB's, the uplink's


def _inner(size: int) -> bytes:
    return ipv4(INNER_SRC, INNER_DST, 17, udp_datagram(INNER_SRC, INNER_DST, 1000, 2000, b"x" * (size - 28)))


def _frame(inner: bytes, udp_checksum: bool) -> bytes:
    payload = geneve.build(inner, ENI, 0x77)
    return MACS[1] + MACS[0] + b"\x08\x00" + build_ipv4_udp(GWLB, SELF, 40000, geneve.GENEVE_PORT, payload,
                                                             udp_checksum=udp_checksum)


def _per_packet(kp: KernelPath, program: str, frame: bytes, want: int | None, **where: int) -> float:
    """ns per run of ``program`` over ``frame``: the best of the rounds' medians (each run ending in ``want``)."""
    best = float("inf")
    for _ in range(ROUNDS):
        times = []
        for _ in range(RUNS):
            verdict, ns = kp.test_run(program, frame, **where)
            if want is not None and verdict != want:
                raise RuntimeError(f"{program} did not take the fast path (verdict {verdict})")
            times.append(ns)
        best = min(best, statistics.median(times))
    return best


def tunnel_namespace(lab: Lab, role: str, gwi: str = "gwi-bench", gwo: str = "gwo-bench") -> str:
    """A namespace of ``lab`` with an uplink ``eth0`` (a veth whose other end, ``gwlb0``, has GWLB's address)
    and one tunnel's TUN devices, all up: where the programs can be run as the appliance runs them."""
    ns = lab.namespace(role)
    lab.veth(ns, "eth0", ns, "gwlb0", addr_a=f"{SELF}/24", addr_b=f"{GWLB}/24")
    lab.run(ns, ["ip", "link", "set", "eth0", "address", ":".join(f"{b:02x}" for b in MACS[1])])  # frames' target
    for dev in (gwi, gwo):
        lab.run(ns, ["ip", "tuntap", "add", dev, "mode", "tun"])
        lab.run(ns, ["ip", "link", "set", dev, "up"])
    return ns


@register("fastpath-programs", "the kernel fast path's two programs alone: ns per packet in and out (BPF_PROG_RUN)")
def programs(opts: argparse.Namespace) -> dict[str, Any]:
    require_root("the kernel fast path's programs")
    why = available()
    if why is not None:
        return {"text": f"fast path programs: not measured, the kernel path is unavailable: {why}", "error": why}
    asked = getattr(opts, "sizes", None) or [64, 1500]
    sizes = [s for s in asked if s <= MAX_SIZE]
    rows: dict[str, dict[str, float]] = {}
    with Lab() as lab, entered(tunnel_namespace(lab, "prog")):
        idx = {name: i for i, name in socket.if_nameindex()}
        kp = KernelPath(0x0108, True, 1024)
        try:
            kp.own_addresses({SELF}, ())
            kp.tunnel_ready(ENI, idx["gwi-bench"], idx["gwo-bench"])
            kp.set_nexthop(GWLB, idx["eth0"], *MACS)
            up = {"ifindex": idx["eth0"]}
            out = {"ifindex": idx["gwo-bench"], "ingress_ifindex": idx["gwi-bench"]}
            floor = _per_packet(kp, "geneve_in", MACS[1] + MACS[0] + b"\x08\x06" + bytes(28), None, **up)
            for size in sizes:
                inner = _inner(size)
                kp.test_run("geneve_in", _frame(inner, False), **up)  # the flow learnt
                kp.test_run("tunnel_out", inner, **out)  # the next hop's once-a-second pass to Python
                rows[str(size)] = {
                    "in_ns": _per_packet(kp, "geneve_in", _frame(inner, False), TC_ACT_REDIRECT, **up),
                    "in_sum_checked_ns": _per_packet(kp, "geneve_in", _frame(inner, True), TC_ACT_REDIRECT, **up),
                    "out_ns": _per_packet(kp, "tunnel_out", inner, TC_ACT_REDIRECT, **out)}
        finally:
            kp.close()
    lines = [f"fast path programs alone (BPF_PROG_RUN, ns per packet, the run's own floor of {floor:.0f} ns "
             f"included):"]
    lines += [f"  {size:>5} B: in {r['in_ns']:.0f}, in with the UDP checksum checked {r['in_sum_checked_ns']:.0f}, "
              f"out {r['out_ns']:.0f}" for size, r in rows.items()]
    if len(sizes) < len(asked):
        lines.append(f"  (not measured: {', '.join(str(s) for s in asked if s > MAX_SIZE)} B, over the "
                     f"{MAX_SIZE} B a test run takes)")
    return {"text": "\n".join(lines), "floor_ns": floor, "sizes": rows}
