"""The benchmark's ``kernel-pass`` subject: kernel forwarding with one more receive pass, through a TUN device.

It stands for what the kernel path's hand-over into gwi- alone costs a router, so it must really hand every
packet into the TUN device's receive path (not route around it) and still deliver each one to its sink.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from gwlbsim.bench import topology
from gwlbsim.linuxio.netns import Lab, entered

ETH_P_ALL = 0x0003

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _rx(lab: Lab, ns: str, dev: str) -> int:
    return int(lab.run(ns, ["cat", f"/sys/class/net/{dev}/statistics/rx_packets"]).stdout)


def test_every_packet_passes_the_tun_device_and_reaches_the_sink(tmp_path: Path) -> None:
    with Lab() as lab:
        topo = topology.build(lab, [topology.KERNEL, topology.KERNEL_PASS], tmp_path)
        try:
            plain, passing = topo.subject("kernel"), topo.subject("kernel-pass")
            assert plain.inner_dst != passing.inner_dst and plain.recv_ns != passing.recv_ns
            sink_rx = {s.name: _rx(lab, s.recv_ns, "eth0") for s in (plain, passing)}
            with entered(passing.router_ns):  # what the receive path of pass0 sees (a tap, as tcpdump)
                tap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            tap.bind(("pass0", 0))
            tap.settimeout(0.2)
            sock = lab.socket(topo.gwlb)
            try:
                for s in (plain, passing):
                    for i in range(40):
                        sock.sendto(b"x%d" % i, (s.inner_dst, 9))
            finally:
                sock.close()

            def arrived() -> bool:
                return all(_rx(lab, s.recv_ns, "eth0") - sink_rx[s.name] >= 40 for s in (plain, passing))

            deadline = time.monotonic() + 10
            while not arrived() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert arrived(), "not every packet reached its sink"
            # the other router handed each of its 40 into pass0, where they were received (not sent out of
            # it); the plain router's never touch it
            seen = []
            try:
                while True:
                    data, addr = tap.recvfrom(2048)
                    seen.append((data[28:], addr[2]))  # an IPv4/UDP packet: its payload
            except TimeoutError:
                pass
            finally:
                tap.close()
            assert sorted(d for d, _ in seen) == sorted(b"x%d" % i for i in range(40)), seen
            assert {kind for _, kind in seen} == {socket.PACKET_HOST}, seen
        finally:
            topology.close(topo)
        assert not topo.tun_fds
