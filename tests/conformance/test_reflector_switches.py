"""The reflector's correct-but-different switches (the suite's calibration set), checked on their own.

Offline (no root): validation with and without ``--inner-lenient``, the stateful firewall, the health servers
on loopback. Live (root): each switch in a real fake-GWLB session, packets crafted and sent by the fake GWLB,
and the reflector's exit status and summary line on SIGTERM.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from scapy.all import ICMP, IP, TCP, UDP, IPv6, IPv6ExtHdrFragment, raw

from gwlbsim.appliance import ApplianceSpec
from gwlbsim.linuxio.httpprobe import http_probe, tcp_probe
from gwlbsim.live.balancer import Captured
from gwlbsim.live.session import GwlbSession, SessionOptions
from gwlbsim.live.traffic import tcp_transfer, udp_exchange
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import symmetric_key
from gwlbsim.wire.outer import build_ipv4_udp
from tests.conformance.faulty import reflector as refl

ENI, OTHER_ENI = 0x2B8EE1D4DB0C5100, 0x2B8EE1D4DB0C5101
REFLECTOR = "{python} " + refl.__file__ + " --health-port {health_port}"


def tcp4(flags: str, reverse: bool = False, payload: bytes = b"") -> bytes:
    if reverse:
        return raw(IP(src="10.2.0.1", dst="10.1.0.1") / TCP(sport=80, dport=1111, flags=flags) / payload)
    return raw(IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1111, dport=80, flags=flags) / payload)


def udp6() -> bytes:
    return raw(IPv6(src="fd00:1::1", dst="fd00:2::1") / UDP(sport=5000, dport=53) / b"q")


def good() -> bytes:
    return geneve.build(tcp4("S"), ENI, 0x4242)


def malformed_geneve() -> dict[str, tuple[bytes, str]]:
    """Every malformed GENEVE class (GENEVE header or AWS options), with the codec's reason for it."""
    g = good()
    inner = tcp4("S")
    opts = geneve.gwlb_options(ENI, 0, 0x4242)
    wrong_len = geneve.GeneveHeader(options=(opts[0], opts[1],
                                             geneve.GeneveOption(geneve.AWS_OPTION_CLASS, 3, b"\0" * 8)))
    dup = geneve.GeneveHeader(options=(*opts, opts[2]))
    critical = geneve.GeneveHeader(critical=True, options=(*opts, geneve.GeneveOption(0xFF00, 0x80, b"\0" * 4)))
    return {
        "empty": (b"", "too_short"),
        "header cut short": (g[:5], "too_short"),
        "version 1": (bytes([g[0] | 0x40]) + g[1:], "bad_version"),
        "version 3": (bytes([g[0] | 0xC0]) + g[1:], "bad_version"),
        "options beyond the packet": (bytes([0x3F]) + g[1:30], "options_beyond_packet"),
        "option overrun": (g[:11] + b"\x1f" + g[12:], "option_overrun"),
        "protocol type 0x6558": (g[:2] + b"\x65\x58" + g[4:], "bad_protocol_type"),
        "protocol type 0x0806": (g[:2] + b"\x08\x06" + g[4:], "bad_protocol_type"),
        "ENI id option missing": (g[:10] + b"\x04" + g[11:], "missing_gwlb_option"),
        "attachment option missing": (g[:22] + b"\x05" + g[23:], "missing_gwlb_option"),
        "cookie option missing": (g[:34] + b"\x06" + g[35:], "missing_gwlb_option"),
        "cookie option 8 bytes": (wrong_len.to_bytes() + inner, "bad_gwlb_option_length"),
        "duplicate cookie option": (dup.to_bytes() + inner, "duplicate_gwlb_option"),
        "unknown critical option": (critical.to_bytes() + inner, "unknown_critical_option"),
        "critical bit on a GWLB option": (g[:34] + b"\x83" + g[35:], "unknown_critical_option"),
        "control packet (O bit)": (g[:1] + bytes([g[1] | 0x80]) + g[2:], "control_packet"),
        "no inner packet": (g[:40], "no_inner_packet"),
    }


