"""Further benchmarks that plug into ``gwlbsim bench``: the fake GWLB's own packet rate, simulation speed.

A benchmark is a function taking the parsed command-line options and returning a JSON-able dict with at
least ``"text"`` (a line or a few for the printed report). Register it under a name::

    from gwlbsim.bench.extra import register

    @register("gwlb-live", "fake GWLB in live mode: packets/s generated, and as a full GWLB with flow table")
    def gwlb_live(opts: argparse.Namespace) -> dict[str, object]:
        ...
        return {"text": f"fake GWLB: {pps:,.0f} packets/s generated", "generated_pps": pps}

``gwlbsim bench --only NAME`` runs it alone; ``--with NAME`` adds it to a run; the JSON report holds its
dict under ``"extra"`` / NAME. The modules that register (:mod:`gwlbsim.bench.fake_gwlb`, :mod:`gwlbsim.bench.hotpath`)
are imported by the entry point, :mod:`gwlbsim.bench.cli`; this module depends on none of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Benchmark = Callable[[argparse.Namespace], dict[str, Any]]

@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    run: Benchmark


_REGISTRY: dict[str, Entry] = {}


def register(name: str, description: str) -> Callable[[Benchmark], Benchmark]:
    def deco(fn: Benchmark) -> Benchmark:
        _REGISTRY[name] = Entry(name, description, fn)
        return fn

    return deco


def available() -> dict[str, Entry]:
    """Every benchmark registered so far, by name."""
    return dict(_REGISTRY)
