"""The reference's Python hot path alone, per packet (``gwlbsim bench --only reference-core``).

No namespaces, devices or system calls: 64 flows of one endpoint, every flow known and its header
unchanged (the steady state), the packets in preallocated buffers. For each step of a packet's round trip
through :class:`gwlbsim.reference.core.ApplianceCore`, the CPU time per packet (best of a few rounds):

* ``scan``: :func:`gwlbsim.wire.geneve.scan` of a datagram as GWLB sends it;
* ``symmetric_key``: :func:`gwlbsim.wire.flowkey.symmetric_key` of its inner packet;
* ``inbound``: :meth:`ApplianceCore.inbound` (both of the above, the tunnel, the flow cache, counters);
* ``round_trip``: a batch of 64 through ``inbound``, then the same 64 packets back through
  :meth:`ApplianceCore.outbound` + :func:`gwlbsim.reference.core.put_return_header` with the UDP checksum left to
  the device, as the reference's driver does it (one ``now`` per batch); ``outbound`` is the difference.

What the appliance spends per packet beyond these is its driver loop and the kernel (``gwlbsim bench``
measures the whole). Every return is checked against the flow's header, so a fast wrong path shows.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from gwlbsim.bench.extra import register
from gwlbsim.bench.traffic import Traffic
from gwlbsim.reference import core as reference_core
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import symmetric_key

FLOWS = 64
INNER = 64


def _best(rounds: int, step: Callable[[float], None]) -> float:
    """Seconds of CPU for one call of ``step`` over all flows, best of ``rounds``."""
    best = float("inf")
    for r in range(rounds):
        t0 = time.process_time()
        step(float(r))
        best = min(best, time.process_time() - t0)
    return best


def measure(batches: int = 2000, rounds: int = 5) -> dict[str, Any]:
    """µs per packet of each step, over ``batches`` passes of the 64 flows, best of ``rounds``."""

    core = reference_core.ApplianceCore(reference_core.Config())
    traffic = Traffic(size=INNER, flows=FLOWS)  # the benchmark's own flows, as GWLB would send them
    headers = [traffic.geneve_header(i) for i in range(FLOWS)]
    datagrams = [headers[i] + traffic.inner(i) for i in range(FLOWS)]  # UDP payloads, as received
    ports = [traffic.outer_sport(i) for i in range(FLOWS)]
    gwlb, appliance = traffic.src, traffic.dst
    views = [memoryview(bytearray(d)) for d in datagrams]
    sizes = [len(d) for d in datagrams]
    headroom = geneve.GWLB_OVERHEAD  # outer IPv4 + UDP + GWLB's GENEVE header
    slots = [memoryview(bytearray(headroom + INNER + 1)) for _ in range(FLOWS)]
    for i in range(FLOWS):
        slots[i][headroom:headroom + INNER] = datagrams[i][len(headers[i]):]
    first = core.inbound(views[0], 0, sizes[0], gwlb, appliance, ports[0], geneve.GENEVE_PORT, 0.0)
    if first is None:
        raise RuntimeError(f"the core dropped a valid datagram: {core.totals.drops}")
    tunnel = first.tunnel
    core.tunnel_ready(tunnel.eni_id, 0.0)
    inbound, outbound, scan, port = core.inbound, core.outbound, geneve.scan, geneve.GENEVE_PORT
    flows = range(FLOWS)

    def scans(now: float) -> None:
        for _ in range(batches):
            for i in flows:
                scan(views[i], 0, sizes[i])

    def keys(now: float) -> None:
        for _ in range(batches):
            for i in flows:
                symmetric_key(views[i], len(headers[i]), sizes[i])

    def inbounds(now: float) -> None:
        for b in range(batches):
            t = now + b * 1e-4
            for i in flows:
                inbound(views[i], 0, sizes[i], gwlb, appliance, ports[i], port, t)

    starts = [0] * FLOWS

    def round_trips(now: float) -> None:  # as the driver does it: a batch in, then what came out of the tunnel
        for b in range(batches):
            t = now + b * 1e-4
            for i in flows:
                inbound(views[i], 0, sizes[i], gwlb, appliance, ports[i], port, t)
            for i in flows:
                flow = outbound(tunnel, slots[i], t, headroom, headroom + INNER)
                # (type: ignore below) slots are memoryviews of one buffer, as the driver's
                starts[i] = reference_core.put_return_header(flow, slots[i], headroom, INNER, True)  # type: ignore[arg-type]

    inbounds(0.0)  # every flow known
    n = batches * FLOWS
    result = {name: round(_best(rounds, fn) / n * 1e6, 3)
              for name, fn in (("scan", scans), ("symmetric_key", keys), ("inbound", inbounds),
                               ("round_trip", round_trips))}
    result["outbound"] = round(result["round_trip"] - result["inbound"], 3)
    for i in flows:  # each return carries its own flow's header, right behind the outer IPv4 and UDP
        if bytes(slots[i][starts[i] + 28:headroom]) != headers[i]:
            raise RuntimeError(f"flow {i} returned with another header")
    if core.totals.drops:
        raise RuntimeError(f"the core dropped packets: {core.totals.drops}")
    result["packets"] = n * rounds
    return result


@register("reference-core", "the reference's Python hot path alone: µs per packet of each step, and a round trip")
def reference_core_benchmark(opts: argparse.Namespace) -> dict[str, Any]:
    r = measure(batches=200 if getattr(opts, "quick", False) else 2000)
    r["text"] = (f"reference core, per packet (64 B, {FLOWS} known flows): scan {r['scan']:.2f} µs, "
                 f"symmetric_key {r['symmetric_key']:.2f} µs, inbound {r['inbound']:.2f} µs, "
                 f"outbound + return header {r['outbound']:.2f} µs, round trip {r['round_trip']:.2f} µs")
    return r
