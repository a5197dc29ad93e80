"""The reference core's flow cache: memory per flow, measured by filling it with distinct flows.

Two figures: Python heap growth traced by ``tracemalloc`` (exact, what the objects take) on a sample,
and the process's resident set growth for the full count (what the machine pays, allocator included).
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from typing import Any

from gwlbsim.bench.traffic import Traffic
from gwlbsim.reference.core import ApplianceCore, Config

GWLB, ME = "10.99.0.1", "10.99.0.2"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _fill(core: ApplianceCore, count: int, start: int = 0) -> float:
    """Feed ``count`` new flows (each its own inner 5-tuple, cookie and GWLB source port). Returns seconds."""
    t = Traffic(size=64, flows=1)
    tpl = bytearray(t.packet(0)[28:])  # GENEVE header + inner packet
    hl = len(t.geneve_header(0))
    cookie_at, src_at, sport_at = hl - 4, hl + 12, hl + 20
    n = len(tpl)
    t0 = time.perf_counter()
    for i in range(start, start + count):
        tpl[cookie_at:cookie_at + 4] = (i * 2654435761 & 0xFFFFFFFF).to_bytes(4, "big")
        tpl[src_at:src_at + 4] = (0x0A000000 + (i >> 16)).to_bytes(4, "big")
        tpl[sport_at:sport_at + 2] = (i & 0xFFFF).to_bytes(2, "big")
        core.inbound(tpl, 0, n, GWLB, ME, 1024 + i % 60000, 6081, 1.0)
    return time.perf_counter() - t0


def _ready_core(max_flows: int) -> ApplianceCore:
    core = ApplianceCore(Config(max_flows=max_flows))
    _fill(core, 1, start=max_flows + 1)
    for eni in list(core.tunnels):
        core.tunnel_ready(eni, 1.0)
    return core


def measure(flows: int = 1_000_000, traced: int = 100_000) -> dict[str, Any]:
    """Bytes per flow: traced (tracemalloc, ``traced`` flows) and resident (RSS, ``flows`` flows)."""
    traced = min(traced, flows)
    gc.collect()
    tracemalloc.start()
    core = _ready_core(traced + 10)
    base = tracemalloc.get_traced_memory()[0]
    _fill(core, traced)
    gc.collect()
    traced_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert core.flow_count == traced + 1, core.flow_count
    del core
    gc.collect()

    core = _ready_core(flows + 10)
    rss0 = _rss()
    seconds = _fill(core, flows)
    gc.collect()
    rss_bytes = _rss() - rss0
    assert core.flow_count == flows + 1, core.flow_count
    return {
        "flows": flows,
        "gwlb_source_ports": min(flows, 60000),  # flows share the outer addressing when they share a port
        "traced_flows": traced,
        "traced_bytes_per_flow": round(traced_bytes / traced, 1),
        "rss_bytes_per_flow": round(rss_bytes / flows, 1),
        "rss_mib": round(rss_bytes / 2**20, 1),
        "fill_seconds": round(seconds, 2),
        "new_flows_per_second": round(flows / seconds),
    }
