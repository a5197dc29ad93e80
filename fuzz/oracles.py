"""Independent decoders of GENEVE, put in one shape so they can be compared with ``gwlbsim.wire.geneve``.

* :func:`scapy_view` decodes a payload with scapy's ``scapy.contrib.geneve`` (>= 2.6).
* :func:`tshark_views` decodes many payloads with one run of tshark (Wireshark's dissector): it writes
  them as outer IPv4/UDP packets to port 6081 in a pcap (``gwlbsim.wire.pcap``), runs ``tshark -T pdml`` and
  reads the tree back. PDML rather than ``-T fields`` because fields of repeated options do not line up
  when some are empty, and because each expert info must be tied to the protocol that raised it.

tshark quirks handled here (seen with 4.0): ``geneve.option.length`` is used for both the header's total
option length and each option's length, and an option's length counts its 4-byte header; the option
reserved bits are in ``geneve.option.flags.reserved``; a ``-T pdml`` option element's ``value`` is the
whole option TLV.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gwlbsim.traffic.packets import MalformedPacket
from gwlbsim.wire import geneve, pcap
from gwlbsim.wire.outer import build_ipv4_udp

TSHARK = "tshark"


@dataclass(frozen=True)
class OptionView:
    option_class: int
    type: int
    reserved: int
    data: bytes


@dataclass
class GeneveView:
    """One decoder's reading of a GENEVE payload. ``None`` fields were not decoded."""

    version: int | None = None
    options_len: int | None = None  #: bytes of options, from the header's length field
    oam: bool | None = None
    critical: bool | None = None
    reserved_flags: int | None = None
    protocol: int | None = None
    vni: int | None = None
    reserved: int | None = None
    options: list[OptionView] = field(default_factory=list)
    inner_version: int | None = None
    inner_src: str | None = None
    inner_dst: str | None = None
    inner_ports: tuple[int, int] | None = None  #: TCP/UDP ports, when the decoder reached TCP or UDP
    inner_transport: str | None = None  #: the decoder's name of the protocol after the inner IP layer
    inner: bytes | None = None  #: the inner packet's bytes (scapy only)
    geneve_experts: list[str] = field(default_factory=list)  #: tshark expert messages raised by GENEVE
    ip_experts: list[str] = field(default_factory=list)  #: ... by the inner IP layer
    inner_experts: list[str] = field(default_factory=list)  #: ... by the protocols inside it
    malformed: list[str] = field(default_factory=list)  #: protocols tshark reported "Malformed Packet" in
    outer_malformed: bool = False  #: the outer GENEVE dissector threw (not a GENEVE packet nested inside)
    dissected: bool = True  #: tshark called its GENEVE dissector at all


# ------------------------------------------------------------------------------------------------------ scapy


def scapy_view(payload: bytes) -> GeneveView:
    """Decode a GENEVE UDP payload with scapy."""
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    g = GENEVE(payload)
    v = GeneveView(g.version, g.optionlen * 4, bool(g.oam), bool(g.critical), g.reserved, g.proto, g.vni,
                   g.reserved2)
    for o in g.options:
        raw = bytes(o)
        v.options.append(OptionView(o.classid, o.type, o.reserved, raw[4:4 + (raw[3] & 0x1F) * 4]))
    inner = g.payload
    v.inner = getattr(inner, "original", None)
    if isinstance(inner, IP | IPv6):
        v.inner_version = inner.version
        v.inner_src, v.inner_dst = inner.src, inner.dst
        for layer in (TCP, UDP):
            if layer in inner:
                v.inner_ports = (inner[layer].sport, inner[layer].dport)
                v.inner_transport = layer.__name__.lower()
                break
    return v


# ----------------------------------------------------------------------------------------------------- tshark


def tshark_available() -> bool:
    return shutil.which(TSHARK) is not None


