"""The reference appliance's datapath logic, with no I/O: packets and the time in, verdicts out.

The driver (:mod:`gwlbsim.reference.datapath`) feeds it:

* :meth:`ApplianceCore.inbound` for every GENEVE datagram received from GWLB. It validates the packet,
  finds or starts the endpoint's tunnel, remembers the flow's latest GENEVE header and outer addressing,
  and says where the inner packet goes (to the tunnel's ingress device now, into the tunnel's pending queue
  while the tunnel is being created, or nowhere: dropped with a reason).
* :meth:`ApplianceCore.outbound` for every packet the OS sends out of a tunnel device. It returns the
  complete outer IPv4/UDP/GENEVE packet to send back to GWLB, or None (dropped with a reason).
* :meth:`ApplianceCore.tick` about once a second: tunnels idle past ``-t`` are retired, expired flows swept.

The time is always passed in (``now``, seconds on any monotonic scale), never read here.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple, Protocol

from gwlbsim.wire import geneve
from gwlbsim.wire.eni import device_names, to_hex
from gwlbsim.wire.flowkey import InnerError, SymKey, symmetric_key
from gwlbsim.wire.outer import OuterTemplate, finish_ipv4_udp, finish_ipv4_udp_partial, pseudo_sum
from gwlbsim.wire.reasons import DropReason

#: Drop reasons the core adds to the codec's (``gwlbsim.wire.geneve.REASONS``).
NOT_TO_GENEVE_PORT = DropReason.NOT_GENEVE_PORT
OVERSIZE_INBOUND = DropReason.OVERSIZE_INBOUND
OVERSIZE_RETURN = DropReason.OVERSIZE_RETURN
NO_FLOW = DropReason.NO_FLOW  # the OS sent a packet of a flow never seen from GWLB: appliances may not originate flows
EXPIRED_FLOW = DropReason.EXPIRED_FLOW  # ... or of a flow idle for longer than the flow timeout
BAD_RETURN_PACKET = DropReason.BAD_RETURN_PACKET  # what the OS sent is not an IP packet with a flow
BAD_INNER_PACKET = InnerError.reason  # GWLB sent an inner packet whose flow cannot be told
FLOW_CACHE_FULL = DropReason.FLOW_CACHE_FULL  # a new flow while the cache is at its bound and nothing could expire
TUNNEL_PENDING_OVERFLOW = DropReason.TUNNEL_PENDING_OVERFLOW
TUNNEL_CREATE_FAILED = DropReason.TUNNEL_CREATE_FAILED
UNKNOWN_TUNNEL = DropReason.UNKNOWN_TUNNEL
CORE_REASONS = (NOT_TO_GENEVE_PORT, BAD_INNER_PACKET, OVERSIZE_INBOUND, OVERSIZE_RETURN, NO_FLOW, EXPIRED_FLOW,
                BAD_RETURN_PACKET,
                FLOW_CACHE_FULL, TUNNEL_PENDING_OVERFLOW, TUNNEL_CREATE_FAILED, UNKNOWN_TUNNEL)
ALL_REASONS = geneve.REASONS + CORE_REASONS

_TOTAL_LEN = struct.Struct("!H")
_ROUTES_LIMIT = 1 << 16
_RETURN_TTL = 64  # returns are atomic datagrams (DF, ID 0), as gwlb-xdp sends them: never fragmented


class TunnelState(Enum):
    CREATING = "creating"  #: devices and create hook in progress; packets wait in the pending queue
    READY = "ready"
    FAILED = "failed"  #: creation failed; the next packet retries
    RETIRED = "retired"  #: idle past -t, destroy in progress or done


@dataclass
class Config:
    flow_timeout: float = 350.0  #: -i: seconds without traffic after which a flow entry is dead
    tunnel_timeout: float = 0.0  #: -t: seconds without traffic after which a tunnel is torn down; 0 = never
    max_flows: int = 1_000_000  #: bound on flow-cache entries across all tunnels
    option_class: int = geneve.AWS_OPTION_CLASS
    mtu: int = geneve.GWLB_MTU  #: largest inner packet accepted from GWLB or returned to it
    pending_limit: int = 4096  #: packets held per tunnel while it is being created
    geneve_port: int = geneve.GENEVE_PORT
    udp_checksum: bool = True  #: compute the outer UDP checksum of returns (else send 0, as gwlbtun does)
    retry_interval: float = 1.0  #: after a failed tunnel creation, packets are dropped this long before a retry

    def __post_init__(self) -> None:
        if self.flow_timeout <= 0:
            raise ValueError(f"flow timeout must be positive, got {self.flow_timeout}")
        if self.tunnel_timeout < 0:
            raise ValueError(f"tunnel timeout must be 0 (never) or positive, got {self.tunnel_timeout}")
        if self.max_flows < 1:
            raise ValueError(f"flow cache bound must be at least 1, got {self.max_flows}")
        if not 68 <= self.mtu <= 65535 - geneve.GWLB_OVERHEAD:
            raise ValueError(f"MTU {self.mtu} out of range")


class Route:
    """The outer addressing of returns, shared by every flow whose packets came the same way."""

    __slots__ = ("addressing", "ip_sum", "outer", "pseudo_sum", "udp_sum")

    def __init__(self, src: str, sport: int, dst: str, dport: int) -> None:
        s_ip, d_ip = _addr(dst), _addr(src)  # return: addresses swapped, ports as received
        self.addressing = (src, sport, dst, dport)  #: (GWLB address, GWLB port, our address, our port)
        # the one outer builder: IPv4 (DF, ID 0, TTL 64) + UDP, with the ones' sums of the constant IPv4 header
        # and of the UDP pseudo-header constants + ports
        tpl = OuterTemplate(s_ip, d_ip, sport, dport, b"", ttl=_RETURN_TTL, df=True)
        self.outer, self.ip_sum, self.udp_sum = tpl.prefix, tpl.ip_sum, tpl.udp_sum
        self.pseudo_sum = pseudo_sum(s_ip, d_ip)  #: for checksum offload (put_return_header's ``partial``)


class ReturnFlow:
    """What is needed to send a packet of this flow back: its latest inbound GENEVE header and route."""

    __slots__ = ("header", "last_seen", "route", "udp_sum")

    def __init__(self, header: bytes, route: Route, udp_sum: int, last_seen: float) -> None:
        self.header = header  #: the GENEVE header of the flow's latest inbound packet, as received
        self.route = route
        self.udp_sum = udp_sum  #: ones' sum of the route's UDP constants + the header; -1: no UDP checksum
        self.last_seen = last_seen

    @property
    def addressing(self) -> tuple[str, int, str, int]:
        """(GWLB address, GWLB port, our address, our port) of the flow's latest inbound packet."""
        return self.route.addressing

    @property
    def dst(self) -> tuple[str, int]:
        """Where the return goes: the GWLB address and port the flow's latest packet came from."""
        a = self.route.addressing
        return a[0], a[1]

    @property
    def prefix(self) -> bytes:
        """Outer IPv4 + UDP + GENEVE header of returns, lengths and checksums zero."""
        return self.route.outer + self.header


