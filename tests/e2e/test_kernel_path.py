"""The kernel fast path (``--datapath kernel``): real BPF programs in the real kernel, attached with tcx.

* It carries the common case (GWLB's layout, IPv4 inside) both ways once a tunnel is ready and the next hop
  known, and the status says so.
* Differential: the same datagrams through the kernel path and through the Python path give byte-identical
  returns (outer IPv4 and UDP headers, GENEVE header, inner packet; the UDP checksum verified on its own, since
  the Python path leaves it to the device) and the same drops; also for frames held mostly outside the linear
  data (jumbo frames as a NIC may hand them over) and for datagrams whose checksums the stack would reject.
* The hooks' own tc qdiscs and a user's tc rules on the tunnel devices keep working beside the programs.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gwlbsim.reference.kernelpath import _SLOT, DEVICE_SLOTS, KernelPath, available, flow_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, raw

from gwlbsim.bench import fastpath_programs as fp
from gwlbsim.linuxio import linkpath
from gwlbsim.linuxio.httpprobe import http_probe, wait_healthy
from gwlbsim.linuxio.netns import Lab, entered
from gwlbsim.probe import GenevePeer
from gwlbsim.traffic import strategies as gst
from gwlbsim.wire import geneve
from gwlbsim.wire.checksum import ones_sum
from gwlbsim.wire.outer import parse_ipv4_udp

from .conftest import APP_IP, PASSTHROUGH, Topo

pytestmark = [pytest.mark.root]

ENI = 0x2B8EE1D4DB0C5177
WHY_NOT = available()
needs_kernel_path = pytest.mark.skipif(WHY_NOT is not None, reason=f"kernel path unavailable: {WHY_NOT}")


def _cases() -> list[tuple[bytes, int]]:
    """(GENEVE payload, GWLB source port): the kernel's common case, and what it leaves to Python."""
    v4 = dict(src="192.168.1.10", dst="192.168.2.20")
    out = []
    for n, inner in enumerate([
            IP(**v4) / TCP(sport=1000, dport=80, flags="S"),
            IP(src=v4["dst"], dst=v4["src"]) / TCP(sport=80, dport=1000, flags="SA"),
            IP(**v4) / UDP(sport=5353, dport=53) / (b"q" * 100),
            IP(**v4) / UDP(sport=5353, dport=53) / (b"x" * 8000),
            IP(**v4) / ICMP(id=7, seq=1) / b"ping",
            IP(**v4, ttl=1) / UDP(sport=9, dport=9) / b"ttl 1",
            IP(**v4, options=b"\x01\x01\x01\x00") / UDP(sport=10, dport=10),  # IPv4 options inside
            IP(**v4, flags="MF", frag=0) / UDP(sport=11, dport=11) / (b"f" * 64),  # a first fragment
            IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=12, dport=12) / b"v6",
            IPv6(src="2001:db8::2", dst="2001:db8::1") / TCP(sport=80, dport=1000, flags="SA"),
            IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=3, seq=4),
            IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=14, dport=14) / (b"6" * 8000),
            IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / UDP(sport=15, dport=15),  # Python's
    ]):
        out.append((geneve.build(raw(inner), ENI, 0x5000 + n), 61000 + n))
    # the same flow again with a new cookie (a reused 5-tuple): must switch at once
    out.append((geneve.build(raw(IP(**v4) / TCP(sport=1000, dport=80, flags="S")), ENI, 0x6000), 61000))
    # foreign options (Python's), then malformed ones (dropped by Python with their reasons)
    extra = geneve.GeneveOption(0xFF01, 0x22, b"abcdefgh")
    hdr = geneve.GeneveHeader(protocol=geneve.ETH_P_IP, options=(*geneve.gwlb_options(ENI, 0, 0x7000), extra))
    out.append((hdr.to_bytes() + raw(IP(**v4) / UDP(sport=13, dport=13)), 61013))
    out.append((b"\x00" * 7, 61014))
    return out


def _capture(topo: Topo) -> socket.socket:
    with entered(topo.gwlb):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    cap.bind(("to-app", 0))
    cap.settimeout(0.5)
    return cap


