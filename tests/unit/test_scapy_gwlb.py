"""The codec against scapy (an independent implementation), both ways, and scapy's named GWLB options."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw
from scapy.contrib.geneve import GENEVE, GeneveOptions

from gwlbsim.wire import geneve
from gwlbsim.wire.scapy_gwlb import GwlbAttachmentId, GwlbEniId, GwlbFlowCookie, gwlb_geneve
from gwlbsim.wire.vectors import gwlb_vectors


@pytest.mark.parametrize("vec", gwlb_vectors(), ids=lambda v: v.name)
def test_scapy_reads_real_vectors_the_same_way(vec) -> None:  # type: ignore[no-untyped-def]
    ours = geneve.parse(vec.payload, option_class=vec.option_class)
    theirs = GENEVE(vec.payload)
    eni, att, cookie = theirs.options
    assert isinstance(eni, GwlbEniId) and isinstance(att, GwlbAttachmentId) and isinstance(cookie, GwlbFlowCookie)
    assert (eni.eni_id, att.attachment_id, cookie.cookie) == (ours.eni_id, ours.attachment_id, ours.cookie)
    assert raw(theirs) == vec.payload
    assert raw(theirs.payload) == ours.inner


def test_scapy_names_the_aws_option_class() -> None:
    pkt = GENEVE(raw(gwlb_geneve(1, 2) / IP()))
    assert "Amazon" in pkt.options[0].sprintf("%classid%")
    assert "Gateway Load Balancer" in pkt.options[2].sprintf("%classid%")


inner_packets = st.one_of(
    st.builds(lambda s, d, sp, dp: IP(src=s, dst=d) / TCP(sport=sp, dport=dp, flags="S"),
              st.ip_addresses(v=4).map(str), st.ip_addresses(v=4).map(str), st.integers(0, 65535),
              st.integers(0, 65535)),
    st.builds(lambda s, d, n: IPv6(src=s, dst=d) / UDP(sport=53, dport=53) / (b"x" * n),
              st.ip_addresses(v=6).map(str), st.ip_addresses(v=6).map(str), st.integers(0, 100)),
    st.builds(lambda s, i: IP(dst=s) / ICMP(id=i), st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
)
options = st.lists(st.builds(geneve.GeneveOption, st.integers(0, 0xFFFF).filter(lambda c: c != 0x0108),
                             st.integers(0, 0x7F), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)),
                             st.integers(0, 7)), max_size=3)


@settings(max_examples=60, deadline=None)
@given(inner_packets, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
       st.integers(0, 2**24 - 1), options)
def test_what_we_build_scapy_reads(inner, eni, cookie, att, vni, extra) -> None:  # type: ignore[no-untyped-def]
    data = geneve.build(raw(inner), eni, cookie, att, vni=vni, extra_options=tuple(extra))
    pkt = GENEVE(data)
    assert pkt.vni == vni and pkt.version == 0 and pkt.optionlen * 4 == len(data) - 8 - len(raw(inner))
    assert pkt.options[0].eni_id == eni and pkt.options[1].attachment_id == att
    assert pkt.options[2].cookie == cookie
    assert [(o.classid, o.type, o.reserved, o.data) for o in pkt.options[3:]] == \
        [(o.option_class, o.type, o.reserved, o.data) for o in extra]
    assert raw(pkt.payload) == raw(inner)


@settings(max_examples=60, deadline=None)
@given(inner_packets, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**24 - 1),
       st.permutations([0, 1, 2]), st.integers(0, 0x3F), st.integers(0, 255))
def test_what_scapy_builds_we_read(inner, eni, cookie, vni, order, rflags, rbyte) -> None:  # type: ignore[no-untyped-def]
    opts = [GwlbEniId(eni_id=eni), GwlbAttachmentId(attachment_id=0), GwlbFlowCookie(cookie=cookie)]
    g = GENEVE(proto=0x0800 if inner.version == 4 else 0x86DD, vni=vni, reserved=rflags, reserved2=rbyte,
               options=[opts[i] for i in order] + [GeneveOptions(classid=0xFF01, type=5, data=b"abcd")])
    data = raw(g / inner)
    p = geneve.parse(data)
    assert (p.eni_id, p.attachment_id, p.cookie) == (eni, 0, cookie)
    assert p.header.vni == vni and p.header.reserved_flags == rflags and p.header.reserved == rbyte
    assert p.inner == raw(inner)
    assert p.to_bytes() == data


def test_a_whole_outer_packet_built_by_scapy() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=60001, dport=6081) / gwlb_geneve(5, 6) / IP() / ICMP()
    data = raw(pkt)
    from gwlbsim.wire.outer import parse_ipv4_udp
    o = parse_ipv4_udp(data)
    assert o.checksum_ok and (o.sport, o.dport) == (60001, 6081)
    assert geneve.parse(data[o.payload_offset:]).cookie == 6