@dataclass(slots=True)
class Counters:
    in_packets: int = 0
    in_bytes: int = 0
    out_packets: int = 0
    out_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


class DeviceHandle(Protocol):
    """What a driver keeps of a tunnel's devices (``gwlbsim.reference.lifecycle.TunHandle``); the core never uses it."""

    ingress_fd: int
    egress_fd: int
    queues: list[tuple[int, int]]


@dataclass(slots=True)
class Tunnel:
    """One GWLB endpoint (ENI id): its devices, its flows and its counters."""

    eni_id: int
    created_at: float
    last_seen: float
    state: TunnelState = TunnelState.CREATING
    flows: dict[SymKey, ReturnFlow] = field(default_factory=dict)
    pending: deque[bytes] = field(default_factory=deque)
    counters: Counters = field(default_factory=Counters)
    generation: int = 0  #: how many times this ENI's tunnel has been created
    failed_at: float = 0.0
    handle: DeviceHandle | None = None  #: the driver's own data (device file descriptors); never used here

    @property
    def ingress(self) -> str:
        return device_names(self.eni_id)[0]

    @property
    def egress(self) -> str:
        return device_names(self.eni_id)[1]

    @property
    def eni_hex(self) -> str:
        return to_hex(self.eni_id)


class Inbound(NamedTuple):
    """Verdict on an inbound datagram that was not dropped."""

    tunnel: Tunnel
    inner_start: int
    inner_end: int
    new_tunnel: bool  #: the driver must create this tunnel's devices and run the create hook
    queued: bool  #: the inner packet was copied to the tunnel's pending queue; nothing to write now


