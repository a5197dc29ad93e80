"""Inner packets (bare IPv4/IPv6, what GWLB carries inside GENEVE) for generated traffic.

Built with ``struct`` rather than scapy so that the network fuzzer can make them at line rate. Headers are
well formed and checksums are right (IPv4 header, TCP, UDP, ICMP, ICMPv6), so independent dissectors
(scapy, tshark) decode them without complaint. Each :class:`InnerPacket` records what it was built from,
so tests can check flow keys without decoding.

Addresses are text (``"192.0.2.1"``, ``"2001:db8::1"``) or packed bytes (4 or 16), as read from a packet.
Hot loops that send many packets of one shape fill a template made here (:func:`flow_template`,
:func:`fill_template`) instead of building each packet.

Example::

    >>> pkt = udp_packet("192.0.2.1", "198.51.100.7", 5353, 53, b"q")
    >>> pkt.kind, len(pkt.data), pkt.five_tuple().describe()
    ('ipv4/udp', 29, 'udp 192.0.2.1:5353 -> 198.51.100.7:53')
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from gwlbsim.traffic.reprs import pretty_short, short_repr
from gwlbsim.wire.checksum import internet_checksum
from gwlbsim.wire.flowkey import (
    IPPROTO_AH,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FiveTuple,
    address_int,
)

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8
#: IPv6 extension headers this module builds, by name.
EXT_HEADERS = {"hbh": IPPROTO_HOPOPTS, "routing": IPPROTO_ROUTING, "frag": IPPROTO_FRAGMENT,
               "ah": IPPROTO_AH, "dstopts": IPPROTO_DSTOPTS}
_EXT_NAMES = {v: k for k, v in EXT_HEADERS.items()}
#: Protocol numbers that name IPv6 extension headers (never used as an "other" upper layer).
IPV6_EXT_NUMBERS = frozenset({0, 43, 44, 51, 60, 135, 139, 140, 253, 254})
_PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmpv6"}

#: an address as text, or packed (4 bytes for IPv4, 16 for IPv6)
Address = str | bytes

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")


@dataclass(frozen=True, repr=False)
class InnerPacket:
    """A bare IP packet and the facts it was built from."""

    data: bytes
    version: int  #: 4 or 6
    src: str
    dst: str
    proto: int  #: the upper-layer protocol (after any IPv6 extension headers)
    sport: int = 0  #: TCP/UDP source port (0 for other protocols)
    dport: int = 0
    ext_headers: tuple[str, ...] = ()  #: IPv6 extension headers in order (names of :data:`EXT_HEADERS`)
    fragmented: bool = False  #: a non-first fragment or more fragments follow: ports cannot be read

    __repr__ = short_repr
    _repr_pretty_ = pretty_short

    @property
    def kind(self) -> str:
        """A short description, e.g. ``ipv6+hbh+frag/udp``."""
        exts = "".join(f"+{e}" for e in self.ext_headers)
        return f"ipv{self.version}{exts}/{_PROTO_NAMES.get(self.proto, f'proto{self.proto}')}"

    @property
    def ports_visible(self) -> bool:
        """TCP or UDP, and not a fragment: the ports can be read (and are part of the flow key)."""
        return self.proto in (IPPROTO_TCP, IPPROTO_UDP) and not self.fragmented

    def five_tuple(self) -> FiveTuple:
        """The flow tuple a correct parser must find (ports only for unfragmented TCP/UDP)."""
        ported = self.ports_visible
        return FiveTuple(self.proto, address_int(self.src), self.sport if ported else 0, address_int(self.dst),
                         self.dport if ported else 0)


# ------------------------------------------------------------------------------------------------ IP layers


def ipv4(src: Address, dst: Address, proto: int, payload: bytes, *, tos: int = 0, ttl: int = 64, ident: int = 0,
         df: bool = False, more_fragments: bool = False, frag_offset: int = 0, options: bytes = b"",
         checksum: bool = True) -> bytes:
    """An IPv4 packet; ``options`` is padded with end-of-options bytes to a multiple of 4 (at most 40).

    Without ``checksum`` the header checksum is left zero (for templates whose addresses are filled in later).
    """
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    if len(options) > 40:
        raise ValueError(f"IPv4 options take at most 40 bytes, got {len(options)}")
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total} bytes")
    flags = (0x4000 if df else 0) | (0x2000 if more_fragments else 0) | (frag_offset & 0x1FFF)
    hdr = _IPV4.pack(0x40 | ihl, tos, total, ident, flags, ttl, proto, 0, _a4(src), _a4(dst)) + options
    if not checksum:
        return hdr + payload
    return hdr[:10] + internet_checksum(hdr).to_bytes(2, "big") + hdr[12:] + payload


def ipv6(src: Address, dst: Address, next_header: int, payload: bytes, *, traffic_class: int = 0, flow_label: int = 0,
         hop_limit: int = 64) -> bytes:
    """An IPv6 packet; ``payload`` starts with any extension headers (see :func:`ext_header`)."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"IPv6 payload of {len(payload)} bytes needs a jumbogram")
    first = (6 << 28) | (traffic_class << 20) | flow_label
    return _IPV6.pack(first, len(payload), next_header, hop_limit, _a6(src), _a6(dst)) + payload