def _returns(cap: socket.socket, want: int, ports: set[int], timeout: float = 5.0) -> list[bytes]:
    """IPv4 packets from the appliance to GWLB's 6081 from one of ``ports``, as captured (outer headers
    included)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            f = cap.recv(65535)
        except TimeoutError:
            continue
        if f[12:14] == b"\x08\x00" and f[14 + 9] == 17 and f[14 + 12:14 + 16] == socket.inet_aton(APP_IP) \
                and int.from_bytes(f[34:36], "big") in ports:
            got.append(f[14:])
    return got


def _run(topo: Topo, datapath: str) -> tuple[list[bytes], dict[str, int], dict[str, object]]:
    """Start the reference with ``datapath``, warm the tunnel and the next hop up, then send every case once;
    what came back (the UDP checksum verified, then zeroed) and the drops."""
    proc = topo.start("--datapath", datapath)
    warm = geneve.build(raw(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=1)), ENI, 1)
    for _ in range(3):  # the tunnel is created by the first, the next hop resolved by the first returns
        topo.peer.send(warm, sport=60999)
        assert topo.peer.recv(3) is not None, topo.log()
    topo.wait_for(lambda: datapath == "python" or topo.status()["datapath"]["kernel"]["next_hops"] >= 1,
                  what="the next hop toward GWLB in the kernel path's map")
    cases = _cases()
    with _capture(topo) as cap:
        for payload, sport in cases:
            topo.peer.send(payload, sport=sport)
            # one at a time: a return carries its flow's latest header and port, so a packet of the same flow
            # arriving before it is returned would change it (both paths alike; the kernel's is never later)
            time.sleep(0.02)
        got = _returns(cap, len(cases) - 2, {sport for _, sport in cases})
    status = topo.status()
    normalised = []
    for pkt in got:
        b = bytearray(pkt)
        o = parse_ipv4_udp(bytes(b))
        # complete and right (the kernel path's, and the IP layer's), or the pseudo-header's sum that the Python
        # path leaves the device to finish (the receiver of a veth trusts it)
        pseudo = ones_sum(b[12:20] + bytes([0, 17]) + b[24:26])
        assert o.checksum_ok or int.from_bytes(b[26:28], "big") == pseudo, bytes(b[:48]).hex()
        b[26:28] = b"\0\0"
        normalised.append(bytes(b))
    proc.terminate()
    proc.wait(20)
    topo.procs.clear()
    return normalised, status["totals"]["drops"], status["datapath"]


@needs_kernel_path
def test_kernel_and_python_paths_return_the_same_bytes_and_drop_the_same(topo: Topo) -> None:
    kernel, kdrops, kinfo = _run(topo, "kernel")
    python, pdrops, pinfo = _run(topo, "python")
    assert kinfo["kind"] == "kernel" and pinfo["kind"] == "python", (kinfo, pinfo)
    assert len(kernel) == len(python) == len(_cases()) - 2, (len(kernel), len(python))
    for n, (k, p) in enumerate(zip(kernel, python, strict=True)):
        assert k == p, f"return {n} differs:\nkernel {k[:80].hex()}\npython {p[:80].hex()}"
    assert kdrops == pdrops, (kdrops, pdrops)
    fast = kinfo["kernel"]
    assert isinstance(fast, dict) and fast["in_fast"] >= 9 and fast["out_fast"] >= 9, fast


@needs_kernel_path
def test_the_kernel_path_carries_the_common_case_and_counts_it(topo: Topo) -> None:
    topo.start("--datapath", "kernel")
    flows = [geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=2000 + i, dport=53) / b"d"), ENI,
                          0x100 + i) for i in range(4)]
    flows += [geneve.build(raw(IPv6(src="fd00:1::1", dst="fd00:2::1") / UDP(sport=2000 + i, dport=53) / b"d"), ENI,
                           0x200 + i) for i in range(4)]
    for rnd in range(3):
        for i, payload in enumerate(flows):
            topo.peer.send(payload, sport=62000 + i)
        backs = topo.peer.recv_all(len(flows), 3)
        assert sorted(r.payload for r in backs) == sorted(flows), f"round {rnd}\n{topo.log()}"
        topo.wait_for(lambda: topo.status()["datapath"]["kernel"]["next_hops"] >= 1,
                      what="the next hop toward GWLB (the first round's returns resolve it)")
    info = topo.status()["datapath"]
    assert info["kind"] == "kernel", info
    fast = info["kernel"]
    # the first round creates the tunnel and resolves the next hop; both later rounds, IPv4 and IPv6, are the
    # kernel's, but for the one return a second that goes through the IP layer (the neighbour's confirmation)
    assert fast["in_fast"] >= 16 and fast["out_fast"] >= 14 and fast["tunnels"] == 1, fast
    doc = topo.status()
    assert doc["totals"]["packets_in"] == doc["totals"]["packets_out"] == 24, doc["totals"]
    # the tunnel's own counters include what the kernel carried for it: all 24 each way, every inner byte
    (tunnel,) = doc["tunnels"]
    inner = sum(len(geneve.parse(p).inner) for p in flows) * 3
    assert (tunnel["packets_in"], tunnel["packets_out"]) == (24, 24), tunnel
    assert tunnel["bytes_in"] == tunnel["bytes_out"] == inner, (tunnel, inner)


@needs_kernel_path
def test_a_tunnel_near_its_idle_deadline_is_the_python_datapaths_until_used_again(topo: Topo) -> None:
    """-t 4: in the last two seconds of its idle time the kernel's copy of the tunnel is closed, so its traffic is
    the Python datapath's and the decision to retire it is made where its packets are handled. A packet then is
    carried by the Python datapath, through the same tunnel (not re-created), and opens it in the kernel again:
    the next ones are the kernel's. Every packet comes back, and the tunnel counts all of them."""
    topo.start("--datapath", "kernel", "-t", "4")
    flows = [geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=3000 + i, dport=53) / b"d"), ENI,
                          0x300 + i) for i in range(4)]

    def round_trip(what: str) -> dict[str, int]:
        for i, payload in enumerate(flows):
            topo.peer.send(payload, sport=63000 + i)
        backs = topo.peer.recv_all(len(flows), 3)
        assert sorted(r.payload for r in backs) == sorted(flows), f"{what}\n{topo.log()}"
        return dict(topo.status()["datapath"]["kernel"])

    round_trip("the tunnel created")
    topo.wait_for(lambda: topo.status()["datapath"]["kernel"]["next_hops"] >= 1, what="the next hop")
    before = round_trip("the kernel's first round")
    (tunnel,) = topo.status()["tunnels"]
    assert before["tunnels_closed"] == 0, before
    topo.wait_for(lambda: topo.status()["datapath"]["kernel"]["tunnels_closed"] == 1, timeout=8,
                  what="the tunnel closed in the kernel near its idle deadline")
    closed = dict(topo.status()["datapath"]["kernel"])
    after = round_trip("sent while the tunnel was closed in the kernel")
    assert after["in_fast"] == closed["in_fast"] and after["in_passed"] >= closed["in_passed"] + len(flows), \
        (closed, after)
    (same,) = topo.status()["tunnels"]
    assert same["generation"] == tunnel["generation"], (tunnel, same)  # the same tunnel: not re-created
    topo.wait_for(lambda: topo.status()["datapath"]["kernel"]["tunnels_closed"] == 0, timeout=3,
                  what="the tunnel opened in the kernel again")
    again = round_trip("after the tunnel opened in the kernel again")
    assert again["in_fast"] >= after["in_fast"] + len(flows), (after, again)
    (last,) = topo.status()["tunnels"]
    assert last["generation"] == tunnel["generation"] and last["packets_in"] == last["packets_out"] == 16, last


