"""Differential tests against scapy (``scapy.contrib.geneve``, >= 2.6): both read every field the same way, and
we read what scapy builds."""

from __future__ import annotations

from gwlbsim.fuzz.oracles import GeneveView, OptionView, scapy_view
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import raw
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.packet import Raw

import gwlbsim.wire.scapy_gwlb  # noqa: F401 - named GWLB option classes in scapy's dissection
from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.inner import InnerPacket
from gwlbsim.traffic.packets import ValidPacket
from gwlbsim.wire import geneve

from .hyp import budget


def ours(vp: ValidPacket) -> GeneveView:
    """Our codec's reading, in the oracle's shape."""
    h = geneve.parse(vp.payload, vp.option_class).header
    return GeneveView(h.version, h.options_len, h.oam, h.critical, h.reserved_flags, h.protocol, h.vni, h.reserved,
                      [OptionView(o.option_class, o.type, o.reserved, o.data) for o in h.options])


@budget(150)
@given(gst.valid_packets(padding=True))
def test_scapy_reads_every_field_as_we_do(vp: ValidPacket) -> None:
    mine, theirs = ours(vp), scapy_view(vp.payload)
    for name in ("version", "options_len", "oam", "critical", "reserved_flags", "protocol", "vni", "reserved",
                 "options"):
        assert getattr(theirs, name) == getattr(mine, name), name
    assert theirs.inner == vp.inner + vp.padding, "scapy's inner layer starts where ours does"
    assert theirs.inner_version == vp.inner[0] >> 4
    g = GENEVE(vp.payload)
    named = {type(o).__name__: o for o in g.options if o.classid == geneve.AWS_OPTION_CLASS}
    if vp.option_class == geneve.AWS_OPTION_CLASS:
        assert (named["GwlbEniId"].eni_id, named["GwlbAttachmentId"].attachment_id,
                named["GwlbFlowCookie"].cookie) == (vp.eni_id, vp.attachment_id, vp.cookie)


@st.composite
def scapy_built(draw: st.DrawFn) -> tuple[bytes, dict[str, int], InnerPacket]:
    """A GENEVE payload built by scapy from drawn fields (GWLB options as generic scapy options)."""
    eni, att, cookie = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)), draw(gst.cookies())
    extra = draw(gst.extra_options(max_count=3))
    inner = draw(gst.inner_packets(max_size=600))
    opts = [GeneveOptions(classid=geneve.AWS_OPTION_CLASS, type=1, reserved=draw(st.integers(0, 7)), length=2,
                          data=eni.to_bytes(8, "big")),
            GeneveOptions(classid=geneve.AWS_OPTION_CLASS, type=2, reserved=draw(st.integers(0, 7)), length=2,
                          data=att.to_bytes(8, "big")),
            GeneveOptions(classid=geneve.AWS_OPTION_CLASS, type=3, reserved=draw(st.integers(0, 7)), length=1,
                          data=cookie.to_bytes(4, "big"))]
    # ``length`` is always given: scapy's automatic length clears the option's reserved bits (docs/fuzzing.md)
    opts += [GeneveOptions(classid=o.option_class, type=o.type, reserved=o.reserved, length=len(o.data) // 4,
                           data=o.data) for o in extra]
    opts = draw(st.permutations(opts))
    fields = {"vni": draw(st.integers(0, 0xFFFFFF)), "critical": draw(st.integers(0, 1)),
              "reserved": draw(st.integers(0, 0x3F)), "reserved2": draw(st.integers(0, 0xFF))}
    pkt = GENEVE(proto=0x0800 if inner.version == 4 else 0x86DD, options=opts, **fields) / Raw(inner.data)
    return raw(pkt), {"eni": eni, "att": att, "cookie": cookie, **fields}, inner


@budget(150)
@given(scapy_built())
def test_we_read_what_scapy_builds(built: tuple[bytes, dict[str, int], InnerPacket]) -> None:
    payload, f, inner = built
    p = geneve.parse(payload)
    assert (p.eni_id, p.attachment_id, p.cookie, p.inner) == (f["eni"], f["att"], f["cookie"], inner.data)
    h = p.header
    assert (h.vni, int(h.critical), h.reserved_flags, h.reserved) == (f["vni"], f["critical"], f["reserved"],
                                                                      f["reserved2"])
    assert h.to_bytes() + p.inner == payload


def test_scapy_quirk_automatic_option_length_drops_reserved_bits() -> None:
    """Documented in docs/fuzzing.md; if scapy fixes it, this test says so and the note can go."""
    auto = raw(GeneveOptions(classid=1, type=2, reserved=5, data=b"abcd"))
    explicit = raw(GeneveOptions(classid=1, type=2, reserved=5, length=1, data=b"abcd"))
    assert explicit[3] >> 5 == 5
    assert auto[3] >> 5 == 0, "scapy now keeps option reserved bits with an automatic length: update docs"
