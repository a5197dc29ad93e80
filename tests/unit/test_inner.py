"""The inner-packet builder (``gwlbsim.traffic.inner``) against scapy, and the builders that go through it: the
model's TCP resets, the simulator's templates and the conformance suite's probes."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from gwlbsim.conformance.suite import helpers
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from gwlbsim.model.tcpreset import reset_for
from gwlbsim.simulate import _packet
from gwlbsim.traffic.inner import (
    TCP_FLAG_LETTERS,
    fill_template,
    flow_template,
    ip_packet,
    tcp_flag_bits,
    tcp_packet,
    tcp_segment,
    udp_packet,
)
from gwlbsim.wire.flowkey import IPPROTO_TCP, IPPROTO_UDP, FiveTuple, five_tuple, tcp_flags

ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


def test_tcp_flag_letters() -> None:
    assert tcp_flag_bits("") == 0 and tcp_flag_bits("S") == 0x02 and tcp_flag_bits("SA") == 0x12
    assert tcp_flag_bits(TCP_FLAG_LETTERS) == 0xFF
    with pytest.raises(ValueError, match="unknown TCP flag"):
        tcp_flag_bits("X")


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports, u32, u32, st.integers(0, 0xFF),
       st.integers(0, 0xFFFF), st.integers(1, 255), st.binary(max_size=40), st.booleans())
def test_tcp_packets_are_the_bytes_scapy_builds(addrs: tuple[str, str], sport: int, dport: int, seq: int, ack: int,
                                                flags: int, window: int, ttl: int, payload: bytes,
                                                packed: bool) -> None:
    """Text or packed addresses, either family: the same packet as scapy's, checksums included."""
    src, dst = addrs
    a, b = (ip_address(src).packed, ip_address(dst).packed) if packed else (src, dst)
    seg = tcp_segment(a, b, sport, dport, payload, seq=seq, ack=ack, flags=flags, window=window)
    tcp = TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window) / payload
    if ":" in src:
        theirs = raw(IPv6(src=src, dst=dst, hlim=ttl) / tcp)
    else:
        theirs = raw(IP(src=src, dst=dst, ttl=ttl, id=0, flags="DF") / tcp)
    assert ip_packet(a, b, IPPROTO_TCP, seg, ttl=ttl, df=True) == theirs


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports, u32, u32,
       st.sampled_from(["S", "A", "PA", "FA", "SA", "", "U"]), st.binary(max_size=30))
def test_a_reset_answers_its_segment_with_valid_checksums(addrs: tuple[str, str], sport: int, dport: int, seq: int,
                                                          ack: int, flags: str, payload: bytes) -> None:
    """RFC 793's answer: back to the sender, SEQ from its ACK, or ACK of all it sent; checksums verify."""
    src, dst = addrs
    pkt = bytearray(tcp_packet(src, dst, sport, dport, payload, tcp_flag_bits(flags)).data)
    l4 = len(pkt) - 20 - len(payload)
    pkt[l4 + 4:l4 + 12] = seq.to_bytes(4, "big") + ack.to_bytes(4, "big")
    rst = reset_for(bytes(pkt))
    assert rst is not None
    layer = IPv6 if ":" in src else IP
    got = layer(rst)
    assert (ip_address(got.src), ip_address(got.dst)) == (ip_address(dst), ip_address(src))
    assert (got[TCP].sport, got[TCP].dport) == (dport, sport)
    if "A" in flags:
        assert (got[TCP].flags, got[TCP].seq, got[TCP].ack) == ("R", ack, 0)
    else:
        seglen = len(payload) + ("S" in flags) + ("F" in flags)
        assert (got[TCP].flags, got[TCP].seq, got[TCP].ack) == ("RA", 0, (seq + seglen) & 0xFFFFFFFF)
    again = layer(rst)
    del again[TCP].chksum
    if layer is IP:
        del again.chksum
    assert raw(again) == rst


def test_no_reset_for_a_reset_or_for_udp() -> None:
    assert reset_for(tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, flags=0x04).data) is None
    assert reset_for(udp_packet("10.0.0.1", "10.0.0.2", 1, 2).data) is None


def test_templates_are_filled_with_the_flow() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([192, 168, 0, 7])
    pkt = fill_template(flow_template(IPPROTO_TCP), a, b, 1024, 443, 0x10)
    assert five_tuple(pkt) == FiveTuple(IPPROTO_TCP, 0x0A000001, 1024, 0xC0A80007, 443)
    assert tcp_flags(pkt, 20, len(pkt)) == 0x10
    udp = fill_template(flow_template(IPPROTO_UDP), b, a, 53, 5353)
    assert five_tuple(udp) == FiveTuple(IPPROTO_UDP, 0xC0A80007, 53, 0x0A000001, 5353)
    with pytest.raises(ValueError):
        flow_template(1)


def test_the_simulator_sends_the_packets_it_always_sent() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([192, 168, 0, 7])
    assert _packet(True, a, b, 1024, 443, True, True).hex() == \
        "450000280000000040060000" "0a000001c0a80007" "040001bb0000000000000000" "5002200000000000"
    assert _packet(True, a, b, 1024, 443, False, False).hex() == \
        "450000280000000040060000" "c0a800070a000001" "01bb04000000000000000000" "5010200000000000"
    assert _packet(False, a, b, 1024, 53, True, False).hex() == \
        "4500001c0000000040110000" "0a000001c0a80007" "0400003500080000"


_FLAGS = st.text(alphabet=TCP_FLAG_LETTERS, max_size=3)


@given(ports, ports, _FLAGS, st.binary(max_size=100), st.booleans())
def test_the_suite_probes_are_the_bytes_scapy_built(sport: int, dport: int, flags: str, payload: bytes,
                                                   reverse: bool) -> None:
    """The suite's probes were built with scapy; built with the inner builder they are the same bytes."""
    a, b = ("10.20.0.2", "10.10.0.2") if reverse else ("10.10.0.2", "10.20.0.2")
    sp, dp = (dport, sport) if reverse else (sport, dport)
    assert helpers.tcp4(sport, dport, flags, payload, reverse) == \
        raw(IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags=flags) / payload)
    assert helpers.udp4(sport, dport, payload, reverse) == raw(IP(src=a, dst=b) / UDP(sport=sp, dport=dp) / payload)
    assert helpers.udp6(sport, dport, payload) == \
        raw(IPv6(src="fd00:10::2", dst="fd00:20::2") / UDP(sport=sport, dport=dport) / payload)
    assert helpers.icmp4() == raw(IP(src="10.10.0.2", dst="10.20.0.2") / ICMP(id=7, seq=1) / b"ping")
