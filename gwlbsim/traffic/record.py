"""A record of the datagrams sent toward an appliance, as a pcap of outer IPv4/UDP packets (GWLB to appliance).

The network fuzzer writes its reproducers with it and the conformance suite its ``sent.pcap``; labels (what
each datagram was meant to be) travel beside the pcap, in the reproducer's ``reproducer.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gwlbsim.traffic.reprs import pretty_short, short_repr
from gwlbsim.wire import geneve, pcap
from gwlbsim.wire.outer import build_ipv4_udp, parse_ipv4_udp


@dataclass(frozen=True, repr=False)
class Sent:
    """A datagram sent to the appliance: outer UDP source port, GENEVE payload, what it was meant to be."""

    sport: int
    payload: bytes
    label: str  #: "valid", "probe", a malformation label, or "havoc"

    __repr__ = short_repr
    _repr_pretty_ = pretty_short


def write_pcap(path: Path, packets: Sequence[Sent], src: str, dst: str) -> None:
    pcap.write(path, [(1.0 + i / 1000, build_ipv4_udp(src, dst, p.sport, geneve.GENEVE_PORT, p.payload))
                      for i, p in enumerate(packets)])


def read_pcap(path: Path) -> list[Sent]:
    """The datagrams of a pcap (any link type with IPv4/UDP), unlabelled."""
    out = []
    for rec in pcap.read(path):
        ip = pcap.ip_packet(rec)
        o = parse_ipv4_udp(ip)
        out.append(Sent(o.sport, bytes(ip[o.payload_offset:o.payload_offset + o.payload_len]), ""))
    return out
