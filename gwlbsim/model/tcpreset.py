"""TCP resets GWLB sends on a flow's behalf (the ``send_tcp_reset.*`` attributes): built as RFC 793 answers
to the packet that triggered them, addressed back to its sender."""

from __future__ import annotations

import struct

from gwlbsim.wire.checksum import internet_checksum
from gwlbsim.wire.flowkey import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, flow_of

_TCP = struct.Struct("!HHIIBBHHH")


def reset_for(pkt: bytes | bytearray | memoryview) -> bytes | None:
    """The RST answering TCP packet ``pkt`` (a bare IPv4/IPv6 packet), or None if it is no TCP or an RST."""
    pkt = bytes(pkt)
    ft, l4 = flow_of(pkt)
    if ft.proto != 6 or l4 < 0 or l4 + 20 > len(pkt):
        return None
    sport, dport, seq, ack, _off, flags = struct.unpack_from("!HHIIBB", pkt, l4)
    if flags & TCP_RST:
        return None
    data_off = (pkt[l4 + 12] >> 4) * 4
    seglen = max(0, len(pkt) - l4 - data_off) + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
    if flags & TCP_ACK:
        r_seq, r_ack, r_flags = ack, 0, TCP_RST
    else:
        r_seq, r_ack, r_flags = 0, (seq + seglen) & 0xFFFFFFFF, TCP_RST | TCP_ACK
    tcp = _TCP.pack(dport, sport, r_seq, r_ack, 5 << 4, r_flags, 0, 0, 0)
    if pkt[0] >> 4 == 4:
        src, dst = pkt[16:20], pkt[12:16]
        pseudo = src + dst + b"\0\x06" + len(tcp).to_bytes(2, "big")
        tcp = tcp[:16] + internet_checksum(pseudo + tcp).to_bytes(2, "big") + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + internet_checksum(ip).to_bytes(2, "big") + ip[12:]
        return ip + tcp
    src, dst = pkt[24:40], pkt[8:24]
    pseudo = src + dst + len(tcp).to_bytes(4, "big") + b"\0\0\0\x06"
    tcp = tcp[:16] + internet_checksum(pseudo + tcp).to_bytes(2, "big") + tcp[18:]
    return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst + tcp
