"""Argument types shared by the command-line tools: clear errors for bad numbers, ports and counts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _convert(v: str, convert: Callable[[str], T], what: str) -> T:
    try:
        return convert(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not {what}") from None


def seconds(v: str) -> float:
    """A number of seconds, 0 or more."""
    f = _convert(v, float, "a number of seconds")
    if f < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return f


def positive(v: str) -> float:
    """A number of seconds (or any quantity) above 0."""
    f = _convert(v, float, "a number")
    if not f > 0:
        raise argparse.ArgumentTypeError(f"{v} must be more than 0")
    return f


def port(v: str) -> int:
    n = _convert(v, int, "a port number")
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is not within 1-65535")
    return n


def count(v: str) -> int:
    """A whole number, 1 or more."""
    n = _convert(v, int, "a whole number")
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is less than 1")
    return n


def whole_within(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi``."""
    return _within(int, "a whole number", lo, hi)


def number_within(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a number from ``lo`` to ``hi``."""
    return _within(float, "a number", lo, hi)


def _within(convert: Callable[[str], T], what: str, lo: T, hi: T) -> Callable[[str], T]:
    def parse(v: str) -> T:
        n = _convert(v, convert, what)
        if not lo <= n <= hi:  # type: ignore[operator]  # int or float, compared with its own kind
            raise argparse.ArgumentTypeError(f"{n:g} is not within {lo:g}-{hi:g}")
        return n

    return parse


def option_class(v: str) -> int:
    """A GENEVE option class, decimal or 0x-hex."""
    n = _convert(v, lambda x: int(x, 0), "a number (e.g. 0x0108)")
    if not 0 <= n <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"option class {v} does not fit 16 bits")
    return n
