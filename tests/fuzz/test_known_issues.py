"""Bugs the fuzzers found in code this suite does not own, pinned as strict expected failures.

When one is fixed its test passes, which fails the run (strict xfail): remove the marker then, and the test
stays as a regression test. Details and proposed fixes: docs/fuzzing.md, "Bugs found so far".
"""

from __future__ import annotations

import pytest

from fuzz.inner import tcp_packet, udp_packet
from gwlbsim import geneve
from gwlbsim.outer import parse_ipv4_udp
from reference.core import ApplianceCore, Config


def _send(core: ApplianceCore, inner: bytes, cookie: int, now: float, eni: int = 7) -> None:
    d = geneve.build(inner, eni, cookie)
    assert core.inbound(d, 0, len(d), "10.0.0.1", "10.0.0.2", 60001, 6081, now) is not None


@pytest.mark.xfail(strict=True, reason="reference.core: flows refreshed by returns keep their LRU position; "
                                       "a live flow is evicted while an expired one stays")
def test_full_flow_cache_evicts_an_expired_flow_before_a_live_one() -> None:
    a, b, c = (tcp_packet(f"192.168.1.{10 + i}", "192.168.2.20", 40000 + i, 80).data for i in range(3))
    core = ApplianceCore(Config(flow_timeout=10, max_flows=2))
    _send(core, a, 1, 0.0)
    core.tunnel_ready(7, 0.0)
    _send(core, b, 2, 1.0)
    assert core.outbound(core.tunnels[7], a, 5.0) is not None  # A refreshed by return traffic
    _send(core, c, 3, 12.0)  # cache full: B idle 11 s (expired), A idle 7 s (live)
    assert core.outbound(core.tunnels[7], a, 13.0) is not None, "the live flow A was evicted"


@pytest.mark.xfail(strict=True, reason="reference.core: returns a packet whose IP length field disagrees with "
                                       "its size; GWLB drops the return (truncated_inner)")
def test_return_of_a_packet_with_a_lying_length_is_dropped_not_sent() -> None:
    core = ApplianceCore()
    _send(core, udp_packet("192.168.1.10", "192.168.2.20", 5353, 53, b"query").data, 0x1234, 0.0)
    core.tunnel_ready(7, 0.0)
    bad = bytearray(udp_packet("192.168.2.20", "192.168.1.10", 53, 5353, b"answer").data)
    bad[2:4] = (9000).to_bytes(2, "big")
    flow = core.outbound(core.tunnels[7], bytes(bad), 1.0)
    if flow is None:
        return
    out = core.encapsulate(flow, bytes(bad))
    geneve.scan(out[parse_ipv4_udp(out).payload_offset:])  # raises TruncatedInner: GWLB would drop it
