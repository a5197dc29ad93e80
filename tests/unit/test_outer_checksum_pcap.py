from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import IP, UDP, raw

from gwlbsim.wire import pcap
from gwlbsim.wire.checksum import internet_checksum, ones_sum, udp4_checksum
from gwlbsim.wire.outer import OuterError, build_ipv4_udp, parse_ipv4_udp
from gwlbsim.wire.vectors import aws_outer_packets


@given(st.binary(max_size=200), st.integers(0, 65535), st.integers(0, 65535))
def test_udp_checksum_agrees_with_scapy(payload: bytes, sport: int, dport: int) -> None:
    ours = build_ipv4_udp("192.0.2.1", "198.51.100.7", sport, dport, payload)
    theirs = raw(IP(src="192.0.2.1", dst="198.51.100.7", ttl=255, id=0, flags=0) / UDP(sport=sport, dport=dport)
                 / payload)
    assert ours == theirs


def test_checksum_edge_cases() -> None:
    assert ones_sum(b"") == 0 and internet_checksum(b"\0\0") == 0xFFFF
    assert ones_sum(b"\xff\xff") == 0xFFFF and internet_checksum(b"\xff\xff") == 0
    assert ones_sum(b"\x01") == 0x0100
    assert 0 < udp4_checksum(b"\0" * 4, b"\0" * 4, b"\0" * 8) <= 0xFFFF


def test_real_aws_outer_headers_verify() -> None:
    pkts = aws_outer_packets()
    assert len(pkts) == 6
    for p in pkts:
        o = parse_ipv4_udp(p)
        assert o.checksum_ok and o.udp_checksum != 0
        assert (o.ttl, o.tos, o.ident, o.df, o.dport) == (255, 0, 0, False, 6081)
        assert 60000 <= o.sport <= 61009


@pytest.mark.parametrize("data", [b"", bytes(27), b"\x65" + bytes(27),
                                  raw(IP(proto=6) / UDP())[:28], raw(IP(flags="MF") / UDP())])
def test_bad_outer_packets(data: bytes) -> None:
    with pytest.raises(OuterError):
        parse_ipv4_udp(data)


def test_pcap_round_trip(tmp_path: Path) -> None:
    pkts = [b"\x45" + bytes(19), b"\x60" + bytes(39)]
    pcap.write(tmp_path / "x.pcap", [(1.5, pkts[0]), pkts[1]])
    recs = pcap.read(tmp_path / "x.pcap")
    assert [r.data for r in recs] == pkts and recs[0].timestamp == 1.5
    assert all(r.linktype == pcap.LINKTYPE_RAW for r in recs)
    (tmp_path / "bad").write_bytes(b"nope" * 10)
    with pytest.raises(pcap.PcapError):
        pcap.read(tmp_path / "bad")


@given(st.binary(max_size=40), st.binary(max_size=300), st.integers(0, 65535), st.booleans())
def test_template_packets_equal_packets_built_whole(prefix: bytes, tail: bytes, sport: int, checksum: bool) -> None:
    from gwlbsim.wire.outer import OuterTemplate

    t = OuterTemplate("10.0.0.1", "10.0.0.2", sport, 6081, prefix, udp_checksum=checksum)
    assert t.packet(tail) == build_ipv4_udp("10.0.0.1", "10.0.0.2", sport, 6081, prefix + tail, udp_checksum=checksum)


def test_fragments_reassemble_to_the_packet() -> None:
    from scapy.all import IP, defragment

    from gwlbsim.wire.outer import fragment_ipv4

    p = build_ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(range(256)) * 80, ident=7)
    frags = fragment_ipv4(p, 9000)
    assert len(frags) == 3 and all(len(f) <= 9000 for f in frags)
    assert raw(defragment([IP(f) for f in frags])[0]) == p
    assert fragment_ipv4(p[:100], 9000) == [p[:100]]
    with pytest.raises(ValueError):
        fragment_ipv4(build_ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(9000), df=True), 1500)