@needs_kernel_path
def test_tc_rules_on_the_tunnel_devices_still_apply(topo: Topo, tmp_path: Path) -> None:
    """The passthrough hook's ingress qdisc and mirred filter work beside the tcx programs. A hook that puts
    classic tc egress rules on gwo- (here: UDP to port 7 is sent away to lo) keeps its tunnel on the Python
    datapath, so the rule applies (the programs run before classic egress rules and would bypass it)."""
    hook = tmp_path / "hook.sh"
    hook.write_text(f"""sh {PASSTHROUGH} "$@" || exit
[ "$1" = CREATE ] || exit 0
tc qdisc add dev "$3" clsact
tc filter add dev "$3" egress protocol ip u32 match ip protocol 17 0xff match ip dport 7 0xffff \\
    action mirred egress redirect dev lo
""")
    topo.start("--datapath", "kernel", create=f"sh {hook}")
    ok = geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=3000, dport=8) / b"kept"), ENI, 0x900)
    away = geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=3001, dport=7) / b"gone"), ENI, 0x901)
    topo.peer.send(ok, sport=63000)
    assert topo.peer.recv(3) is not None, topo.log()
    for _ in range(3):
        topo.peer.send(away, sport=63001)
        topo.peer.send(ok, sport=63000)
    backs = topo.peer.recv_all(6, 2)
    assert [r.payload for r in backs] == [ok] * 3, [r.payload[-4:] for r in backs]
    assert topo.status()["datapath"]["kernel"]["tunnels_kept_on_python"] == 1


@needs_kernel_path
def test_classic_tc_on_the_uplink_still_sees_what_the_program_passes(topo: Topo) -> None:
    """The GENEVE program passes what is not its own on (TCX_NEXT, not TCX_PASS): a classic tc ingress rule on
    the uplink still applies to it (here: GENEVE sent away to lo, so nothing comes back)."""
    topo.start("--datapath", "kernel")
    topo.lab.run(topo.app, ["tc", "qdisc", "add", "dev", "eth0", "clsact"])
    topo.lab.run(topo.app, ["tc", "filter", "add", "dev", "eth0", "ingress", "protocol", "ip", "u32", "match", "ip",
                            "protocol", "17", "0xff", "match", "ip", "dport", "6081", "0xffff", "action", "mirred",
                            "egress", "redirect", "dev", "lo"])
    payload = geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=3002, dport=9) / b"x"), ENI, 0x902)
    for _ in range(3):
        topo.peer.send(payload, sport=63002)
    assert topo.peer.recv(1.5) is None, "a classic tc rule on the uplink was bypassed"


def test_flow_key_orders_both_directions_alike() -> None:
    fwd = raw(IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=5, dport=6))
    rev = raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=6, dport=5))
    assert flow_key(1, fwd, 0, len(fwd)) == flow_key(1, rev, 0, len(rev)) is not None
    assert flow_key(2, fwd, 0, len(fwd)) != flow_key(1, fwd, 0, len(fwd))
    frag = raw(IP(src="10.0.0.2", dst="10.0.0.1", flags="MF") / UDP(sport=5, dport=6))
    ext = raw(IPv6() / IPv6ExtHdrDestOpt() / UDP())
    assert flow_key(1, frag, 0, len(frag)) is None and flow_key(1, ext, 0, len(ext)) is None
    v6 = raw(IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=5, dport=6))
    v6r = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=6, dport=5))
    assert flow_key(1, v6, 0, len(v6)) == flow_key(1, v6r, 0, len(v6r)) is not None
    assert flow_key(1, v6, 0, len(v6)) != flow_key(1, fwd, 0, len(fwd))


