"""The wire format: every field, every bit, every error reason, against real third-party bytes and scapy."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlbsim.wire import geneve
from gwlbsim.wire.geneve import (
    AWS_OPTION_CLASS,
    GeneveHeader,
    GeneveOption,
    build,
    gwlb_header,
    parse,
    scan,
)
from gwlbsim.wire.vectors import all_vectors, gwlb_vectors

IPV4_SYN = bytes.fromhex("4500002800010000400600000a0000010a0000020400005000000000000000005002200000000000")
IPV6_UDP = bytes.fromhex("6000000000081140" + "20010db8000000000000000000000001" * 2) + struct.pack("!HHHH", 1, 2, 8, 0)


def header_bytes(**kw: object) -> bytes:
    return gwlb_header(0x2B8EE1D4DB0C51C4, 0xDEADBEEF, **kw).to_bytes()  # type: ignore[arg-type]


def test_header_is_byte_identical_to_real_gwlb() -> None:
    v = next(v for v in all_vectors() if v.name == "gwlb-geneve-payload-tcp-syn")
    s = scan(v.payload)
    rebuilt = gwlb_header(s.eni_id, s.cookie, s.attachment_id).to_bytes()
    assert rebuilt == v.payload[:40]
    assert rebuilt[:8] == bytes.fromhex("0800080000000000")
    assert (s.eni_id, s.attachment_id, s.cookie) == (0x362FC63CA6F28A41, 0, 0x8982DD39)


@pytest.mark.parametrize("vec", gwlb_vectors(), ids=lambda v: v.name)
def test_every_real_gwlb_packet_parses_and_round_trips(vec) -> None:  # type: ignore[no-untyped-def]
    pkt = parse(vec.payload, option_class=vec.option_class)
    assert pkt.header.to_bytes() == pkt.header_bytes == vec.payload[:pkt.header.length]
    assert pkt.to_bytes() == vec.payload
    assert [o.type for o in pkt.header.options] == [1, 2, 3]
    assert {o.option_class for o in pkt.header.options} == {vec.option_class}
    assert pkt.attachment_id == 0
    assert pkt.inner_version == 4


def test_real_vector_fields_match_their_published_description() -> None:
    by_name = {v.name: v for v in all_vectors()}
    frame3 = parse(by_name["aws-gwlb-real_mszczygiel_gwlb-to-appliance_eth#3"].payload)
    frame4 = parse(by_name["aws-gwlb-real_mszczygiel_gwlb-to-appliance_eth#4"].payload)
    assert frame3.eni_id == frame4.eni_id == 0xEDABA871E800FE20
    assert frame3.cookie == frame4.cookie == 0x909F656C
    tencent = parse(by_name["tencent-gwlb-real_tx-gwlb-for-demo#1"].payload, option_class=0x0167)
    assert tencent.eni_id.to_bytes(8, "big") == b"big0vj0j"
    with pytest.raises(geneve.MissingAwsOption):  # Tencent's options are not AWS's class
        parse(by_name["tencent-gwlb-real_tx-gwlb-for-demo#1"].payload)


def test_suricata_vectors_read_as_geneve_and_test05_is_rejected() -> None:
    suri = [v for v in all_vectors() if v.source == "suricata"]
    assert len(suri) == 5
    for v in suri:
        if v.name.endswith("Test05"):
            with pytest.raises(geneve.OptionOverrun):
                GeneveHeader.from_bytes(v.payload)
            with pytest.raises(geneve.GeneveError):
                scan(v.payload)
            continue
        hdr = GeneveHeader.from_bytes(v.payload)
        assert hdr.vni == 0x25
        assert [(o.option_class, o.type, o.data) for o in hdr.options] == [(0x0108, 0, b"\x11" * 4)] * 2
        assert hdr.to_bytes() == v.payload[:hdr.length]
        # not GWLB packets: Ethernet payloads, or no GWLB options
        with pytest.raises((geneve.BadProtocolType, geneve.MissingAwsOption)):
            scan(v.payload)


def test_every_bit_of_the_header_is_preserved() -> None:
    extra = (GeneveOption(0xFFFF, 0x7F, b"abcdefgh", reserved=5), GeneveOption(0x0108, 0x09, b"", 7))
    hdr = GeneveHeader(protocol=0x86DD, vni=0xABCDEF, oam=False, critical=True, reserved_flags=0x2A,
                       reserved=0x5A, options=(extra[0], *geneve.gwlb_options(1, 2, 3), extra[1]))
    raw = hdr.to_bytes() + IPV6_UDP
    pkt = parse(raw)
    assert pkt.header == hdr
    assert pkt.to_bytes() == raw
    assert (pkt.eni_id, pkt.attachment_id, pkt.cookie) == (1, 2, 3)
    assert raw[1] == 0x40 | 0x2A and raw[7] == 0x5A and raw[4:7] == bytes.fromhex("abcdef")


def test_options_in_any_order_and_mixed_with_others() -> None:
    opts = list(geneve.gwlb_options(7, 8, 9))
    for order in ([2, 0, 1], [1, 2, 0], [0, 2, 1]):
        hdr = GeneveHeader(options=(GeneveOption(0x0103, 1, b"\0" * 4), *(opts[i] for i in order)))
        s = scan(hdr.to_bytes() + IPV4_SYN)
        assert (s.eni_id, s.attachment_id, s.cookie) == (7, 8, 9)
        assert s.header_len == hdr.length and s.inner_len == len(IPV4_SYN)


def test_option_class_is_a_parameter() -> None:
    raw = build(IPV4_SYN, 5, 6, option_class=0x0167)
    assert scan(raw, option_class=0x0167).cookie == 6
    with pytest.raises(geneve.MissingAwsOption):
        scan(raw)


def test_build_uses_protocol_from_inner_version() -> None:
    assert build(IPV6_UDP, 1, 2)[2:4] == b"\x86\xdd"
    assert build(IPV4_SYN, 1, 2)[2:4] == b"\x08\x00"
    with pytest.raises(ValueError):
        build(b"\x70" + bytes(40), 1, 2)


def _set(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value):]


GOOD = header_bytes() + IPV4_SYN


@pytest.mark.parametrize(("name", "data", "error"), [
    ("empty", b"", geneve.TooShort),
    ("seven bytes", GOOD[:7], geneve.TooShort),
    ("version 1", _set(GOOD, 0, b"\x48"), geneve.BadVersion),
    ("version 3", _set(GOOD, 0, b"\xc8"), geneve.BadVersion),
    ("option length beyond packet", _set(GOOD, 0, b"\x3f"), geneve.OptionsBeyondPacket),
    ("header only, options cut", GOOD[:20], geneve.OptionsBeyondPacket),
    ("option overruns area", _set(GOOD, 0, b"\x07"), geneve.OptionOverrun),
    ("option data overruns area", _set(GOOD, 11, b"\x1f"), geneve.OptionOverrun),
    ("ethernet payload", _set(GOOD, 2, b"\x65\x58"), geneve.BadProtocolType),
    ("arp payload", _set(GOOD, 2, b"\x08\x06"), geneve.BadProtocolType),
    ("ipv6 type, ipv4 inner", _set(GOOD, 2, b"\x86\xdd"), geneve.ProtocolMismatch),
    ("ipv4 type, version 7 inner", _set(GOOD, 40, b"\x75"), geneve.ProtocolMismatch),
    ("cookie missing", _set(GOOD, 34, b"\x04"), geneve.MissingAwsOption),
    ("eni missing", _set(GOOD, 10, b"\x05"), geneve.MissingAwsOption),
    ("attachment missing", _set(GOOD, 22, b"\x06"), geneve.MissingAwsOption),
    ("unknown critical option", _set(GOOD, 34, b"\x83"), geneve.UnknownCriticalOption),
    ("control packet", _set(GOOD, 1, b"\x80"), geneve.ControlPacket),
    ("no inner packet", header_bytes(), geneve.NoInnerPacket),
    ("inner ipv4 cut", GOOD[:50], geneve.TruncatedInner),
    ("inner ipv4 total length beyond", GOOD[:-1], geneve.TruncatedInner),
    ("inner ipv4 ihl 4", _set(GOOD, 40, b"\x44"), geneve.TruncatedInner),
])
def test_each_malformation_has_its_own_reason(name: str, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        scan(data)
    assert info.value.reason in geneve.REASONS
    assert str(info.value)


def test_wrongly_sized_and_duplicate_gwlb_options() -> None:
    wrong = GeneveHeader(options=(geneve.eni_option(1), geneve.attachment_option(0),
                                  GeneveOption(AWS_OPTION_CLASS, 3, b"\0" * 8)))
    with pytest.raises(geneve.BadAwsOptionLength):
        scan(wrong.to_bytes() + IPV4_SYN)
    dup = GeneveHeader(options=(*geneve.gwlb_options(1, 0, 2), geneve.cookie_option(3)))
    with pytest.raises(geneve.DuplicateAwsOption):
        scan(dup.to_bytes() + IPV4_SYN)


def test_inner_ipv6_truncation() -> None:
    raw = header_bytes(inner_version=6) + IPV6_UDP
    assert scan(raw).inner_len == 48
    with pytest.raises(geneve.TruncatedInner):
        scan(raw[:-1])
    with pytest.raises(geneve.TruncatedInner):
        scan(raw[:40 + 39])


def test_trailing_bytes_after_inner_are_not_part_of_it() -> None:
    s = scan(GOOD + b"\0\0\0\0")
    assert s.inner_len == len(IPV4_SYN)


def test_scan_works_in_place_on_memoryview_with_offsets() -> None:
    buf = bytearray(b"x" * 28 + GOOD + b"y" * 10)
    s = scan(memoryview(buf), 28, 28 + len(GOOD))
    assert (s.eni_id, s.cookie, s.header_len) == (0x2B8EE1D4DB0C51C4, 0xDEADBEEF, 40)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_geneve_errors(data: bytes) -> None:
    try:
        s = scan(data)
    except geneve.GeneveError as e:
        assert e.reason in geneve.REASONS
    else:
        assert s.header_len + s.inner_len <= len(data)


@given(st.binary(min_size=8, max_size=60), st.binary(max_size=200))
def test_arbitrary_bytes_after_a_valid_base_raise_only_geneve_errors(opts: bytes, tail: bytes) -> None:
    data = bytes([len(opts) // 4 & 0x3F, 0]) + b"\x08\x00" + bytes(4) + opts + tail
    for parser in (scan, parse, GeneveHeader.from_bytes):
        try:
            parser(data)
        except geneve.GeneveError:
            pass


def test_field_ranges_are_checked_when_building() -> None:
    with pytest.raises(ValueError):
        GeneveOption(0x10000, 1)
    with pytest.raises(ValueError):
        GeneveOption(1, 1, b"abc")
    with pytest.raises(ValueError):
        GeneveHeader(vni=1 << 24)
    with pytest.raises(ValueError):
        GeneveHeader(options=tuple(GeneveOption(1, 1, b"\0" * 124) for _ in range(3)))


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFF),
       st.integers(0, 3), st.booleans())
def test_fast_path_agrees_with_the_general_scan(eni: int, att: int, cookie: int, b1: int, reserved_bits: int,
                                                 v6: bool) -> None:
    """GWLB's own layout takes a shortcut; any deviation from it must give what the general path gives."""
    raw = build(IPV6_UDP if v6 else IPV4_SYN, eni, cookie, att)
    variants = [raw, raw[:1] + bytes([b1]) + raw[2:], raw[:11] + bytes([2 | reserved_bits << 5]) + raw[12:]]
    for data in variants:
        try:
            fast = scan(data)
        except geneve.GeneveError as e:
            fast = type(e)  # type: ignore[assignment]
        try:
            slow = geneve.scan_general(data, 0, len(data), geneve.AWS_OPTION_CLASS)
        except geneve.GeneveError as e:
            slow = type(e)  # type: ignore[assignment]
        assert fast == slow
