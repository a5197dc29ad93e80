"""Small builders shared by the suite's tests.

Every probe is traffic a GWLB could send: UDP, or TCP opened with a SYN, one cookie per flow.
"""

from __future__ import annotations

import contextlib

from gwlbsim.conformance.environment import ConformanceEnv
from hypothesis import HealthCheck, settings

from gwlbsim.appliance import INTERNET_MODES
from gwlbsim.traffic.inner import icmp_message, ipv4, ipv6, tcp_flag_bits, tcp_packet, tcp_segment, udp_datagram
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, InnerError, address, flow_of, tcp_flags

#: seconds Hypothesis may spend shrinking a failure (each example is a round trip through the appliance)
SHRINK_SECONDS = 10
#: the IPv4 id and TCP window of every probe (scapy's defaults, which built the probes before)
PROBE_IP_ID = 1
PROBE_TCP_WINDOW = 8192
ICMP_ECHO_REQUEST = 8


def tcp4(sport: int = 40000, dport: int = 80, flags: str = "S", payload: bytes = b"", reverse: bool = False,
         src: str = "10.10.0.2", dst: str = "10.20.0.2") -> bytes:
    """An IPv4 TCP probe with ``flags`` given as letters (``"SA"``); ``reverse``: the answer's direction."""
    if reverse:
        src, dst, sport, dport = dst, src, dport, sport
    seg = tcp_segment(src, dst, sport, dport, payload, flags=tcp_flag_bits(flags), window=PROBE_TCP_WINDOW)
    return ipv4(src, dst, IPPROTO_TCP, seg, ident=PROBE_IP_ID)


def udp4(sport: int = 5000, dport: int = 53, payload: bytes = b"q", reverse: bool = False) -> bytes:
    """An IPv4 UDP probe between the client and the server; ``reverse``: the answer's direction."""
    a, b = ("10.20.0.2", "10.10.0.2") if reverse else ("10.10.0.2", "10.20.0.2")
    sp, dp = (dport, sport) if reverse else (sport, dport)
    return ipv4(a, b, IPPROTO_UDP, udp_datagram(a, b, sp, dp, payload), ident=PROBE_IP_ID)


def udp6(sport: int = 5000, dport: int = 53, payload: bytes = b"q") -> bytes:
    """An IPv6 UDP probe from the client to the server."""
    a, b = "fd00:10::2", "fd00:20::2"
    return ipv6(a, b, IPPROTO_UDP, udp_datagram(a, b, sport, dport, payload))


def icmp4() -> bytes:
    """An IPv4 ICMP echo request (id 7, sequence 1) from the client to the server."""
    echo = icmp_message(ICMP_ECHO_REQUEST, 0, (7 << 16) | 1, b"ping")
    return ipv4("10.10.0.2", "10.20.0.2", IPPROTO_ICMP, echo, ident=PROBE_IP_ID)


def eni(env: ConformanceEnv, e: int = 0) -> int:
    """The ENI id of one of the fake GWLB's endpoints (for traffic through GWLB's model)."""
    return env.topo.endpoints[e].eni_id


def raw_eni(env: ConformanceEnv) -> int:
    """This test's own ENI id for crafted datagrams: a tunnel no earlier test touched."""
    return env.test_eni


def private_only(env: ConformanceEnv) -> bool:
    """Whether generated inner packets keep to private (VPC) addresses: an appliance deployed with a second arm
    (two-arm NAT) sends traffic to any other address out of that arm, not back through GWLB."""
    return env.options.mode in INTERNET_MODES


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