def inner_only() -> dict[str, tuple[bytes, str]]:
    """Valid GENEVE around an inner packet that is malformed on its own."""
    g = good()
    return {
        "IPv4 total length claims more": (g[:-5], "truncated_inner"),
        "IPv4 header cut short": (g[:50], "truncated_inner"),
        "IPv6 payload length claims more": (geneve.build(udp6(), ENI, 1)[:-3], "truncated_inner"),
        "IPv4 inner, IPv6 protocol type": (g[:2] + b"\x86\xdd" + g[4:], "protocol_mismatch"),
        "inner IP version 5": (g[:40] + bytes([0x55]) + g[41:], "protocol_mismatch"),
    }


# --------------------------------------------------------------------------------------------- offline


def test_the_cases_are_what_they_claim() -> None:
    for name, (data, reason) in {**malformed_geneve(), **inner_only()}.items():
        with pytest.raises(geneve.GeneveError) as e:
            geneve.scan(data)
        assert e.value.reason == reason, name
    assert refl.INNER_ONLY_REASONS.issubset(geneve.REASONS)


@pytest.mark.parametrize("lenient", [False, True])
def test_malformed_geneve_is_refused_either_way(lenient: bool) -> None:
    for name, (data, reason) in malformed_geneve().items():
        with pytest.raises(geneve.GeneveError) as e:
            refl.validate(data, lenient)
        assert e.value.reason == reason, name


def test_inner_problems_are_refused_strictly_and_passed_leniently() -> None:
    for name, (data, reason) in inner_only().items():
        with pytest.raises(geneve.GeneveError) as e:
            refl.validate(data, False)
        assert e.value.reason == reason, name
        assert refl.validate(data, True) == refl.Accepted(40, len(data), ENI), name
    g = good()
    s = geneve.scan(g)
    assert refl.validate(g, False) == refl.validate(g, True) == refl.Accepted(40, 40 + s.inner_len, ENI)


def test_lenient_header_length_with_extra_options() -> None:
    extra = (geneve.GeneveOption(0x0200, 0x05, b"\1" * 8),)
    data = geneve.build(tcp4("S"), ENI, 5, extra_options=extra)[:-4]
    a = refl.validate(data, True)
    assert (a.header_len, a.inner_end, a.eni_id) == (52, len(data), ENI)


def test_firewall_tcp_needs_a_syn_then_both_directions_pass() -> None:
    fw = refl.Firewall()

    def allow(inner: bytes, eni: int = ENI) -> bool:
        return fw.allow(eni, inner, 0, len(inner))

    assert not allow(tcp4("A"))
    assert not allow(tcp4("SA", reverse=True)), "a SYN-ACK opens nothing"
    assert not allow(tcp4("R"))
    assert allow(tcp4("S"))
    assert allow(tcp4("SA", reverse=True)) and allow(tcp4("A")) and allow(tcp4("FA", reverse=True))
    assert allow(tcp4("PA", payload=b"x" * 100)) and allow(tcp4("R", reverse=True)) and allow(tcp4(""))
    assert not allow(tcp4("A"), OTHER_ENI), "flows are per endpoint"
    assert allow(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=2)), OTHER_ENI)
    assert allow(raw(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP()), OTHER_ENI)
    assert allow(udp6(), OTHER_ENI) and allow(raw(IP(proto=47) / b"gre!"), OTHER_ENI)
    assert dict(fw.drops) == {"tcp_not_open": 4} and fw.opened == 1
    assert set(fw.flows) == {(ENI, symmetric_key(tcp4("S")))}