# -------------------------------------------------------------------------------- generated, both at once


def _fast_out(app: str, ns: str) -> int:
    """How many returns the appliance at ``app`` encapsulated in the kernel."""
    return int(json.loads(http_probe(app, 8080, "/", timeout=5, ns=ns).body)["datapath"]["kernel"]["out_fast"])


def _frame_sender(lab: Lab, ns: str, dev: str, local: str, remote: str, udp_checksum: int | None = None,
                  ip_checksum: int | None = None, mac: str | None = None,
                  dst: str | None = None) -> Callable[[bytes, int], None]:
    """Sends a GENEVE payload from ``local`` to ``remote`` as a whole Ethernet frame through a packet socket on
    ``dev`` (a frame over a page long then keeps only its Ethernet header in the linear data; nobody checked its
    checksums on the way, which are right unless given; to the peer's MAC and IP address unless given)."""
    peer_mac = mac or json.loads(lab.run(ns, ["ip", "-j", "neigh", "show", remote]).stdout)[0]["lladdr"]
    own_mac = json.loads(lab.run(ns, ["ip", "-j", "link", "show", dev]).stdout)[0]["address"]

    def send(payload: bytes, sport: int) -> None:
        frame = raw(Ether(src=own_mac, dst=peer_mac) / IP(src=local, dst=dst or remote, chksum=ip_checksum)
                    / UDP(sport=sport, dport=6081, chksum=udp_checksum) / payload)
        with entered(ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        with s:
            s.sendto(frame, (dev, 0))
    return send


ENIS = (0x2B8EE1D4DB0C5181, 0x2B8EE1D4DB0C5182)
PAIR = {"kernel": ("10.97.0.1", "10.97.0.2"), "python": ("10.96.0.1", "10.96.0.2")}
#: the marker takes the Python datapath on both appliances (an IPv6 extension header inside): behind anything
#: either path carries
MARKER_INNER = raw(IPv6(src="fd00:9::1", dst="fd00:9::2") / IPv6ExtHdrDestOpt() / UDP(sport=9, dport=9) / b"marker")


def _exchange(peer: GenevePeer, payload: bytes, sport: int,
              send: Callable[[bytes, int], None] | None = None) -> list[bytes]:
    """What comes back for ``payload`` from ``sport`` (sent by ``send``, the peer's socket by default):
    everything from that port until a marker sent behind it (from its own port, to the same endpoint: behind it
    in a tunnel still being created; through the slower, Python datapath: behind it whichever path it took) is
    back, so a drop costs no timeout."""
    try:
        eni_id = geneve.parse(payload).eni_id
    except geneve.GeneveError:
        eni_id = ENIS[0]
    (send or (lambda p, port: peer.send(p, sport=port)))(payload, sport)
    peer.send(geneve.build(MARKER_INNER, eni_id, 0x4D), sport=sport + 1)
    got: list[bytes] = []
    while (r := peer.recv(3)) is not None:
        if r.sport == sport + 1:
            return got
        if r.sport == sport:
            got.append(r.payload)
    raise AssertionError("the marker did not come back: the appliance stopped carrying traffic")


@needs_kernel_path
def test_generated_traffic_gets_the_same_answers_from_both_paths(tmp_path: Path) -> None:
    """Hypothesis-generated datagrams (GWLB's common case with IPv4 or IPv6 inside, up to 8500 bytes, twice as
    often; any valid layout; the captured vectors; malformed ones) go to two reference appliances side by side,
    one on each datapath: each must get exactly the same returns (bytes, port) and the two must count the same drops."""
    with Lab() as lab:
        g = lab.namespace("gwlb")
        peers, procs, apps = {}, [], {}
        try:
            for kind, (gw, app) in PAIR.items():
                a = lab.namespace(f"app{kind[0]}")
                lab.veth(g, f"to-{kind}", a, "eth0", addr_a=f"{gw}/24", addr_b=f"{app}/24", mtu=9001)
                peers[kind] = GenevePeer(g, gw, app)
                log = open(tmp_path / f"{kind}.log", "wb")  # noqa: SIM115 - owned by the process
                procs.append(lab.popen(a, [sys.executable, "-m", "gwlbsim.reference.cli", "-c", f"sh {PASSTHROUGH}",
                                           "-p", "8080", "-j", "--datapath", kind], stdout=log,
                                       stderr=subprocess.STDOUT))
                apps[kind] = app
            for kind, app in apps.items():
                assert wait_healthy(app, 8080, timeout=20, ns=g).status == 200, (tmp_path / f"{kind}.log").read_text()
            ports = iter(range(20000, 60000, 2))
            for _ in range(3):  # tunnels ready, next hops known
                for eni_id in ENIS:
                    warm = geneve.build(raw(IP(src="10.1.1.1", dst="10.2.2.2") / UDP(sport=1, dport=2)), eni_id, 1)
                    sport = next(ports)
                    for kind in PAIR:
                        assert _exchange(peers[kind], warm, sport) == [warm], (tmp_path / f"{kind}.log").read_text()

            common = gst.valid_packets(eni_ids=st.sampled_from(ENIS), extras=False, flag_bits=False,
                                       inner=gst.inner_packets(versions=(4, 6), max_size=8500, fragments=False))
            anything = gst.valid_packets(eni_ids=st.sampled_from(ENIS))

            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(payload=st.one_of(common.map(lambda vp: vp.payload), common.map(lambda vp: vp.payload),
                                     anything.map(lambda vp: vp.payload),
                                     gst.vector_packets().map(lambda vp: vp.payload),
                                     gst.malformed_packets().map(lambda mp: mp.payload)))
            def same(payload: bytes) -> None:
                sport = next(ports)
                k, p = _exchange(peers["kernel"], payload, sport), _exchange(peers["python"], payload, sport)
                assert k == p, f"kernel {[x[:60].hex() for x in k]}\npython {[x[:60].hex() for x in p]}"

            same()

            # reused tuples: a few flows (IPv4 and IPv6, either direction) again and again, each time with a new
            # or an old cookie, from either endpoint, from a new GWLB port: the return must carry that latest
            # header, whichever path learnt the flow before
            tuples = [IP(src="10.5.0.1", dst="10.6.0.1") / UDP(sport=4000, dport=53),
                      IP(src="10.5.0.1", dst="10.6.0.1") / TCP(sport=4001, dport=443, flags="A"),
                      IPv6(src="fd00:5::1", dst="fd00:6::1") / UDP(sport=4002, dport=53),
                      IPv6(src="fd00:5::1", dst="fd00:6::1") / TCP(sport=4003, dport=443, flags="A")]

            def packet(flow: int, reverse: bool, cookie: int, eni_id: int, pad: int) -> bytes:
                p = tuples[flow].copy()
                if reverse:
                    p.src, p.dst = p.dst, p.src
                    p.payload.sport, p.payload.dport = p.payload.dport, p.payload.sport
                return geneve.build(raw(p / (b"r" * pad)), eni_id, cookie)

            step = st.builds(packet, st.integers(0, len(tuples) - 1), st.booleans(),
                             st.sampled_from([0x11, 0x22, 0x33]) | st.integers(0, 0xFFFFFFFF), st.sampled_from(ENIS),
                             st.integers(0, 1400))

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(steps=st.lists(step, min_size=2, max_size=8))
            def reused(steps: list[bytes]) -> None:
                for payload in steps:
                    sport = next(ports)
                    k, p = _exchange(peers["kernel"], payload, sport), _exchange(peers["python"], payload, sport)
                    assert k == p == [payload], (f"kernel {[x[:60].hex() for x in k]}\n"
                                                 f"python {[x[:60].hex() for x in p]}")

            reused()

            # frames longer than a page from a packet socket: all but the Ethernet header out of the linear data
            # (as a NIC's jumbo frames may come), which the kernel path makes linear only as far as the headers,
            # and sums the rest where it lies; every length of the last word
            a4, a6 = {"src": "10.7.0.1", "dst": "10.8.0.1"}, {"src": "fd00:7::1", "dst": "fd00:8::1"}
            for n, inner in enumerate([IP(**a4) / UDP(sport=7000, dport=7) / (b"j" * 8400),
                                       IP(**a4) / UDP(sport=7001, dport=7) / (b"k" * 5001),
                                       IPv6(**a6) / TCP(sport=7002, dport=7, flags="A") / (b"l" * 6002),
                                       IPv6(**a6) / UDP(sport=7003, dport=7) / (b"m" * 4599)]):
                payload = geneve.build(raw(inner), ENIS[n % 2], 0x900 + n)
                # ... each carried by the kernel path; twice at most, since once a second one return to a GWLB
                # address takes the IP layer (the neighbour's confirmation) and this one may be it
                for _attempt in range(2):
                    fast_before = _fast_out(app=apps["kernel"], ns=g)
                    sport = next(ports)
                    got = {kind: _exchange(peers[kind], payload, sport,
                                           _frame_sender(lab, g, f"to-{kind}", *PAIR[kind])) for kind in PAIR}
                    assert got["kernel"] == got["python"] == [payload], {k: [len(x) for x in v]
                                                                         for k, v in got.items()}
                    if _fast_out(app=apps["kernel"], ns=g) == fast_before + 1:
                        break
                else:
                    pytest.fail(f"jumbo frame {n}: its return did not take the kernel path, twice")
            # ... and with a wrong UDP or IPv4 header checksum, which the stack drops: so must the kernel path
            elsewhere = {kind: app.rsplit(".", 1)[0] + ".77" for kind, (_gw, app) in PAIR.items()}
            for n, (inner, sums) in enumerate([
                    (IP(**a4) / UDP(sport=7100, dport=7) / b"bad sum", {"udp_checksum": 0x1234}),
                    (IP(**a4) / UDP(sport=7101, dport=7) / (b"B" * 6000), {"udp_checksum": 1}),
                    (IP(**a4) / UDP(sport=7102, dport=7) / b"bad ip", {"ip_checksum": 0x4321}),
                    # ... or to another station's MAC address, which the IP layer drops as not for this host
                    (IP(**a4) / UDP(sport=7103, dport=7) / b"not ours", {"mac": "02:00:5e:00:53:99"}),
                    # ... or to an address that is not the appliance's, which the stack forwards or drops
                    (IP(**a4) / UDP(sport=7104, dport=7) / b"elsewhere", {"dst": elsewhere})]):
                payload = geneve.build(raw(inner), ENIS[0], 0x990 + n)
                sport = next(ports)
                got = {kind: _exchange(peers[kind], payload, sport, _frame_sender(
                    lab, g, f"to-{kind}", *PAIR[kind], **{k: v[kind] if isinstance(v, dict) else v
                                                          for k, v in sums.items()}))
                       for kind in PAIR}
                assert got["kernel"] == got["python"] == [], {k: [len(x) for x in v] for k, v in got.items()}

            status = {kind: json.loads(http_probe(app, 8080, "/", timeout=5, ns=g).body) for kind, app in apps.items()}
            assert status["kernel"]["totals"]["drops"] == status["python"]["totals"]["drops"]
            fast = status["kernel"]["datapath"]["kernel"]
            assert fast["in_fast"] > 10 and fast["out_fast"] > 8, fast  # the kernel carried its share
        finally:
            for proc in procs:
                lab.stop_process(proc)
            for peer in peers.values():
                peer.close()


@needs_kernel_path
def test_max_flows_sizes_the_kernel_flow_map() -> None:
    from gwlbsim.reference.kernelpath import KernelPath

    kernel = KernelPath(0x0108, True, 5000)
    try:
        info = dict(line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{kernel.maps['flows']}").read_text()
                    .splitlines() if ":" in line)
        assert int(info["max_entries"]) == 5000 and int(info["key_size"]) == 48, info
    finally:
        kernel.close()


@needs_kernel_path
def test_the_kernel_path_keeps_the_neighbour_confirmed_and_follows_a_changed_one(topo: Topo) -> None:
    topo.start("--datapath", "kernel")
    flow = geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=2000, dport=53) / b"n"), ENI, 0x300)

    def back(n: int) -> int:
        for _ in range(n):
            topo.peer.send(flow, sport=62100)
        return len(topo.peer.recv_all(n, 3))

    assert back(3) == 3, topo.log()
    topo.wait_for(lambda: topo.status()["datapath"]["kernel"]["next_hops"] >= 1, what="the next hop toward GWLB")
    via_ip = topo.status()["totals"]["returned_via_ip"]
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # returns for 2.5 s, ten a round: the kernel carries them
        assert back(10) == 10
        time.sleep(0.1)
    doc = topo.status()
    # ... but for one a second, sent through the IP layer so that the kernel keeps GWLB's neighbour confirmed
    assert 1 <= doc["totals"]["returned_via_ip"] - via_ip <= 5, doc["totals"]
    assert doc["datapath"]["kernel"]["out_fast"] >= 150, doc["datapath"]

    # GWLB's side gets another MAC address and the appliance's kernel learns it: the kernel path follows
    topo.lab.run(topo.gwlb, ["ip", "link", "set", "dev", "to-app", "address", "02:00:00:00:00:43"])
    topo.lab.run(topo.app, ["ip", "neigh", "replace", "10.99.0.1", "lladdr", "02:00:00:00:00:43", "dev", "eth0"])
    time.sleep(linkpath.REFRESH * 2.6)  # the resolver looks again within a second, the map follows at a tick
    topo.peer.drain(0.1)
    before = topo.status()["datapath"]["kernel"]["out_fast"]
    assert back(20) == 20
    assert topo.status()["datapath"]["kernel"]["out_fast"] >= before + 18


