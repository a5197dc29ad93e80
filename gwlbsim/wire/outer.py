"""The outer IPv4 + UDP headers that carry GENEVE between GWLB and its targets.

GWLB's outer packets (as every real capture shows): IPv4 without options, TOS 0, TTL 255, IP id 0, DF
clear, UDP to port 6081 with a valid checksum. Appliances answer with the addresses swapped and the ports
kept.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from typing import NamedTuple

from gwlbsim.wire.checksum import IPPROTO_UDP, internet_checksum, udp4_checksum_ok
from gwlbsim.wire.reasons import DropReason

IPV4_HEADER_LEN = 20
UDP_HEADER_LEN = 8
OUTER_LEN = IPV4_HEADER_LEN + UDP_HEADER_LEN
#: GWLB's outer header values, as captured.
GWLB_TTL = 255
GWLB_TOS = 0

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


class OuterError(ValueError):
    """Not an IPv4/UDP datagram we can take apart."""

    reason = DropReason.BAD_OUTER


class Outer(NamedTuple):
    src: str
    dst: str
    sport: int
    dport: int
    ttl: int
    tos: int
    ident: int
    df: bool
    udp_checksum: int
    checksum_ok: bool  #: the UDP checksum verifies (a zero checksum counts as fine)
    ip_header_len: int
    payload_offset: int  #: where the UDP payload starts
    payload_len: int


@functools.lru_cache(maxsize=4096)
def addr4(text: str) -> bytes:
    """The 4 bytes of a dotted-quad address (remembered: the same few addresses are packed per packet)."""
    return ipaddress.IPv4Address(text).packed


def build_ipv4_udp(src: str | bytes, dst: str | bytes, sport: int, dport: int,
                   payload: bytes | bytearray | memoryview, *, ttl: int = GWLB_TTL, tos: int = GWLB_TOS,
                   ident: int = 0, df: bool = False, udp_checksum: bool = True) -> bytes:
    """An IPv4 packet holding one UDP datagram, headers and checksums filled in.

    Built by an :class:`OuterTemplate` with an empty payload prefix: the headers are packed in one place.
    """
    total = OUTER_LEN + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"datagram of {total} bytes does not fit IPv4")
    template = OuterTemplate(src, dst, sport, dport, b"", ttl=ttl, tos=tos, ident=ident, df=df,
                             udp_checksum=udp_checksum)
    return template.packet(payload)


def parse_ipv4_udp(buf: bytes | bytearray | memoryview) -> Outer:
    """Take apart an IPv4/UDP packet (as read from a raw or packet socket)."""
    if len(buf) < OUTER_LEN:
        raise OuterError(f"{len(buf)} bytes, too short for IPv4 + UDP")
    vihl, tos, total, ident, frag, ttl, proto, _csum, s, d = _IPV4.unpack_from(buf, 0)
    if vihl >> 4 != 4:
        raise OuterError(f"IP version {vihl >> 4}, expected 4")
    ihl = (vihl & 0x0F) * 4
    if ihl < IPV4_HEADER_LEN or total < ihl + UDP_HEADER_LEN or total > len(buf):
        raise OuterError(f"IPv4 header length {ihl}, total length {total}, {len(buf)} bytes present")
    if proto != IPPROTO_UDP:
        raise OuterError(f"IP protocol {proto}, expected UDP")
    if frag & 0x3FFF:
        raise OuterError("fragmented outer packet")
    sport, dport, ulen, ucsum = _UDP.unpack_from(buf, ihl)
    if ulen < UDP_HEADER_LEN or ihl + ulen > total:
        raise OuterError(f"UDP length {ulen} does not fit the IP packet")
    ok = udp4_checksum_ok(s, d, bytes(buf[ihl:ihl + ulen]))
    return Outer(str(ipaddress.IPv4Address(s)), str(ipaddress.IPv4Address(d)), sport, dport, ttl, tos,
                 ident, bool(frag & 0x4000), ucsum, ok, ihl, ihl + UDP_HEADER_LEN, ulen - UDP_HEADER_LEN)


_LEN = struct.Struct("!H")
_LEN_SUM = struct.Struct("!HH")


def pseudo_sum(src: bytes, dst: bytes) -> int:
    """Ones' sum (mod 0xFFFF) of the UDP pseudo-header's addresses and protocol (its length not included)."""
    return (int.from_bytes(src + dst, "big") + IPPROTO_UDP) % 0xFFFF


def constant_sums(ip_header: bytes, src: bytes, dst: bytes, sport: int, dport: int) -> tuple[int, int]:
    """Ones' sums (mod 0xFFFF) of what stays the same in every packet of a flow: the IPv4 header with length
    and checksum zero, and the UDP pseudo-header addresses, protocol and ports."""
    return int.from_bytes(ip_header, "big") % 0xFFFF, (pseudo_sum(src, dst) + sport + dport) % 0xFFFF


def _finish_ipv4(buf: bytearray | memoryview, start: int, total: int, ip_sum: int) -> int:
    """The IPv4 header's total length and checksum; returns the UDP length."""
    r = (ip_sum + total) % 0xFFFF
    _LEN.pack_into(buf, start + 2, total)
    _LEN.pack_into(buf, start + 10, 0xFFFF - (r if r else 0xFFFF))
    return total - IPV4_HEADER_LEN


