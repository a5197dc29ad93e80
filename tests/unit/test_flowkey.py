from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import (
    GRE,
    ICMP,
    IP,
    TCP,
    UDP,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    raw,
)
from scapy.layers.inet6 import ICMPv6EchoRequest

from gwlbsim.wire.flowkey import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    InnerError,
    address,
    address_int,
    five_tuple,
    symmetric_key,
)


def test_tcp_and_udp_are_five_tuples_both_ways() -> None:
    fwd = raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80))
    rev = raw(IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1234))
    t = five_tuple(fwd)
    assert t == (IPPROTO_TCP, address_int("10.0.0.1"), 1234, address_int("10.0.0.2"), 80)
    assert five_tuple(rev) == t.reversed()
    assert symmetric_key(fwd) == symmetric_key(rev)
    assert symmetric_key(raw(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1234, dport=80))) != symmetric_key(fwd)
    assert t.describe() == "tcp 10.0.0.1:1234 -> 10.0.0.2:80"


def test_other_protocols_are_three_tuples() -> None:
    a = five_tuple(raw(IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(id=1)))
    b = five_tuple(raw(IP(src="2.2.2.2", dst="1.1.1.1") / ICMP(type=0, id=2)))
    assert a.proto == IPPROTO_ICMP and a.sport == a.dport == 0
    assert a.symmetric() == b.symmetric()
    assert five_tuple(raw(IP() / GRE())).sport == 0


def test_ipv6_extension_headers_are_walked() -> None:
    plain = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=6))
    ext = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
              / IPv6ExtHdrRouting() / UDP(sport=5, dport=6))
    assert five_tuple(ext) == five_tuple(plain)
    assert five_tuple(plain).proto == IPPROTO_UDP and five_tuple(plain).sport == 5
    frag = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(m=1) / UDP(sport=5, dport=6))
    assert five_tuple(frag).sport == 0 and five_tuple(frag).proto == IPPROTO_UDP
    echo = five_tuple(raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest()))
    assert echo.proto == 58 and str(address(echo.src)) == "2001:db8::1"


def test_ipv4_fragments_are_three_tuples() -> None:
    first = raw(IP(src="1.1.1.1", dst="2.2.2.2", flags="MF") / UDP(sport=1, dport=2))
    assert five_tuple(first).sport == 0


def test_v4_and_v6_addresses_never_collide() -> None:
    assert address_int("0.0.0.1") != address_int("::1")


@pytest.mark.parametrize("data", [b"", b"\x45" + bytes(10), b"\x60" + bytes(20), b"\x75" + bytes(30),
                                  b"\x46" + bytes(19),
                                  raw(IPv6() / IPv6ExtHdrHopByHop() / UDP())[:41]])
def test_garbage_raises_inner_error(data: bytes) -> None:
    with pytest.raises(InnerError):
        five_tuple(data)


@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_inner_error(data: bytes) -> None:
    try:
        five_tuple(data)
    except InnerError:
        pass


@given(st.sampled_from([6, 17, 1, 47]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 65535),
       st.integers(0, 65535), st.sampled_from([0, 0x4000, 0x2000, 0x0010]), st.integers(0, 40))
def test_fast_path_agrees_with_the_general_walk(proto: int, src: int, dst: int, sport: int, dport: int, frag: int,
                                                extra: int) -> None:
    import struct

    hdr = struct.pack("!BBHHHBBHII", 0x45, 0, 28 + extra, 1, frag, 64, proto, 0, src, dst)
    pkt = hdr + struct.pack("!HH", sport, dport) + bytes(4 + extra)
    assert symmetric_key(pkt) == five_tuple(pkt).symmetric()
