"""The public strategies produce what they claim: valid packets decode to their fields, malformed packets get
their labelled drop reason, flows and traffic hang together, inner packets are well formed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import IP, TCP, UDP, IPv6, Raw, raw

from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.inner import InnerPacket
from gwlbsim.traffic.malformations import MALFORMATIONS, VECTOR_LABELS
from gwlbsim.traffic.packets import GwlbFlow, MalformedPacket, Send, ValidPacket
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import five_tuple
from gwlbsim.wire.vectors import all_vectors

from .hyp import budget


@budget(150)
@given(gst.valid_packets(padding=True))
def test_valid_packets_decode_to_their_fields(vp: ValidPacket) -> None:
    assert geneve.scan(vp.payload, option_class=vp.option_class) == vp.expected_scan()
    p = geneve.parse(vp.payload, vp.option_class)
    assert (p.header, p.inner, p.eni_id, p.attachment_id, p.cookie) == (vp.header, vp.inner, vp.eni_id,
                                                                        vp.attachment_id, vp.cookie)
    assert vp.payload == vp.header_bytes + vp.inner + vp.padding
    assert not vp.header.oam and len(vp.inner) <= geneve.GWLB_MTU
    if vp.flow is not None:
        assert five_tuple(vp.inner) == vp.flow


@budget(100)
@given(gst.valid_packets(option_class=geneve.TENCENT_OPTION_CLASS))
def test_valid_packets_of_another_option_class(vp: ValidPacket) -> None:
    assert vp.option_class == geneve.TENCENT_OPTION_CLASS
    assert geneve.scan(vp.payload, option_class=geneve.TENCENT_OPTION_CLASS) == vp.expected_scan()


@budget(60)
@given(gst.valid_packets(extras=False, flag_bits=False, shuffle=False, vectors=False))
def test_realistic_valid_packets_look_like_real_gwlb(vp: ValidPacket) -> None:
    head = vp.header_bytes
    assert head[:2] == b"\x08\x00" and head[4:8] == b"\0\0\0\0" and len(head) == 40
    assert [o.type for o in vp.header.options] == [1, 2, 3]


@budget(300)
@given(gst.malformed_packets())
def test_malformed_packets_are_dropped_with_their_labelled_reason(mp: MalformedPacket) -> None:
    for attempt in (lambda: geneve.scan(mp.payload, option_class=mp.option_class),
                    lambda: geneve.parse(mp.payload, mp.option_class),
                    lambda: geneve.scan(memoryview(b"xx" + mp.payload + b""), 2, 2 + len(mp.payload),
                                        mp.option_class)):
        with pytest.raises(geneve.GeneveError) as e:
            attempt()
        assert e.value.reason == mp.reason, f"{mp.malformation} ({mp.detail}): got {e.value!r}"


@pytest.mark.parametrize("label", sorted(MALFORMATIONS))
def test_each_malformation_class_gets_its_reason(label: str) -> None:
    @budget(12)
    @given(gst.malformed_packets(malformations=[label]))
    def check(mp: MalformedPacket) -> None:
        assert mp.malformation == label and mp.reason == MALFORMATIONS[label].reason
        with pytest.raises(geneve.GeneveError) as e:
            geneve.scan(mp.payload, option_class=mp.option_class)
        assert e.value.reason == mp.reason, mp.detail

    check()


def test_the_catalogue_covers_every_drop_reason_of_the_codec() -> None:
    assert {m.reason for m in MALFORMATIONS.values()} == set(geneve.REASONS)
    assert {reason for _, reason in VECTOR_LABELS.values()} <= set(geneve.REASONS)
    with pytest.raises(ValueError, match="unknown malformations"):
        gst.malformed_packets(malformations=["no_such_thing"])


def test_third_party_vectors_are_mixed_in() -> None:
    valid = {vp.origin for vp in gst._vector_valid(None)}
    assert valid == {v.name for v in all_vectors() if v.valid_gwlb}
    bad = {mp.origin: mp for mp in gst._malformed_vector_list()}
    assert set(bad) == set(VECTOR_LABELS)
    for mp in bad.values():
        with pytest.raises(geneve.GeneveError) as e:
            geneve.scan(mp.payload)
        assert e.value.reason == mp.reason


@budget(120)
@given(gst.inner_packets())
def test_inner_packets_are_well_formed(pkt: InnerPacket) -> None:
    assert len(pkt.data) <= geneve.GWLB_MTU
    assert five_tuple(pkt.data) == pkt.five_tuple()
    if pkt.version == 4:
        rebuilt = IP(pkt.data)
        if pkt.proto not in (6, 17, 1):  # scapy would re-encode e.g. SCTP its own way: keep those bytes as they are
            header = (pkt.data[0] & 0x0F) * 4
            rebuilt.remove_payload()
            rebuilt /= Raw(pkt.data[header:])
        del rebuilt.chksum, rebuilt.len
        layer = rebuilt.getlayer(TCP) or rebuilt.getlayer(UDP)
        if layer is not None and not pkt.fragmented:
            del layer.chksum
        assert raw(rebuilt) == pkt.data, "scapy recomputes the same lengths and checksums"
    elif not pkt.ext_headers:
        rebuilt6 = IPv6(pkt.data)
        del rebuilt6.plen
        layer = rebuilt6.getlayer(TCP) or rebuilt6.getlayer(UDP)
        if layer is not None:
            del layer.chksum
        assert raw(rebuilt6) == pkt.data


@budget(60)
@given(gst.flow_lists(min_size=1, max_size=6, eni_ids=st.sampled_from([1, 2]), extras=True))
def test_flows_have_one_key_both_ways_and_distinct_keys_per_eni(flows: list[GwlbFlow]) -> None:
    seen = set()
    for f in flows:
        assert f.forward.five_tuple().symmetric() == f.reverse.five_tuple().symmetric() == f.key
        assert (f.eni_id, f.key) not in seen
        seen.add((f.eni_id, f.key))
        for direction in ("forward", "reverse"):
            p = geneve.parse(f.payload(direction))
            assert (p.eni_id, p.cookie, p.attachment_id) == (f.eni_id, f.cookie, f.attachment_id)
            assert p.inner == (f.forward if direction == "forward" else f.reverse).data
    assert len({f.sport for f in flows}) == len(flows)


@budget(60)
@given(gst.traffic(malformed=True, max_packets=20))
def test_traffic_sends_are_parseable_with_the_flows_current_cookie(seq: list[Send]) -> None:
    for s in seq:
        if s.label == "valid":
            assert s.flow is not None
            p = geneve.parse(s.payload)
            assert (p.cookie, p.eni_id) == (s.flow.cookie, s.flow.eni_id)
            assert s.flow.key == five_tuple(p.inner).symmetric()
        else:
            with pytest.raises(geneve.GeneveError) as e:
                geneve.scan(s.payload)
            assert e.value.reason == MALFORMATIONS[s.label].reason if s.label in MALFORMATIONS else True


@given(gst.inner_packets(routable=True))
def test_routable_inner_packets_are_what_a_router_forwards(p) -> None:  # type: ignore[no-untyped-def]
    import ipaddress

    data = p.data
    if p.version == 4:
        ttl, addrs = data[8], (ipaddress.IPv4Address(data[12:16]), ipaddress.IPv4Address(data[16:20]))
    else:
        ttl, addrs = data[7], (ipaddress.IPv6Address(data[8:24]), ipaddress.IPv6Address(data[24:40]))
    assert ttl >= 2
    assert "hbh" not in p.ext_headers[1:], "RFC 8200: hop-by-hop only first"
    for a in addrs:
        assert not (a.is_unspecified or a.is_loopback or a.is_multicast or a.is_link_local or a.is_reserved), a
