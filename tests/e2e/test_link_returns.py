"""Returns sent straight to the link (AF_PACKET) once the route and neighbour of GWLB's address are known:
the lookup itself, the reference using it (and --raw-returns not), and a changed neighbour being followed.
The reference runs with --datapath python here: with the kernel path, returns of its flows leave from BPF."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest
from scapy.all import IP, UDP, raw

from gwlbsim.linuxio import linkpath
from gwlbsim.linuxio.netns import Lab, entered
from gwlbsim.wire import geneve
from gwlbsim.wire.checksum import ones_sum, udp4_checksum_ok
from gwlbsim.wire.outer import UDP_CSUM_OFFSET, UDP_CSUM_START, parse_ipv4_udp

from .conftest import APP_IP, GWLB_IP, Topo

pytestmark = pytest.mark.root

ENI = 0x2B8EE1D4DB0C51C4


def _mac(lab: Lab, ns: str, dev: str) -> bytes:
    return bytes.fromhex(lab.run(ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout.decode().strip().replace(":", ""))


def test_resolve_reads_route_link_and_neighbour() -> None:
    from pyroute2 import IPRoute

    with Lab() as lab:
        a, b = lab.namespace("la"), lab.namespace("lb")
        lab.veth(a, "v0", b, "v1", addr_a="10.7.0.1/24", addr_b="10.7.0.2/24")
        lab.route(a, "10.8.0.0/24", gateway="10.7.0.2")
        with entered(a), IPRoute() as ipr:
            assert linkpath.resolve(ipr, "10.7.0.2") is None  # no neighbour entry yet
            assert linkpath.resolve(ipr, "10.7.0.1") is None  # local
            assert linkpath.resolve(ipr, "192.0.2.1") is None  # no route
            lab.run(a, ["ping", "-c1", "-W1", "10.7.0.2"])
            r = linkpath.resolve(ipr, "10.7.0.2")
            via = linkpath.resolve(ipr, "10.8.0.9")  # through the gateway: its neighbour entry
            index = ipr.link_lookup(ifname="v0")[0]
        assert r is not None and r == via
        assert r.frame == _mac(lab, b, "v1") + _mac(lab, a, "v0") + b"\x08\x00"
        assert r.ifname == "v0" and struct.unpack_from("=i", r.address, 4)[0] == index


def _flow_back(topo: Topo, count: int, cookie: int) -> None:
    inner = raw(IP(src="192.168.1.10", dst="192.168.2.20") / UDP(sport=5000, dport=53) / b"q")
    sent = geneve.build(inner, ENI, cookie)
    for _ in range(count):
        topo.peer.send(sent, sport=61500)
    got = topo.peer.recv_all(count, timeout=3)
    assert len(got) == count, f"{len(got)} of {count} returned\n{topo.log()}"
    for r in got:
        assert (r.src, r.sport, r.payload) == (APP_IP, 61500, sent)  # byte for byte


def _counted(topo: Topo, n: int) -> dict[str, Any]:
    """The status totals once they count the ``n`` returns the peer got: a batch reaches the peer as soon as the
    kernel has it, a moment before the datapath thread adds it to its counters."""
    topo.wait_for(lambda: sum(topo.status()["totals"][k] for k in ("returned_via_link", "returned_via_ip")) >= n,
                  timeout=5, what=f"the status to count {n} returns")
    totals: dict[str, Any] = topo.status()["totals"]
    return totals


def test_returns_go_to_the_link_and_follow_a_changed_neighbour(topo: Topo) -> None:
    topo.start("--datapath", "python")  # the Python datapath's link path
    _flow_back(topo, 1, 1)  # the first return goes through the IP layer: the kernel resolves GWLB's address
    time.sleep(0.3)
    _flow_back(topo, 50, 1)
    totals = _counted(topo, 51)
    assert totals["returned_via_link"] >= 45 and totals["returned_via_ip"] >= 1, totals

    # GWLB's side gets another MAC address and the appliance's kernel is told (as ARP would): followed within
    # the resolver's refresh; returns sent to the old address in between are lost, as on a real link
    topo.lab.run(topo.gwlb, ["ip", "link", "set", "dev", "to-app", "address", "02:00:00:00:00:42"])
    topo.lab.run(topo.app, ["ip", "neigh", "replace", GWLB_IP, "lladdr", "02:00:00:00:00:42", "dev", "eth0"])
    time.sleep(linkpath.REFRESH * 2.6)  # the resolver looks again within a second, the datapath asks within one
    topo.peer.drain(0.1)
    before = topo.status()["totals"]["returned_via_link"]
    _flow_back(topo, 20, 1)
    assert topo.status()["totals"]["returned_via_link"] >= before + 15


def test_the_device_is_left_the_udp_checksum_and_it_comes_out_right(topo: Topo) -> None:
    topo.start("--datapath", "python")
    _flow_back(topo, 1, 3)
    time.sleep(0.3)
    with entered(topo.gwlb):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    with cap:
        cap.bind(("to-app", 0))
        cap.settimeout(2)
        _flow_back(topo, 5, 3)
        frames = []
        while len(frames) < 5:
            f = cap.recv(65535)
            if f[:12] == bytes(12) or f[23] != 17 or f[26:30] != socket.inet_aton(APP_IP):
                continue  # not a return (the capture also sees what GWLB sends)
            frames.append(bytearray(f[14:]))
    assert topo.status()["totals"]["returned_via_link"] >= 5
    for pkt in frames:
        o = parse_ipv4_udp(bytes(pkt))
        assert o.sport == 61500 and ones_sum(pkt[:20]) == 0xFFFF  # the IP header's checksum is ours, and right
        assert not o.checksum_ok  # the UDP one is not finished on a veth (the receiver's kernel trusts it)
        # the field holds the pseudo-header's sum: what a NIC (or the kernel, for one without offload) finishes
        r = 0xFFFF - ones_sum(pkt[UDP_CSUM_START:])
        pkt[UDP_CSUM_START + UDP_CSUM_OFFSET:UDP_CSUM_START + UDP_CSUM_OFFSET + 2] = (r or 0xFFFF).to_bytes(2, "big")
        assert udp4_checksum_ok(bytes(pkt[12:16]), bytes(pkt[16:20]), bytes(pkt[20:]))


def test_raw_returns_keeps_every_return_in_the_ip_layer(topo: Topo) -> None:
    topo.start("--raw-returns", "--datapath", "python")
    _flow_back(topo, 30, 7)
    time.sleep(0.3)
    _flow_back(topo, 30, 7)
    totals = _counted(topo, 60)
    assert totals["returned_via_link"] == 0 and totals["returned_via_ip"] == 60, totals
