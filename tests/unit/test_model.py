"""The fake GWLB model, scenario by scenario, with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from gwlbsim.config import GwlbConfig, HealthCheck, Simulator
from gwlbsim.model import HEALTHY, UNHEALTHY, UNUSED, Encapsulation, GwlbModel, ToEndpoint, ToTarget
from gwlbsim.wire import geneve
from gwlbsim.wire.outer import OuterTemplate, parse_ipv4_udp
from gwlbsim.wire.vectors import aws_outer_packets

ENI, ENI2 = 0xE1, 0xE2
NODE = "10.100.1.1"
FAST_HC = HealthCheck(interval=5, timeout=2, healthy_threshold=2, unhealthy_threshold=2)


def model(targets: int = 3, zones: dict[str, str] | None = None, **kw: Any) -> GwlbModel:
    sim = kw.pop("simulator", Simulator(health_checkers=1, seed=3))
    cfg = GwlbConfig(health_check=kw.pop("health_check", FAST_HC), simulator=sim, **kw)
    m = GwlbModel(cfg, zones or {"a": NODE})
    zone_names = list(m.zones)
    m.add_endpoint(ENI, zone_names[0])
    m.add_endpoint(ENI2, zone_names[0], attachment_id=77)
    for i in range(targets):
        m.register_target(f"t{i}", f"10.100.1.{10 + i}", zone_names[i % len(zone_names)], 0.0)
    probe_all(m, 0.0, rounds=3)
    return m


def probe_all(m: GwlbModel, now: float, rounds: int = 1, down: set[str] = frozenset()) -> float:  # type: ignore[assignment]
    for _ in range(rounds):
        for p in m.due_probes(now):
            m.probe_result(p.target.id, p.checker, p.target.id not in down, now)
        now += m.config.health_check.interval
        m.tick(now)
    return now


def tcp(sport: int = 1000, flags: str = "S", fwd: bool = True, payload: bytes = b"") -> bytes:
    a, b = ("10.0.0.1", "192.168.0.1") if fwd else ("192.168.0.1", "10.0.0.1")
    sp, dp = (sport, 80) if fwd else (80, sport)
    return raw(IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags=flags) / payload)


def udp(sport: int = 2000, fwd: bool = True) -> bytes:
    a, b = ("10.0.0.1", "192.168.0.1") if fwd else ("192.168.0.1", "10.0.0.1")
    sp, dp = (sport, 53) if fwd else (53, sport)
    return raw(IP(src=a, dst=b) / UDP(sport=sp, dport=dp))


def one(actions: list[Any]) -> ToTarget:
    assert len(actions) == 1 and isinstance(actions[0], ToTarget), actions
    return actions[0]


def back(m: GwlbModel, a: ToTarget, inner: bytes | None = None, now: float = 0.0, **kw: Any) -> list[Any]:
    """Return ``a`` (or another inner with a's header) the way a correct appliance would."""
    src = kw.pop("src", a.target.address)
    return m.from_target(src, kw.pop("sport", a.sport), kw.pop("dst", a.node), kw.pop("dport", 6081),
                         kw.pop("header", a.header) + (inner if inner is not None else a.inner), now)


def test_targets_become_healthy_and_both_directions_share_one_flow() -> None:
    m = model()
    assert [t.state for t in m.targets.values()] == [HEALTHY] * 3
    f = one(m.from_endpoint(ENI, tcp(), 20))
    r = one(m.from_endpoint(ENI, tcp(flags="SA", fwd=False), 20))
    assert (r.target, r.sport, r.header) == (f.target, f.sport, f.header)
    assert 60000 <= f.sport <= 61009
    assert geneve.parse(f.header + f.inner).cookie != 0
    assert m.cloudwatch()["ActiveFlowCount"] == 1 and m.metrics.new_flows == 1


def test_encapsulation_matches_real_gwlb_field_by_field() -> None:
    m = model()
    a = one(m.from_endpoint(ENI, tcp(), 20))
    outer = OuterTemplate(a.node, a.target.address, a.sport, 6081, a.header).packet(a.inner)
    ours = parse_ipv4_udp(outer)
    for real in aws_outer_packets():
        theirs = parse_ipv4_udp(real)
        for fld in ("ttl", "tos", "ident", "df", "dport", "ip_header_len"):
            assert getattr(ours, fld) == getattr(theirs, fld), fld
        assert ours.checksum_ok and theirs.checksum_ok and ours.udp_checksum != 0
        assert 60000 <= theirs.sport <= 61009 and 60000 <= ours.sport <= 61009
        mine, real_pkt = geneve.parse(outer[28:]), geneve.parse(real[theirs.payload_offset:])
        assert mine.header_bytes[:8] == real_pkt.header_bytes[:8] == bytes.fromhex("0800080000000000")
        assert [(o.option_class, o.type, len(o.data), o.reserved) for o in mine.header.options] == \
            [(o.option_class, o.type, len(o.data), o.reserved) for o in real_pkt.header.options]
        assert real[0] == outer[0] == 0x45  # IPv4, no options
    v6 = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2))
    assert one(m.from_endpoint(ENI, v6, 20)).header[2:4] == b"\x86\xdd"