_inbound = tuple.__new__  # makes an Inbound without the generated __new__ (a third of the cost)
_CREATING, _FAILED = TunnelState.CREATING, TunnelState.FAILED


class TunnelTable:
    """The tunnels by ENI, and the one state machine every tunnel goes through (the core's and the
    supervisor's of a multi-process appliance)::

        (none) --need--> CREATING --ready--> READY --retire / idle--> RETIRED (out of the table)
                         CREATING --failed--> FAILED --need, retry_interval later--> CREATING (next generation)

    Each creation is a new generation of the ENI's tunnel. A retried tunnel keeps what the failed attempt
    learned (its flows and counters). Time is the caller's ``now``.
    """

    def __init__(self) -> None:
        self.by_eni: dict[int, Tunnel] = {}
        self._generations: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.by_eni)

    def get(self, eni_id: int) -> Tunnel | None:
        return self.by_eni.get(eni_id)

    def need(self, eni_id: int, now: float, retry_interval: float) -> tuple[Tunnel, bool] | None:
        """The tunnel a packet of ``eni_id`` goes to, and whether it was started now (its devices are to be
        made); None while a failed creation waits ``retry_interval`` before the next attempt."""
        t = self.by_eni.get(eni_id)
        if t is not None and t.state is not _FAILED:
            return t, False
        if t is not None and now - t.failed_at < retry_interval:
            return None
        return self._start(eni_id, now), True

    def _start(self, eni_id: int, now: float) -> Tunnel:
        gen = self._generations[eni_id] = self._generations.get(eni_id, 0) + 1
        old = self.by_eni.get(eni_id)
        tunnel = Tunnel(eni_id, now, now, generation=gen)
        if old is not None:  # a failed attempt: keep what it learned
            tunnel.flows = old.flows
            tunnel.counters = old.counters
        self.by_eni[eni_id] = tunnel
        return tunnel

    def ready(self, eni_id: int) -> Tunnel | None:
        """Creation of the ENI's tunnel succeeded: it is READY (None if it was not being created)."""
        t = self.by_eni.get(eni_id)
        if t is None or t.state is not _CREATING:
            return None
        t.state = TunnelState.READY
        return t

    def failed(self, eni_id: int, now: float) -> Tunnel | None:
        """Creation of the ENI's tunnel failed: it is FAILED until retried (None if it was not being created)."""
        t = self.by_eni.get(eni_id)
        if t is None or t.state is not _CREATING:
            return None
        t.state = _FAILED
        t.failed_at = now
        return t

    def retire(self, eni_id: int) -> Tunnel | None:
        """Out of the table now, RETIRED (its devices are to be destroyed). Returns it, if it was there."""
        t = self.by_eni.pop(eni_id, None)
        if t is not None:
            t.state = TunnelState.RETIRED
        return t

    def unused(self, now: float, timeout: float,
               last_use: Callable[[Tunnel], float] | None = None) -> list[tuple[Tunnel, float]]:
        """The READY tunnels unused for ``timeout`` seconds, each with its last use (``last_use``: by default its
        last packet); none when ``timeout`` is 0 (never)."""
        if timeout <= 0:
            return []
        out = []
        for t in self.by_eni.values():
            if t.state is TunnelState.READY:
                last = last_use(t) if last_use else t.last_seen
                if now - last >= timeout:
                    out.append((t, last))
        return out

    def idle(self, now: float, timeout: float) -> list[Tunnel]:
        """Retire the :meth:`unused` tunnels and return them. (A multi-process appliance's supervisor retires in
        two steps instead: see :mod:`gwlbsim.reference.supervisor`.)"""
        out = [t for t, _last in self.unused(now, timeout)]
        for t in out:
            self.retire(t.eni_id)
        return out

    def retire_all(self) -> list[Tunnel]:
        """Shutdown: every tunnel RETIRED; returns those that have (or are getting) devices to destroy."""
        out = [t for t in self.by_eni.values() if t.state is not _FAILED]
        for t in self.by_eni.values():
            t.state = TunnelState.RETIRED
        self.by_eni.clear()
        return out


