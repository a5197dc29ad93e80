"""Further benchmarks that plug into ``gwlbsim bench``: the fake GWLB's own packet rate, simulation speed.

A benchmark is a function taking the parsed command-line options and returning a JSON-able dict with at
least ``"text"`` (a line or a few for the printed report). Register it under a name::

    from gwlbsim.bench.extra import register

    @register("gwlb-live", "fake GWLB in live mode: packets/s generated, and as a full GWLB with flow table")
    def gwlb_live(opts: argparse.Namespace) -> dict[str, object]:
        ...
        return {"text": f"fake GWLB: {pps:,.0f} packets/s generated", "generated_pps": pps}

``gwlbsim bench --only NAME`` runs it alone; ``--with NAME`` adds it to a run; the JSON report holds its
dict under ``"extra"`` / NAME. Registrations are looked up in the modules listed in ``PROVIDERS`` (imported
when present, so this module never depends on them).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Benchmark = Callable[[argparse.Namespace], dict[str, Any]]

#: Modules that register benchmarks when imported (missing ones are skipped).
PROVIDERS = ("gwlbsim.live.bench", "gwlbsim.model.bench", "gwlbsim.bench.hotpath")


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
    for mod in PROVIDERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise
    return dict(_REGISTRY)
