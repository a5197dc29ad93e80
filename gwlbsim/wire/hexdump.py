"""Bytes as a hex dump for people: offset, sixteen bytes in hex, the same as ASCII (dots for the rest)."""

from __future__ import annotations


def hexdump(data: bytes | bytearray | memoryview, indent: str = "") -> str:
    b = bytes(data)
    return "\n".join(f"{indent}{i:04x}  {b[i:i + 16].hex(' '):<47}  "
                     + "".join(chr(c) if 32 <= c < 127 else "." for c in b[i:i + 16])
                     for i in range(0, len(b), 16))
