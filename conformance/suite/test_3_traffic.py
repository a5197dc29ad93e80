"""Traffic: real connections and every kind of inner packet, end to end through GWLB and the appliances."""

from __future__ import annotations

from gwlbsim.conformance.environment import ConformanceEnv, check, same_inner
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import eni, opening_syn, private_only, property_settings, raw_eni, tcp4
from hypothesis import given
from scapy.all import (
    GRE,
    IP,
    SCTP,
    UDP,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Packet,
    fragment,
    fragment6,
    raw,
)
from scapy.layers.inet6 import ICMPv6EchoRequest
from scapy.layers.ipsec import ESP

from gwlbsim.live.traffic import tcp_transfer, udp_exchange
from gwlbsim.traffic import strategies as gst
from gwlbsim.wire import geneve


@requirement("TRAFFIC-1")
def test_tcp_end_to_end(gwlb: ConformanceEnv) -> None:
    for v6, port in ((False, 8101), (True, 8102)):
        r = tcp_transfer(gwlb.session, 0, port, v6=v6, timeout=6.0)
        check(r.ok, r.detail)


@requirement("TRAFFIC-2")
def test_udp_end_to_end(gwlb: ConformanceEnv) -> None:
    for v6 in (False, True):
        for i in range(5):
            msg = f"datagram {i}".encode() * 50
            back = udp_exchange(gwlb.session, 0, 8200 + i, msg, v6=v6)
            check(back == msg[::-1], f"UDP exchange over IPv{6 if v6 else 4} through GWLB: "
                  + ("lost" if back is None else "changed"))


@requirement("TRAFFIC-3")
def test_icmp_echo_end_to_end(gwlb: ConformanceEnv) -> None:
    slot = gwlb.topo.endpoints[0]
    for dst in (slot.server_v4, slot.server_v6):
        r = gwlb.session.run_client(0, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst], check=False)
        out = r.stdout.decode()
        check(" 3 received" in out, f"ping {dst} through GWLB: not every echo was answered "
              f"(every reply must come back):\n{out[-300:]}")


def _carried(env: ConformanceEnv, inner: bytes, what: str) -> None:
    sent, delivered = env.through(eni(env), inner)
    check(sent, f"{what}: the fake GWLB did not send it (model refused it?)", inner)
    check(delivered, f"{what}: not returned by the appliance (or returned changed)", sent[0].data)


def _both_ways(pkt: Packet) -> list[tuple[str, Packet]]:
    """The packet as the client sends it, and the server's answer (addresses, and ports if any, swapped)."""
    back = pkt.copy()
    back.src, back.dst = pkt.dst, pkt.src
    l4 = back.payload
    if hasattr(l4, "sport") and hasattr(l4, "dport"):
        l4.sport, l4.dport = pkt.payload.dport, pkt.payload.sport
    for layer in (back, l4):
        for f in ("chksum", "len", "plen"):
            if f in layer.fields:
                del layer.fields[f]
    return [("client to server", pkt), ("server to client", back)]


@requirement("TRAFFIC-4")
def test_other_ip_protocols(gwlb: ConformanceEnv) -> None:
    """Each protocol as a 3-tuple flow, both ways: the client's packets and the server's answers, twice each."""
    base = IP(src="10.10.0.2", dst="10.20.0.2")
    for what, pkt in (("GRE", base / GRE() / IP(dst="1.1.1.1")), ("ESP", base / ESP(spi=7, seq=1, data=b"x" * 40)),
                      ("SCTP", base / SCTP(sport=1, dport=2)), ("protocol 253", IP(src="10.10.0.2", dst="10.20.0.2",
                                                                                 proto=253) / (b"e" * 30))):
        for _ in range(2):
            for way, p in _both_ways(pkt):
                _carried(gwlb, raw(p), f"{what}, {way}")


def _fragments(pkt: Packet, size: int) -> list[bytes]:
    if pkt.version == 4:
        return [raw(f) for f in fragment(pkt, fragsize=size)]
    return [raw(f) for f in fragment6(pkt, size)]


