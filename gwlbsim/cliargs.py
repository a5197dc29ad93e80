"""Argument types shared by the command-line tools: clear errors for bad numbers, ports and counts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

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
            raise argparse.ArgumentTypeError(f"{_show(n)} is not within {_show(lo)}-{_show(hi)}")
        return n

    return parse


def option_class(v: str) -> int:
    """A GENEVE option class, decimal or 0x-hex."""
    n = _convert(v, lambda x: int(x, 0), "a number (e.g. 0x0108)")
    if not 0 <= n <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"option class {v} does not fit 16 bits")
    return n


def fraction(v: str) -> float:
    """A fraction, 0 to 1."""
    return number_within(0.0, 1.0)(v)


def whole(v: str) -> int:
    """A whole number, 0 or more."""
    n = _convert(v, int, "a whole number")
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative")
    return n


def _show(n: object) -> str:
    return str(n) if isinstance(n, int) else f"{n:g}"


def output_file(v: str) -> Path:
    """A file to write: its directory must exist and it must not be a directory (checked before any work, so that
    a long run's results are not lost at the end)."""
    p = Path(v)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{v} is a directory")
    if not p.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{v}: directory {p.parent} does not exist")
    return p


def output_dir(v: str) -> Path:
    """A directory to write into (made when needed): it must not be a file, and its parent must exist."""
    p = Path(v)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{v} is not a directory")
    if not p.exists() and not p.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{v}: directory {p.parent} does not exist")
    return p


def input_file(v: str) -> Path:
    """A file to read: it must exist and be a regular file."""
    p = Path(v)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{v} is a directory, not a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{v}: no such file")
    return p


def cpu_list(v: str) -> list[int]:
    """CPUs as ``0,2-3``: each must be one this process may run on."""
    cpus: list[int] = []
    for part in v.split(","):
        lo, sep, hi = part.strip().partition("-")
        a = _convert(lo, int, "a CPU list (e.g. 0,2-3)")
        b = _convert(hi, int, "a CPU list (e.g. 0,2-3)") if sep else a
        if a < 0 or b < a:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a CPU or a range low-high (e.g. 0,2-3)")
        cpus.extend(range(a, b + 1))
    usable = sorted(os.sched_getaffinity(0))
    missing = sorted(set(cpus) - set(usable))
    if missing:
        raise argparse.ArgumentTypeError(f"CPU {', '.join(map(str, missing))} not available (this process may "
                                         f"use {_ranges(usable)})")
    return cpus


def _ranges(cpus: list[int]) -> str:
    """Sorted CPU numbers as ``0,2-4``."""
    runs: list[list[int]] = []
    for c in cpus:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class Parser(argparse.ArgumentParser):
    """Bad usage is one line (the option, the value, what is allowed) and exit status 2, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message.removeprefix('argument ')} (see --help)\n")