@needs_kernel_path
def test_expiry_takes_out_exactly_the_idle_flows_in_batches() -> None:
    from gwlbsim.reference.kernelpath import _FLOW_VAL, KernelPath

    kernel = KernelPath(0x0108, True, 20_000)
    try:
        now = time.monotonic()
        for i in range(10_000):  # every third idle for 100 s; half of them of ENI 7, half of ENI 8
            p = raw(IP(src=f"10.{i >> 8 & 255}.{i & 255}.1", dst="10.0.0.2") / UDP(sport=1000, dport=53))
            key = flow_key(7 + i % 2, p, 0, len(p))
            assert key is not None
            seen = int((now - (100 if i % 3 == 0 else 1)) * 1e9)
            kernel.update("flows", key, _FLOW_VAL.pack(b"h" * 40, bytes(4), bytes(4), bytes(2), seen))
        assert kernel.expire_flows(now - 50) == 6666  # more than one batch of 4096, both ways
        assert sum(1 for _ in kernel.items("flows", 48, 64)) == 6666
        kernel.tunnel_gone(7, 0, 0)  # a tunnel's flows go with it
        left = [k for k, _ in kernel.items("flows", 48, 64)]
        assert len(left) == 3333 and all(int.from_bytes(k[:8], "little") == 8 for k in left)
    finally:
        kernel.close()


