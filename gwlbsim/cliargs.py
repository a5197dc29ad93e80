"""Argument types shared by the command-line tools: clear errors for bad numbers, ports and counts."""

from __future__ import annotations

import argparse


def seconds(v: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number of seconds") from None
    if f < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return f


def positive(v: str) -> float:
    """A number of seconds (or any quantity) above 0."""
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"{v} must be more than 0")
    return f


def port(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a port number") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is not within 1-65535")
    return n


def count(v: str) -> int:
    """A whole number, 1 or more."""
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is less than 1")
    return n


def option_class(v: str) -> int:
    """A GENEVE option class, decimal or 0x-hex."""
    try:
        n = int(v, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number (e.g. 0x0108)") from None
    if not 0 <= n <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"option class {v} does not fit 16 bits")
    return n
