"""Flow identity of inner (bare IPv4/IPv6) packets: the tuple GWLB and appliances key their flow tables on.

TCP and UDP flows are 5-tuples; every other protocol (ICMP, ICMPv6, ESP, GRE, ...) is a 3-tuple, i.e. a
5-tuple with both ports 0, as GWLB defines them. IPv6 extension headers are walked to find the upper
layer. Fragments carry no usable ports, so a fragmented packet is keyed as a 3-tuple.

Addresses are kept as integers (IPv6 addresses offset by 2**32 so they never equal an IPv4 address), which
makes keys cheap to hash and order.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from gwlbsim.wire.reasons import DropReason

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
#: IPv6 extension headers with the generic (next header, length in 8-byte units - 1) layout.
_GENERIC_EXT = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, 135, 139, 140, 253, 254})
_PORTED = frozenset({IPPROTO_TCP, IPPROTO_UDP})
_MAX_EXT_HEADERS = 16
V6_OFFSET = 1 << 32

_V4_ADDRS = struct.Struct("!II")
_V6_ADDRS = struct.Struct("!QQQQ")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")


class InnerError(ValueError):
    """Not an IP packet whose flow can be told."""

    reason = DropReason.BAD_INNER_PACKET


class FiveTuple(NamedTuple):
    """A directional flow tuple. ``src``/``dst`` are address integers (see :func:`address`)."""

    proto: int
    src: int
    sport: int
    dst: int
    dport: int

    def reversed(self) -> FiveTuple:
        return FiveTuple(self.proto, self.dst, self.dport, self.src, self.sport)

    def symmetric(self) -> SymKey:
        """The same key for both directions of the flow."""
        a = (self.src << 16) | self.sport
        b = (self.dst << 16) | self.dport
        return (self.proto, a, b) if a <= b else (self.proto, b, a)

    def describe(self) -> str:
        return f"{_proto_name(self.proto)} {_fmt(self.src, self.sport)} -> {_fmt(self.dst, self.dport)}"


SymKey = tuple[int, int, int]


def five_tuple(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> FiveTuple:
    """The flow tuple of the IP packet in ``buf[start:end]``; raises :class:`InnerError` if it has none."""
    return flow_of(buf, start, end)[0]


def tcp_flags(buf: bytes | bytearray | memoryview, l4: int, end: int) -> int:
    """TCP flags of a packet whose TCP header starts at ``l4`` (0 when the header is cut short)."""
    return buf[l4 + 13] if l4 >= 0 and l4 + 14 <= end else 0


TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


def flow_of(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> tuple[FiveTuple, int]:
    """The flow tuple and the offset of the upper-layer header (-1 for fragments and unknown layouts)."""
    if end is None:
        end = len(buf)
    if end - start < 1:
        raise InnerError("empty packet")
    version = buf[start] >> 4
    if version == 4:
        if end - start < 20:
            raise InnerError(f"IPv4 header needs 20 bytes, {end - start} present")
        ihl = (buf[start] & 0x0F) * 4
        if ihl < 20 or start + ihl > end:
            raise InnerError(f"IPv4 header length {ihl} does not fit {end - start} bytes")
        proto = buf[start + 9]
        src, dst = _V4_ADDRS.unpack_from(buf, start + 12)
        fragmented = _U16.unpack_from(buf, start + 6)[0] & 0x3FFF
        l4 = start + ihl
    elif version == 6:
        if end - start < 40:
            raise InnerError(f"IPv6 header needs 40 bytes, {end - start} present")
        s_hi, s_lo, d_hi, d_lo = _V6_ADDRS.unpack_from(buf, start + 8)
        src = ((s_hi << 64) | s_lo) + V6_OFFSET
        dst = ((d_hi << 64) | d_lo) + V6_OFFSET
        proto, l4, fragmented = _walk_ipv6(buf, start, end)
    else:
        raise InnerError(f"IP version {version}")
    if fragmented:
        return FiveTuple(proto, src, 0, dst, 0), -1
    if proto in _PORTED and l4 + 4 <= end:
        sport, dport = _PORTS.unpack_from(buf, l4)
        return FiveTuple(proto, src, sport, dst, dport), l4
    return FiveTuple(proto, src, 0, dst, 0), l4


def _walk_ipv6(buf: bytes | bytearray | memoryview, start: int, end: int) -> tuple[int, int, int]:
    """(upper-layer protocol, its offset, fragmented?) after the IPv6 extension header chain."""
    nh = buf[start + 6]
    off = start + 40
    fragmented = 0
    for _ in range(_MAX_EXT_HEADERS):
        if nh in _GENERIC_EXT:
            if off + 2 > end:
                raise InnerError("IPv6 extension header cut short")
            nxt, hlen = buf[off], (buf[off + 1] + 1) * 8
        elif nh == IPPROTO_FRAGMENT:
            if off + 8 > end:
                raise InnerError("IPv6 fragment header cut short")
            nxt, hlen = buf[off], 8
            fragmented |= _U16.unpack_from(buf, off + 2)[0]  # offset and M flag
        elif nh == IPPROTO_AH:
            if off + 2 > end:
                raise InnerError("IPv6 authentication header cut short")
            nxt, hlen = buf[off], (buf[off + 1] + 2) * 4
        else:
            return nh, off, fragmented & 0xFFF9
        if off + hlen > end:
            raise InnerError("IPv6 extension header runs past the packet")
        nh, off = nxt, off + hlen
    raise InnerError(f"more than {_MAX_EXT_HEADERS} IPv6 extension headers")


#: an IPv4 header without options and the ports after it: version/IHL, fragment word, protocol, addresses, ports
_V4_FAST = struct.Struct("!B5xHxB2xIIHH")


def symmetric_key(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> SymKey:
    """The direction-independent 5-tuple key of an IP packet."""
    if end is None:
        end = len(buf)
    # fast path: an unfragmented IPv4 TCP or UDP packet without options (the common case)
    if end - start >= 24:
        vihl, frag, proto, src, dst, sport, dport = _V4_FAST.unpack_from(buf, start)
        if vihl == 0x45 and proto in (IPPROTO_TCP, IPPROTO_UDP) and not frag & 0x3FFF:
            a = (src << 16) | sport
            b = (dst << 16) | dport
            return (proto, a, b) if a <= b else (proto, b, a)
    return flow_of(buf, start, end)[0].symmetric()


def address(value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address an integer from a :class:`FiveTuple` stands for."""
    if value >= V6_OFFSET:
        return ipaddress.IPv6Address(value - V6_OFFSET)
    return ipaddress.IPv4Address(value)


def address_int(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    a = ipaddress.ip_address(addr)
    return int(a) + (V6_OFFSET if a.version == 6 else 0)


def _proto_name(proto: int) -> str:
    return {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmpv6"}.get(
        proto, f"proto {proto}")


def _fmt(addr: int, port: int) -> str:
    a = address(addr)
    if not port:
        return str(a)
    return f"[{a}]:{port}" if a.version == 6 else f"{a}:{port}"
