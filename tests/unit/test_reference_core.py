"""The reference appliance's pure core, with an injected clock."""

from __future__ import annotations

import pytest
from gwlbsim.reference.core import (
    EXPIRED_FLOW,
    FLOW_CACHE_FULL,
    NO_FLOW,
    OVERSIZE_INBOUND,
    OVERSIZE_RETURN,
    TUNNEL_CREATE_FAILED,
    TUNNEL_PENDING_OVERFLOW,
    ApplianceCore,
    Config,
    TunnelState,
    put_return_header,
)
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from gwlbsim.wire import geneve
from gwlbsim.wire.checksum import ones_sum, udp4_checksum_ok
from gwlbsim.wire.outer import UDP_CSUM_OFFSET, UDP_CSUM_START, parse_ipv4_udp

GWLB, ME = "10.0.0.1", "10.0.0.2"
ENI = 0x2B8EE1D4DB0C51C4
FWD = raw(IP(src="192.168.1.10", dst="192.168.2.10") / TCP(sport=40000, dport=80, flags="S"))
REV = raw(IP(src="192.168.2.10", dst="192.168.1.10") / TCP(sport=80, dport=40000, flags="SA"))


def send(core: ApplianceCore, inner: bytes, cookie: int, now: float, eni: int = ENI, sport: int = 60001,
         extra: tuple[geneve.GeneveOption, ...] = ()) -> object:
    data = geneve.build(inner, eni, cookie, extra_options=extra)
    return core.inbound(data, 0, len(data), GWLB, ME, sport, 6081, now)


def ready_core(**kw: object) -> ApplianceCore:
    core = ApplianceCore(Config(**kw))  # type: ignore[arg-type]
    send(core, FWD, 1, 0.0)
    core.tunnel_ready(ENI, 0.0)
    return core


def returned(core: ApplianceCore, pkt: bytes, now: float, eni: int = ENI) -> bytes | None:
    t = core.tunnels[eni]
    flow = core.outbound(t, pkt, now)
    return None if flow is None else core.encapsulate(flow, pkt)


def test_first_packet_creates_tunnel_and_waits_until_ready() -> None:
    core = ApplianceCore()
    v = send(core, FWD, 7, 0.0)
    assert v.new_tunnel and v.queued and v.tunnel.state is TunnelState.CREATING
    assert v.tunnel.ingress == "gwi-5bqWvzLwwkk" and v.tunnel.egress == "gwo-5bqWvzLwwkk"
    assert v.tunnel.eni_hex == "2b8ee1d4db0c51c4"
    v2 = send(core, REV, 7, 0.1)
    assert not v2.new_tunnel and v2.queued
    assert core.tunnel_ready(ENI, 0.2) == [FWD, REV]
    v3 = send(core, FWD, 7, 0.3)
    assert not v3.queued and not v3.new_tunnel
    data = geneve.build(FWD, ENI, 7)
    assert data[v3.inner_start:v3.inner_end] == FWD


def test_return_carries_latest_header_with_addresses_swapped_and_ports_kept() -> None:
    core = ready_core()
    extra = (geneve.GeneveOption(0xFF00, 0x42, b"xyzw", 3),)
    send(core, FWD, 0xAAAA, 1.0, sport=60123, extra=extra)
    out = returned(core, REV, 1.5)
    assert out is not None
    o = parse_ipv4_udp(out)
    assert (o.src, o.dst, o.sport, o.dport) == (ME, GWLB, 60123, 6081)
    assert o.checksum_ok and o.udp_checksum != 0
    assert o.df and o.ident == 0 and o.ttl == 64  # atomic datagrams, as gwlb-xdp sends: never fragmented
    payload = out[o.payload_offset:]
    assert payload == geneve.build(FWD, ENI, 0xAAAA, extra_options=extra)[:48] + REV
    assert raw(IP(out)) == out  # scapy agrees on every length and checksum


def test_reused_five_tuple_switches_cookie_at_once_and_flows_keep_their_own() -> None:
    core = ready_core()
    other = raw(IP(src="192.168.1.11", dst="192.168.2.10") / UDP(sport=5, dport=53))
    send(core, FWD, 100, 1.0)
    send(core, other, 200, 1.1)
    assert geneve.parse(returned(core, REV, 1.2)[28:]).cookie == 100
    assert geneve.parse(returned(core, other, 1.2)[28:]).cookie == 200
    send(core, FWD, 101, 1.3)
    assert geneve.parse(returned(core, REV, 1.4)[28:]).cookie == 101
    assert geneve.parse(returned(core, other, 1.4)[28:]).cookie == 200