def test_firewall_ipv6_and_fragments() -> None:
    fw = refl.Firewall()
    syn6 = raw(IPv6(src="fd00:1::1", dst="fd00:2::1") / TCP(sport=7, dport=8, flags="S"))
    ack6 = raw(IPv6(src="fd00:2::1", dst="fd00:1::1") / TCP(sport=8, dport=7, flags="A"))
    assert not fw.allow(ENI, ack6, 0, len(ack6))
    assert fw.allow(ENI, syn6, 0, len(syn6)) and fw.allow(ENI, ack6, 0, len(ack6))
    frag = raw(IPv6(src="fd00:2::1", dst="fd00:1::1") / IPv6ExtHdrFragment(nh=6, offset=10, m=0) / (b"d" * 16))
    other = raw(IPv6(src="fd00:3::1", dst="fd00:1::1") / IPv6ExtHdrFragment(nh=6, offset=10, m=0) / (b"d" * 16))
    assert fw.allow(ENI, frag, 0, len(frag)), "a fragment between hosts with an open TCP flow"
    assert not fw.allow(ENI, other, 0, len(other)) and not fw.allow(OTHER_ENI, frag, 0, len(frag))
    v4frag = raw(IP(src="10.1.0.1", dst="10.2.0.1", proto=6, frag=100) / (b"d" * 16))
    assert not fw.allow(ENI, v4frag, 0, len(v4frag))
    broken = raw(IPv6(src="fd00:1::1", dst="fd00:2::1", nh=0))  # a hop-by-hop header that is not there
    assert not fw.allow(ENI, broken, 0, len(broken))
    assert fw.drops == {"tcp_not_open": 1, "tcp_fragment_without_flow": 3, "unclassifiable": 1}


def test_firewall_forgets_the_oldest_beyond_capacity() -> None:
    fw = refl.Firewall(capacity=3)
    syns = [raw(IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1000 + i, dport=80, flags="S")) for i in range(4)]
    for p in syns:
        assert fw.allow(ENI, p, 0, len(p))
    assert len(fw.flows) == 3 and (ENI, symmetric_key(syns[0])) not in fw.flows


@pytest.fixture
def health_server() -> Iterator[Callable[[str], int]]:
    stops: list[Callable[[], None]] = []

    def start(mode: str) -> int:
        port, stop = refl.start_health(0, mode)
        stops.append(stop)
        return port

    yield start
    for stop in stops:
        stop()