def tshark_views(payloads: Sequence[bytes], *, sport: int = 60000) -> list[GeneveView]:
    """Decode GENEVE payloads with tshark (one run for all). Raises RuntimeError if tshark fails."""
    with tempfile.TemporaryDirectory(prefix="gwlbsim-tshark-") as d:
        path = Path(d) / "payloads.pcap"
        pcap.write(path, [(1.0 + i, build_ipv4_udp("10.0.0.1", "10.0.0.2", sport, 6081, p))
                          for i, p in enumerate(payloads)])
        res = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "pdml"], capture_output=True, timeout=300)
    if res.returncode:
        raise RuntimeError(f"tshark exited {res.returncode}: {res.stderr.decode(errors='replace')[-2000:]}")
    views = [_packet_view(p) for p in ET.fromstring(res.stdout).iter("packet")]
    if len(views) != len(payloads):
        raise RuntimeError(f"tshark decoded {len(views)} packets of {len(payloads)}")
    return views


def _packet_view(packet: ET.Element) -> GeneveView:
    protos = [p for p in packet if p.tag == "proto"]
    names = [p.get("name") for p in protos]
    v = GeneveView()
    for p in protos:
        if p.get("name") == "_ws.malformed":
            v.malformed.append((p.get("showname") or "").removeprefix("[Malformed Packet: ").rstrip("]"))
    if "geneve" not in names:
        v.dissected = False
        return v
    gi = names.index("geneve")
    # a "Malformed Packet: Geneve" belongs to the outer header only if no GENEVE was dissected inside it (an
    # inner UDP packet to port 6081 is dissected as GENEVE too)
    v.outer_malformed = "Geneve" in v.malformed and names.count("geneve") == 1
    _read_geneve(protos[gi], v)
    v.geneve_experts = _experts(protos[gi])
    after = [p for p in protos[gi + 1:] if p.get("name") not in ("_ws.malformed", "fake-field-wrapper")]
    for p in after:
        v.inner_experts += _experts(p)
    if after and after[0].get("name") in ("ip", "ipv6"):
        ip = after[0]
        v.ip_experts = _experts(ip)
        pre = ip.get("name")
        fields = _fields(ip)
        v.inner_version = int(fields.get(f"{pre}.version", "0") or 0)
        v.inner_src = fields.get(f"{pre}.src")
        v.inner_dst = fields.get(f"{pre}.dst")
        if len(after) > 1:
            t = after[1]
            v.inner_transport = t.get("name")
            tf = _fields(t)
            name = t.get("name")
            if name in ("tcp", "udp") and f"{name}.srcport" in tf:
                v.inner_ports = (int(tf[f"{name}.srcport"]), int(tf[f"{name}.dstport"]))
    return v


def _fields(el: ET.Element) -> dict[str, str]:
    """First ``show`` value of each field name under ``el`` (nested protos included)."""
    out: dict[str, str] = {}
    for f in el.iter("field"):
        name = f.get("name")
        if name and name not in out:
            out[name] = f.get("show", "")
    return out


def _experts(el: ET.Element) -> list[str]:
    return [f.get("show", "") for f in el.iter("field") if f.get("name") == "_ws.expert.message"]


def _read_geneve(el: ET.Element, v: GeneveView) -> None:
    for f in el:
        if f.tag != "field":
            continue
        name = f.get("name")
        show = f.get("show", "")
        if name == "geneve.version":
            v.version = int(show)
        elif name == "geneve.option.length" and v.options_len is None:
            v.options_len = int(show)
        elif name == "geneve.flags":
            for sub in f:
                sname = sub.get("name")
                if sname == "geneve.flags.oam":
                    v.oam = sub.get("show") == "1"
                elif sname == "geneve.flags.critical":
                    v.critical = sub.get("show") == "1"
                elif sname == "geneve.flags.reserved":
                    v.reserved_flags = int(sub.get("value", "0"), 16)
        elif name == "geneve.proto_type":
            v.protocol = int(show, 16)
        elif name == "geneve.vni":
            v.vni = int(show, 16)
        elif name == "geneve.reserved":
            v.reserved = int(show, 16)
        elif name == "geneve.options":
            for opt in f:
                if opt.get("name") != "geneve.option":
                    continue
                raw = bytes.fromhex(opt.get("value", ""))
                fields = {s.get("name"): s for s in opt.iter("field")}
                reserved = int(fields["geneve.option.flags.reserved"].get("value", "0"), 16) \
                    if "geneve.option.flags.reserved" in fields else raw[3] >> 5
                v.options.append(OptionView(int(fields["geneve.option.class"].get("show", "0"), 16),
                                            int(fields["geneve.option.type"].get("show", "0"), 16), reserved,
                                            raw[4:]))


