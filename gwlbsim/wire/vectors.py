"""Third-party GENEVE bytes shipped with the project (see ``gwlbsim/data/vectors/PROVENANCE.md``).

Real AWS GWLB packets (two authors), a real Tencent Cloud GWLB capture (option class 0x0167) and
Suricata's synthetic GENEVE unit-test vectors. Each vector is exposed as a :class:`Vector` holding the
GENEVE UDP payload, plus the outer IP packet where the source published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gwlbsim.wire import pcap
from gwlbsim.wire.geneve import AWS_OPTION_CLASS, TENCENT_OPTION_CLASS
from gwlbsim.wire.outer import parse_ipv4_udp

VECTOR_DIR = Path(__file__).parents[1] / "data" / "vectors"


@dataclass(frozen=True)
class Vector:
    name: str
    source: str  #: "aws", "tencent" or "suricata"
    payload: bytes  #: the GENEVE UDP payload
    outer: bytes | None  #: the whole outer IPv4 packet, when published
    option_class: int
    valid_gwlb: bool  #: a usable GWLB packet for its option class
    valid_geneve: bool  #: a well-formed GENEVE header (options inside the option area)


def _hex_blocks(path: Path) -> list[tuple[str, bytes]]:
    blocks: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            blocks.append((line.lstrip("# ").split(" |")[0], []))
        elif line and blocks:
            blocks[-1][1].extend(line.split())
    return [(name, bytes.fromhex("".join(words))) for name, words in blocks]


@cache
def all_vectors() -> tuple[Vector, ...]:
    out: list[Vector] = []
    for f, source, cls in (("aws-gwlb-real_mszczygiel_gwlb-to-appliance_eth.pcap", "aws", AWS_OPTION_CLASS),
                           ("aws-gwlb-real_mszczygiel_gwlb-to-appliance_rawip.pcap", "aws", AWS_OPTION_CLASS),
                           ("tencent-gwlb-real_tx-gwlb-for-demo.pcap", "tencent", TENCENT_OPTION_CLASS)):
        for i, rec in enumerate(pcap.read(VECTOR_DIR / f)):
            ip = pcap.ip_packet(rec)
            o = parse_ipv4_udp(ip)
            payload = ip[o.payload_offset:o.payload_offset + o.payload_len]
            out.append(Vector(f"{f.removesuffix('.pcap')}#{i + 1}", source, payload, ip, cls, True, True))
    for name, data in _hex_blocks(VECTOR_DIR / "aws-gwlb-real_mszczygiel_geneve-udp-payload.hex"):
        out.append(Vector(name, "aws", data, None, AWS_OPTION_CLASS, True, True))
    for name, data in _hex_blocks(VECTOR_DIR / "synthetic_suricata_decode-geneve-unittests.hex"):
        # starts at the UDP header; these use class 0x0108 type 0 options, not GWLB's layout
        out.append(Vector(name, "suricata", data[8:], None, AWS_OPTION_CLASS, False,
                          not name.endswith("Test05")))
    return tuple(out)


def gwlb_vectors() -> tuple[Vector, ...]:
    """The real GWLB packets (AWS and Tencent)."""
    return tuple(v for v in all_vectors() if v.valid_gwlb)


def aws_outer_packets() -> tuple[bytes, ...]:
    """Whole outer IPv4 packets AWS GWLB sent to an appliance."""
    return tuple(v.outer for v in all_vectors() if v.source == "aws" and v.outer is not None)
