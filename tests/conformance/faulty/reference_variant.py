"""The reference appliance with one deliberate bug, for proving the conformance suite.

Usage: reference_variant.py FAULT [reference flags ...]

Faults (each a bug real gwlbtun-style handlers have had):
  never-503         health always answers 200, whatever is broken
  leaves-devices    tunnel teardown runs the destroy hook but leaves the TUN devices behind
  mixes-endpoints   one flow table for all endpoints: overlapping addresses share flows across ENIs
  stale-cookie      a flow's header is learnt once and never refreshed (gwlbtun before PR #15)
  black-holes       a tunnel device deleted under it is not noticed: its packets vanish, health stays 200
  loses-after-recreate  once an endpoint's tunnel was re-created, nothing out of it is returned any more
  returns-unseen    a packet of a flow it never received goes back with the tunnel's latest header
  header-per-endpoint  returns carry the endpoint's latest header, not their own flow's (right only while
                    one packet is in flight at a time)
  one-way-flows     flows are keyed by direction: right while every packet comes from GWLB, but a reply the
                    appliance itself originates (NAT, local termination) finds no flow and is dropped
"""

from __future__ import annotations

import sys

import gwlbsim.reference.core as core
import gwlbsim.reference.datapath as datapath
import gwlbsim.reference.lifecycle as lifecycle
from gwlbsim.reference.cli import main as reference_main

from gwlbsim.wire.flowkey import flow_of


def never_503() -> None:
    datapath.ReferenceAppliance.unhealthy_reasons = lambda self: []  # type: ignore[method-assign]


def leaves_devices() -> None:
    original = lifecycle.Lifecycle._destroy

    def destroy(self: lifecycle.Lifecycle, t: core.Tunnel) -> None:
        leaked = self._devices.get((t.eni_id, t.generation))
        if leaked is not None:
            # hide the devices from the real destroy: it runs the hook but closes nothing
            self._devices.pop((t.eni_id, t.generation))
            _LEAKED.append(leaked)
        original(self, t)

    lifecycle.Lifecycle._destroy = destroy  # type: ignore[method-assign]


_LEAKED: list[object] = []


def mixes_endpoints() -> None:
    shared: dict[object, object] = {}
    original = core.TunnelTable._start

    def start(self: core.TunnelTable, eni_id: int, now: float) -> core.Tunnel:
        t = original(self, eni_id, now)
        t.flows = shared  # type: ignore[assignment]
        return t

    core.TunnelTable._start = start  # type: ignore[method-assign]


def stale_cookie() -> None:
    original = core.ApplianceCore._remember

    def remember(self: core.ApplianceCore, tunnel: core.Tunnel, key: object, *args: object) -> None:
        if key in tunnel.flows:
            tunnel.flows[key].last_seen = args[-1]  # type: ignore[attr-defined, index]
            return
        original(self, tunnel, key, *args)  # type: ignore[arg-type]

    core.ApplianceCore._remember = remember  # type: ignore[method-assign]


def black_holes() -> None:
    datapath.ReferenceAppliance._tunnel_gone = lambda self, t: None  # type: ignore[method-assign]


def header_per_endpoint() -> None:
    latest: dict[int, core.ReturnFlow] = {}
    remember, outbound = core.ApplianceCore._remember, core.ApplianceCore.outbound

    def remember_latest(self: core.ApplianceCore, tunnel: core.Tunnel, key: object, *args: object) -> None:
        remember(self, tunnel, key, *args)  # type: ignore[arg-type]
        flow = tunnel.flows.get(key)  # type: ignore[call-overload]
        if flow is not None:
            latest[tunnel.eni_id] = flow

    def outbound_latest(self: core.ApplianceCore, tunnel: core.Tunnel, *args: object, **kw: object) -> object:
        flow = outbound(self, tunnel, *args, **kw)  # type: ignore[arg-type]
        return None if flow is None else latest.get(tunnel.eni_id, flow)

    core.ApplianceCore._remember = remember_latest  # type: ignore[method-assign]
    core.ApplianceCore.outbound = outbound_latest  # type: ignore[method-assign, assignment]


def returns_unseen() -> None:
    outbound = core.ApplianceCore.outbound

    def outbound_any(self: core.ApplianceCore, tunnel: core.Tunnel, *args: object, **kw: object) -> object:
        flow = outbound(self, tunnel, *args, **kw)  # type: ignore[arg-type]
        if flow is None and tunnel.flows:
            return next(reversed(tunnel.flows.values()))
        return flow

    core.ApplianceCore.outbound = outbound_any  # type: ignore[method-assign, assignment]


def loses_after_recreate() -> None:
    on_tun = datapath.ReferenceAppliance._on_tun

    def lose(self: datapath.ReferenceAppliance, t: core.Tunnel, fd: int, now: float) -> None:
        if t.generation > 1:
            try:
                while datapath.os.read(fd, 65536):
                    pass
            except OSError:
                pass
            return
        on_tun(self, t, fd, now)

    datapath.ReferenceAppliance._on_tun = lose  # type: ignore[method-assign]


def one_way_flows() -> None:
    def directional(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> object:
        return flow_of(buf, start, len(buf) if end is None else end)[0]

    core.symmetric_key = directional  # type: ignore[assignment]


FAULTS = {"never-503": never_503, "leaves-devices": leaves_devices, "mixes-endpoints": mixes_endpoints,
          "stale-cookie": stale_cookie, "black-holes": black_holes, "header-per-endpoint": header_per_endpoint,
          "returns-unseen": returns_unseen, "loses-after-recreate": loses_after_recreate,
          "one-way-flows": one_way_flows}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    FAULTS[sys.argv[1]]()
    sys.exit(reference_main(sys.argv[2:]))
