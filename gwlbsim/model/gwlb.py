"""The fake GWLB's behaviour, with no I/O: packets, probe results and the time in; actions out.

Events:

* :meth:`GwlbModel.from_endpoint`: a packet entered through a GWLB endpoint (either direction of a flow).
  Returns :class:`ToTarget` (encapsulate and send to an appliance), :class:`ToEndpoint` (e.g. a TCP reset back
  to the sender), or nothing (dropped and counted).
* :meth:`GwlbModel.from_target`: a GENEVE datagram arrived from an appliance. Validated against the flow
  table; returns :class:`ToEndpoint` (deliver the inner packet on the consumer side) or nothing.
* :meth:`GwlbModel.due_probes` / :meth:`GwlbModel.probe_result`: health checks the driver runs, and what
  they found.
* :meth:`GwlbModel.register_target` / :meth:`GwlbModel.deregister_target`, :meth:`GwlbModel.tick`.

Every drop is counted by reason in :attr:`GwlbModel.metrics` (and per target where a target is known).
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from gwlbsim.config import FIVE_TUPLE, REBALANCE, THREE_TUPLE, GwlbConfig
from gwlbsim.model.metrics import Metrics
from gwlbsim.model.targets import (
    DRAINING,
    HEALTHY,
    INITIAL,
    UNHEALTHY,
    UNUSED,
    Checker,
    Target,
    checker_verdict,
    consensus,
)
from gwlbsim.model.tcpreset import reset_for
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import (
    IPPROTO_TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    FiveTuple,
    InnerError,
    flow_of,
    tcp_flags,
)
from gwlbsim.wire.reasons import DropReason

# Drop reasons (besides the codec's, for returns).
UNKNOWN_ENDPOINT = DropReason.UNKNOWN_ENDPOINT
BAD_INNER = InnerError.reason
OVERSIZE = DropReason.OVERSIZE
TCP_NO_FLOW = DropReason.TCP_NON_SYN_WITHOUT_FLOW
NO_TARGET = DropReason.NO_TARGET
FAIL_OPEN_DROP = DropReason.FAIL_OPEN_DROP
TARGET_DEREGISTERED = DropReason.TARGET_DEREGISTERED
NOT_TO_NODE = DropReason.NOT_TO_GWLB_NODE
UNKNOWN_SOURCE = DropReason.UNKNOWN_SOURCE
UNKNOWN_COOKIE = DropReason.UNKNOWN_COOKIE
STALE_COOKIE = DropReason.STALE_COOKIE
WRONG_TARGET = DropReason.WRONG_TARGET
ATTACHMENT_MISMATCH = DropReason.ATTACHMENT_MISMATCH
TUPLE_MISMATCH = DropReason.TUPLE_MISMATCH
PORT_MISMATCH = DropReason.SOURCE_PORT_MISMATCH
RESET_SENT = DropReason.RESET_SENT
MODEL_REASONS = (UNKNOWN_ENDPOINT, BAD_INNER, OVERSIZE, TCP_NO_FLOW, NO_TARGET, FAIL_OPEN_DROP, TARGET_DEREGISTERED,
                 NOT_TO_NODE, UNKNOWN_SOURCE, UNKNOWN_COOKIE, STALE_COOKIE, WRONG_TARGET, ATTACHMENT_MISMATCH,
                 TUPLE_MISMATCH, PORT_MISMATCH, RESET_SENT)

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a stable, well-spread hash of an int (Python's hash() is not stable for str)."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


@dataclass
class Endpoint:
    """A GWLB endpoint (the consumer VPC's entry point): its ENI id, attachment id and zone."""

    eni_id: int
    zone: str
    attachment_id: int = 0


@dataclass(frozen=True)
class Encapsulation:
    """How encapsulated packets look. The defaults are what real GWLB sends; the rest are test knobs that
    find brittle appliance parsers (extra options, other orders, reserved bits set, a VNI)."""

    extra_options: tuple[geneve.GeneveOption, ...] = ()
    extras_first: bool = False  #: put the extra options before the GWLB ones
    gwlb_order: tuple[int, int, int] = (geneve.OPT_ENI_ID, geneve.OPT_ATTACHMENT_ID, geneve.OPT_FLOW_COOKIE)
    vni: int = 0
    reserved_flags: int = 0
    reserved: int = 0

    def header(self, eni_id: int, attachment_id: int, cookie: int, inner_version: int, option_class: int) -> bytes:
        raw, off = self.template(eni_id, attachment_id, inner_version, option_class)
        return raw[:off] + cookie.to_bytes(4, "big") + raw[off + 4:]

    def template(self, eni_id: int, attachment_id: int, inner_version: int, option_class: int) -> tuple[bytes, int]:
        """The header with a zero cookie, and the offset of the cookie's 4 bytes in it."""
        opts = {o.type: o for o in geneve.gwlb_options(eni_id, attachment_id, 0, option_class)}
        gwlb = tuple(opts[t] for t in self.gwlb_order)
        options = self.extra_options + gwlb if self.extras_first else gwlb + self.extra_options
        hdr = geneve.GeneveHeader(
            protocol=geneve.ETH_P_IP if inner_version == 4 else geneve.ETH_P_IPV6, vni=self.vni, options=options,
            critical=any(o.critical for o in options), reserved_flags=self.reserved_flags, reserved=self.reserved)
        raw = hdr.to_bytes()
        at = next(i for i, o in enumerate(options) if o is opts[geneve.OPT_FLOW_COOKIE])
        offsets = [offset for offset, *_ in geneve.iter_options(raw, 0, len(raw))]
        return raw, offsets[at] + geneve.OPTION_HEADER_LEN


class Flow:
    """One entry of the flow table: the same entry for both directions of a flow."""

    __slots__ = ("closing_at", "cookie", "created", "endpoint", "fin_hi", "fin_lo", "headers", "key", "last_seen",
                 "node", "reset_pending", "sport", "target", "tcp", "tuple")

    def __init__(self, key: tuple[object, ...], endpoint: Endpoint, target: Target, cookie: int, sport: int,
                 node: str, now: float, tcp: bool, tuple_: FiveTuple) -> None:
        self.key = key
        self.endpoint = endpoint
        self.target = target
        self.cookie = cookie
        self.sport = sport
        self.node = node
        self.created = now
        self.last_seen = now
        self.tcp = tcp
        self.tuple = tuple_  #: the tuple of the packet that created the flow (its "client" direction)
        self.fin_lo = False
        self.fin_hi = False
        self.closing_at: float | None = None
        self.reset_pending = False
        self.headers: dict[int, bytes] = {}  #: GENEVE header by inner IP version


class ToTarget(NamedTuple):
    """Encapsulate ``inner`` behind ``header`` and send it from ``node``:``sport`` to ``target``:6081."""

    target: Target
    node: str
    sport: int
    header: bytes
    inner: bytes
    flow: Flow


class ToEndpoint(NamedTuple):
    """Deliver ``inner`` on the consumer side of endpoint ``eni_id``."""

    eni_id: int
    inner: bytes


class Reset(NamedTuple):
    """GWLB answers the packet with a TCP reset instead of forwarding it (counted as a drop for ``reason``)."""

    reason: str
    target: Target | None = None


class Dropped(NamedTuple):
    """GWLB drops the packet (counted in ``metrics`` under ``reason``; ``target`` when one was chosen), and
    sends ``answer`` instead, if anything (a TCP reset)."""

    reason: str
    target: Target | None = None
    answer: tuple[ToEndpoint, ...] = ()


#: what :meth:`GwlbModel.route` decides for a packet: the flow to forward it on, a reset, or a drop
Verdict = Flow | Reset | Dropped


class ProbeRequest(NamedTuple):
    target: Target
    checker: int


Action = ToTarget | ToEndpoint


@dataclass
class Event:
    at: float
    text: str


class GwlbModel:
    """The fake GWLB's decisions, with no I/O and an injected clock: endpoints and targets, the flow table
    (stickiness, cookies, idle timeouts), health checks' outcomes and failover. :meth:`from_endpoint` and
    :meth:`from_target` return the actions to take (``ToTarget``, ``ToEndpoint``); drops are counted in
    ``metrics``. ``gwlbsim.live.balancer.LiveGwlb`` runs it on real sockets, ``gwlbsim.simulate`` in virtual time."""

    def __init__(self, config: GwlbConfig | None = None, zones: dict[str, str] | None = None,
                 encapsulation: Encapsulation | None = None, rng: random.Random | None = None) -> None:
        self.config = config or GwlbConfig()
        self.sim = self.config.simulator
        self.zones: dict[str, str] = dict(zones or {"a": "10.100.1.1"})  # zone -> GWLB node address
        self.node_addresses = frozenset(self.zones.values())
        self._headers: dict[tuple[int, int, int], tuple[bytes, int]] = {}
        self._encap = encapsulation or Encapsulation()
        self.rng = rng or random.Random(self.sim.seed)
        self.endpoints: dict[int, Endpoint] = {}
        self.targets: dict[str, Target] = {}
        self._by_address: dict[str, Target] = {}
        self.flows: dict[tuple[object, ...], Flow] = {}
        self.by_cookie: dict[tuple[int, int], Flow] = {}
        self._retired_cookies: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._expiry: list[tuple[float, int, Flow]] = []
        self._seq = 0
        self._routable: dict[str | None, list[Target]] = {}  # zone (None: all) -> healthy targets, cached
        self._probes: list[tuple[float, int, Target, int]] = []  # (due, seq, target, checker), not in flight
        self._timed: set[Target] = set()  # targets with a timer of their own: draining, or rebalance pending
        self.metrics = Metrics()
        self.events: list[Event] = []
        self._stickiness = self.config.stickiness
        self._tcp_timeout = self.config.idle_timeout(tcp=True)
        self._other_timeout = self.config.idle_timeout(tcp=False)

    # ------------------------------------------------------------------------------------------- topology

    def add_endpoint(self, eni_id: int, zone: str | None = None, attachment_id: int = 0) -> Endpoint:
        zone = zone or next(iter(self.zones))
        if zone not in self.zones:
            raise ValueError(f"endpoint zone {zone!r} is not one of the GWLB's zones {sorted(self.zones)}")
        ep = Endpoint(eni_id, zone, attachment_id)
        self.endpoints[eni_id] = ep
        return ep

    def register_target(self, target_id: str, address: str, zone: str | None = None, now: float = 0.0) -> Target:
        zone = zone or next(iter(self.zones))
        if zone not in self.zones:
            raise ValueError(f"target zone {zone!r} is not one of the GWLB's zones {sorted(self.zones)}")
        if target_id in self.targets and self.targets[target_id].state != UNUSED:
            raise ValueError(f"target {target_id} is already registered")
        hc = self.config.health_check
        n = self.sim.health_checkers
        t = Target(target_id, address, zone, len(self.targets), now,
                   checkers=[Checker(next_probe=now + i * hc.interval / n) for i in range(n)])
        self.targets[target_id] = t
        for i, c in enumerate(t.checkers):
            self._push_probe(t, i, c.next_probe)
        self._by_address[address] = t
        self._log(now, f"target {target_id} ({address}, zone {zone}) registered: {INITIAL}")
        if self.sim.route_to_initial:
            self._routable.clear()
        return t

    def assume_healthy(self, target_id: str, now: float) -> None:
        """Take a target out of health checking and treat it as healthy (an appliance with no health check:
        AWS always checks, the simulator can do without)."""
        t = self.targets[target_id]
        t.checkers = []
        self._probes = [p for p in self._probes if p[2] is not t]
        heapq.heapify(self._probes)
        if t.state != HEALTHY:
            self._set_state(t, HEALTHY, now)

    def deregister_target(self, target_id: str, now: float) -> None:
        t = self.targets[target_id]
        if t.state in (DRAINING, UNUSED):
            return
        t.state = DRAINING
        t.deregistered_at = now
        self._timed.add(t)
        self._routable.clear()
        self._log(now, f"target {target_id} deregistered: draining for {self.config.deregistration_delay:g} s")

    def _log(self, now: float, text: str) -> None:
        self.events.append(Event(now, text))
        if len(self.events) > 10_000:
            del self.events[:1000]

    # ------------------------------------------------------------------------------------ consumer -> target

    def from_endpoint(self, eni_id: int, inner: bytes, now: float) -> list[Action]:
        """A packet from the consumer side of endpoint ``eni_id``: what to send (nothing if dropped)."""
        v = self.decide_from_endpoint(eni_id, inner, now)
        return list(v.answer) if isinstance(v, Dropped) else v

    def decide_from_endpoint(self, eni_id: int, inner: bytes, now: float) -> list[Action] | Dropped:
        """:meth:`from_endpoint`, with a drop returned as the :class:`Dropped` it was counted as."""
        n = len(inner)
        ep = self.endpoints.get(eni_id)
        if ep is None:
            return self._dropped(UNKNOWN_ENDPOINT)
        if n > self.sim.mtu and self.sim.oversize == "drop":
            return self._dropped(OVERSIZE)
        try:
            ft, l4 = flow_of(inner, 0, n)
        except InnerError:
            return self._dropped(BAD_INNER)
        flags = tcp_flags(inner, l4, n) if ft.proto == IPPROTO_TCP else 0
        flow = self.route(ep, ft, flags, now, n)
        if isinstance(flow, Dropped):
            return flow
        if isinstance(flow, Reset):  # answer the packet that triggered it
            rst = reset_for(inner)
            return Dropped(flow.reason, flow.target, (ToEndpoint(eni_id, rst),) if rst is not None else ())
        return [ToTarget(flow.target, flow.node, flow.sport, self._header(flow, inner[0] >> 4), inner, flow)]

    def route(self, ep: Endpoint, ft: FiveTuple, flags: int, now: float, size: int = 0) -> Verdict:
        """GWLB's decision for a packet of flow ``ft`` (TCP ``flags``) entering through ``ep``.

        Returns the flow to forward it on, :class:`Reset` when GWLB answers with a TCP reset instead, or
        :class:`Dropped` with the reason it was counted under. :meth:`from_endpoint` is this plus parsing and
        encapsulation; the virtual-time mode's flow level calls it directly.
        """
        m = self.metrics
        key = self._key(ep.eni_id, ft)
        flow = self.flows.get(key)
        if flow is not None and (now >= flow.last_seen + (self._tcp_timeout if flow.tcp else self._other_timeout)
                                 or (flow.closing_at is not None and self._dead(flow, now))):
            self._remove(flow, now)
            flow = None
        if flow is not None and flow.closing_at is not None and flags & TCP_SYN and not flags & TCP_ACK:
            self._remove(flow, now)  # a closed connection's 5-tuple reused: a new flow, a new cookie
            flow = None
        if flow is not None and flow.reset_pending:
            return self._reset(flow, flags)
        if flow is None:
            if ft.proto == IPPROTO_TCP and not (flags & TCP_SYN and not flags & TCP_ACK):
                dropped = self._dropped(TCP_NO_FLOW)
                if self.config.rst_on_idle_timeout and not flags & TCP_RST:
                    m.resets += 1
                    return Reset(TCP_NO_FLOW)
                return dropped
            new = self._new_flow(key, ep, ft, now)
            if isinstance(new, Dropped):
                return new
            flow = new
        target = flow.target
        if target.state == UNHEALTHY and self.config.rst_on_unhealthy and ft.proto == IPPROTO_TCP \
                and target.unhealthy_since is not None \
                and now >= target.unhealthy_since + self.config.deregistration_delay:
            return self._reset(flow, flags)
        if target.state == UNUSED:
            return self._dropped(TARGET_DEREGISTERED, target)
        flow.last_seen = now
        if ft.proto == IPPROTO_TCP:
            self._track_tcp(flow, ft, flags, now)
        m.processed(size)
        return flow

    def flow_key(self, eni_id: int, inner: bytes) -> tuple[object, ...]:
        """The flow-table key of a packet through endpoint ``eni_id`` (raises InnerError for non-IP)."""
        return self._key(eni_id, flow_of(inner)[0])

    def _key(self, eni_id: int, ft: FiveTuple) -> tuple[object, ...]:
        mode = self._stickiness
        if mode == FIVE_TUPLE:
            return (eni_id, *ft.symmetric())
        lo, hi = (ft.src, ft.dst) if ft.src <= ft.dst else (ft.dst, ft.src)
        return (eni_id, ft.proto, lo, hi) if mode == THREE_TUPLE else (eni_id, lo, hi)

    @property
    def encap(self) -> Encapsulation:
        return self._encap

    @encap.setter
    def encap(self, value: Encapsulation) -> None:
        self._encap = value
        self._headers.clear()  # templates are per encapsulation; flows keep the headers they were given

    def _header(self, flow: Flow, version: int) -> bytes:
        h = flow.headers.get(version)
        if h is None:
            ep = flow.endpoint
            tkey = (ep.eni_id, ep.attachment_id, version)
            tpl = self._headers.get(tkey)
            if tpl is None:
                tpl = self.encap.template(ep.eni_id, ep.attachment_id, version, self.sim.option_class)
                if len(self._headers) > 10_000:
                    self._headers.clear()
                self._headers[tkey] = tpl
            raw, off = tpl
            h = raw[:off] + flow.cookie.to_bytes(4, "big") + raw[off + 4:]
            flow.headers[version] = h
        return h

    def _new_flow(self, key: tuple[object, ...], ep: Endpoint, ft: FiveTuple, now: float) -> Flow | Dropped:
        m = self.metrics
        h = _mix(hash(key[1:]) & _MASK64)
        healthy = self._routable_in(ep.zone)
        if healthy:
            target = healthy[h % len(healthy)]
        else:
            # fail open: no healthy target -> a random one for the life of the flow
            candidates = [t for t in self.targets.values() if t.state in (UNHEALTHY, INITIAL)
                          and (self.config.cross_zone or t.zone == ep.zone)]
            if not candidates:
                return self._dropped(NO_TARGET)
            if self.sim.fail_open == "drop":
                return self._dropped(FAIL_OPEN_DROP)
            m.fail_open_flows += 1
            target = self.rng.choice(candidates)
        cookie = self._cookie(ep.eni_id)
        span = self.sim.source_port_max - self.sim.source_port_min + 1
        sport = self.sim.source_port_min + (_mix(h ^ 0x5BD1E995) % span)
        flow = Flow(key, ep, target, cookie, sport, self.zones[ep.zone], now, ft.proto == IPPROTO_TCP, ft)
        self.flows[key] = flow
        self.by_cookie[(ep.eni_id, cookie)] = flow
        target.flows += 1
        target.assigned += 1
        m.new_flows += 1
        self._schedule(flow)
        return flow

    def _cookie(self, eni_id: int) -> int:
        while True:
            c = self.rng.getrandbits(32)
            if c and (eni_id, c) not in self.by_cookie and (eni_id, c) not in self._retired_cookies:
                return c

    def _routable_in(self, zone: str) -> list[Target]:
        k = None if self.config.cross_zone else zone
        lst = self._routable.get(k)
        if lst is None:
            ok = (HEALTHY, INITIAL) if self.sim.route_to_initial else (HEALTHY,)
            lst = sorted((t for t in self.targets.values()
                          if t.state in ok and (k is None or t.zone == k)), key=lambda t: t.index)
            self._routable[k] = lst
        return lst

    def _track_tcp(self, flow: Flow, ft: FiveTuple, flags: int, now: float) -> None:
        if flow.closing_at is not None:
            return
        if flags & TCP_RST:
            flow.closing_at = now
        elif flags & TCP_FIN:
            if (ft.src, ft.sport) <= (ft.dst, ft.dport):
                flow.fin_lo = True
            else:
                flow.fin_hi = True
            if flow.fin_lo and flow.fin_hi:
                flow.closing_at = now
        if flow.closing_at is not None:
            self._schedule(flow)  # its deadline moved earlier

    def _dropped(self, reason: str, target: Target | None = None) -> Dropped:
        """Every drop of the model is counted here, and returned as the value it is."""
        self.metrics.drop(reason)
        if target is not None:
            target.drop(reason)
        return Dropped(reason, target)

    def _reset(self, flow: Flow, flags: int) -> Reset | Dropped:
        """The packet gets a TCP reset instead of being forwarded; the flow is forgotten."""
        self._remove(flow, 0.0)
        dropped = self._dropped(RESET_SENT, flow.target)
        if flags & TCP_RST:
            return dropped  # a reset is not answered with a reset
        self.metrics.resets += 1
        return Reset(RESET_SENT, flow.target)

    # -------------------------------------------------------------------------------------- flow lifetime

    def _timeout(self, flow: Flow) -> float:
        return self._tcp_timeout if flow.tcp else self._other_timeout

    def _deadline(self, flow: Flow) -> float:
        if flow.closing_at is not None:
            return min(flow.closing_at + self.sim.tcp_close_linger_seconds, flow.last_seen + self._timeout(flow))
        return flow.last_seen + self._timeout(flow)

    def _dead(self, flow: Flow, now: float) -> bool:
        return now >= self._deadline(flow)

    def _schedule(self, flow: Flow) -> None:
        self._seq += 1
        heapq.heappush(self._expiry, (self._deadline(flow), self._seq, flow))

    def _remove(self, flow: Flow, now: float) -> None:
        if self.flows.get(flow.key) is not flow:
            return
        del self.flows[flow.key]
        ck = (flow.endpoint.eni_id, flow.cookie)
        self.by_cookie.pop(ck, None)
        self._retired_cookies[ck] = None
        if len(self._retired_cookies) > 100_000:
            self._retired_cookies.popitem(last=False)
        flow.target.flows -= 1

    def expire(self, now: float) -> int:
        """Remove flows idle past their timeout (or closed and lingered). Returns how many."""
        heap = self._expiry
        removed = 0
        while heap and heap[0][0] <= now:
            _, _, flow = heapq.heappop(heap)
            if self.flows.get(flow.key) is not flow:
                continue
            if self._dead(flow, now):
                self._remove(flow, now)
                removed += 1
            else:
                self._schedule(flow)
        return removed

    # ------------------------------------------------------------------------------------ target -> consumer

    def from_target(self, src: str, sport: int, dst: str, dport: int, payload: bytes | memoryview,
                    now: float) -> list[Action]:
        """A datagram from a target to GWLB: what to deliver to the consumer side (nothing if dropped)."""
        v = self.decide_from_target(src, sport, dst, dport, payload, now)
        return [] if isinstance(v, Dropped) else v

    def decide_from_target(self, src: str, sport: int, dst: str, dport: int, payload: bytes | memoryview,
                           now: float) -> list[Action] | Dropped:
        """:meth:`from_target`, with a drop returned as the :class:`Dropped` it was counted as."""
        target = self._by_address.get(src)
        if dst not in self.node_addresses or dport != geneve.GENEVE_PORT:
            return self._dropped(NOT_TO_NODE, target)
        if target is None:
            return self._dropped(UNKNOWN_SOURCE)
        try:
            s = geneve.scan(payload, 0, len(payload), self.sim.option_class)
        except geneve.GeneveError as e:
            return self._dropped(e.reason, target)
        ck = (s.eni_id, s.cookie)
        flow = self.by_cookie.get(ck)
        if flow is not None and self._dead(flow, now):
            self._remove(flow, now)
            flow = None
        if flow is None:
            reason = STALE_COOKIE if ck in self._retired_cookies else \
                UNKNOWN_COOKIE if s.eni_id in self.endpoints else UNKNOWN_ENDPOINT
            return self._dropped(reason, target)
        if flow.target is not target:
            return self._dropped(WRONG_TARGET, target)
        if s.attachment_id != flow.endpoint.attachment_id:
            return self._dropped(ATTACHMENT_MISMATCH, target)
        if sport != flow.sport and self.sim.return_port_check == "drop":
            return self._dropped(PORT_MISMATCH, target)
        start = s.header_len
        end = start + s.inner_len
        if s.inner_len > self.sim.mtu and self.sim.oversize == "drop":
            return self._dropped(OVERSIZE, target)
        inner = bytes(payload[start:end])
        try:
            ft, l4 = flow_of(inner, 0, len(inner))
        except InnerError:
            return self._dropped(BAD_INNER, target)
        if self.sim.return_validation == "strict" and self._key(s.eni_id, ft) != flow.key:
            return self._dropped(TUPLE_MISMATCH, target)
        self.accept_return(flow, ft, tcp_flags(inner, l4, len(inner)) if ft.proto == IPPROTO_TCP else 0,
                           len(inner), now)
        return [ToEndpoint(s.eni_id, inner)]

    def accept_return(self, flow: Flow, ft: FiveTuple, flags: int, size: int, now: float) -> None:
        """A valid return of ``flow`` came back from its target: what GWLB updates before delivering it."""
        flow.last_seen = now
        if ft.proto == IPPROTO_TCP:
            self._track_tcp(flow, ft, flags, now)
        self.metrics.processed(size)
        self.metrics.returned += 1

    # ------------------------------------------------------------------------------------------- health

    def _push_probe(self, t: Target, checker: int, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._probes, (due, self._seq, t, checker))

    def due_probes(self, now: float) -> list[ProbeRequest]:
        """Health probes to run now. Report each result with :meth:`probe_result`."""
        out = []
        interval = self.config.health_check.interval
        heap = self._probes
        while heap and heap[0][0] <= now:
            _, _, t, i = heapq.heappop(heap)
            if t.state == UNUSED:
                continue
            c = t.checkers[i]
            c.in_flight = True
            c.next_probe = max(c.next_probe + interval, now)
            out.append(ProbeRequest(t, i))
        return out

    def probe_ok(self, status: int | None, connected: bool) -> bool:
        """Whether a probe outcome counts as a success under the configured protocol and matcher."""
        if self.config.health_check.protocol == "TCP":
            return connected
        return status is not None and status in self.config.health_check.codes

    def probe_result(self, target_id: str, checker: int, ok: bool, now: float, detail: str = "") -> None:
        t = self.targets.get(target_id)
        if t is None or t.state == UNUSED or checker >= len(t.checkers):
            return
        c = t.checkers[checker]
        if c.in_flight:
            c.in_flight = False
            self._push_probe(t, checker, c.next_probe)
        c.probes += 1
        c.last_detail = detail
        checker_verdict(c, self.config.health_check, ok)
        if t.state == DRAINING:
            return
        verdict = consensus(t.checkers, self.sim.health_consensus)
        if verdict is True and t.state != HEALTHY:
            self._set_state(t, HEALTHY, now)
        elif verdict is False and t.state != UNHEALTHY:
            self._set_state(t, UNHEALTHY, now)

    def _set_state(self, t: Target, state: str, now: float) -> None:
        self._log(now, f"target {t.id}: {t.state} -> {state}")
        t.state = state
        t.unhealthy_since = now if state == UNHEALTHY else None
        t.rebalanced_unhealthy = False
        self._routable.clear()
        if state == UNHEALTHY and self.config.failover_on_unhealthy == REBALANCE:
            self._timed.add(t)

    def tick(self, now: float) -> None:
        """Timers: flow expiry, end of deregistration delays, rebalancing away from unhealthy targets."""
        self.expire(now)
        for t in list(self._timed):
            if t.state == DRAINING and t.deregistered_at is not None:
                if now >= t.deregistered_at + self.config.deregistration_delay:
                    self._timed.discard(t)
                    self._finish_draining(t, now)
            elif t.state == UNHEALTHY and not t.rebalanced_unhealthy and t.unhealthy_since is not None:
                if now >= t.unhealthy_since + self.sim.rebalance_propagation_seconds:
                    t.rebalanced_unhealthy = True
                    self._timed.discard(t)
                    self._move_flows(t, now)
            else:
                self._timed.discard(t)

    def _finish_draining(self, t: Target, now: float) -> None:
        t.state = UNUSED
        self._routable.clear()
        self._by_address.pop(t.address, None)
        self._log(now, f"target {t.id}: draining done, unused")
        flows = [f for f in self.flows.values() if f.target is t]
        if self.config.failover_on_deregistration == REBALANCE:
            self._move_flows(t, now, flows)
        elif self.config.rst_on_deregistration:
            for f in flows:
                if f.tcp:
                    f.reset_pending = True
                else:
                    self._remove(f, now)
        else:
            for f in flows:
                self._remove(f, now)

    def _move_flows(self, t: Target, now: float, flows: Iterable[Flow] | None = None) -> None:
        """``rebalance``: rehash the target's flows onto healthy targets (they keep their cookies)."""
        moved = 0
        for f in list(flows if flows is not None else (f for f in self.flows.values() if f.target is t)):
            healthy = self._routable_in(f.endpoint.zone)
            if not healthy:
                continue
            new = healthy[_mix(hash(f.key[1:]) & _MASK64) % len(healthy)]
            if new is t:
                continue
            t.flows -= 1
            new.flows += 1
            f.target = new
            moved += 1
        self.metrics.rebalanced_flows += moved
        if moved:
            self._log(now, f"rebalance: {moved} flow(s) moved off target {t.id}")

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` or :meth:`due_probes` has something to do."""
        times = []
        if self._probes:
            times.append(self._probes[0][0])
        if self._expiry:
            times.append(self._expiry[0][0])
        for t in self._timed:
            if t.state == DRAINING and t.deregistered_at is not None:
                times.append(t.deregistered_at + self.config.deregistration_delay)
            elif t.unhealthy_since is not None:
                times.append(t.unhealthy_since + self.sim.rebalance_propagation_seconds)
        return min(times) if times else None

    # ------------------------------------------------------------------------------------------ reading

    def healthy_count(self) -> int:
        return sum(1 for t in self.targets.values() if t.state == HEALTHY)

    def unhealthy_count(self) -> int:
        return sum(1 for t in self.targets.values() if t.state == UNHEALTHY)

    def cloudwatch(self) -> dict[str, int]:
        """Metrics under CloudWatch's names (AWS/GatewayELB), plus drops by reason."""
        m = self.metrics
        out = {"ActiveFlowCount": len(self.flows), "NewFlowCount": m.new_flows, "ProcessedBytes": m.bytes,
               "ProcessedPackets": m.packets, "HealthyHostCount": self.healthy_count(),
               "UnHealthyHostCount": self.unhealthy_count(), "TCP_ELB_Reset_Count": m.resets}
        out.update({f"Dropped.{k}": v for k, v in sorted(m.drops.items())})
        return out