# -------------------------------------------------------------------------------- the device table

@needs_kernel_path
def test_a_device_whose_slot_is_taken_is_found_by_hash_and_a_freed_slot_is_reused() -> None:
    """The programs find a tunnel device in a direct-mapped table (ifindex modulo its size) and fall back to the
    hash when another device holds that slot: run on one packet each (BPF_PROG_RUN), a return leaves through
    the fast path either way, and a tunnel's teardown frees only the slots it held."""
    with Lab() as lab, entered(fp.tunnel_namespace(lab, "slots", "gwi-s", "gwo-s")):
        idx = {name: i for i, name in socket.if_nameindex()}
        gwi, gwo = idx["gwi-s"], idx["gwo-s"]
        kp = KernelPath(0x0108, True, 1024)
        try:
            def slot(dev: int) -> tuple[int, int]:
                raw_slot = kp.lookup("device_slots", struct.pack("=I", dev % DEVICE_SLOTS), _SLOT.size)
                assert raw_slot is not None
                return _SLOT.unpack(raw_slot)

            other = gwi + DEVICE_SLOTS  # a device elsewhere in the index space holds gwi-'s slot
            kp.update("device_slots", struct.pack("=I", gwi % DEVICE_SLOTS), _SLOT.pack(other, 0x99))
            kp.own_addresses({fp.SELF}, ())
            kp.tunnel_ready(fp.ENI, gwi, gwo)
            assert slot(gwi) == (other, 0x99) and slot(gwo) == (gwo, fp.ENI)
            kp.set_nexthop(fp.GWLB, idx["eth0"], *fp.MACS)
            inner = fp._inner(64)
            up, out = {"ifindex": idx["eth0"]}, {"ifindex": gwo, "ingress_ifindex": gwi}
            assert kp.test_run("geneve_in", fp._frame(inner, False), **up)[0] == fp.TC_ACT_REDIRECT
            kp.test_run("tunnel_out", inner, **out)  # the next hop's once-a-second pass to Python
            assert kp.test_run("tunnel_out", inner, **out)[0] == fp.TC_ACT_REDIRECT  # gwi- found by hash
            # out of a device that is not the tunnel's: left to Python, whatever its slot says
            assert kp.test_run("tunnel_out", inner, ifindex=idx["eth0"], ingress_ifindex=gwi)[0] != \
                    fp.TC_ACT_REDIRECT
            kp.tunnel_gone(fp.ENI, gwi, gwo)
            assert slot(gwi) == (other, 0x99) and slot(gwo) == (0, 0)  # only its own slot freed
            assert kp.test_run("tunnel_out", inner, **out)[0] != fp.TC_ACT_REDIRECT
        finally:
            kp.close()


