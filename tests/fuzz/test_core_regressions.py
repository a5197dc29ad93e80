"""Regression tests for bugs the fuzzers found in the reference core (docs/fuzzing.md, "Bugs found so far").
Both are fixed: returns refresh a flow's place in the least-recently-used order, and a packet whose IP length
field claims more than the OS handed over is dropped as ``bad_return_packet`` instead of being returned."""

from __future__ import annotations

from gwlbsim.reference.core import ApplianceCore, Config

from gwlbsim.traffic.inner import tcp_packet, udp_packet
from gwlbsim.wire import geneve


def _send(core: ApplianceCore, inner: bytes, cookie: int, now: float, eni: int = 7) -> None:
    d = geneve.build(inner, eni, cookie)
    assert core.inbound(d, 0, len(d), "10.0.0.1", "10.0.0.2", 60001, 6081, now) is not None


def test_full_flow_cache_evicts_an_expired_flow_before_a_live_one() -> None:
    a, b, c = (tcp_packet(f"192.168.1.{10 + i}", "192.168.2.20", 40000 + i, 80).data for i in range(3))
    core = ApplianceCore(Config(flow_timeout=10, max_flows=2))
    _send(core, a, 1, 0.0)
    core.tunnel_ready(7, 0.0)
    _send(core, b, 2, 1.0)
    assert core.outbound(core.tunnels[7], a, 5.0) is not None  # A refreshed by return traffic
    _send(core, c, 3, 12.0)  # cache full: B idle 11 s (expired), A idle 7 s (live)
    assert core.outbound(core.tunnels[7], a, 13.0) is not None, "the live flow A was evicted"


def test_return_of_a_packet_with_a_lying_length_is_dropped_not_sent() -> None:
    core = ApplianceCore()
    _send(core, udp_packet("192.168.1.10", "192.168.2.20", 5353, 53, b"query").data, 0x1234, 0.0)
    core.tunnel_ready(7, 0.0)
    bad = bytearray(udp_packet("192.168.2.20", "192.168.1.10", 53, 5353, b"answer").data)
    bad[2:4] = (9000).to_bytes(2, "big")
    assert core.outbound(core.tunnels[7], bytes(bad), 1.0) is None
    assert core.totals.drops["bad_return_packet"] == 1
