"""TCP resets GWLB sends on a flow's behalf (the ``send_tcp_reset.*`` attributes): built as RFC 793 answers
to the packet that triggered them, addressed back to its sender."""

from __future__ import annotations

import struct

from gwlbsim.traffic.inner import ip_packet, tcp_segment
from gwlbsim.wire.flowkey import IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, flow_of


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
    # back to the sender: addresses and ports swapped
    src, dst = (pkt[16:20], pkt[12:16]) if pkt[0] >> 4 == 4 else (pkt[24:40], pkt[8:24])
    rst = tcp_segment(src, dst, dport, sport, seq=r_seq, ack=r_ack, flags=r_flags, window=0)
    return ip_packet(src, dst, IPPROTO_TCP, rst, ttl=64, df=True)