@needs_kernel_path
def test_flows_are_learnt_only_for_addresses_geneve_is_received_on_and_dropped_with_them() -> None:
    """A datagram to an address the socket does not receive on is the stack's; when an address goes away, so do
    the flows learnt from datagrams to it (their returns then take the Python datapath)."""
    with Lab() as lab, entered(fp.tunnel_namespace(lab, "own", "gwi-o", "gwo-o")):
        idx = {name: i for i, name in socket.if_nameindex()}
        kp = KernelPath(0x0108, True, 1024)
        try:
            kp.tunnel_ready(fp.ENI, idx["gwi-o"], idx["gwo-o"])
            inner, up = fp._inner(64), {"ifindex": idx["eth0"]}
            assert kp.test_run("geneve_in", fp._frame(inner, False), **up)[0] != fp.TC_ACT_REDIRECT
            assert kp.flow(fp.ENI, inner, 0, len(inner)) is None
            kp.own_addresses({fp.SELF, "10.51.0.9"}, ())
            assert kp.test_run("geneve_in", fp._frame(inner, False), **up)[0] == fp.TC_ACT_REDIRECT
            assert kp.flow(fp.ENI, inner, 0, len(inner)) is not None
            kp.own_addresses((), {"10.51.0.9"})  # another address goes: this flow stays
            assert kp.flow(fp.ENI, inner, 0, len(inner)) is not None
            kp.own_addresses((), {fp.SELF})
            assert kp.flow(fp.ENI, inner, 0, len(inner)) is None
            assert kp.test_run("geneve_in", fp._frame(inner, False), **up)[0] != fp.TC_ACT_REDIRECT
        finally:
            kp.close()


