"""Short ``repr`` for objects holding packets, so that failure reports of 8500-byte packets stay legible."""

from __future__ import annotations

from dataclasses import fields


def short_bytes(data: bytes, keep: int = 48) -> str:
    """``bytes.fromhex('...')`` for short byte strings, ``<N bytes: prefix...>`` for long ones."""
    if len(data) <= keep:
        return f"bytes.fromhex({data.hex()!r})"
    return f"<{len(data)} bytes: {data[:keep].hex()}...>"


def short_repr(self: object) -> str:
    """A dataclass ``__repr__`` that abbreviates its bytes fields with :func:`short_bytes`."""
    parts = []
    for f in fields(self):  # type: ignore[arg-type]  # a mixin of dataclasses
        v = getattr(self, f.name)
        parts.append(f"{f.name}={short_bytes(v) if isinstance(v, bytes) else repr(v)}")
    return f"{type(self).__name__}({', '.join(parts)})"


def pretty_short(self: object, printer: object, cycle: bool) -> None:
    """Hypothesis's pretty-printer hook (``_repr_pretty_``), so falsifying examples are shown abbreviated too."""
    printer.text(short_repr(self))  # type: ignore[attr-defined]  # a mixin of dataclasses
