"""Classic pcap files: read the third-party vectors, write what tests sent and received (for Wireshark)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4 or IPv6 packets
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_ETH_IPV4 = 0x0800
_ETH_VLAN = 0x8100


class PcapError(ValueError):
    pass


class Record(NamedTuple):
    timestamp: float
    data: bytes
    linktype: int


def read(path: str | Path) -> list[Record]:
    with open(path, "rb") as f:
        return list(iter_records(f))


def iter_records(f: BinaryIO) -> Iterator[Record]:
    head = f.read(24)
    if len(head) < 24:
        raise PcapError("file too short for a pcap header")
    for endian in ("<", ">"):
        magic = struct.unpack(endian + "I", head[:4])[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise PcapError(f"not a classic pcap file (magic {head[:4].hex()})")
    scale = 1e-9 if magic == _MAGIC_NS else 1e-6
    linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    while True:
        h = f.read(16)
        if not h:
            return
        if len(h) < 16:
            raise PcapError("truncated record header")
        sec, frac, incl, _orig = rec.unpack(h)
        data = f.read(incl)
        if len(data) < incl:
            raise PcapError("truncated record")
        yield Record(sec + frac * scale, data, linktype)


def ip_packet(record: Record) -> bytes:
    """The IP packet inside a record, whatever the link type (Ethernet, optionally VLAN-tagged, or raw)."""
    if record.linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return record.data
    if record.linktype == LINKTYPE_ETHERNET:
        off, ethertype = 12, struct.unpack_from("!H", record.data, 12)[0]
        while ethertype == _ETH_VLAN:
            off += 4
            ethertype = struct.unpack_from("!H", record.data, off)[0]
        return record.data[off + 2:]
    raise PcapError(f"link type {record.linktype} not supported")


class Writer:
    """Writes raw-IP pcap records (link type 101) as packets come."""

    def __init__(self, path: str | Path, linktype: int = LINKTYPE_RAW, snaplen: int = 0x40000) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def write(self, data: bytes | bytearray | memoryview, timestamp: float | None = None) -> None:
        ts = time.time() if timestamp is None else timestamp
        sec = int(ts)
        self._f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(data), len(data)))
        self._f.write(data)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write(path: str | Path, packets: Iterable[bytes | tuple[float, bytes]]) -> None:
    with Writer(path) as w:
        for p in packets:
            if isinstance(p, tuple):
                w.write(p[1], p[0])
            else:
                w.write(p)
