"""The kernel fast path as the datapath drives it (``--datapath kernel|python|auto``).

The BPF programs (:mod:`gwlbsim.reference.kernelpath`) carry the common case; the Python datapath owns
everything else and tells the kernel what it needs: which tunnels are ready (after their create hook), the
next hop toward each GWLB node (from the link path's neighbour resolution), flows it learnt itself (so the
kernel's copy of their header is never stale), and when flows expire. It reads back the tunnels' last-seen
times (so a tunnel whose traffic all takes the fast path is not idle) and the counters.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from typing import Any

from gwlbsim.reference.core import ApplianceCore, Tunnel
from gwlbsim.reference.kernelpath import COUNTERS, NONE_CARRIED, Carried, KernelPath, Link, Unavailable

from gwlbsim.linuxio import linkpath

log = logging.getLogger("gwlb-reference.fastpath")

DATAPATHS = ("auto", "kernel", "python")
#: how often flows idle past the flow timeout are taken out of the kernel's map (at most)
EXPIRE_EVERY = 1.0
#: how often the addresses GENEVE is received on are looked up again
OWN_EVERY = 1.0
#: the last part of a tunnel's idle time (``-t``; at most half of it) in which its traffic is the Python
#: datapath's alone (the kernel's copy of the tunnel is closed): the decision to retire it is then made where its
#: packets are handled, never while the kernel is carrying one into it, and what the kernel carried into it
#: before has long come out when its devices go
CLOSE_LEAD = 2.0


def uplinks() -> dict[str, int]:
    """The devices GENEVE may arrive on: every device of this namespace but loopback and tunnel devices."""
    return {name: idx for idx, name in socket.if_nameindex()
            if name != "lo" and not name.startswith(("gwi-", "gwo-"))}


class FastPath:
    """The loaded kernel path, attached to the uplinks and to each ready tunnel's devices."""

    def __init__(self, kernel: KernelPath, flow_timeout: float, listen: str = "0.0.0.0") -> None:
        """``listen``: the address the Python datapath's socket is bound to (all of them: 0.0.0.0)."""
        self.kernel = kernel
        self.flow_timeout = flow_timeout
        self.listen = listen
        self._own: set[str] = set()  # the addresses GENEVE is received on, as the kernel has them
        self._next_own = 0.0
        self.uplinks = uplinks()
        if not self.uplinks:
            raise Unavailable("no network device to attach the GENEVE program to")
        for name, idx in self.uplinks.items():
            kernel.attach_path(idx, True, name)
        self._tunnels: dict[int, tuple[int, int, list[Link]]] = {}  # ENI -> (gwi, gwo, links)
        self._closed: set[int] = set()  # tunnels (ENIs) whose traffic is the Python datapath's until used again
        self._carried: dict[int, Carried] = {}  # by ENI: what the kernel carried before the tunnel was closed
        self._nexthops: dict[str, tuple[int, bytes, bytes]] = {}
        self._next_expiry = 0.0
        self.python_tunnels = 0  #: tunnels kept on the Python datapath (tc egress rules on their devices)
        self.flows = 0  #: flows in the kernel's map at its last expiry sweep
        self._refresh_own(time.monotonic())

    @classmethod
    def start(cls, choice: str, option_class: int, udp_checksum: bool, flow_timeout: float,
              max_flows: int = 1_000_000, listen: str = "0.0.0.0") -> tuple[FastPath | None, str]:
        """The fast path for ``--datapath choice``, and what the status says about it. ``kernel`` raises
        :class:`Unavailable` when it cannot run; ``auto`` falls back to the Python datapath and says why."""
        if choice == "python":
            return None, "--datapath python"
        kernel = None
        try:
            kernel = KernelPath(option_class, udp_checksum, max_flows)
            return cls(kernel, flow_timeout, listen), "GWLB's own layout with IPv4 or IPv6 inside takes the kernel path"
        except (Unavailable, OSError) as e:
            if kernel is not None:
                kernel.close()
            if choice == "kernel":
                raise Unavailable(str(e)) from None
            log.warning("kernel fast path unavailable (%s): the Python datapath carries everything", e)
            return None, f"kernel path unavailable: {e}"

    def tunnel_ready(self, t: Tunnel) -> None:
        """``t``'s devices exist and its create hook ran: its traffic may take the fast path, unless the hook
        put classic tc egress rules on them (a clsact qdisc): the programs run before those and would bypass
        them, so that tunnel stays on the Python datapath."""
        blocked = [dev for dev in (t.ingress, t.egress) if _has_clsact(dev)]
        if blocked:
            log.info("tunnel %s stays on the Python datapath: tc egress rules on %s", t.ingress, ", ".join(blocked))
            self.python_tunnels += 1
            return
        try:
            gwi, gwo = socket.if_nametoindex(t.ingress), socket.if_nametoindex(t.egress)
            links = [self.kernel.attach_path(gwi, False, t.ingress), self.kernel.attach_path(gwo, False, t.egress)]
            self.kernel.tunnel_ready(t.eni_id, gwi, gwo)
        except OSError as e:
            log.warning("tunnel %s stays on the Python datapath: %s", t.ingress, e)
            return
        self._tunnels[t.eni_id] = (gwi, gwo, links)

    def tunnel_gone(self, t: Tunnel) -> None:
        """``t`` is being destroyed: the kernel stops using it first."""
        entry = self._tunnels.pop(t.eni_id, None)
        if entry is None:
            return
        gwi, gwo, links = entry
        self._closed.discard(t.eni_id)
        self._carried.pop(t.eni_id, None)
        self.kernel.tunnel_gone(t.eni_id, gwi, gwo)
        for link in links:
            link.close()
            self.kernel.links.remove(link)

    def learned(self, eni_id: int, pkt: bytes | bytearray | memoryview, start: int, end: int) -> None:
        """The Python datapath handled a packet from GWLB: the kernel must not keep an older header of its flow."""
        if eni_id in self._tunnels:
            self.kernel.forget_flow(eni_id, pkt, start, end)

    def adopt(self, core: ApplianceCore, t: Tunnel, pkt: bytes | bytearray | memoryview, start: int, end: int,
              now: float) -> None:
        """A packet out of ``t`` the kernel left to the Python datapath (no next hop yet, say): if the kernel
        saw its flow, the kernel's header is the newest (the Python datapath takes its copy out whenever it
        learns a flow itself), so the core adopts it before returning the packet."""
        if t.eni_id not in self._tunnels:
            return
        got = self.kernel.flow(t.eni_id, pkt, start, end)
        if got is not None:
            header, addressing, seen = got
            core.adopt(t, pkt, start, end, header, addressing, now - (time.monotonic() - seen))

    def tick(self, now: float, core: ApplianceCore, routes: dict[str, linkpath.LinkRoute | None] | None) -> None:
        kernel = self.kernel
        for gwlb, route in list((routes or {}).items()):
            if route is None:  # not resolved (yet): the kernel leaves that GWLB address's returns to Python
                continue
            hop = (int.from_bytes(route.address[4:8], "little"), route.frame[6:12], route.frame[0:6])
            if self._nexthops.get(gwlb) != hop:
                kernel.set_nexthop(gwlb, *hop)
                self._nexthops[gwlb] = hop
        mono = time.monotonic()
        if mono >= self._next_own:
            self._refresh_own(mono)
        timeout = core.config.tunnel_timeout
        lead = min(CLOSE_LEAD, timeout / 2)
        for eni_id, (gwi, gwo, _links) in self._tunnels.items():
            t = core.tunnels.get(eni_id)
            if t is None:
                continue
            if eni_id in self._closed:
                if now - t.last_seen < timeout - lead:  # used again (through the Python datapath)
                    try:
                        kernel.open_tunnel(eni_id, gwi, gwo)
                        self._closed.discard(eni_id)
                        log.debug("tunnel %s in use again: the kernel path carries it", t.ingress)
                    except OSError as e:  # the Python datapath goes on carrying it: tried again next tick
                        log.warning("cannot open tunnel %s in the kernel again: %s", t.ingress, e)
                continue
            state = kernel.tunnel_state(eni_id)
            if state is None:
                continue
            self._saw(t, state[0], now, mono)
            if timeout and now - t.last_seen >= timeout - lead:
                self._close(t, now, mono, timeout - lead)
        if mono >= self._next_expiry:
            self._next_expiry = mono + max(EXPIRE_EVERY, self.flow_timeout / 4)
            self.flows = kernel.expire_flows(mono - self.flow_timeout)

    @staticmethod
    def _saw(t: Tunnel, seen: float | None, now: float, mono: float) -> None:
        """The kernel last carried a packet into ``t`` at ``seen`` (CLOCK_MONOTONIC seconds; None: never)."""
        if seen is not None:
            t.last_seen = max(t.last_seen, now - (mono - seen))

    def _close(self, t: Tunnel, now: float, mono: float, idle: float) -> None:
        """``t`` has been idle for ``idle`` seconds, near its deadline: its traffic is the Python datapath's from
        now on (until it is used again), and it is retired no sooner than it would be had it been idle for
        only that long now."""
        state = self.kernel.close_tunnel(t.eni_id)
        self._closed.add(t.eni_id)
        log.debug("tunnel %s idle for %.1f s: the Python datapath carries it until it is used again", t.ingress,
                  now - t.last_seen)
        if state is None:
            return
        seen, counts = state
        self._saw(t, seen, now, mono)  # a packet may have come in since the look before
        self._carried[t.eni_id] = _plus(self._carried.get(t.eni_id, NONE_CARRIED), counts)
        t.last_seen = max(t.last_seen, now - idle)

    def _refresh_own(self, mono: float) -> None:
        """Tell the kernel which addresses GENEVE is received on (those of this namespace, or the one listened
        on), at most once every :data:`OWN_EVERY` seconds: datagrams to others are the stack's to forward or
        refuse, and flows learnt from an address that went away are dropped."""
        self._next_own = mono + OWN_EVERY
        try:
            wanted = {self.listen} if self.listen not in ("", "0.0.0.0") else linkpath.local_addresses()
            added, gone = wanted - self._own, self._own - wanted
            if added or gone:
                self.kernel.own_addresses(added, gone)
                self._own = wanted
        except Exception as e:  # netlink trouble, a full map: the next look starts again from what was known
            log.warning("cannot bring the kernel path's addresses up to date (%s): trying again in %g s", e,
                        OWN_EVERY)

    def carried(self, eni_id: int) -> Carried | None:
        """What the kernel carried for a tunnel (inner packets and bytes), also before it was last closed."""
        if eni_id not in self._tunnels:
            return None
        state = self.kernel.tunnel_state(eni_id)  # None while closed
        return _plus(self._carried.get(eni_id, NONE_CARRIED), state[1] if state is not None else NONE_CARRIED)

    def status(self) -> dict[str, Any]:
        c = self.kernel.counters()
        return {**c, "flows": self.flows, "tunnels": len(self._tunnels), "tunnels_closed": len(self._closed),
                "tunnels_kept_on_python": self.python_tunnels,
                "uplinks": sorted(self.uplinks), "next_hops": len(self._nexthops)}

    def close(self) -> None:
        self.kernel.close()


def _plus(a: Carried, b: Carried) -> Carried:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _has_clsact(dev: str) -> bool:
    """Whether ``dev`` has a clsact qdisc (classic tc egress filters may be attached to it)."""
    try:
        out = subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.startswith("qdisc clsact") for line in out.splitlines())


__all__ = ["COUNTERS", "DATAPATHS", "FastPath", "Unavailable"]