def test_unseen_flows_are_not_originated() -> None:
    core = ready_core()
    stray = raw(IP(src="192.168.9.9", dst="192.168.2.10") / ICMP())
    assert returned(core, stray, 1.0) is None
    assert core.totals.drops[NO_FLOW] == 1
    assert core.tunnels[ENI].counters.drops[NO_FLOW] == 1


def test_endpoints_with_overlapping_addresses_are_kept_apart() -> None:
    core = ready_core()
    send(core, FWD, 300, 1.0, eni=0xB)
    core.tunnel_ready(0xB, 1.0)
    send(core, FWD, 301, 1.1)
    assert geneve.parse(returned(core, REV, 2.0, eni=0xB)[28:]).cookie == 300
    assert geneve.parse(returned(core, REV, 2.0)[28:]).eni_id == ENI
    assert geneve.parse(returned(core, REV, 2.0)[28:]).cookie == 301


def test_expired_flow_is_never_used_even_without_a_sweep() -> None:
    core = ready_core(flow_timeout=10)
    send(core, FWD, 5, 100.0)
    assert returned(core, REV, 109.0) is not None  # returns refresh the entry
    assert returned(core, REV, 119.5) is None
    assert core.totals.drops[EXPIRED_FLOW] == 1
    send(core, FWD, 6, 120.0)
    assert geneve.parse(returned(core, REV, 121.0)[28:]).cookie == 6


def test_sweep_removes_expired_entries() -> None:
    core = ready_core(flow_timeout=10)
    for i in range(50):
        send(core, raw(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=i, dport=1)), i, 1.0)
    assert core.flow_count == 51
    core.tick(5.0)
    assert core.flow_count == 51
    core.tick(20.0)
    assert core.flow_count == 0 and not core.tunnels[ENI].flows


def test_flow_cache_is_bounded() -> None:
    core = ready_core(max_flows=10)
    for i in range(100):
        send(core, raw(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=i, dport=1)), i, 1.0 + i)
    assert core.flow_count == 10 == len(core.tunnels[ENI].flows)
    assert core.evictions == 91
    # the most recent flows survive
    assert returned(core, raw(IP(src="2.2.2.2", dst="1.1.1.1") / UDP(sport=1, dport=99)), 200.0) is not None
    assert FLOW_CACHE_FULL not in core.totals.drops


def test_tunnel_idle_timeout_retires_and_same_eni_gets_a_new_tunnel() -> None:
    core = ready_core(tunnel_timeout=30)
    assert core.tick(29.0) == []
    gone = core.tick(30.5)
    assert [t.eni_id for t in gone] == [ENI] and gone[0].state is TunnelState.RETIRED
    assert ENI not in core.tunnels and core.flow_count == 0
    v = send(core, FWD, 9, 40.0)
    assert v.new_tunnel and v.tunnel.generation == 2
    assert core.tunnel_ready(ENI, 40.1) == [FWD]
    assert geneve.parse(returned(core, REV, 40.2)[28:]).cookie == 9


def test_return_traffic_keeps_a_tunnel_alive() -> None:
    core = ready_core(tunnel_timeout=30)
    send(core, FWD, 9, 1.0)
    returned(core, REV, 25.0)
    assert core.tick(40.0) == []


def test_failed_creation_drops_queued_packets_and_retries_later() -> None:
    core = ApplianceCore(Config(retry_interval=5))
    send(core, FWD, 1, 0.0)
    send(core, FWD, 1, 0.1)
    core.tunnel_failed(ENI, 0.2)
    assert core.totals.drops[TUNNEL_CREATE_FAILED] == 2
    assert send(core, FWD, 1, 1.0) is None
    assert core.totals.drops[TUNNEL_CREATE_FAILED] == 3
    v = send(core, FWD, 1, 6.0)
    assert v.new_tunnel and v.queued


def test_pending_queue_is_bounded() -> None:
    core = ApplianceCore(Config(pending_limit=3))
    for i in range(5):
        send(core, FWD, 1, i * 0.01)
    assert core.totals.drops[TUNNEL_PENDING_OVERFLOW] == 2
    assert len(core.tunnel_ready(ENI, 1.0)) == 3


