"""The reference appliance's status document and health reasons, as pure functions.

The health port serves one JSON document (schema ``gwlbsim.reference.status/1``, described in the README) for
a single-process appliance and for a supervisor of several datapath workers alike; whether the appliance is
healthy is whether ``reasons`` is empty. Everything here takes values and returns values (no clock, no I/O):
the drivers (:mod:`gwlbsim.reference.datapath`, :mod:`gwlbsim.reference.supervisor`) gather the inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from gwlbsim.reference.core import Tunnel

from gwlbsim import __version__

SCHEMA = "gwlbsim.reference.status/1"
#: the counters of the status document's ``totals`` (``drops``: reason -> count)
TOTALS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "flows", "flow_evictions", "drops", "tunnels_rebuilt",
          "returned_via_link", "returned_via_ip")
#: the per-tunnel counters that add up over workers
TUNNEL_SUMS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "flows", "pending")
STALL_AFTER = 3.0  #: a loop that has not turned for this long makes the appliance unhealthy


class ConfigView(Protocol):
    """What the document shows of the core's configuration."""

    flow_timeout: float
    tunnel_timeout: float
    max_flows: int
    mtu: int


class HookCounts(Protocol):
    create_ok: int
    create_failed: int
    destroy_ok: int
    destroy_failed: int


def tunnel_counters(t: Tunnel) -> dict[str, Any]:
    """A tunnel's counters as the status document shows them."""
    c = t.counters
    return {"packets_in": c.in_packets, "bytes_in": c.in_bytes, "packets_out": c.out_packets,
            "bytes_out": c.out_bytes, "flows": len(t.flows), "pending": len(t.pending), "drops": dict(c.drops)}


def tunnel_entry(t: Tunnel, now: float, last_use: float, counters: Mapping[str, Any],
                 device_drops: Mapping[str, int]) -> dict[str, Any]:
    """One entry of the document's ``tunnels``. ``device_drops``: what each device of the namespace dropped on
    the way in, by name (:func:`gwlbsim.linuxio.devstats.receive_drops`)."""
    return {"eni_id": t.eni_hex, "ingress": t.ingress, "egress": t.egress, "state": t.state.value,
            "generation": t.generation, "age_seconds": round(now - t.created_at, 3),
            "idle_seconds": round(now - last_use, 3), **counters,
            "ingress_rx_dropped": device_drops.get(t.ingress, 0)}


def ingress_rx_dropped(retired: int, tunnels: Iterable[Mapping[str, Any]]) -> int:
    """The totals' ``ingress_rx_dropped``: what the kernel dropped on the way into the gwi- of the tunnels
    retired before (counted as they went) and of those in the document."""
    return retired + sum(t.get("ingress_rx_dropped", 0) for t in tunnels)


def add_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    """Add reason -> count ``more`` into ``into``."""
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def sum_totals(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``totals`` of several datapaths added up (``drops`` by reason)."""
    totals: dict[str, Any] = {k: {} if k == "drops" else 0 for k in TOTALS}
    for part in parts:
        for k, v in part.items():
            if k == "drops":
                add_counts(totals["drops"], v)
            else:
                totals[k] += v
    return totals


def sum_tunnel_counters(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One tunnel's counters over several datapaths added up."""
    parts = list(parts)
    drops: dict[str, int] = {}
    for p in parts:
        add_counts(drops, p["drops"])
    return {**{k: sum(p[k] for p in parts) for k in TUNNEL_SUMS}, "drops": drops}


def loop_reasons(loop: str, stopping: bool, now: float, heartbeat: float) -> list[str]:
    """Why a loop (``"datapath"``, ``"supervisor"``) makes the appliance unhealthy: stopping, or stalled."""
    reasons = []
    if stopping:
        reasons.append("shutting down")
    if now - heartbeat > STALL_AFTER:
        reasons.append(f"{loop} loop stalled for {now - heartbeat:.1f} s")
    return reasons


def lifecycle_reasons(*, alive: bool, stopping: bool, busy_since: float | None, now: float, hook_timeout: float,
                      last_create_error: str) -> list[str]:
    """Why tunnel management makes the appliance unhealthy: its thread is gone, a job is stuck past the hook
    timeout, or the last tunnel creation failed (until one succeeds)."""
    reasons = []
    if not alive and not stopping:
        reasons.append("tunnel lifecycle worker is not running")
    if busy_since is not None and now - busy_since > hook_timeout + 5:
        reasons.append("tunnel creation or destruction stuck")
    if last_create_error:
        reasons.append(f"last tunnel creation failed: {last_create_error}")
    return reasons


def worker_reasons(k: int, *, exited: bool, replacing: bool, heartbeat: float | None, spawned_at: float,
                   now: float) -> list[str]:
    """Why datapath worker ``k`` makes the appliance unhealthy: it exited, never reported, or stalled."""
    if exited:
        return [f"datapath worker {k} exited" + (", being replaced" if replacing else "")]
    if heartbeat is None:
        return [f"datapath worker {k} never reported"] if now - spawned_at > STALL_AFTER else []
    if now - heartbeat > STALL_AFTER:
        return [f"datapath worker {k} stalled for {now - heartbeat:.1f} s"]
    return []


def status_document(config: ConfigView, uptime: float, reasons: list[str], hooks: HookCounts,
                    totals: dict[str, Any], tunnels: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    """The health port's JSON document (schema ``gwlbsim.reference.status/1``, described in the README)."""
    return {
        "schema": SCHEMA,
        "version": __version__,
        "healthy": not reasons,
        "reasons": reasons,
        "uptime_seconds": round(uptime, 3),
        "config": {"flow_timeout": config.flow_timeout, "tunnel_timeout": config.tunnel_timeout,
                   "max_flows": config.max_flows, "mtu": config.mtu},
        "totals": totals,
        "hooks": {"create_ok": hooks.create_ok, "create_failed": hooks.create_failed,
                  "destroy_ok": hooks.destroy_ok, "destroy_failed": hooks.destroy_failed},
        "tunnels": tunnels,
        **more,
    }
