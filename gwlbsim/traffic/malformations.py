"""The catalogue of malformations: how a valid GWLB GENEVE packet can be broken, and the drop reason each gets.

Each entry turns a :class:`gwlbsim.traffic.packets.ValidPacket` into a broken datagram such that exactly one check of
``gwlbsim.wire.geneve.scan`` fails first, so the expected reason is known without running the parser. The makers
take a ``draw(strategy)`` function, so Hypothesis drives (and shrinks) every choice.

==========================  =========================  ================================================
label                       reason                     what is broken
==========================  =========================  ================================================
truncated_base_header       too_short                  fewer than 8 bytes
nonzero_version             bad_version                version 1, 2 or 3
options_cut_short           options_beyond_packet      datagram ends inside the option area
optlen_overclaims           options_beyond_packet      option length field larger than the datagram
non_ip_protocol             bad_protocol_type          protocol type other than 0x0800/0x86DD
option_length_overrun       option_overrun             an option's length runs past the option area
optlen_splits_option        option_overrun             option area ends inside an option
gwlb_option_wrong_length    bad_gwlb_option_length     a GWLB option with the wrong data length
duplicate_gwlb_option       duplicate_gwlb_option      a GWLB option twice
unknown_critical_option     unknown_critical_option    an unknown option with the critical bit
critical_bit_on_gwlb_option unknown_critical_option    a GWLB option's type with the critical bit set
missing_gwlb_option         missing_gwlb_option        a GWLB option absent, or of another class/type
control_bit                 control_packet             O (control) bit set
no_inner_packet             no_inner_packet            nothing after the header
protocol_type_mismatch      protocol_mismatch          0x0800 with IPv6 inside or 0x86DD with IPv4
inner_version_mismatch      protocol_mismatch          inner version nibble neither 4 nor 6
inner_header_truncated      truncated_inner            inner IP header cut short
inner_length_overclaims     truncated_inner            inner length field beyond the datagram
inner_bad_header_length     truncated_inner            IPv4 IHL < 5, or total length < IHL
==========================  =========================  ================================================
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from hypothesis import strategies as st

from gwlbsim.traffic.packets import MalformedPacket, ValidPacket
from gwlbsim.wire import geneve

Draw = Callable[[st.SearchStrategy[Any]], Any]
Maker = Callable[[Draw, ValidPacket], tuple[bytes, str]]


class Malformation(NamedTuple):
    reason: str
    description: str
    inner_version: int | None  #: the base packet must carry this inner IP version (None: any)
    make: Maker


def _truncated_base_header(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    n = draw(st.integers(0, geneve.BASE_HEADER_LEN - 1))
    return vp.payload[:n], f"{n} bytes"


def _nonzero_version(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    v = draw(st.integers(1, 3))
    p = vp.payload
    return bytes([(p[0] & 0x3F) | (v << 6)]) + p[1:], f"version {v}"


def _options_cut_short(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    n = draw(st.integers(geneve.BASE_HEADER_LEN, vp.header.length - 1))
    return vp.payload[:n], f"cut to {n} bytes, header needs {vp.header.length}"


def _optlen_overclaims(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    words = vp.header.options_len // 4
    if words == 63:  # the option area is as long as it can be: only a shorter datagram overclaims
        return _options_cut_short(draw, vp)
    claim = draw(st.integers(words + 1, 63))
    need = geneve.BASE_HEADER_LEN + claim * 4
    p = vp.payload
    if len(p) >= need:
        p = p[:draw(st.integers(geneve.BASE_HEADER_LEN, need - 1))]
    return bytes([(p[0] & 0xC0) | claim]) + p[1:], f"option length {claim * 4} bytes, datagram {len(p)} bytes"


def _non_ip_protocol(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    proto = draw(st.sampled_from([geneve.ETH_P_TEB, 0x0000, 0x0806, 0x8100, 0x88CC, 0xFFFF])
                 | st.integers(0, 0xFFFF).filter(lambda v: v not in (geneve.ETH_P_IP, geneve.ETH_P_IPV6)))
    p = vp.payload
    return p[:2] + struct.pack("!H", proto) + p[4:], f"protocol type 0x{proto:04x}"


def _option_offsets(vp: ValidPacket) -> list[int]:
    """Where each option of the packet's header starts, in order."""
    return [offset for offset, *_ in geneve.iter_options(vp.payload, 0, vp.header.length)]