def ip_packet(src: Address, dst: Address, proto: int, payload: bytes, *, ttl: int = 64, tos: int = 0,
              ident: int = 0, df: bool = False) -> bytes:
    """An IPv4 or IPv6 packet (by the addresses' family) without options or extension headers.

    ``ident`` and ``df`` are IPv4 header fields (IPv6 has neither); ``tos`` is IPv6's traffic class.
    """
    if _is_v6(src):
        return ipv6(src, dst, proto, payload, traffic_class=tos, hop_limit=ttl)
    return ipv4(src, dst, proto, payload, tos=tos, ttl=ttl, ident=ident, df=df)


def ext_header(name: str, next_header: int, *, size: int = 8, fragment_offset: int = 0, more: bool = False,
               ident: int = 0, spi: int = 0) -> bytes:
    """One IPv6 extension header (``hbh``, ``dstopts``, ``routing``, ``frag`` or ``ah``), well formed.

    ``size`` is the header's length in bytes (a multiple of 8 from 8 to 2048; 8 for ``frag``, from 16 for
    ``ah``). Option headers are filled with one PadN option; the routing header has type 253
    (experimental) with no segments left; AH carries a zero ICV.
    """
    if name in ("hbh", "dstopts"):
        _check_size(size, 8, 2048)
        pad = size - 2
        body = bytes((1, pad - 2)) + b"\0" * (pad - 2) if pad >= 2 else b"\0" * pad
        return bytes((next_header, size // 8 - 1)) + body
    if name == "routing":
        _check_size(size, 8, 2048)
        return bytes((next_header, size // 8 - 1, 253, 0)) + b"\0" * (size - 4)
    if name == "frag":
        return struct.pack("!BBHI", next_header, 0, (fragment_offset << 3) | int(more), ident)
    if name == "ah":
        _check_size(size, 16, 1024)
        return struct.pack("!BBHII", next_header, size // 4 - 2, 0, spi, 1) + b"\0" * (size - 12)
    raise ValueError(f"unknown extension header {name!r}")


def _check_size(size: int, lo: int, hi: int) -> None:
    if size % 8 or not lo <= size <= hi:
        raise ValueError(f"extension header size {size} must be a multiple of 8 within {lo}-{hi}")


# ----------------------------------------------------------------------------------------- upper layers


def tcp_segment(src: Address, dst: Address, sport: int, dport: int, payload: bytes = b"", *, seq: int = 0,
                ack: int = 0, flags: int = 0x02, window: int = 65535, checksum: bool = True) -> bytes:
    """A TCP segment (20-byte header) with its checksum for the given addresses (zero without ``checksum``)."""
    seg = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, window, 0, 0) + payload
    if not checksum:
        return seg
    return _with_checksum(seg, 16, src, dst, IPPROTO_TCP)


#: TCP flag letters, lowest bit first (as scapy and tcpdump name them)
TCP_FLAG_LETTERS = "FSRPAUEC"


def tcp_flag_bits(letters: str) -> int:
    """The TCP flags byte for flag letters, e.g. ``"SA"`` (SYN + ACK) is 0x12; ``""`` is no flag."""
    bits = 0
    for letter in letters:
        index = TCP_FLAG_LETTERS.find(letter)
        if index < 0:
            raise ValueError(f"unknown TCP flag {letter!r} (flags are {TCP_FLAG_LETTERS})")
        bits |= 1 << index
    return bits


def udp_datagram(src: Address, dst: Address, sport: int, dport: int, payload: bytes = b"", *,
                 checksum: bool = True) -> bytes:
    """A UDP datagram with its checksum for the given addresses; without ``checksum`` it carries none (0),
    which IPv4 allows."""
    seg = _UDP.pack(sport, dport, UDP_HEADER_LEN + len(payload), 0) + payload
    if not checksum:
        return seg
    seg = _with_checksum(seg, 6, src, dst, IPPROTO_UDP)
    if seg[6:8] == b"\0\0":  # a computed 0 is sent as 0xFFFF
        seg = seg[:6] + b"\xff\xff" + seg[8:]
    return seg


def icmp_message(icmp_type: int, code: int, rest: int, payload: bytes = b"", *, v6: bool = False,
                 src: Address = "", dst: Address = "") -> bytes:
    """ICMP (or, with ``v6``, ICMPv6 with its pseudo-header checksum) message."""
    msg = struct.pack("!BBHI", icmp_type, code, 0, rest) + payload
    if v6:
        return _with_checksum(msg, 2, src, dst, IPPROTO_ICMPV6)
    return msg[:2] + internet_checksum(msg).to_bytes(2, "big") + msg[4:]


def _with_checksum(seg: bytes, at: int, src: Address, dst: Address, proto: int) -> bytes:
    """``seg`` with the checksum over its pseudo-header (IPv4 or IPv6 by address) and itself at ``at``."""
    if _is_v6(src):
        pseudo = _a6(src) + _a6(dst) + struct.pack("!IxxxB", len(seg), proto)
    else:
        pseudo = _a4(src) + _a4(dst) + struct.pack("!BBH", 0, proto, len(seg))
    csum = internet_checksum(pseudo + seg)
    return seg[:at] + csum.to_bytes(2, "big") + seg[at + 2:]


# ------------------------------------------------------------------------------------------ whole packets


def build(version: int, src: str, dst: str, proto: int, *, sport: int = 0, dport: int = 0, payload: bytes = b"",
          ext_headers: tuple[str, ...] = (), fragment: tuple[int, bool] = (0, False), ttl: int = 64,
          tos: int = 0, ident: int = 0, df: bool = False, ip_options: bytes = b"", icmp_type: int = 8,
          tcp_flags: int = 0x02, ext_size: int = 8) -> InnerPacket:
    """A complete inner packet.

    ``proto`` is the upper layer: TCP and UDP get ``sport``/``dport``, ICMP/ICMPv6 an echo-style message of
    ``icmp_type``, anything else carries ``payload`` as is. ``fragment`` is (offset in 8-byte units, more
    fragments): for IPv4 it goes in the header, for IPv6 it needs a ``frag`` extension header.
    """
    if proto == IPPROTO_TCP:
        l4 = tcp_segment(src, dst, sport, dport, payload, flags=tcp_flags)
    elif proto == IPPROTO_UDP:
        l4 = udp_datagram(src, dst, sport, dport, payload)
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        l4 = icmp_message(icmp_type, 0, (sport << 16) | dport, payload, v6=version == 6, src=src, dst=dst)
    else:
        l4 = payload
    offset, more = fragment
    fragmented = bool(offset or more)
    if version == 4:
        data = ipv4(src, dst, proto, l4, tos=tos, ttl=ttl, ident=ident, df=df, more_fragments=more,
                    frag_offset=offset, options=ip_options)
    else:
        if fragmented and "frag" not in ext_headers:
            raise ValueError("an IPv6 fragment needs a frag extension header")
        body = l4
        nxt = proto
        for name in reversed(ext_headers):
            body = ext_header(name, nxt, size=max(ext_size, 16) if name == "ah" else ext_size,
                              fragment_offset=offset, more=more, ident=ident) + body
            nxt = EXT_HEADERS[name]
        data = ipv6(src, dst, nxt, body, traffic_class=tos, hop_limit=ttl)
    ported = proto in (IPPROTO_TCP, IPPROTO_UDP)
    return InnerPacket(data, version, src, dst, proto, sport if ported else 0, dport if ported else 0,
                       tuple(ext_headers), fragmented)


def reply(pkt: InnerPacket, payload: bytes = b"") -> InnerPacket:
    """The same flow the other way: addresses and ports swapped, no extension headers, no fragmentation."""
    icmp_type = {4: 0, 6: 129}[pkt.version]
    return build(pkt.version, pkt.dst, pkt.src, pkt.proto, sport=pkt.dport, dport=pkt.sport, payload=payload,
                 icmp_type=icmp_type, tcp_flags=0x12)


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> InnerPacket:
    """Shorthand for an IPv4 or IPv6 (by address) UDP packet."""
    return build(6 if ":" in src else 4, src, dst, IPPROTO_UDP, sport=sport, dport=dport, payload=payload)


def tcp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", flags: int = 0x02) -> InnerPacket:
    return build(6 if ":" in src else 4, src, dst, IPPROTO_TCP, sport=sport, dport=dport, payload=payload,
                 tcp_flags=flags)


# ------------------------------------------------------------------------------------- templates for hot loops

#: where :func:`fill_template` writes: the IPv4 addresses, the TCP/UDP ports, the TCP flags byte
_TEMPLATE_ADDRS = struct.Struct("!4s4s")
_TEMPLATE_PORTS = struct.Struct("!HH")
_TEMPLATE_ADDRS_AT = 12
_TEMPLATE_PORTS_AT = IPV4_HEADER_LEN
_TEMPLATE_TCP_FLAGS_AT = IPV4_HEADER_LEN + 13
_ZERO4 = bytes(4)


def flow_template(proto: int, *, tcp_flags: int = 0x02, window: int = 65535, ttl: int = 64) -> bytes:
    """An IPv4 TCP or UDP packet without payload whose addresses, ports and checksums are all zero.

    The template of :func:`fill_template`, for loops that make packets faster than they could be built (the
    simulator: the model it feeds never checks checksums, so none are computed).
    """
    if proto == IPPROTO_TCP:
        l4 = tcp_segment(_ZERO4, _ZERO4, 0, 0, flags=tcp_flags, window=window, checksum=False)
    elif proto == IPPROTO_UDP:
        l4 = udp_datagram(_ZERO4, _ZERO4, 0, 0, checksum=False)
    else:
        raise ValueError(f"templates are TCP or UDP, not protocol {proto}")
    return ipv4(_ZERO4, _ZERO4, proto, l4, ttl=ttl, checksum=False)


def fill_template(template: bytes, src: bytes, dst: bytes, sport: int, dport: int,
                  tcp_flags: int | None = None) -> bytes:
    """A packet of :func:`flow_template` with packed IPv4 addresses, ports and (for TCP) flags written in.

    Checksums stay zero.
    """
    pkt = bytearray(template)
    _TEMPLATE_ADDRS.pack_into(pkt, _TEMPLATE_ADDRS_AT, src, dst)
    _TEMPLATE_PORTS.pack_into(pkt, _TEMPLATE_PORTS_AT, sport, dport)
    if tcp_flags is not None:
        pkt[_TEMPLATE_TCP_FLAGS_AT] = tcp_flags
    return bytes(pkt)


def ext_name(number: int) -> str:
    return _EXT_NAMES.get(number, str(number))


def _is_v6(addr: Address) -> bool:
    """Whether an address (text or packed) is an IPv6 one."""
    return len(addr) == 16 if isinstance(addr, bytes) else ":" in addr


def _packed(addr: Address, size: int) -> bytes:
    """A packed address of ``size`` bytes (4 or 16); packed input is checked for its length and passed through."""
    if not isinstance(addr, bytes):
        return (ipaddress.IPv4Address(addr) if size == 4 else ipaddress.IPv6Address(addr)).packed
    if len(addr) != size:
        raise ValueError(f"a packed IPv{4 if size == 4 else 6} address has {size} bytes, not {len(addr)}")
    return addr


def _a4(addr: Address) -> bytes:
    return _packed(addr, 4)


def _a6(addr: Address) -> bytes:
    return _packed(addr, 16)
