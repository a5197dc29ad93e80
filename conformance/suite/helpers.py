"""Small builders shared by the suite's tests.

Every probe is traffic a GWLB could send: UDP, or TCP opened with a SYN, one cookie per flow.
"""

from __future__ import annotations

import contextlib

from gwlbsim.conformance.environment import ConformanceEnv
from hypothesis import HealthCheck, settings
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from gwlbsim.traffic.inner import tcp_packet
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_TCP, InnerError, address, flow_of, tcp_flags

#: seconds Hypothesis may spend shrinking a failure (each example is a round trip through the appliance)
SHRINK_SECONDS = 10


def tcp4(sport: int = 40000, dport: int = 80, flags: str = "S", payload: bytes = b"", reverse: bool = False,
         src: str = "10.10.0.2", dst: str = "10.20.0.2") -> bytes:
    if reverse:
        return raw(IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags=flags) / payload)
    return raw(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / payload)


def udp4(sport: int = 5000, dport: int = 53, payload: bytes = b"q", reverse: bool = False) -> bytes:
    a, b = ("10.20.0.2", "10.10.0.2") if reverse else ("10.10.0.2", "10.20.0.2")
    sp, dp = (dport, sport) if reverse else (sport, dport)
    return raw(IP(src=a, dst=b) / UDP(sport=sp, dport=dp) / payload)


def udp6(sport: int = 5000, dport: int = 53, payload: bytes = b"q") -> bytes:
    return raw(IPv6(src="fd00:10::2", dst="fd00:20::2") / UDP(sport=sport, dport=dport) / payload)


def icmp4() -> bytes:
    return raw(IP(src="10.10.0.2", dst="10.20.0.2") / ICMP(id=7, seq=1) / b"ping")


def eni(env: ConformanceEnv, e: int = 0) -> int:
    """The ENI id of one of the fake GWLB's endpoints (for traffic through GWLB's model)."""
    return env.topo.endpoints[e].eni_id


def raw_eni(env: ConformanceEnv) -> int:
    """This test's own ENI id for crafted datagrams: a tunnel no earlier test touched."""
    return env.test_eni


def property_settings(env: ConformanceEnv) -> settings:
    _cap_shrinking()
    return settings(max_examples=env.options.hypothesis_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def _cap_shrinking() -> None:
    # Hypothesis has no public setting for shrinking time; its engine reads this module constant at the start
    # of each shrink. Without a cap a failing appliance costs minutes of round trips.
    with contextlib.suppress(ImportError, AttributeError):
        from hypothesis.internal.conjecture import engine

        engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS


def cookie_of(payload: bytes) -> int | None:
    """The flow cookie of a GWLB datagram; None when it has none (or is no GWLB datagram at all)."""
    try:
        return geneve.scan(payload).cookie
    except geneve.GeneveError:
        return None


def cookie_text(cookie: int | None) -> str:
    return "no cookie option" if cookie is None else f"{cookie:#x}"


def opening_syn(inner: bytes) -> bytes | None:
    """For a TCP packet other than a SYN: a SYN of the same flow (GWLB delivers no TCP flow without one). For
    a TCP fragment (no ports to be seen): a SYN between the same two hosts, as the fragmented segment's flow
    would have begun with."""
    try:
        ft, l4 = flow_of(inner)
    except InnerError:
        return None
    if ft.proto != IPPROTO_TCP:
        return None
    if l4 < 0:
        return tcp_packet(str(address(ft.src)), str(address(ft.dst)), 1024, 80, flags=0x02).data
    if tcp_flags(inner, l4, len(inner)) & 0x12 == 0x02:
        return None
    return tcp_packet(str(address(ft.src)), str(address(ft.dst)), ft.sport, ft.dport, flags=0x02).data