#: where a device finishing the UDP checksum of an IPv4 packet without options starts summing (from the IP
#: header), and where in the UDP header the result goes (Linux's csum_start and csum_offset)
UDP_CSUM_START = IPV4_HEADER_LEN
UDP_CSUM_OFFSET = 6


def finish_ipv4_udp_partial(buf: bytearray | memoryview, start: int, total: int, ip_sum: int,
                            pseudo: int) -> None:
    """:func:`finish_ipv4_udp` for checksum offload: the UDP checksum field gets the pseudo-header's sum
    (``pseudo`` from :func:`pseudo_sum`, plus the UDP length), not complemented, for the device (or the
    kernel in its place) to finish over the UDP header and payload: what Linux calls CHECKSUM_PARTIAL."""
    udp_len = _finish_ipv4(buf, start, total, ip_sum)
    _LEN_SUM.pack_into(buf, start + IPV4_HEADER_LEN + 4, udp_len, (pseudo + udp_len) % 0xFFFF)


def finish_ipv4_udp(buf: bytearray | memoryview, start: int, total: int, ip_sum: int, udp_sum: int) -> None:
    """Fill in the lengths and checksums of the IPv4/UDP packet at ``buf[start:start + total]``.

    ``ip_sum`` is the constant IPv4 header's sum (:func:`constant_sums`); ``udp_sum`` the sum of the UDP
    pseudo-header constants and every UDP payload byte, or -1 to send no UDP checksum (0).
    """
    udp_len = _finish_ipv4(buf, start, total, ip_sum)
    if udp_sum < 0:
        csum = 0
    else:
        # the pseudo-header's length and the UDP length field both count udp_len
        r = (udp_sum + udp_len + udp_len) % 0xFFFF
        csum = 0xFFFF - r if r else 0xFFFF
    _LEN_SUM.pack_into(buf, start + IPV4_HEADER_LEN + 4, udp_len, csum)


class OuterTemplate:
    """Outer IPv4 + UDP headers plus a fixed start of the UDP payload (e.g. a GENEVE header), prepared once
    for the many packets of one flow: per packet only the lengths and checksums are filled in, and the
    checksums are finished from sums of the constant parts."""

    __slots__ = ("ip_sum", "prefix", "udp_sum")

    def __init__(self, src: str | bytes, dst: str | bytes, sport: int, dport: int, payload_prefix: bytes, *,
                 ttl: int = GWLB_TTL, tos: int = GWLB_TOS, ident: int = 0, df: bool = False,
                 udp_checksum: bool = True) -> None:
        s = addr4(src) if isinstance(src, str) else src
        d = addr4(dst) if isinstance(dst, str) else dst
        ip = _IPV4.pack(0x45, tos, 0, ident, 0x4000 if df else 0, ttl, IPPROTO_UDP, 0, s, d)
        self.prefix = ip + _UDP.pack(sport, dport, 0, 0) + payload_prefix
        self.ip_sum, udp_const = constant_sums(ip, s, d, sport, dport)
        even = payload_prefix + b"\0" * (len(payload_prefix) & 1)
        self.udp_sum = (udp_const + int.from_bytes(even, "big")) % 0xFFFF if udp_checksum else -1

    def header(self, tail: bytes | bytearray | memoryview) -> bytes:
        """Everything before ``tail`` (the rest of the UDP payload), lengths and checksums filled in."""
        prefix = self.prefix
        n = len(tail)
        udp_sum = self.udp_sum
        if udp_sum >= 0:
            if (len(prefix) & 1) == 0:
                udp_sum += int.from_bytes(bytes(tail) + b"\0" * (n & 1), "big")
            else:  # an odd prefix shifts the tail by a byte within its 16-bit words
                udp_sum += int.from_bytes(b"\0" + bytes(tail) + b"\0" * ((n + 1) & 1), "big")
        out = bytearray(prefix)
        finish_ipv4_udp(out, 0, len(prefix) + n, self.ip_sum, udp_sum % 0xFFFF if udp_sum >= 0 else -1)
        return bytes(out)

    def packet(self, tail: bytes | bytearray | memoryview) -> bytes:
        return self.header(tail) + bytes(tail)


def fragment_ipv4(packet: bytes, mtu: int) -> list[bytes]:
    """Split an IPv4 packet (without DF) into fragments of at most ``mtu`` bytes, as a router would."""
    if len(packet) <= mtu:
        return [packet]
    ihl = (packet[0] & 0x0F) * 4
    header, payload = bytearray(packet[:ihl]), packet[ihl:]
    if header[6] & 0x40:
        raise ValueError("DF is set: the packet may not be fragmented")
    step = (mtu - ihl) // 8 * 8
    if step <= 0:
        raise ValueError(f"MTU {mtu} too small for a {ihl}-byte header")
    base_off = struct.unpack_from("!H", header, 6)[0] & 0x1FFF
    out = []
    for off in range(0, len(payload), step):
        chunk = payload[off:off + step]
        more = off + step < len(payload) or bool(struct.unpack_from("!H", header, 6)[0] & 0x2000)
        h = bytearray(header)
        struct.pack_into("!H", h, 2, ihl + len(chunk))
        struct.pack_into("!H", h, 6, (0x2000 if more else 0) | (base_off + off // 8))
        struct.pack_into("!H", h, 10, 0)
        struct.pack_into("!H", h, 10, internet_checksum(bytes(h)))
        out.append(bytes(h) + chunk)
    return out