class ApplianceCore:
    """The reference appliance's datapath logic, with no I/O: GENEVE in (:meth:`inbound`: validate, remember
    the flow's header and route, pick the endpoint's tunnel), packets out of a tunnel (:meth:`outbound`: the
    flow they belong to, or a counted drop), and the tunnels' lifecycle (:meth:`tick`, :meth:`retire`). Time is
    the caller's ``now``; every drop is counted with its reason in ``totals`` and the tunnel's counters."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.table = TunnelTable()
        self.tunnels = self.table.by_eni  #: the table's tunnels by ENI (read it; change it through the table)
        self.totals = Counters()
        self.flow_count = 0
        self.evictions = 0
        self._routes: dict[tuple[str, int, str, int], Route] = {}

    # ---------------------------------------------------------------------------------------------- inbound

    def inbound(self, buf: bytes | bytearray | memoryview, start: int, end: int, src: str, dst: str,
                sport: int, dport: int, now: float) -> Inbound | None:
        """A GENEVE datagram ``buf[start:end]`` arrived from ``src:sport`` at our ``dst:dport``."""
        totals = self.totals
        totals.in_packets += 1
        totals.in_bytes += end - start
        cfg = self.config
        if dport != cfg.geneve_port:
            self._drop(None, NOT_TO_GENEVE_PORT)
            return None
        try:
            header_len, inner_len, _protocol, eni_id, _attachment, _cookie = geneve.scan(buf, start, end,
                                                                                        cfg.option_class)
        except geneve.GeneveError as e:
            self._drop(None, e.reason)
            return None
        inner_start = start + header_len
        inner_end = inner_start + inner_len
        if inner_len > cfg.mtu:
            self._drop(None, OVERSIZE_INBOUND)
            return None
        try:
            key = symmetric_key(buf, inner_start, inner_end)
        except InnerError:
            self._drop(None, BAD_INNER_PACKET)
            return None

        tunnel = self.tunnels.get(eni_id)
        new_tunnel = False
        if tunnel is None or tunnel.state is _FAILED:
            started = self.table.need(eni_id, now, cfg.retry_interval)
            if started is None:
                self._drop(tunnel.counters if tunnel is not None else None, TUNNEL_CREATE_FAILED)
                return None
            tunnel, new_tunnel = started
        tunnel.last_seen = now
        c = tunnel.counters
        c.in_packets += 1
        c.in_bytes += inner_len

        flows = tunnel.flows
        flow = flows.get(key)
        if flow is not None and flow.route.addressing == (src, sport, dst, dport) \
                and flow.header == buf[start:start + header_len]:
            if flow.last_seen != now:  # dict order is least recently refreshed first
                del flows[key]
                flows[key] = flow
                flow.last_seen = now
        else:
            self._remember(tunnel, key, buf, start, header_len, src, dst, sport, dport, now)

        if tunnel.state is _CREATING:
            if len(tunnel.pending) >= cfg.pending_limit:
                self._drop(c, TUNNEL_PENDING_OVERFLOW)
                return None
            tunnel.pending.append(bytes(buf[inner_start:inner_end]))
            return _inbound(Inbound, (tunnel, inner_start, inner_end, new_tunnel, True))
        return _inbound(Inbound, (tunnel, inner_start, inner_end, new_tunnel, False))

    def _remember(self, tunnel: Tunnel, key: SymKey, buf: bytes | bytearray | memoryview, start: int,
                  header_len: int, src: str, dst: str, sport: int, dport: int, now: float) -> None:
        """Store the flow's return template from this, its latest inbound packet: a new flow, or a known one
        whose header or addressing changed (:meth:`inbound` refreshes an unchanged one itself)."""
        flows = tunnel.flows
        flow = flows.get(key)
        if flow is None:
            if self.flow_count >= self.config.max_flows and not self._make_room(now):
                self._drop(tunnel.counters, FLOW_CACHE_FULL)
                return
            self.flow_count += 1
        else:  # a new header or addressing for a known flow: rebuilt below, moved to the end
            del flows[key]
        route = self._route(src, sport, dst, dport)
        header = bytes(buf[start:start + header_len])
        udp_sum = route.udp_sum + _sum16(header) if self.config.udp_checksum else -1
        flows[key] = ReturnFlow(header, route, udp_sum, now)

    def adopt(self, tunnel: Tunnel, pkt: bytes | bytearray | memoryview, start: int, end: int, header: bytes,
              addressing: tuple[str, int, str, int], seen: float) -> None:
        """Another datapath (the kernel's fast path) carried the latest inbound packet of ``pkt[start:end]``'s
        flow, with ``header`` from ``addressing`` (GWLB's address and port, ours) at ``seen``: this core's copy
        becomes that, so a return it sends carries the flow's newest header."""
        try:
            key = symmetric_key(pkt, start, end)
        except InnerError:
            return
        flow = tunnel.flows.get(key)
        if flow is not None and flow.header == header and flow.route.addressing == addressing:
            flow.last_seen = max(flow.last_seen, seen)
            return
        src, sport, dst, dport = addressing
        self._remember(tunnel, key, header, 0, len(header), src, dst, sport, dport, seen)

    def _route(self, src: str, sport: int, dst: str, dport: int) -> Route:
        """The shared route for this addressing (made once; the table is emptied when it grows large)."""
        addressing = (src, sport, dst, dport)
        route = self._routes.get(addressing)
        if route is None:
            if len(self._routes) >= _ROUTES_LIMIT:
                self._routes.clear()
            route = self._routes[addressing] = Route(src, sport, dst, dport)
        return route

    def _make_room(self, now: float) -> bool:
        """Free one entry when the cache is full: an expired one if any, else the least recently used."""
        self.sweep(now, budget=1024)
        if self.flow_count < self.config.max_flows:
            return True
        oldest: tuple[float, Tunnel, SymKey] | None = None
        for t in self.tunnels.values():
            if t.flows:
                k = next(iter(t.flows))
                seen = t.flows[k].last_seen
                if oldest is None or seen < oldest[0]:
                    oldest = (seen, t, k)
        if oldest is None:
            return False
        del oldest[1].flows[oldest[2]]
        self.flow_count -= 1
        self.evictions += 1
        return True

    # ------------------------------------------------------------------------------------- tunnel lifecycle

    def _drop(self, counters: Counters | None, reason: str, n: int = 1) -> None:
        """Count a drop: in the totals, and on the tunnel's counters when it has one (every drop comes here)."""
        if counters is not None:
            counters.drop(reason, n)
        self.totals.drop(reason, n)

    def tunnel_ready(self, eni_id: int, now: float) -> list[bytes]:
        """The driver created the devices and the hook ran: returns the queued inner packets to write."""
        t = self.table.ready(eni_id)
        if t is None:
            return []
        out = list(t.pending)
        t.pending.clear()
        return out

    def tunnel_failed(self, eni_id: int, now: float) -> None:
        """Creation failed: the queued packets are dropped and counted; the next packet retries."""
        t = self.table.failed(eni_id, now)
        if t is None:
            return
        n = len(t.pending)
        t.pending.clear()
        if n:
            self._drop(t.counters, TUNNEL_CREATE_FAILED, n)

    def tick(self, now: float) -> list[Tunnel]:
        """Periodic work. Returns the tunnels retired for idleness: the driver destroys them."""
        retired = self.table.idle(now, self.config.tunnel_timeout)
        for t in retired:
            self.flow_count -= len(t.flows)
            t.flows.clear()
        self.sweep(now)
        return retired

    def retire(self, eni_id: int) -> Tunnel | None:
        """Retire one tunnel now (its flows go with it), as decided elsewhere. Returns it, if it existed."""
        t = self.table.retire(eni_id)
        if t is not None:
            self.flow_count -= len(t.flows)
            t.flows.clear()
        return t

    def retire_all(self) -> list[Tunnel]:
        """Shutdown: every tunnel that has devices, to be destroyed."""
        out = self.table.retire_all()
        self.flow_count = 0
        return out

    def sweep(self, now: float, budget: int = 20_000) -> int:
        """Remove up to ``budget`` expired flow entries (oldest first in each tunnel). Returns how many."""
        timeout = self.config.flow_timeout
        removed = 0
        for t in self.tunnels.values():
            flows = t.flows
            while flows and removed < budget:
                k = next(iter(flows))
                if now - flows[k].last_seen <= timeout:
                    break
                del flows[k]
                removed += 1
        self.flow_count -= removed
        return removed

    # --------------------------------------------------------------------------------------------- outbound

    def outbound(self, tunnel: Tunnel, pkt: bytes | bytearray | memoryview, now: float, start: int = 0,
                 end: int | None = None) -> ReturnFlow | None:
        """The OS sent ``pkt[start:end]`` out of one of ``tunnel``'s devices. Returns its flow, or None if
        dropped.

        The return API is one function: :func:`put_return_header` writes the outer IPv4/UDP and the flow's
        GENEVE header in front of the packet, in place (the datapath reads packets behind room for it);
        :meth:`encapsulate` is the same into a new buffer.
        """
        c = tunnel.counters
        if end is None:
            end = len(pkt)
        n = end - start
        if n > self.config.mtu:
            self._drop(c, OVERSIZE_RETURN)
            return None
        try:
            key = symmetric_key(pkt, start, end)
        except InnerError:
            self._drop(c, BAD_RETURN_PACKET)
            return None
        # the IP header's own length must fit what the OS handed over, or GWLB drops the return
        version = pkt[start] >> 4
        if (version == 4 and _TOTAL_LEN.unpack_from(pkt, start + 2)[0] > n) or \
                (version == 6 and 40 + _TOTAL_LEN.unpack_from(pkt, start + 4)[0] > n):
            self._drop(c, BAD_RETURN_PACKET)
            return None
        flows = tunnel.flows
        flow = flows.get(key)
        if flow is None:
            self._drop(c, NO_FLOW)
            return None
        if now - flow.last_seen > self.config.flow_timeout:
            del flows[key]
            self.flow_count -= 1
            self._drop(c, EXPIRED_FLOW)
            return None
        if flow.last_seen != now:  # re-inserted last: dict order stays least recently used first (sweeps, eviction)
            del flows[key]
            flows[key] = flow
            flow.last_seen = now
        tunnel.last_seen = now
        c.out_packets += 1
        c.out_bytes += n
        self.totals.out_packets += 1
        self.totals.out_bytes += n
        return flow

    def encapsulate(self, flow: ReturnFlow, pkt: bytes | bytearray | memoryview) -> bytes:
        """The complete outer packet returning ``pkt`` to GWLB with the flow's header (a copy; see
        :func:`put_return_header`)."""
        n = len(pkt)
        at = 28 + len(flow.header)
        buf = bytearray(at + n + 1)
        buf[at:at + n] = pkt
        start = put_return_header(flow, buf, at, n)
        return bytes(buf[start:at + n])


def put_return_header(flow: ReturnFlow, buf: bytearray | memoryview, at: int, n: int, partial: bool = False) -> int:
    """Write the outer header for returning the ``n``-byte packet at ``buf[at:at + n]`` right in front of it.

    Returns where the outer packet starts (``at`` minus the header length). For an odd ``n`` with UDP
    checksums on, ``buf[at + n]`` is set to zero (the checksum's padding), so it must exist. With
    ``partial`` (and UDP checksums on), the UDP checksum is left for the device to finish
    (:func:`gwlbsim.wire.outer.finish_ipv4_udp_partial`).
    """
    route = flow.route
    header = flow.header
    start = at - 28 - len(header)
    total = at - start + n
    buf[start:start + 28] = route.outer
    buf[start + 28:at] = header
    udp_sum = flow.udp_sum
    if partial and udp_sum >= 0:
        finish_ipv4_udp_partial(buf, start, total, route.ip_sum, route.pseudo_sum)
        return start
    if udp_sum >= 0:
        if n & 1:
            buf[at + n] = 0
            n += 1
        udp_sum += int.from_bytes(buf[at:at + n], "big")
    finish_ipv4_udp(buf, start, total, route.ip_sum, udp_sum)
    return start


def _sum16(data: bytes) -> int:
    """Ones' sum (mod 0xFFFF) of an even-length byte string."""
    return int.from_bytes(data, "big") % 0xFFFF


_ADDR_CACHE: dict[str, bytes] = {}


def _addr(text: str) -> bytes:
    b = _ADDR_CACHE.get(text)
    if b is None:
        import socket

        b = socket.inet_aton(text)
        if len(_ADDR_CACHE) < 4096:
            _ADDR_CACHE[text] = b
    return b