def test_malformed_and_oversize_are_counted_by_reason() -> None:
    core = ready_core()
    good = geneve.build(FWD, ENI, 1)
    for bad in (b"", good[:7], bytes([0x48]) + good[1:], good[:2] + b"\x65\x58" + good[4:]):
        assert core.inbound(bad, 0, len(bad), GWLB, ME, 60001, 6081, 1.0) is None
    assert core.totals.drops == {"too_short": 2, "bad_version": 1, "bad_protocol_type": 1}
    assert core.inbound(good, 0, len(good), GWLB, ME, 60001, 7000, 1.0) is None
    assert core.totals.drops["not_geneve_port"] == 1
    big = raw(IP(src="192.168.1.10", dst="192.168.2.10") / UDP(sport=1, dport=2) / (b"x" * 8600))
    assert send(core, big, 1, 1.0) is None and core.totals.drops[OVERSIZE_INBOUND] == 1
    exact = raw(IP(src="192.168.1.10", dst="192.168.2.10") / UDP(sport=1, dport=2) / (b"x" * (8500 - 28)))
    assert send(core, exact, 1, 1.0) is not None
    assert returned(core, exact, 1.0) is not None
    assert returned(core, big, 1.0) is None and core.totals.drops[OVERSIZE_RETURN] == 1
    assert returned(core, b"\x45garbage", 1.0) is None and core.totals.drops["bad_return_packet"] == 1


def test_ipv6_inner_and_no_checksum_option() -> None:
    core = ApplianceCore(Config(udp_checksum=False))
    v6 = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2) / b"abc")
    v6r = raw(IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=2, dport=1) / b"abcd")
    send(core, v6, 77, 0.0)
    core.tunnel_ready(ENI, 0.0)
    out = returned(core, v6r, 0.5)
    o = parse_ipv4_udp(out)
    assert o.udp_checksum == 0
    p = geneve.parse(out[28:])
    assert p.cookie == 77 and p.header.protocol == geneve.ETH_P_IPV6 and p.inner == v6r


def test_config_is_validated() -> None:
    for bad in ({"flow_timeout": 0}, {"tunnel_timeout": -1}, {"max_flows": 0}, {"mtu": 10}):
        with pytest.raises(ValueError):
            Config(**bad)  # type: ignore[arg-type]


def test_retire_all_for_shutdown() -> None:
    core = ready_core()
    assert [t.eni_id for t in core.retire_all()] == [ENI]
    assert core.tunnels == {}


def _complete_like_a_device(packet: bytearray, csum_start: int, csum_offset: int) -> None:
    """What a NIC (or Linux's skb_checksum_help) does with CHECKSUM_PARTIAL: sum from csum_start to the end,
    complement, store at csum_start + csum_offset (a zero result sent as 0xFFFF)."""
    r = 0xFFFF - ones_sum(packet[csum_start:])
    packet[csum_start + csum_offset:csum_start + csum_offset + 2] = (r or 0xFFFF).to_bytes(2, "big")


@pytest.mark.parametrize("size", [0, 1, 7, 500, 1401])
def test_partial_checksum_completed_by_the_device_equals_the_full_one(size: int) -> None:
    room = 128
    core = ready_core()
    send(core, FWD, 0xBEEF, 1.0, sport=60999)
    rev = raw(IP(src="192.168.2.10", dst="192.168.1.10") / TCP(sport=80, dport=40000, flags="PA") / (b"\x5a" * size))
    flow = core.outbound(core.tunnels[ENI], rev, 1.5)
    assert flow is not None
    outs = []
    for partial in (False, True):
        buf = bytearray(room + len(rev) + 1)
        buf[room:room + len(rev)] = rev
        start = put_return_header(flow, buf, room, len(rev), partial)
        outs.append(bytearray(buf[start:room + len(rev)]))
    full, part = outs
    assert part[:26] == full[:26] and part[28:] == full[28:]  # only the UDP checksum is left to the device
    _complete_like_a_device(part, UDP_CSUM_START, UDP_CSUM_OFFSET)
    assert part == full
    o = parse_ipv4_udp(bytes(part))
    assert o.checksum_ok and udp4_checksum_ok(bytes(part[12:16]), bytes(part[16:20]), bytes(part[20:]))
