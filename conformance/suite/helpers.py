"""Small builders shared by the suite's tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from conformance.environment import ConformanceEnv
from gwlbsim import geneve


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
    return env.topo.endpoints[e].eni_id


def property_settings(env: ConformanceEnv) -> settings:
    return settings(max_examples=env.options.hypothesis_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def cookie_of(payload: bytes) -> int:
    return geneve.scan(payload).cookie