def _option_length_overrun(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    end = vp.header.length
    feasible = [(i, off) for i, off in enumerate(_option_offsets(vp)) if off + 4 + 31 * 4 > end]
    if not feasible:
        return _optlen_splits_option(draw, vp)
    i, off = draw(st.sampled_from(feasible))
    least = (end - off - 4) // 4 + 1
    words = draw(st.integers(least, 31))
    p = bytearray(vp.payload)
    p[off + 3] = (p[off + 3] & 0xE0) | words
    return bytes(p), f"option {i} claims {words * 4} data bytes, {end - off - 4} left in the option area"


def _optlen_splits_option(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    offsets = _option_offsets(vp)
    inside = [(i, w) for i, off in enumerate(offsets)
              for w in range((off + 4) // 4, (off + 4 + len(vp.header.options[i].data)) // 4)]
    i, end_word = draw(st.sampled_from(inside))
    words = end_word - geneve.BASE_HEADER_LEN // 4
    p = vp.payload
    return bytes([(p[0] & 0xC0) | words]) + p[1:], f"option area of {words * 4} bytes ends inside option {i}"


def _rebuild(vp: ValidPacket, options: list[geneve.GeneveOption], keep: geneve.GeneveOption | None = None,
             **changes: Any) -> bytes:
    """The packet with a new option list; extra (non-GWLB) options other than ``keep`` are dropped from the end
    to make room."""
    opts = list(options)
    while sum(4 + len(o.data) for o in opts) > geneve.MAX_OPTIONS_LEN:
        for j in range(len(opts) - 1, -1, -1):
            if not _is_gwlb(opts[j], vp.option_class) and opts[j] is not keep:
                del opts[j]
                break
        else:  # pragma: no cover - three GWLB options and one change always fit
            raise AssertionError("options do not fit")
    return replace(vp.header, options=tuple(opts), **changes).to_bytes() + vp.inner


def _is_gwlb(o: geneve.GeneveOption, option_class: int) -> bool:
    return o.option_class == option_class and o.type in geneve.GWLB_OPTION_SIZES


def _gwlb_indexes(vp: ValidPacket) -> list[int]:
    return [i for i, o in enumerate(vp.header.options) if _is_gwlb(o, vp.option_class)]


def _gwlb_option_wrong_length(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    i = draw(st.sampled_from(_gwlb_indexes(vp)))
    o = vp.header.options[i]
    want = geneve.GWLB_OPTION_SIZES[o.type] // 4
    words = draw(st.integers(0, 31).filter(lambda w: w != want))
    data = draw(st.binary(min_size=words * 4, max_size=words * 4))
    opts = list(vp.header.options)
    opts[i] = replace(o, data=data)
    return _rebuild(vp, opts), f"GWLB option type {o.type} with {words * 4} data bytes"


def _duplicate_gwlb_option(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    o = vp.header.options[draw(st.sampled_from(_gwlb_indexes(vp)))]
    size = geneve.GWLB_OPTION_SIZES[o.type]
    dup = replace(o, data=draw(st.just(o.data) | st.binary(min_size=size, max_size=size)),
                  reserved=draw(st.integers(0, 7)))
    opts = list(vp.header.options)
    opts.insert(draw(st.integers(0, len(opts))), dup)
    return _rebuild(vp, opts), f"GWLB option type {o.type} twice"


def _unknown_critical_option(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    cls = draw(st.sampled_from([vp.option_class, 0x0000, 0x0101, 0xFFFF]) | st.integers(0, 0xFFFF))
    typ = draw(st.integers(0x80, 0xFF))
    words = draw(st.integers(0, 4))
    opt = geneve.GeneveOption(cls, typ, draw(st.binary(min_size=4 * words, max_size=4 * words)))
    opts = list(vp.header.options)
    opts.insert(draw(st.integers(0, len(opts))), opt)
    return _rebuild(vp, opts, keep=opt, critical=True), f"option 0x{cls:04x}/0x{typ:02x} is critical and unknown"


def _critical_bit_on_gwlb_option(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    i = draw(st.sampled_from(_gwlb_indexes(vp)))
    opts = list(vp.header.options)
    opts[i] = replace(opts[i], type=opts[i].type | geneve.CRITICAL_BIT)
    typ = opts[i].type
    return _rebuild(vp, opts, keep=opts[i]), f"GWLB option type {typ & 0x7F} sent as critical type 0x{typ:02x}"


def _missing_gwlb_option(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    idx = _gwlb_indexes(vp)
    gone = draw(st.lists(st.sampled_from(idx), min_size=1, max_size=3, unique=True))
    opts = list(vp.header.options)
    what = []
    for i in sorted(gone, reverse=True):
        o = opts[i]
        how = draw(st.sampled_from(["removed", "other class", "other type"]))
        if how == "removed":
            del opts[i]
        elif how == "other class":
            cls = draw(st.integers(0, 0xFFFF).filter(lambda c: c != vp.option_class))
            opts[i] = replace(o, option_class=cls)
        else:
            opts[i] = replace(o, type=draw(st.sampled_from([0, 4, 0x7F]) | st.integers(4, 0x7F)))
        what.append(f"type {o.type} {how}")
    return _rebuild(vp, opts), "; ".join(what)


def _control_bit(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    p = vp.payload
    return p[:1] + bytes([p[1] | 0x80]) + p[2:], "O bit set"


def _no_inner_packet(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    return vp.header_bytes, "header only"


def _protocol_type_mismatch(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    other = geneve.ETH_P_IPV6 if vp.header.protocol == geneve.ETH_P_IP else geneve.ETH_P_IP
    p = vp.payload
    return p[:2] + struct.pack("!H", other) + p[4:], f"protocol type 0x{other:04x}, inner IPv{vp.inner[0] >> 4}"


def _inner_version_mismatch(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    want = 4 if vp.header.protocol == geneve.ETH_P_IP else 6
    v = draw(st.integers(0, 15).filter(lambda x: x != want))
    h = vp.header.length
    p = vp.payload
    return p[:h] + bytes([(v << 4) | (p[h] & 0x0F)]) + p[h + 1:], f"inner version nibble {v}"


def _inner_header_truncated(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    need = 20 if vp.header.protocol == geneve.ETH_P_IP else 40
    n = draw(st.integers(1, min(need, len(vp.inner)) - 1))
    return vp.header_bytes + vp.inner[:n], f"inner packet cut to {n} bytes"


def _inner_length_overclaims(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    v4 = vp.header.protocol == geneve.ETH_P_IP
    inner = vp.inner
    hdr = (inner[0] & 0x0F) * 4 if v4 else 40
    if draw(st.booleans()) and len(inner) > hdr:
        n = draw(st.integers(max(hdr, 20 if v4 else 40), len(inner) - 1))
        return vp.header_bytes + inner[:n], f"inner packet cut to {n} of {len(inner)} bytes"
    if v4:
        total = draw(st.integers(len(inner) + 1, 0xFFFF))
        inner = inner[:2] + struct.pack("!H", total) + inner[4:]
        return vp.header_bytes + inner, f"IPv4 total length {total}, {len(vp.inner)} bytes present"
    plen = draw(st.integers(len(inner) - 40 + 1, 0xFFFF))
    inner = inner[:4] + struct.pack("!H", plen) + inner[6:]
    return vp.header_bytes + inner, f"IPv6 payload length {plen}, {len(vp.inner) - 40} bytes present"


def _inner_bad_header_length(draw: Draw, vp: ValidPacket) -> tuple[bytes, str]:
    inner = vp.inner
    ihl = (inner[0] & 0x0F) * 4
    if draw(st.booleans()):
        words = draw(st.integers(0, 4))
        inner = bytes([0x40 | words]) + inner[1:]
        return vp.header_bytes + inner, f"IPv4 IHL {words} words"
    total = draw(st.integers(0, ihl - 1))
    inner = inner[:2] + struct.pack("!H", total) + inner[4:]
    return vp.header_bytes + inner, f"IPv4 total length {total} < header length {ihl}"


MALFORMATIONS: dict[str, Malformation] = {
    "truncated_base_header": Malformation("too_short", "fewer than 8 bytes", None, _truncated_base_header),
    "nonzero_version": Malformation("bad_version", "version 1, 2 or 3", None, _nonzero_version),
    "options_cut_short": Malformation("options_beyond_packet", "datagram ends inside the option area", None,
                                      _options_cut_short),
    "optlen_overclaims": Malformation("options_beyond_packet", "option length field larger than the datagram",
                                      None, _optlen_overclaims),
    "non_ip_protocol": Malformation("bad_protocol_type", "protocol type other than 0x0800/0x86DD", None,
                                    _non_ip_protocol),
    "option_length_overrun": Malformation("option_overrun", "an option's length runs past the option area",
                                          None, _option_length_overrun),
    "optlen_splits_option": Malformation("option_overrun", "option area ends inside an option", None,
                                         _optlen_splits_option),
    "gwlb_option_wrong_length": Malformation("bad_gwlb_option_length", "a GWLB option with the wrong data length",
                                             None, _gwlb_option_wrong_length),
    "duplicate_gwlb_option": Malformation("duplicate_gwlb_option", "a GWLB option twice", None,
                                          _duplicate_gwlb_option),
    "unknown_critical_option": Malformation("unknown_critical_option", "an unknown option with the critical bit",
                                            None, _unknown_critical_option),
    "critical_bit_on_gwlb_option": Malformation("unknown_critical_option",
                                                "a GWLB option's type with the critical bit set", None,
                                                _critical_bit_on_gwlb_option),
    "missing_gwlb_option": Malformation("missing_gwlb_option", "a GWLB option absent, or of another class/type",
                                        None, _missing_gwlb_option),
    "control_bit": Malformation("control_packet", "O (control) bit set", None, _control_bit),
    "no_inner_packet": Malformation("no_inner_packet", "nothing after the header", None, _no_inner_packet),
    "protocol_type_mismatch": Malformation("protocol_mismatch", "0x0800 with IPv6 inside or 0x86DD with IPv4",
                                           None, _protocol_type_mismatch),
    "inner_version_mismatch": Malformation("protocol_mismatch", "inner version nibble neither 4 nor 6", None,
                                           _inner_version_mismatch),
    "inner_header_truncated": Malformation("truncated_inner", "inner IP header cut short", None,
                                           _inner_header_truncated),
    "inner_length_overclaims": Malformation("truncated_inner", "inner length field beyond the datagram", None,
                                            _inner_length_overclaims),
    "inner_bad_header_length": Malformation("truncated_inner", "IPv4 IHL < 5, or total length < IHL", 4,
                                            _inner_bad_header_length),
}

#: Labels of the third-party malformed vectors (Suricata's GENEVE unit tests), with the reason each must get.
#: All use option class 0x0108 but carry Suricata's own type-0 options, not GWLB's.
VECTOR_LABELS: dict[str, tuple[str, str]] = {
    "DecodeGeneveTest01": ("suricata_ethernet_payload", "bad_protocol_type"),
    "DecodeGeneveTest02": ("suricata_no_gwlb_options", "missing_gwlb_option"),
    "DecodeGeneveTest03": ("suricata_ethernet_payload", "bad_protocol_type"),
    "DecodeGeneveTest04": ("suricata_ethernet_payload", "bad_protocol_type"),
    # also an option overrun, but the protocol type is checked first (see docs/fuzzing.md)
    "DecodeGeneveTest05": ("suricata_ethernet_payload_and_overrun", "bad_protocol_type"),
}

def malform(draw: Draw, label: str, vp: ValidPacket) -> MalformedPacket:
    """Break ``vp`` the way ``label`` says (every choice drawn with ``draw``)."""
    m = MALFORMATIONS[label]
    payload, detail = m.make(draw, vp)
    return MalformedPacket(payload, label, m.reason, vp.option_class, detail, vp.origin)