@requirement("TRAFFIC-5")
def test_ipv6_extension_headers_and_fragments(gwlb: ConformanceEnv) -> None:
    v6 = IPv6(src="fd00:10::2", dst="fd00:20::2")
    cases = {
        "hop-by-hop": v6 / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2) / b"a",
        "destination options": v6 / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2) / b"b",
        "routing": v6 / IPv6ExtHdrRouting(addresses=["fd00:99::1"]) / UDP(sport=1, dport=2),
        "chain": v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / ICMPv6EchoRequest(),
    }
    for what, pkt in cases.items():
        _carried(gwlb, raw(pkt), f"IPv6 with {what}")
    # fragments of a datagram, each direction, the last fragment first (as they can arrive); none is reassembled
    v4 = IP(src="10.10.0.2", dst="10.20.0.2", id=0x4242)
    for family, whole in (("IPv4", v4 / UDP(sport=4100, dport=4200) / (b"f" * 2400)),
                          ("IPv6", v6 / IPv6ExtHdrFragment(id=0x4343) / UDP(sport=4101, dport=4201) / (b"g" * 2400))):
        for way, p in _both_ways(whole):
            frags = _fragments(p, 1000)
            for n, frag in reversed(list(enumerate(frags))):
                kind = "first" if n == 0 else "last" if n == len(frags) - 1 else "middle"
                _carried(gwlb, frag, f"{family} {kind} fragment ({n + 1} of {len(frags)}), {way}")


@requirement("TRAFFIC-6")
def test_inner_packets_up_to_8500_bytes(gwlb: ConformanceEnv) -> None:
    for size in (1500, 4000, 8000, 8500):
        pkt = raw(IP(src="10.10.0.2", dst="10.20.0.2") / UDP(sport=7, dport=9) / (b"s" * (size - 28)))
        _carried(gwlb, pkt, f"{size}-byte inner IPv4 packet")
    pkt6 = raw(IPv6(src="fd00:10::2", dst="fd00:20::2") / UDP(sport=7, dport=9) / (b"s" * (8500 - 48)))
    _carried(gwlb, pkt6, "8500-byte inner IPv6 packet")


@requirement("TRAFFIC-7")
def test_generated_flows_of_every_kind(gwlb: ConformanceEnv) -> None:
    # a TCP fragment has no flags: the fake GWLB keys it by its hosts and delivers it only within a
    # flow it knows, which no SYN of ports it cannot see opens; ECHO-4 sends TCP fragments to the appliance directly
    inner = gst.inner_packets(max_size=8500, routable=True, private=private_only(gwlb))

    @property_settings(gwlb)
    @given(p=inner.filter(lambda p: not (p.fragmented and p.proto == 6)))
    def carried(p) -> None:
        syn = opening_syn(p.data)
        if syn is not None:
            _carried(gwlb, syn, f"generated {p.kind} (its SYN)")
        _carried(gwlb, p.data, f"generated {p.kind}")

    carried()


@requirement("TRAFFIC-8")
def test_tcp_flow_picked_up_mid_stream(gwlb: ConformanceEnv) -> None:
    """After a failover rebalance GWLB sends an established flow's next segments to a target that never saw its
    SYN: both directions must still be carried (a firewall may pick the flow up, as conntrack's loose mode does)."""
    sport = gwlb.next_sport()
    for what, inner in (("client's ACK with data", tcp4(sport=47000, flags="A", payload=b"mid-stream")),
                        ("server's ACK with data", tcp4(sport=47000, flags="A", payload=b"answer", reverse=True)),
                        ("client's FIN", tcp4(sport=47000, flags="FA"))):
        sent = geneve.build(inner, raw_eni(gwlb), 0x8800)
        got = gwlb.echo(sent, sport=sport)
        check(got, got.lost(f"the {what} of a flow GWLB handed over mid-stream"), sent)
        check(same_inner(inner, geneve.parse(got[0].data).inner), f"{what}: inner packet changed", got[0].data)