def test_stickiness_modes() -> None:
    five = model(targets=8)
    three = model(targets=8, stickiness_enabled=True, stickiness_type="source_ip_dest_ip_proto")
    two = model(targets=8, stickiness_enabled=True, stickiness_type="source_ip_dest_ip")
    for m, same_across_ports, same_across_protocols in ((five, False, False), (three, True, False),
                                                        (two, True, True)):
        cookies = {geneve.parse(one(m.from_endpoint(ENI, tcp(sport=p), 20)).header + tcp()).cookie
                   for p in range(1000, 1020)}
        assert (len(cookies) == 1) == same_across_ports
        t_cookie = geneve.parse(one(m.from_endpoint(ENI, tcp(), 20)).header + tcp()).cookie
        u_cookie = geneve.parse(one(m.from_endpoint(ENI, udp(), 20)).header + tcp()).cookie
        assert (t_cookie == u_cookie) == same_across_protocols


def test_endpoints_with_overlapping_addresses_get_separate_flows() -> None:
    m = model()
    a = one(m.from_endpoint(ENI, tcp(), 20))
    b = one(m.from_endpoint(ENI2, tcp(), 20))
    pa, pb = geneve.parse(a.header + a.inner), geneve.parse(b.header + b.inner)
    assert (pa.eni_id, pa.attachment_id) == (ENI, 0) and (pb.eni_id, pb.attachment_id) == (ENI2, 77)
    assert pa.cookie != pb.cookie and len(m.flows) == 2
    # the cookie of one endpoint is not valid under the other's ENI id
    forged = geneve.gwlb_header(ENI2, pa.cookie, 77).to_bytes()
    assert back(m, a, header=forged, now=20) == []


def test_idle_expiry_per_protocol_and_new_cookies() -> None:
    m = model(tcp_idle_timeout=60)
    t0 = 20.0
    tc = geneve.parse(one(m.from_endpoint(ENI, tcp(), t0)).header + tcp()).cookie
    uc = geneve.parse(one(m.from_endpoint(ENI, udp(), t0)).header + udp()).cookie
    # UDP lives 120 s, TCP 60 s here
    assert m.from_endpoint(ENI, tcp(flags="A"), t0 + 59)
    assert m.from_endpoint(ENI, tcp(flags="A"), t0 + 59 + 61) == []
    assert m.metrics.drops["tcp_non_syn_without_flow"] == 1
    assert geneve.parse(one(m.from_endpoint(ENI, udp(), t0 + 119)).header + udp()).cookie == uc
    later = geneve.parse(one(m.from_endpoint(ENI, udp(), t0 + 119 + 121)).header + udp()).cookie
    assert later != uc
    syn = geneve.parse(one(m.from_endpoint(ENI, tcp(), t0 + 200)).header + tcp()).cookie
    assert syn != tc and m.metrics.new_flows == 4
    m.tick(t0 + 1000)
    assert not m.flows and not m.by_cookie


def test_stickiness_uses_default_idle_timeout() -> None:
    m = model(stickiness_enabled=True, stickiness_type="source_ip_dest_ip")
    m.from_endpoint(ENI, tcp(), 0)
    assert m.from_endpoint(ENI, tcp(flags="A"), 340)
    assert m.from_endpoint(ENI, tcp(flags="A"), 340 + 351) == []


def test_tcp_close_then_reuse_gets_a_new_cookie_and_stale_cookie_is_refused() -> None:
    m = model()
    first = one(m.from_endpoint(ENI, tcp(), 20))
    m.from_endpoint(ENI, tcp(flags="FA"), 21)
    m.from_endpoint(ENI, tcp(flags="FA", fwd=False), 21)
    assert m.from_endpoint(ENI, tcp(flags="A"), 22), "the final ACK passes during the linger"
    again = one(m.from_endpoint(ENI, tcp(), 23))
    old_c = geneve.parse(first.header + tcp()).cookie
    new_c = geneve.parse(again.header + tcp()).cookie
    assert new_c != old_c
    assert back(m, first, now=23) == []
    assert m.metrics.drops["stale_cookie"] == 1
    assert back(m, again, now=23) == [ToEndpoint(ENI, tcp())]
    # an RST closes at once (after the linger)
    m.from_endpoint(ENI, tcp(flags="R"), 24)
    m.tick(24 + 11)
    assert not m.flows