def _exchange(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
        return data


def test_health_servers_on_loopback(health_server: Callable[[str], int]) -> None:
    lf = health_server("lf")
    assert _exchange(lf) == refl.LF_RESPONSE == b"HTTP/1.1 200 OK\nContent-Length: 3\nConnection: close\n\nok\n"
    results = []
    threads = [threading.Thread(target=lambda: results.append(http_probe("127.0.0.1", lf, timeout=3)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [(r.ok, r.status, r.body) for r in results] == [(True, 200, b"ok\n")] * 8, "threaded: all answered"
    tcp = health_server("tcp")
    assert tcp_probe("127.0.0.1", tcp, timeout=3).ok
    r = http_probe("127.0.0.1", tcp, timeout=3)
    assert not r.ok and r.status is None, "closed without a word (or reset, when the request was already in)"
    http = health_server("http")
    assert _exchange(http).startswith(b"HTTP/1.1 200 OK\r\n")
    assert http_probe("127.0.0.1", http, timeout=3).status == 200


# ------------------------------------------------------------------------------------------------ live

def live(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.root(pytest.mark.slow(test))


class Live:
    """One fake GWLB session with one reflector; ``send`` a GENEVE payload, get what came back for it."""

    def __init__(self, s: GwlbSession) -> None:
        self.s = s
        self.app = s.topo.appliances[0]  # type: ignore[union-attr]
        self.returns: list[Captured] = []
        self.cond = threading.Condition()
        self.sport = 42000
        s.gwlb.add_tap(self._tap)  # type: ignore[union-attr]

    def _tap(self, c: Captured) -> None:
        if c.kind == "from_target":
            with self.cond:
                self.returns.append(c)
                self.cond.notify_all()

    def send(self, payload: bytes, wait: float = 1.0) -> list[Captured]:
        self.sport += 1
        sport = self.sport
        self.s.gwlb.send_raw(self.app.address, payload, sport, self.app.gwlb_address)  # type: ignore[union-attr]
        deadline = time.monotonic() + wait
        with self.cond:
            while not any(c.sport == sport for c in self.returns) and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
        time.sleep(0.05)
        return [c for c in self.returns if c.sport == sport]

    def send_many(self, payloads: dict[str, bytes], quiet: float = 0.5) -> dict[str, list[Captured]]:
        """Send each with its own source port; what came back, per name."""
        ports = {}
        for name, payload in payloads.items():
            self.sport += 1
            ports[name] = self.sport
            self.s.gwlb.send_raw(self.app.address, payload, self.sport, self.app.gwlb_address)  # type: ignore[union-attr]
        time.sleep(quiet)
        with self.cond:
            return {name: [c for c in self.returns if c.sport == port] for name, port in ports.items()}

    def echoed(self, payload: bytes) -> bool:
        back = self.send(payload)
        return len(back) == 1 and back[0].data == payload and back[0].src == self.app.address \
            and back[0].dst == self.app.gwlb_address

    def stop(self) -> tuple[int | None, str]:
        ra = self.s.appliances[0]
        rc = ra.stop()
        return rc, ra.output_tail(5)


@pytest.fixture
def session() -> Iterator[Callable[..., Live]]:
    opened: list[GwlbSession] = []

    def start(switches: str, health: str = "http") -> Live:
        spec = ApplianceSpec(command=f"{REFLECTOR} {switches}", health_protocol=health, health_port=8080,
                             name="reflector")
        s = GwlbSession(SessionOptions(appliances=1, endpoints=2, spec=spec))
        opened.append(s)
        s.start()
        s.wait_healthy(60)
        return Live(s)

    yield start
    for s in opened:
        s.close()


def _check_malformed_dropped(lv: Live) -> None:
    back = lv.send_many({name: data for name, (data, _) in malformed_geneve().items()})
    assert not [n for n, b in back.items() if b], f"forwarded: {[n for n, b in back.items() if b]}"


@live
@pytest.mark.parametrize("extra", ["", "--raw-receive"])
def test_live_stateful(session: Callable[..., Live], extra: str) -> None:
    lv = session(f"--stateful {extra}")
    assert tcp_transfer(lv.s, size=200_000).ok
    assert udp_exchange(lv.s) == b"gnip"
    assert not lv.send(geneve.build(tcp4("A"), ENI, 1), wait=0.4), "an ACK of a flow never opened"
    assert not lv.send(geneve.build(tcp4("SA", reverse=True), ENI, 1), wait=0.4), "a SYN-ACK opens nothing"
    assert lv.echoed(geneve.build(tcp4("S"), ENI, 2))
    assert lv.echoed(geneve.build(tcp4("SA", reverse=True), ENI, 3))
    assert lv.echoed(geneve.build(tcp4("A"), ENI, 2))
    assert not lv.send(geneve.build(tcp4("A"), OTHER_ENI, 9), wait=0.4), "the same 5-tuple on another endpoint"
    assert lv.echoed(geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=2)), OTHER_ENI, 4))
    _check_malformed_dropped(lv)
    rc, out = lv.stop()
    assert rc == 0, out
    assert "reflector stopped:" in out and "tcp_not_open=3" in out, out


@live
def test_live_health_lf(session: Callable[..., Live]) -> None:
    lv = session("--health-lf")
    app = lv.app
    r = http_probe(app.address, 8080, ns=lv.s.topo.gwlb_ns, timeout=3)  # type: ignore[union-attr]
    assert (r.ok, r.status, r.body) == (True, 200, b"ok\n"), r
    with lv.s.lab.socket(lv.s.topo.gwlb_ns, socket.AF_INET, socket.SOCK_STREAM) as c:  # type: ignore[union-attr]
        c.settimeout(3)
        c.connect((app.address, 8080))
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    assert data == refl.LF_RESPONSE
    assert lv.echoed(good())
    assert lv.stop()[0] == 0


@live
def test_live_health_tcp(session: Callable[..., Live]) -> None:
    lv = session("--health-tcp", health="tcp")
    app = lv.app
    ns = lv.s.topo.gwlb_ns  # type: ignore[union-attr]
    assert tcp_probe(app.address, 8080, ns=ns, timeout=3).ok
    r = http_probe(app.address, 8080, ns=ns, timeout=3)
    assert not r.ok and r.status is None, "never speaks HTTP"
    assert lv.echoed(good())
    assert lv.stop()[0] == 0


@live
@pytest.mark.parametrize("extra", ["", "--raw-receive"])
def test_live_inner_lenient(session: Callable[..., Live], extra: str) -> None:
    lv = session(f"--inner-lenient {extra}")
    _check_malformed_dropped(lv)
    for name, (data, _) in inner_only().items():
        assert lv.echoed(data), f"{name}: not reflected as is"
    assert lv.echoed(good())
    rc, out = lv.stop()
    assert rc == 0 and "reflector stopped:" in out, out


@live
def test_live_strict_drops_inner_problems(session: Callable[..., Live]) -> None:
    lv = session("")
    back = lv.send_many({name: data for name, (data, _) in inner_only().items()})
    assert not [n for n, b in back.items() if b]
    assert lv.echoed(good())
    rc, out = lv.stop()
    assert rc == 0 and "truncated_inner=3" in out and "protocol_mismatch=2" in out, out


@live
def test_live_raw_receive(session: Callable[..., Live]) -> None:
    lv = session("--raw-receive")
    assert lv.echoed(good())
    assert lv.echoed(geneve.build(udp6(), ENI, 7))
    assert lv.echoed(geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=3, dport=4) / (b"m" * 8000)),
                                  ENI, 8)), "a datagram of 8000 bytes and more"
    assert tcp_transfer(lv.s, size=200_000).ok
    _check_malformed_dropped(lv)
    back = lv.send_many({name: data for name, (data, _) in inner_only().items()})
    assert not [n for n, b in back.items() if b]
    # oversize: fragmented on the way (LINK_MTU 9000), reassembled by the kernel, then refused as too big
    big = geneve.build(raw(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=3, dport=4) / (b"o" * 16000)), ENI, 9)
    assert not lv.send(big, wait=0.5) and not lv.send(b"\0" * 30000, wait=0.5)
    # a corrupted UDP checksum is dropped (the kernel's UDP layer would have); a zero checksum is fine
    ns, app = lv.s.topo.gwlb_ns, lv.app  # type: ignore[union-attr]
    pkt = bytearray(build_ipv4_udp(app.gwlb_address, app.address, 43999, geneve.GENEVE_PORT, good()))
    pkt[26] ^= 0xFF
    nosum = build_ipv4_udp(app.gwlb_address, app.address, 43998, geneve.GENEVE_PORT, good(), udp_checksum=False)
    other_port = build_ipv4_udp(app.gwlb_address, app.address, 43997, 6082, good())
    with lv.s.lab.socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw_out:  # type: ignore[union-attr]
        for p in (bytes(pkt), nosum, other_port):
            raw_out.sendto(p, (app.address, 0))
    time.sleep(0.5)
    sports = {c.sport for c in lv.returns}
    assert 43999 not in sports and 43998 in sports and 43997 not in sports
    rc, out = lv.stop()
    assert rc == 0, out
    assert "over_mtu=1" in out and "bad_udp_checksum=1" in out and "fragment=" not in out, out


@live
def test_live_everything_at_once_and_with_a_fault(session: Callable[..., Live]) -> None:
    lv = session("--stateful --health-lf --inner-lenient --raw-receive")
    assert tcp_transfer(lv.s, size=100_000).ok
    assert not lv.send(geneve.build(tcp4("A"), ENI, 1), wait=0.4)
    assert lv.echoed(geneve.build(tcp4("S"), ENI, 2)[:-2]), "lenient: a SYN cut short still opens its flow"
    assert lv.echoed(geneve.build(tcp4("A"), ENI, 2))
    _check_malformed_dropped(lv)
    assert lv.stop()[0] == 0
    lv = session("--fault rewrite-header --raw-receive --stateful --health-tcp", health="tcp")
    back = lv.send(geneve.build(tcp4("S"), ENI, 3, vni=77))
    assert len(back) == 1 and geneve.parse(back[0].data).header.vni == 0, "the fault still applies"
    assert lv.stop()[0] == 0
