"""Properties of the codec (``gwlbsim.wire.geneve``) over generated and arbitrary input."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import example, given
from hypothesis import strategies as st

from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.packets import ValidPacket
from gwlbsim.wire import geneve
from gwlbsim.wire.vectors import all_vectors

from .hyp import budget

_THIRD_PARTY = [v.payload for v in all_vectors()]


def _only_codec_errors(data: bytes, option_class: int = geneve.AWS_OPTION_CLASS) -> None:
    for call in (lambda: geneve.scan(data, option_class=option_class),
                 lambda: geneve.parse(data, option_class),
                 lambda: geneve.GeneveHeader.from_bytes(data)):
        try:
            call()
        except geneve.GeneveError as e:
            assert e.reason in geneve.REASONS


@budget(400)
@given(st.binary(max_size=400) | gst.datagrams())
@example(b"")
@example(b"\x3f" + b"\0" * 7)
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes) -> None:
    _only_codec_errors(data)
    _only_codec_errors(data, geneve.TENCENT_OPTION_CLASS)


@budget(150)
@given(gst.datagrams(), st.binary(max_size=9), st.binary(max_size=9))
def test_scan_of_a_slice_equals_scan_of_the_bytes(data: bytes, before: bytes, after: bytes) -> None:
    """``scan(buf, start, end)`` reads only ``buf[start:end]``, whatever surrounds it (bytes or memoryview)."""
    def verdict(*args: object) -> object:
        try:
            return geneve.scan(*args)  # type: ignore[arg-type]
        except geneve.GeneveError as e:
            return e.reason

    whole = before + data + after
    expected = verdict(data)
    assert verdict(whole, len(before), len(before) + len(data)) == expected
    assert verdict(memoryview(bytearray(whole)), len(before), len(before) + len(data)) == expected


@budget(200)
@given(gst.valid_packets(vectors=False))
def test_build_then_parse_is_the_identity(vp: ValidPacket) -> None:
    """What the builder makes from fields decodes to the same fields (header objects and the GWLB values)."""
    extras = tuple(o for o in vp.header.options
                   if not (o.option_class == vp.option_class and o.type in geneve.GWLB_OPTION_SIZES))
    built = geneve.build(vp.inner, vp.eni_id, vp.cookie, vp.attachment_id, option_class=vp.option_class,
                         vni=vp.header.vni, extra_options=extras)
    p = geneve.parse(built, vp.option_class)
    assert (p.eni_id, p.cookie, p.attachment_id, p.inner, p.header.vni) == (vp.eni_id, vp.cookie, vp.attachment_id,
                                                                           vp.inner, vp.header.vni)
    assert p.header.options[3:] == extras and p.header.protocol == vp.header.protocol
    assert geneve.GeneveHeader.from_bytes(vp.header.to_bytes()) == vp.header


@budget(200)
@given(gst.valid_packets(padding=True))
@example(next(iter(gst._vector_valid(None))))
def test_parse_then_build_reproduces_the_bytes(vp: ValidPacket) -> None:
    p = geneve.parse(vp.payload, vp.option_class)
    assert p.to_bytes() == vp.payload[:len(vp.payload) - len(vp.padding)]
    assert p.header.to_bytes() == p.header_bytes == vp.header_bytes


@budget(300)
@given(st.binary(min_size=8, max_size=300) | st.sampled_from(_THIRD_PARTY))
def test_any_header_the_decoder_accepts_is_reencoded_exactly(data: bytes) -> None:
    """Every bit is kept: version, flags, reserved fields, option reserved bits, unknown options."""
    try:
        h = geneve.GeneveHeader.from_bytes(data)
    except geneve.GeneveError:
        return
    assert h.to_bytes() == data[:h.length]


def _scan_verdict(scanner: Callable[[bytes, int, int, int], geneve.Scan], data: bytes,
                  option_class: int) -> geneve.Scan | str:
    """What a scanner (``scan`` or ``scan_general``) makes of ``data``: its Scan, or the reason it refused."""
    try:
        return scanner(data, 0, len(data), option_class)
    except geneve.GeneveError as e:
        return e.reason


@st.composite
def _near_gwlb_layout(draw: st.DrawFn, option_class: int) -> bytes:
    """GWLB's own layout (what ``scan`` reads in one go), with a few bytes changed and perhaps cut short."""
    data = bytearray(draw(gst.valid_packets(option_class=option_class, extras=False, flag_bits=False,
                                            shuffle=False, vectors=False)).payload)
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.none() | st.integers(0, len(data)))
    return bytes(data[:cut])


@budget(400)
@given(st.sampled_from([geneve.AWS_OPTION_CLASS, geneve.TENCENT_OPTION_CLASS]).flatmap(
    lambda oc: st.tuples(st.just(oc), _near_gwlb_layout(oc) | gst.datagrams(oc) | st.sampled_from(_THIRD_PARTY))))
def test_scan_shortcut_agrees_with_the_general_option_walk(case: tuple[int, bytes]) -> None:
    """``scan`` takes GWLB's own layout in one read; whatever it is given, it returns what the general option
    walk (:func:`gwlbsim.wire.geneve.scan_general`) returns, or refuses it for the same reason."""
    option_class, data = case
    assert _scan_verdict(geneve.scan, data, option_class) == _scan_verdict(geneve.scan_general, data, option_class)


@budget(200)
@given(gst.valid_packets(), st.binary(max_size=9))
def test_option_walk_finds_every_option_where_the_builder_put_it(vp: ValidPacket, before: bytes) -> None:
    """``iter_options`` yields each option of the header in order: its offset, class, type, reserved bits and
    data length, wherever in a buffer the header starts."""
    expected, pos = [], len(before) + geneve.BASE_HEADER_LEN
    for o in vp.header.options:
        expected.append((pos, o.option_class, o.type, o.reserved, len(o.data)))
        pos += geneve.OPTION_HEADER_LEN + len(o.data)
    buf = before + vp.payload
    assert list(geneve.iter_options(buf, len(before), len(before) + vp.header.length)) == expected