def test_non_syn_without_flow_dropped_or_reset() -> None:
    m = model()
    assert m.from_endpoint(ENI, tcp(flags="A"), 20) == []
    r = model(rst_on_idle_timeout=True)
    out = r.from_endpoint(ENI, tcp(flags="A", payload=b"data"), 20)
    assert len(out) == 1 and isinstance(out[0], ToEndpoint)
    rst = IP(out[0].inner)
    assert rst[TCP].flags == "R" and rst.src == "192.168.0.1" and rst[TCP].dport == 1000
    assert r.metrics.resets == 1


def test_return_validation_strict_and_lenient() -> None:
    m = model()
    a = one(m.from_endpoint(ENI, tcp(), 20))
    assert back(m, a, now=20) == [ToEndpoint(ENI, a.inner)]
    assert back(m, a, tcp(flags="SA", fwd=False), now=20) == [ToEndpoint(ENI, tcp(flags="SA", fwd=False))]
    other = raw(IP(src="10.9.9.9", dst="10.8.8.8") / ICMP())
    assert back(m, a, other, now=20) == []
    assert m.metrics.drops["tuple_mismatch"] == 1
    forged = geneve.gwlb_header(ENI, 0x12345678).to_bytes()
    assert back(m, a, header=forged, now=20) == []
    assert m.metrics.drops["unknown_cookie"] == 1
    wrong = next(t for t in m.targets.values() if t is not a.target)
    assert back(m, a, src=wrong.address, now=20) == []
    assert wrong.drops["wrong_target"] == 1
    assert back(m, a, src="10.1.1.1", now=20) == [] and m.metrics.drops["unknown_source"] == 1
    assert back(m, a, dst="10.9.9.9", now=20) == [] and m.metrics.drops["not_to_gwlb_node"] == 1
    assert back(m, a, dport=6082, now=20) == [] and m.metrics.drops["not_to_gwlb_node"] == 2
    hdr_att = geneve.gwlb_header(ENI, geneve.parse(a.header + tcp()).cookie, attachment_id=5).to_bytes()
    assert back(m, a, header=hdr_att, now=20) == [] and m.metrics.drops["attachment_mismatch"] == 1
    assert back(m, a, b"", header=a.header[:20], now=20) == [] and m.metrics.drops["options_beyond_packet"] == 1
    lenient = model(simulator=Simulator(health_checkers=1, return_validation="lenient", seed=1))
    b = one(lenient.from_endpoint(ENI, tcp(), 20))
    assert back(lenient, b, other, now=20) == [ToEndpoint(ENI, other)]


def test_strict_validation_takes_a_de_natted_reply_and_nothing_else() -> None:
    """Two-arm NAT: the forward packets never come back (they leave by the appliance's second arm); the reply,
    de-NATed by conntrack, comes back with the flow's header. Its inner tuple is the flow's reversed: accepted.
    A reply still carrying the NAT's address or port (not de-NATed) is another tuple: dropped."""
    m = model()
    out = raw(IP(src="10.10.0.2", dst="198.51.100.10") / TCP(sport=40000, dport=443, flags="S"))
    a = one(m.from_endpoint(ENI, out, 20))
    reply = raw(IP(src="198.51.100.10", dst="10.10.0.2") / TCP(sport=443, dport=40000, flags="SA"))
    assert back(m, a, reply, now=20) == [ToEndpoint(ENI, reply)]
    for not_de_natted in (IP(src="198.51.100.10", dst="203.0.113.10") / TCP(sport=443, dport=40000, flags="A"),
                          IP(src="198.51.100.10", dst="10.10.0.2") / TCP(sport=443, dport=61000, flags="A")):
        assert back(m, a, raw(not_de_natted), now=20) == []
    assert m.metrics.drops["tuple_mismatch"] == 2


