"""GWLB endpoint ENI ids: the forms people and tools see them in.

gwlbtun names its tunnel devices ``gwi-<X>``/``gwo-<X>`` where X is the ENI id in base 60 (digits
``0-9a-zA-X``, most significant first), which keeps a 64-bit id within Linux's 15-character device names.
"""

from __future__ import annotations

import re

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BASE60_ALPHABET = _ALPHABET[:60]
_BASE60_VALUE = {c: i for i, c in enumerate(BASE60_ALPHABET)}
_HEX16 = re.compile(r"(?:eni-|vpce-)?([0-9a-fA-F]{1,16})")

INGRESS_PREFIX = "gwi-"
EGRESS_PREFIX = "gwo-"
IFNAMSIZ = 15  # usable characters in a Linux interface name


def to_base60(value: int) -> str:
    """``0x2b8ee1d4db0c51c4`` -> ``'5bqWvzLwwkk'``; ``0`` -> ``'0'``."""
    if value < 0:
        raise ValueError(f"ENI id must not be negative: {value}")
    digits = []
    while True:
        value, rem = divmod(value, 60)
        digits.append(BASE60_ALPHABET[rem])
        if not value:
            break
    return "".join(reversed(digits))


def from_base60(text: str) -> int:
    if not text:
        raise ValueError("empty base-60 string")
    value = 0
    for c in text:
        try:
            value = value * 60 + _BASE60_VALUE[c]
        except KeyError:
            raise ValueError(f"{c!r} is not a base-60 digit (alphabet 0-9a-zA-X)") from None
    return value


def to_hex(value: int) -> str:
    """The form gwlbtun passes to hooks: 16 lowercase hex digits."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"ENI id {value} does not fit 64 bits")
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """Accepts ``2b8ee1d4db0c51c4``, ``eni-2b8ee1d4db0c51c4`` or ``vpce-...``."""
    m = _HEX16.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not an ENI id (up to 16 hex digits, optionally eni- or vpce-)")
    return int(m.group(1), 16)


def device_names(eni_id: int) -> tuple[str, str]:
    """The (ingress, egress) TUN device names gwlbtun uses for an endpoint."""
    x = to_base60(eni_id)
    return INGRESS_PREFIX + x, EGRESS_PREFIX + x
