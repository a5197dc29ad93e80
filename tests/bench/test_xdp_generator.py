"""The benchmark's in-kernel generator, on a real veth pair: every frame it counts arrives, in order, as the socket
generator would have built it, at the rate asked for (nothing here asserts on speed)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from gwlbsim.bench.traffic import STAMP, Traffic
from gwlbsim.bench.xdpgen import BURST, XdpGenerator
from gwlbsim.linuxio import linkpath
from gwlbsim.linuxio.netns import Lab, entered

pytestmark = [pytest.mark.root, pytest.mark.alone]

ETH_P_ALL = 0x0003


@pytest.fixture
def pair() -> Iterator[tuple[Lab, str, str]]:
    with Lab() as lab:
        a, b = lab.namespace("gen"), lab.namespace("peer")
        lab.veth(a, "out", b, "eth0", addr_a="10.99.7.1/24", addr_b="10.99.7.2/24", mtu=9001)
        yield lab, a, b


def _rx_packets(lab: Lab, ns: str) -> int:
    return int(lab.run(ns, ["cat", "/sys/class/net/eth0/statistics/rx_packets"]).stdout)


def test_gro_switch_reads_back(pair: tuple[Lab, str, str]) -> None:
    _lab, _a, b = pair
    with entered(b):
        assert linkpath.gro("eth0", True) is True
        assert linkpath.gro("eth0") is True
        assert linkpath.gro("eth0", False) is False
        with pytest.raises(OSError):
            linkpath.gro("no-such-dev", True)


def test_paced_frames_arrive_whole_in_order_with_their_stamps(pair: tuple[Lab, str, str]) -> None:
    lab, a, b = pair
    traffic = Traffic(200, 3, "many", "geneve", "10.99.7.1", "10.99.7.2", nonce=5)
    with entered(b):
        linkpath.gro("eth0", True)  # the peer's NAPI, which XDP transmissions to a veth need
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        cap.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        cap.bind(("eth0", 0))
    try:
        with entered(a):
            link = linkpath.route_to(traffic.destination)
            assert link is not None
            gen = XdpGenerator(traffic, link)
            starts = []
            try:
                before = _rx_packets(lab, b)
                w = gen.run(5000, 0.1, 0.2, lambda: starts.append(time.monotonic()))
            finally:
                gen.close()
        assert starts and starts[0] >= w.t0 - 0.001
        # 5000/s in bursts of 32: 500 in the warm-up, 1000 in the window (give or take the burst at an edge)
        assert w.s0 == pytest.approx(500, abs=BURST) and w.s1 - w.s0 == pytest.approx(1000, abs=BURST)
        frames: list[bytes] = []
        cap.settimeout(2.0)
        length = len(link.frame) + len(traffic.packet(0))
        while len(frames) < w.s1:  # the generator's, not the neighbour lookup's datagram or the peer's answers
            data, addr = cap.recvfrom(65536)
            if addr[2] != socket.PACKET_OUTGOING and len(data) == length:
                frames.append(data)
        assert _rx_packets(lab, b) - before >= w.s1
        for seq, data in enumerate(frames):
            fid = seq % traffic.flows
            want = link.frame + traffic.packet(fid)
            at = len(link.frame) + traffic.stamp_offset
            got_fid, got_seq, sent_ns = STAMP.unpack_from(data, at)
            assert (got_fid, got_seq) == (fid, seq)
            assert w.t0 - 0.2 <= sent_ns / 1e9 <= w.t1
            assert data[:at] == want[:at] and data[at + STAMP.size:] == want[at + STAMP.size:]
    finally:
        cap.close()


def test_a_failing_window_start_stops_the_run_at_once(pair: tuple[Lab, str, str]) -> None:
    """What the window's start calls back raises: the sending call is ended and the error comes out, long
    before the 30 s asked for."""
    _lab, a, b = pair
    traffic = Traffic(64, 2, "one", "geneve", "10.99.7.1", "10.99.7.2")
    with entered(b):
        linkpath.gro("eth0", True)
    with entered(a):
        link = linkpath.route_to(traffic.destination)
        assert link is not None
        gen = XdpGenerator(traffic, link)

        def boom() -> None:
            raise RuntimeError("sampling failed")

        t0 = time.monotonic()
        try:
            with pytest.raises(RuntimeError, match="sampling failed"):
                gen.run(1000, 0.05, 30.0, boom)
        finally:
            gen.close()
    assert time.monotonic() - t0 < 20
