"""The Internet checksum (RFC 1071) and the UDP-over-IPv4 checksum, computed with big-integer arithmetic.

The ones'-complement sum of 16-bit words is congruent to the whole buffer read as one big-endian
integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), which CPython computes in C: far faster than a
Python loop over words, for any size.
"""

from __future__ import annotations

IPPROTO_UDP = 17


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The folded ones'-complement sum of ``data`` (odd lengths padded with a zero byte), in 0..0xFFFF."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    if not data:
        return 0
    r = int.from_bytes(data, "big") % 0xFFFF
    if r == 0 and any(data):
        return 0xFFFF
    return r


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The checksum to store in an IPv4, ICMP or similar header (computed with that field zero)."""
    return 0xFFFF - ones_sum(data)


def udp4_checksum(src: bytes, dst: bytes, udp: bytes | bytearray | memoryview) -> int:
    """UDP checksum over the IPv4 pseudo-header and ``udp`` (header with checksum 0, plus payload).

    Never returns 0: a computed 0 is sent as 0xFFFF (RFC 768), since 0 means "no checksum".
    """
    pseudo = src + dst + bytes((0, IPPROTO_UDP)) + len(udp).to_bytes(2, "big")
    r = (int.from_bytes(pseudo, "big") + int.from_bytes(bytes(udp) + b"\0" * (len(udp) & 1), "big")) % 0xFFFF
    # the pseudo-header is never all zero, so a zero remainder means a sum of 0xFFFF: checksum 0 -> 0xFFFF
    return 0xFFFF - r if r else 0xFFFF


def udp4_checksum_ok(src: bytes, dst: bytes, udp: bytes | bytearray | memoryview) -> bool:
    """True when ``udp`` (header as received) verifies, or carries no checksum (0)."""
    if len(udp) < 8:
        return False
    if udp[6] == 0 and udp[7] == 0:
        return True
    pseudo = src + dst + bytes((0, IPPROTO_UDP)) + len(udp).to_bytes(2, "big")
    total = int.from_bytes(pseudo, "big") + int.from_bytes(bytes(udp) + b"\0" * (len(udp) & 1), "big")
    return total % 0xFFFF == 0
