"""Several datapath workers: the steering programs agree with each other and with the flow key's symmetry,
and a multi-worker reference returns every packet with its own flow's header (no speed asserted)."""

from __future__ import annotations

import json
import os
import random
import select
import socket
import time
from pathlib import Path

import pytest
from gwlbsim.reference import steering
from scapy.all import IP, TCP, UDP, IPv6, raw

from gwlbsim.bench.cli import main
from gwlbsim.bench.traffic import Traffic
from gwlbsim.linuxio.netns import Lab, entered
from gwlbsim.linuxio.tun import open_tun
from gwlbsim.wire.flowkey import symmetric_key

pytestmark = pytest.mark.alone  # CPU-pinned workers under a paced offer


def _pair(rng: random.Random) -> tuple[bytes, bytes]:
    a, b = f"10.{rng.randrange(256)}.{rng.randrange(256)}.1", f"172.16.{rng.randrange(256)}.{rng.randrange(256)}"
    sp, dp = rng.randrange(1, 65536), rng.randrange(1, 65536)
    kind = rng.choice(["tcp", "udp", "icmp", "frag", "v6"])
    if kind == "v6":
        a6, b6 = f"2001:db8::{rng.randrange(65536):x}", f"2001:db8:1::{rng.randrange(65536):x}"
        return raw(IPv6(src=a6, dst=b6) / UDP(sport=sp, dport=dp)), raw(IPv6(src=b6, dst=a6) / UDP(sport=dp, dport=sp))
    if kind == "frag":
        return raw(IP(src=a, dst=b, flags="MF") / UDP(sport=sp, dport=dp)), raw(IP(src=b, dst=a, frag=3) / (b"x" * 8))
    if kind == "icmp":
        return raw(IP(src=a, dst=b, proto=1) / b"\x08\0\0\0\0\0\0\0"), raw(IP(src=b, dst=a, proto=1) / (b"\0" * 8))
    layer = TCP if kind == "tcp" else UDP
    return raw(IP(src=a, dst=b) / layer(sport=sp, dport=dp)), raw(IP(src=b, dst=a) / layer(sport=dp, dport=sp))


def test_both_directions_of_a_flow_go_to_one_worker() -> None:
    rng = random.Random(6)
    for _ in range(2000):
        fwd, rev = _pair(rng)
        if symmetric_key(fwd) == symmetric_key(rev):
            for n in (2, 3, 8):
                assert steering.worker_of(fwd, n) == steering.worker_of(rev, n)


def test_programs_assemble() -> None:
    for n in (2, 7):
        for enc in (True, False):
            prog = steering.program(n, enc)
            assert len(prog) % 8 == 0 and len(prog) > 100
    with pytest.raises(ValueError):
        steering.program(0, True)


@pytest.mark.root
def test_kernel_steering_matches_worker_of() -> None:
    n = 3
    t = Traffic(64, 120)
    with Lab() as lab:
        ns = lab.namespace("steer")
        with entered(ns):
            socks = []
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.bind(("127.0.0.1", 6081))
                socks.append(s)
            udp_prog = steering.load(steering.program(n, encapsulated=True))
            tun_prog = steering.load(steering.program(n, encapsulated=False))
            queues = [open_tun("mq0", multi_queue=True, mtu=1500, ipv6_link_local=False) for _ in range(n)]
            try:
                steering.attach_reuseport(socks[0], udp_prog)
                steering.attach_tun(queues[0], tun_prog)
                lab.configure(ns, "mq0", "10.5.0.1/24")
                lab.route(ns, "172.16.0.0/16", dev="mq0")
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                rawsock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                for fid in range(t.flows):
                    want = steering.worker_of(t.inner(fid), n)
                    tx.sendto(t.packet(fid)[28:], ("127.0.0.1", 6081))  # GENEVE payload
                    rawsock.sendto(t.inner(fid), ("172.16.0.1", 0))  # the inner packet, out of the TUN
                    time.sleep(0.002)
                    got_udp = [i for i, s in enumerate(socks) if select.select([s], [], [], 0)[0]]
                    for i in got_udp:
                        socks[i].recv(65535)
                    got_tun = []
                    for i, q in enumerate(queues):
                        try:
                            while os.read(q, 65535):
                                got_tun.append(i)
                        except BlockingIOError:
                            pass
                    assert got_udp == [want] and got_tun == [want], (fid, want, got_udp, got_tun)
                tx.close()
                rawsock.close()
            finally:
                for fd in (*queues, udp_prog, tun_prog):
                    os.close(fd)
                for s in socks:
                    s.close()


@pytest.mark.root
@pytest.mark.slow
def test_two_workers_return_every_flow_with_its_own_header(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = main(["--subjects", "reference", "--workers", "2", "--sizes", "64", "--flows", "64", "--ports", "one",
               "--rates", "5000", "--duration", "0.5", "--warmup", "0.2", "--memory-flows", "0", "-q",
               "--json", str(out)])
    doc = json.loads(out.read_text())
    assert rc == 0
    assert {m["subject"] for m in doc["measurements"]} == {"reference", "reference-w2"}
    for m in doc["measurements"]:
        assert m["echo_errors"] == 0, m["echo_error_examples"]
        assert m["returned"] > 0