@needs_kernel_path
def test_a_closed_tunnel_is_left_to_python_both_ways_and_its_counts_are_handed_over() -> None:
    """Closing a tunnel (its retirement near) takes its copy out of the kernel in one step, counts and all:
    GENEVE for it and returns of the flows the kernel learnt then go to the Python datapath (the returns too,
    so that none is carried and counted by a tunnel that is no longer there); opening it again starts its
    counts afresh."""
    with Lab() as lab, entered(fp.tunnel_namespace(lab, "close", "gwi-c", "gwo-c")):
        idx = {name: i for i, name in socket.if_nameindex()}
        gwi, gwo = idx["gwi-c"], idx["gwo-c"]
        kp = KernelPath(0x0108, True, 1024)
        try:
            kp.own_addresses({fp.SELF}, ())
            kp.tunnel_ready(fp.ENI, gwi, gwo)
            kp.set_nexthop(fp.GWLB, idx["eth0"], *fp.MACS)
            inner = fp._inner(64)
            up, out = {"ifindex": idx["eth0"]}, {"ifindex": gwo, "ingress_ifindex": gwi}
            assert kp.test_run("geneve_in", fp._frame(inner, False), **up)[0] == fp.TC_ACT_REDIRECT
            kp.test_run("tunnel_out", inner, **out)  # the next hop's once-a-second pass to Python
            assert kp.test_run("tunnel_out", inner, **out)[0] == fp.TC_ACT_REDIRECT
            state = kp.close_tunnel(fp.ENI)
            assert state is not None and state[0] is not None
            assert state[1] == (1, len(inner), 1, len(inner)), state
            assert kp.tunnel_state(fp.ENI) is None and kp.close_tunnel(fp.ENI) is None
            assert kp.flow(fp.ENI, inner, 0, len(inner)) is not None  # the learnt flow stays
            assert kp.test_run("tunnel_out", inner, **out)[0] != fp.TC_ACT_REDIRECT
            assert kp.test_run("geneve_in", fp._frame(inner, False), **up)[0] != fp.TC_ACT_REDIRECT
            kp.open_tunnel(fp.ENI, gwi, gwo)
            assert kp.test_run("tunnel_out", inner, **out)[0] == fp.TC_ACT_REDIRECT
            got = kp.tunnel_state(fp.ENI)
            assert got is not None and got[1] == (0, 0, 1, len(inner)), got
        finally:
            kp.close()


@pytest.mark.parametrize("datapath", ["kernel", "python"])
def test_what_the_kernel_drops_on_the_way_into_gwi_is_counted(topo: Topo, datapath: str) -> None:
    """gwi- set down under traffic: the kernel drops what is handed into it (the kernel path's redirect, the
    Python datapath's write, which fails). Each packet shows in the tunnel's ``ingress_rx_dropped`` and in the
    totals', which keep it once the tunnel is retired (-t 4) and its devices are gone; none is lost to the
    counts (the kernel path counted it in, the Python datapath counts its failed write too)."""
    if datapath == "kernel" and WHY_NOT is not None:
        pytest.skip(f"kernel path unavailable: {WHY_NOT}")
    topo.start("--datapath", datapath, "-t", "4")
    flows = [geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=4000 + i, dport=53) / b"d"), ENI,
                          0x400 + i) for i in range(4)]

    def send(rounds: int) -> None:
        for _ in range(rounds):
            for i, payload in enumerate(flows):
                topo.peer.send(payload, sport=61000 + i)

    send(1)
    assert len(topo.peer.recv_all(len(flows), 3)) == len(flows), topo.log()
    if datapath == "kernel":
        topo.wait_for(lambda: topo.status()["datapath"]["kernel"]["next_hops"] >= 1, what="the next hop")
        send(1)
        assert len(topo.peer.recv_all(len(flows), 3)) == len(flows), topo.log()
        assert topo.status()["datapath"]["kernel"]["in_fast"] >= len(flows)  # the kernel carries the tunnel
    doc = topo.status()
    (tunnel,) = doc["tunnels"]
    assert tunnel["ingress_rx_dropped"] == 0, tunnel
    topo.lab.run(topo.app, ["ip", "link", "set", "dev", tunnel["ingress"], "down"])
    send(5)
    n = 5 * len(flows)
    topo.wait_for(lambda: topo.status()["tunnels"][0]["ingress_rx_dropped"] >= n, timeout=5,
                  what=f"{n} drops on the way into {tunnel['ingress']}")
    assert topo.peer.recv_all(1, 0.5) == []
    after = topo.status()
    assert after["tunnels"][0]["ingress_rx_dropped"] == n, after["tunnels"]
    assert after["totals"]["packets_in"] == doc["totals"]["packets_in"] + n, (doc["totals"], after["totals"])
    failed = after["totals"]["drops"].get("tun_write_failed", 0) - doc["totals"]["drops"].get("tun_write_failed", 0)
    assert failed == (n if datapath == "python" else 0), after["totals"]
    assert after["totals"]["ingress_rx_dropped"] == n, after["totals"]
    topo.wait_for(lambda: not topo.status()["tunnels"], timeout=15, what="the idle tunnel retired")
    assert topo.status()["totals"]["ingress_rx_dropped"] == n, topo.log()  # kept when its devices went