#: Google's option class: tshark 4.0 decodes its types 1-3 with fixed-size fields, and an option of that class and
#: type with another length makes it report "Trying to fetch an unsigned integer with length N" (a dissector
#: limitation, not a malformed GENEVE packet: option lengths are the sender's business).
GCP_OPTION_CLASS = 0x0132


def geneve_experts_unexplained(v: GeneveView) -> list[str]:
    """GENEVE expert infos other than those caused by tshark's fixed-size GCP option decoders."""
    gcp = any(o.option_class == GCP_OPTION_CLASS and o.type in (1, 2, 3) for o in v.options)
    return [e for e in v.geneve_experts if not (gcp and e.startswith("Trying to fetch"))]


# ------------------------------------------------------------------------------------ verdicts on malformations

#: What tshark 4.0 shows for each malformation (see docs/fuzzing.md for why the "silent" ones are intended):
#:
#: * ``malformed_geneve``: the GENEVE dissector throws ("Malformed Packet: Geneve"), or is not called at all
#:   for an empty datagram;
#: * ``unknown_version``: expert info "Unknown version N" (dissection goes on);
#: * ``option_past_end``: expert info "... (length of N is past end of options)";
#: * ``inner_ip_flagged``: GENEVE is fine, the inner IPv4/IPv6 dissector reports an expert info or throws;
#: * ``silent``: nothing about GENEVE: the rule is GWLB's or a receiver rule of RFC 8926 that Wireshark,
#:   as a passive dissector, does not apply.
TSHARK_EXPECTED: dict[str, str] = {
    "truncated_base_header": "malformed_geneve",
    "nonzero_version": "unknown_version",
    "options_cut_short": "malformed_geneve",
    "optlen_overclaims": "malformed_geneve",
    "non_ip_protocol": "silent",
    "option_length_overrun": "option_past_end",
    "optlen_splits_option": "option_past_end",
    "gwlb_option_wrong_length": "silent",
    "duplicate_gwlb_option": "silent",
    "unknown_critical_option": "silent",
    "critical_bit_on_gwlb_option": "silent",
    "missing_gwlb_option": "silent",
    "control_bit": "silent",
    "no_inner_packet": "inner_ip_flagged",
    "protocol_type_mismatch": "inner_ip_flagged",
    "inner_version_mismatch": "inner_ip_flagged",
    "inner_header_truncated": "inner_ip_flagged",
    "inner_length_overclaims": "inner_ip_flagged",
    "inner_bad_header_length": "inner_ip_flagged",
    "suricata_ethernet_payload": "silent",
    "suricata_no_gwlb_options": "silent",
    "suricata_ethernet_payload_and_overrun": "option_past_end",
}


def tshark_expected(mp: MalformedPacket) -> str:
    """The category of :data:`TSHARK_EXPECTED` for ``mp``, with Wireshark's one special case: an inner IPv4
    total length of 0 is taken for TCP segmentation offload (the captured length is used), so it is silent."""
    expected = TSHARK_EXPECTED[mp.malformation]
    if mp.malformation == "inner_bad_header_length":
        h = geneve.GeneveHeader.from_bytes(mp.payload).length
        if mp.payload[h + 2:h + 4] == b"\0\0" and mp.payload[h] & 0x0F >= 5:
            return "silent"
    return expected


def tshark_outcome(v: GeneveView) -> set[str]:
    """Every category of :data:`TSHARK_EXPECTED` that tshark's reading ``v`` falls in."""
    out: set[str] = set()
    if not v.dissected or v.outer_malformed:
        out.add("malformed_geneve")
    if any(e.startswith("Unknown version") for e in v.geneve_experts):
        out.add("unknown_version")
    if any("past end of options" in e for e in v.geneve_experts):
        out.add("option_past_end")
    if v.ip_experts or {"IPv4", "IPv6"} & set(v.malformed):
        out.add("inner_ip_flagged")
    if v.dissected and not geneve_experts_unexplained(v) and not v.outer_malformed:
        out.add("silent")
    return out