def test_oversize_dropped_both_ways_and_port_check_switch() -> None:
    m = model()
    big = raw(IP(src="10.0.0.1", dst="192.168.0.1") / UDP(sport=1, dport=2) / (b"x" * 8500))
    assert m.from_endpoint(ENI, big, 20) == [] and m.metrics.drops["oversize"] == 1
    a = one(m.from_endpoint(ENI, udp(), 20))
    big_back = raw(IP(src="192.168.0.1", dst="10.0.0.1") / UDP(sport=53, dport=2000) / (b"x" * 8500))
    assert back(m, a, big_back, now=20) == [] and m.metrics.drops["oversize"] == 2
    assert back(m, a, sport=a.sport + 1, now=20), "by default a different source port is accepted"
    strict = model(simulator=Simulator(health_checkers=1, return_port_check="drop"))
    s = one(strict.from_endpoint(ENI, udp(), 20))
    assert back(strict, s, sport=s.sport + 1, now=20) == []


def test_unhealthy_target_gets_no_new_flows_but_keeps_old_ones() -> None:
    m = model(targets=2)
    flows = {p: one(m.from_endpoint(ENI, udp(sport=p), 20)) for p in range(3000, 3040)}
    victim = next(iter(flows.values())).target
    now = probe_all(m, 20, rounds=3, down={victim.id})
    assert victim.state == UNHEALTHY and m.cloudwatch()["UnHealthyHostCount"] == 1
    for p, a in flows.items():
        assert one(m.from_endpoint(ENI, udp(sport=p), now)).target is a.target, "no_rebalance keeps flows"
    for p in range(4000, 4040):
        assert one(m.from_endpoint(ENI, udp(sport=p), now)).target is not victim


def test_rebalance_moves_existing_flows_and_they_keep_their_cookies() -> None:
    m = model(targets=2, failover_on_unhealthy="rebalance", failover_on_deregistration="rebalance")
    flows = {p: one(m.from_endpoint(ENI, udp(sport=p), 20)) for p in range(3000, 3040)}
    victim = next(iter(flows.values())).target
    now = probe_all(m, 20, rounds=3, down={victim.id})
    moved = 0
    for p, a in flows.items():
        b = one(m.from_endpoint(ENI, udp(sport=p), now))
        assert b.target is not victim and b.header == a.header
        moved += a.target is victim
    assert moved and m.metrics.rebalanced_flows == moved


def test_fail_open_picks_one_random_target_for_the_life_of_a_flow() -> None:
    m = model(targets=3)
    now = probe_all(m, 20, rounds=3, down={"t0", "t1", "t2"})
    assert m.healthy_count() == 0
    targets = {one(m.from_endpoint(ENI, udp(sport=p), now)).target.id for p in range(100)}
    assert len(targets) > 1 and m.metrics.fail_open_flows == 100
    a = one(m.from_endpoint(ENI, udp(sport=7), now))
    assert all(one(m.from_endpoint(ENI, udp(sport=7), now + i)).target is a.target for i in range(5))
    dropper = model(targets=1, simulator=Simulator(health_checkers=1, fail_open="drop"))
    probe_all(dropper, 20, rounds=3, down={"t0"})
    assert dropper.from_endpoint(ENI, udp(), 40) == [] and dropper.metrics.drops["fail_open_drop"] == 1


def test_deregistration_drains_then_target_is_unused() -> None:
    m = model(targets=2, deregistration_delay=30)
    a = one(m.from_endpoint(ENI, udp(sport=1), 20))
    m.deregister_target(a.target.id, 21)
    for p in range(2, 30):
        assert one(m.from_endpoint(ENI, udp(sport=p), 22)).target is not a.target
    assert one(m.from_endpoint(ENI, udp(sport=1), 40)).target is a.target, "existing flows drain"
    m.tick(52)
    assert a.target.state == UNUSED
    b = one(m.from_endpoint(ENI, udp(sport=1), 53))
    assert b.target is not a.target and b.header != a.header, "after draining: a new flow"


def test_deregistration_with_rebalance_and_reset() -> None:
    m = model(targets=2, deregistration_delay=0, failover_on_unhealthy="rebalance",
              failover_on_deregistration="rebalance")
    a = one(m.from_endpoint(ENI, udp(sport=1), 20))
    m.deregister_target(a.target.id, 21)
    m.tick(21)
    b = one(m.from_endpoint(ENI, udp(sport=1), 22))
    assert b.target is not a.target and b.header == a.header
    r = model(targets=2, deregistration_delay=0, rst_on_deregistration=True)
    c = one(r.from_endpoint(ENI, tcp(), 20))
    r.deregister_target(c.target.id, 21)
    r.tick(21)
    out = r.from_endpoint(ENI, tcp(flags="A", fwd=False), 22)
    assert len(out) == 1 and isinstance(out[0], ToEndpoint) and IP(out[0].inner)[TCP].flags == "R"
    assert IP(out[0].inner).dst == "192.168.0.1"


