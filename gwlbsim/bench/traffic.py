"""The benchmark's traffic: flows, prebuilt packets, and what a correct return of each looks like.

Every flow is an inner IPv4/UDP flow ``192.168.x.y:port -> 172.16.0.1:5001``. Each packet's inner UDP
payload starts with a stamp: flow index (u32), sequence number (u32, global to the run) and the send time
(u64, CLOCK_MONOTONIC ns, shared by all processes of the machine), then padding up to the inner size.

Two ways to send the same inner traffic:

* ``geneve``: as GWLB does, wrapped in outer IPv4/UDP (to port 6081) + a GENEVE header with the three AWS
  options; the flow cookie is unique per flow and per run, the outer source port is one for all flows
  (``ports="one"``) or one per flow (``ports="many"``). A correct appliance returns the GENEVE header byte
  for byte and the inner packet unchanged, from the appliance to the flow's source port, to port 6081.
* ``plain``: the inner packets alone, routed through a forwarding namespace (the kernel's ceiling).

Outer and inner UDP checksums are zero (valid for IPv4): the stamp changes in every packet and the
generator must stay far cheaper than what it measures.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

from gwlbsim.traffic.inner import ipv4, udp_datagram
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_UDP
from gwlbsim.wire.outer import build_ipv4_udp

STAMP = struct.Struct("!IIQ")  #: flow index, sequence number, send time in ns
INNER_HEADERS = 28  #: inner IPv4 (20) + UDP (8)
MIN_SIZE = INNER_HEADERS + STAMP.size
MAX_SIZE = geneve.GWLB_MTU
INNER_DST = "172.16.0.1"
INNER_DPORT = 5001
ENI_ID = 0x0B0E_11C4_0000_0001
ATTACHMENT_ID = 0x0A77_AC4E_0000_0002
ONE_SOURCE_PORT = 60001


@dataclass(frozen=True)
class Traffic:
    """One traffic pattern. ``nonce`` makes the cookies of one measurement differ from every other's."""

    size: int = 64  #: inner IP packet size in bytes
    flows: int = 64
    ports: str = "many"  #: outer source ports: "one" for all flows or "many" (one per flow)
    mode: str = "geneve"  #: "geneve" (through an appliance) or "plain" (kernel forwarding)
    src: str = "10.99.0.1"  #: outer source (GWLB) address
    dst: str = "10.99.0.2"  #: outer destination (appliance) address
    nonce: int = 0
    inner_dst: str = INNER_DST  #: where the inner packets go (each kernel-forwarding path has its own)

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"inner size {self.size} must be within {MIN_SIZE}-{MAX_SIZE} bytes")
        if not 1 <= self.flows <= 1 << 20:
            raise ValueError(f"flow count {self.flows} must be within 1-{1 << 20}")
        if self.ports not in ("one", "many"):
            raise ValueError(f"ports must be 'one' or 'many', not {self.ports!r}")
        if self.mode not in ("geneve", "plain"):
            raise ValueError(f"mode must be 'geneve' or 'plain', not {self.mode!r}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    # --------------------------------------------------------------------------------------- per flow

    def inner_source(self, fid: int) -> tuple[str, int]:
        n = 1 + fid // 1000
        return f"192.168.{n >> 8}.{n & 0xFF}", 20000 + fid % 1000

    def outer_sport(self, fid: int) -> int:
        return ONE_SOURCE_PORT if self.ports == "one" else 10000 + fid % 50000

    def cookie(self, fid: int) -> int:
        return (self.nonce * 0x9E3779B1 + fid * 0x85EBCA77 + 1) & 0xFFFFFFFF

    def geneve_header(self, fid: int) -> bytes:
        return geneve.gwlb_header(ENI_ID, self.cookie(fid), ATTACHMENT_ID).to_bytes()

    def inner(self, fid: int, seq: int = 0, ts: int = 0) -> bytes:
        """The inner IPv4/UDP packet of flow ``fid`` (no UDP checksum) with its stamp."""
        src, sport = self.inner_source(fid)
        pad = bytes(self.size - MIN_SIZE)
        udp = udp_datagram(src, self.inner_dst, sport, INNER_DPORT, STAMP.pack(fid, seq, ts) + pad, checksum=False)
        return ipv4(src, self.inner_dst, IPPROTO_UDP, udp)

    def packet(self, fid: int) -> bytes:
        """The whole IPv4 packet the generator sends for flow ``fid`` (stamp zero)."""
        inner = self.inner(fid)
        if self.mode == "plain":
            return inner
        return build_ipv4_udp(self.src, self.dst, self.outer_sport(fid), geneve.GENEVE_PORT,
                              self.geneve_header(fid) + inner, udp_checksum=False)

    @property
    def stamp_offset(self) -> int:
        """Where the stamp is in a sent packet (from the start of its IP header)."""
        if self.mode == "plain":
            return INNER_HEADERS
        return 28 + len(self.geneve_header(0)) + INNER_HEADERS

    # -------------------------------------------------------------------------------------- returns

    @property
    def destination(self) -> str:
        """Where the generator sends to (the outer destination, or the inner one for plain traffic)."""
        return self.inner_dst if self.mode == "plain" else self.dst

    def expectation(self) -> Expectation:
        """What the receiver must see for each flow (it receives UDP payloads, no IP/UDP header)."""
        if self.mode == "plain":
            return Expectation(0, self.size - INNER_HEADERS, [b""] * self.flows,
                               [self.inner_source(f)[1] for f in range(self.flows)])
        prefixes = []
        for fid in range(self.flows):
            inner = self.inner(fid)
            prefixes.append(self.geneve_header(fid) + inner[:INNER_HEADERS])
        hl = len(self.geneve_header(0))
        return Expectation(hl + INNER_HEADERS, hl + self.size, prefixes,
                           [self.outer_sport(f) for f in range(self.flows)])


@dataclass
class Expectation:
    """A correct return of flow ``fid``: a UDP payload of ``length`` bytes starting with ``prefixes[fid]``
    (GENEVE header + inner IPv4/UDP headers, byte for byte), sent from port ``sports[fid]``, with the stamp
    at ``stamp_offset``."""

    stamp_offset: int
    length: int
    prefixes: list[bytes]
    sports: list[int]
