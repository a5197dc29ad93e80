"""Scapy layers that name the three AWS GWLB GENEVE options.

Scapy (>= 2.6) decodes GENEVE options generically and prints class 0x0108 as a bare number. Importing this
module adds:

* ``GwlbEniId``, ``GwlbAttachmentId`` and ``GwlbFlowCookie``: option classes with named, typed fields, for
  building (``GENEVE(proto=0x0800, options=[GwlbEniId(eni_id=...), ...])``) and for reading;
* a dispatch so that dissected GENEVE packets yield those classes for well-formed GWLB options of every
  registered option class (``register_option_class(0x0167)`` adds Tencent's);
* the class name in scapy's option-class table.

Example::

    >>> from scapy.all import IP, UDP, raw
    >>> from scapy.contrib.geneve import GENEVE
    >>> from gwlbsim.wire.scapy_gwlb import gwlb_geneve
    >>> pkt = IP(dst="10.0.0.2") / UDP(sport=60001, dport=6081) / gwlb_geneve(0x2B8EE1D4DB0C51C4, 0x1234) / IP()
    >>> IP(raw(pkt))[GENEVE].options[2].cookie
    4660
"""

from __future__ import annotations

import struct

from scapy.contrib.geneve import CLASS_IDS, GENEVE, GeneveOptions
from scapy.fields import BitField, XByteField, XIntField, XLongField, XShortEnumField
from scapy.packet import Packet

from gwlbsim.wire.geneve import (
    AWS_OPTION_CLASS,
    ETH_P_IP,
    ETH_P_IPV6,
    GWLB_OPTION_SIZES,
    OPT_ATTACHMENT_ID,
    OPT_ENI_ID,
    OPT_FLOW_COOKIE,
    TENCENT_OPTION_CLASS,
)

OPTION_CLASS_NAMES = {
    AWS_OPTION_CLASS: "Amazon.com, Inc. (AWS Gateway Load Balancer)",
    TENCENT_OPTION_CLASS: "Tencent Cloud Gateway Load Balancer",
}
_registered: set[int] = set()


def _class_field(default: int) -> XShortEnumField:
    return XShortEnumField("classid", default, {**CLASS_IDS, **OPTION_CLASS_NAMES})


class _GwlbOption(GeneveOptions):
    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class GwlbEniId(_GwlbOption):
    name = "GWLB endpoint ENI id"
    fields_desc = [_class_field(AWS_OPTION_CLASS), XByteField("type", OPT_ENI_ID), BitField("reserved", 0, 3),
                   BitField("length", 2, 5), XLongField("eni_id", 0)]


class GwlbAttachmentId(_GwlbOption):
    name = "GWLB attachment id"
    fields_desc = [_class_field(AWS_OPTION_CLASS), XByteField("type", OPT_ATTACHMENT_ID),
                   BitField("reserved", 0, 3), BitField("length", 2, 5), XLongField("attachment_id", 0)]


class GwlbFlowCookie(_GwlbOption):
    name = "GWLB flow cookie"
    fields_desc = [_class_field(AWS_OPTION_CLASS), XByteField("type", OPT_FLOW_COOKIE),
                   BitField("reserved", 0, 3), BitField("length", 1, 5), XIntField("cookie", 0)]


_BY_TYPE: dict[int, type[Packet]] = {
    OPT_ENI_ID: GwlbEniId,
    OPT_ATTACHMENT_ID: GwlbAttachmentId,
    OPT_FLOW_COOKIE: GwlbFlowCookie,
}
_HDR = struct.Struct("!HBB")


def _dispatch(cls: type[Packet], _pkt: bytes | None = None, *args: object, **kargs: object) -> type[Packet]:
    """Choose the named class for a well-formed GWLB option; any other option stays generic."""
    if _pkt is not None and len(_pkt) >= 4:
        ocls, typ, length = _HDR.unpack_from(bytes(_pkt[:4]))
        sub = _BY_TYPE.get(typ)
        if sub is not None and ocls in _registered and (length & 0x1F) * 4 == GWLB_OPTION_SIZES[typ] \
                and len(_pkt) >= 4 + GWLB_OPTION_SIZES[typ]:
            return sub
    return cls


def register_option_class(option_class: int, name: str | None = None) -> None:
    """Dissect options of ``option_class`` with types 1/2/3 as the named GWLB options."""
    _registered.add(option_class)
    if name:
        OPTION_CLASS_NAMES[option_class] = name
    label = OPTION_CLASS_NAMES.get(option_class, f"GWLB options 0x{option_class:04x}")
    for f in [GeneveOptions.fields_desc[0]] + [c.fields_desc[0] for c in _BY_TYPE.values()]:
        f.i2s[option_class] = label
        f.s2i[label] = option_class


def gwlb_geneve(eni_id: int, cookie: int, attachment_id: int = 0, *, inner_version: int = 4,
                option_class: int = AWS_OPTION_CLASS, vni: int = 0, **fields: object) -> GENEVE:
    """A scapy GENEVE layer shaped like real GWLB's: three options, ENI id, attachment id, cookie."""
    return GENEVE(proto=ETH_P_IP if inner_version == 4 else ETH_P_IPV6, vni=vni, options=[
        GwlbEniId(classid=option_class, eni_id=eni_id),
        GwlbAttachmentId(classid=option_class, attachment_id=attachment_id),
        GwlbFlowCookie(classid=option_class, cookie=cookie),
    ], **fields)


GeneveOptions.dispatch_hook = classmethod(_dispatch)
register_option_class(AWS_OPTION_CLASS)
register_option_class(TENCENT_OPTION_CLASS)

__all__ = ["GENEVE", "GwlbAttachmentId", "GwlbEniId", "GwlbFlowCookie", "gwlb_geneve",
           "register_option_class"]