def test_rst_on_unhealthy_after_the_drain_time() -> None:
    m = model(targets=2, deregistration_delay=10, rst_on_unhealthy=True)
    a = one(m.from_endpoint(ENI, tcp(), 20))
    now = probe_all(m, 20, rounds=3, down={a.target.id})
    out = m.from_endpoint(ENI, tcp(flags="A"), now + 11)
    assert isinstance(out[0], ToEndpoint) and IP(out[0].inner)[TCP].flags == "R"


def test_zones_and_cross_zone() -> None:
    zones = {"a": "10.100.1.1", "b": "10.100.2.1"}
    local = model(targets=4, zones=zones)
    assert {one(local.from_endpoint(ENI, udp(sport=p), 20)).target.zone for p in range(40)} == {"a"}
    assert {one(local.from_endpoint(ENI, udp(sport=p), 20)).node for p in range(40)} == {"10.100.1.1"}
    cross = model(targets=4, zones=zones, cross_zone=True)
    assert {one(cross.from_endpoint(ENI, udp(sport=p), 20)).target.zone for p in range(40)} == {"a", "b"}


def test_encapsulation_knobs() -> None:
    extra = (geneve.GeneveOption(0xFF00, 0x42, b"abcd"), geneve.GeneveOption(0x0103, 0x01))
    m = model()
    m.encap = Encapsulation(extra_options=extra, extras_first=True, gwlb_order=(3, 1, 2), vni=5,
                            reserved_flags=0x3F, reserved=0xAA)
    a = one(m.from_endpoint(ENI, tcp(), 20))
    p = geneve.parse(a.header + a.inner)
    assert [(o.option_class, o.type) for o in p.header.options] == [(0xFF00, 0x42), (0x0103, 1), (0x108, 3),
                                                                    (0x108, 1), (0x108, 2)]
    assert (p.header.vni, p.header.reserved_flags, p.header.reserved) == (5, 0x3F, 0xAA)
    crit = Encapsulation(extra_options=(geneve.GeneveOption(0xFF00, 0x80, b""),))
    m.encap = crit
    h = one(m.from_endpoint(ENI, udp(), 20)).header
    assert geneve.GeneveHeader.from_bytes(h).critical


def test_health_consensus_modes_and_http_matcher() -> None:
    hc = HealthCheck(protocol="HTTP", interval=5, timeout=2, healthy_threshold=2, unhealthy_threshold=2,
                     matcher="200-299")
    for mode, expect in (("any", HEALTHY), ("all", UNHEALTHY), ("majority", UNHEALTHY)):
        m = GwlbModel(GwlbConfig(health_check=hc, simulator=Simulator(health_checkers=3, health_consensus=mode)),
                      {"a": NODE})
        m.register_target("t", "10.0.0.9", "a", 0)
        now = 0.0
        for _ in range(6):
            for p in m.due_probes(now):
                m.probe_result("t", p.checker, m.probe_ok(200 if p.checker == 0 else 503, True), now)
            now += 5
        assert m.targets["t"].state == expect, mode
    assert not m.probe_ok(None, False) and m.probe_ok(250, True) and not m.probe_ok(301, True)


def test_no_targets_and_unknown_endpoint_are_counted() -> None:
    m = GwlbModel(GwlbConfig(), {"a": NODE})
    m.add_endpoint(ENI)
    assert m.from_endpoint(ENI, udp(), 0) == [] and m.metrics.drops["no_target"] == 1
    assert m.from_endpoint(999, udp(), 0) == [] and m.metrics.drops["unknown_endpoint"] == 1
    assert m.from_endpoint(ENI, b"\x99garbage", 0) == [] and m.metrics.drops["bad_inner_packet"] == 1
    with pytest.raises(ValueError):
        m.add_endpoint(5, "z")
    with pytest.raises(ValueError):
        m.register_target("x", "1.1.1.1", "z")


def test_next_deadline_drives_virtual_time() -> None:
    m = model()
    m.from_endpoint(ENI, udp(), 20)
    d = m.next_deadline()
    assert d is not None and d <= 20 + 120


def test_a_target_without_health_checks_is_healthy_and_never_probed() -> None:
    m = GwlbModel(GwlbConfig())
    m.register_target("t0", "10.0.0.5", now=0.0)
    assert m.due_probes(100.0), "a checked target is probed"
    m.assume_healthy("t0", 100.0)
    assert m.targets["t0"].state == HEALTHY
    assert m.due_probes(1000.0) == []
    m.probe_result("t0", 0, False, 1000.0)  # a probe that was in flight: ignored, no error
    assert m.targets["t0"].state == HEALTHY
