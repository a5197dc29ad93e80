"""A reference model of what a GWLB appliance core must do, to check ``gwlbsim.reference.core.ApplianceCore`` against.

It keeps, per endpoint (ENI id), the latest GENEVE header and outer addressing of every flow it saw from
GWLB, and answers: must the core accept this inbound datagram (and queue it, while the endpoint's tunnel is
being created)? must a packet the OS sends out of a tunnel be returned, and with which header, to where?

The model is deliberately naive (dicts, no caching, no bounds): the rules are GWLB's (a return carries the
latest header of its flow; flows never seen from GWLB through that endpoint, or idle past the flow timeout,
are never returned) and gwlbtun's (tunnels idle past ``-t`` are torn down; packets wait while a tunnel is
created; a failed creation is retried after an interval). It does not model the flow-cache bound (keep
``max_flows`` above the number of flows used).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import InnerError, SymKey, symmetric_key

CREATING, READY, FAILED = "creating", "ready", "failed"


def ip_length_consistent(pkt: bytes) -> bool:
    """An IPv4/IPv6 packet whose length field matches its size (what an OS writes to a tunnel device).

    Returns of such packets carry them whole; a packet with bytes beyond its length field is returned too, and
    GWLB reads only the packet its header describes.
    """
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        return (pkt[0] & 0x0F) >= 5 and int.from_bytes(pkt[2:4], "big") == len(pkt) >= (pkt[0] & 0x0F) * 4
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return 40 + int.from_bytes(pkt[4:6], "big") == len(pkt)
    return False


def claims_more_than_present(pkt: bytes) -> bool:
    """The IP header's own length field counts more bytes than the packet has."""
    if pkt[0] >> 4 == 4:
        return int.from_bytes(pkt[2:4], "big") > len(pkt)
    if pkt[0] >> 4 == 6:
        return 40 + int.from_bytes(pkt[4:6], "big") > len(pkt)
    return False


@dataclass
class ModelFlow:
    header: bytes  #: the GENEVE header of the flow's latest inbound packet
    gwlb: tuple[str, int]  #: where it came from (address, port): where returns go
    local: tuple[str, int]  #: where it arrived (our address, port)
    last_seen: float


@dataclass
class ModelTunnel:
    state: str
    last_seen: float
    failed_at: float = 0.0
    flows: dict[SymKey, ModelFlow] = field(default_factory=dict)
    pending: list[bytes] = field(default_factory=list)


class InboundExpectation(NamedTuple):
    eni_id: int
    inner: bytes
    new_tunnel: bool
    queued: bool


class ApplianceModel:
    """Feed it what the core is fed; compare what it expects with what the core does."""

    def __init__(self, *, flow_timeout: float = 350.0, tunnel_timeout: float = 0.0, retry_interval: float = 1.0,
                 pending_limit: int = 4096, mtu: int = geneve.GWLB_MTU, option_class: int = geneve.AWS_OPTION_CLASS,
                 geneve_port: int = geneve.GENEVE_PORT) -> None:
        self.flow_timeout = flow_timeout
        self.tunnel_timeout = tunnel_timeout
        self.retry_interval = retry_interval
        self.pending_limit = pending_limit
        self.mtu = mtu
        self.option_class = option_class
        self.geneve_port = geneve_port
        self.tunnels: dict[int, ModelTunnel] = {}
        self.drops: Counter[str] = Counter()

    # ---------------------------------------------------------------------------------------------- inbound

    def inbound(self, payload: bytes, src: str, dst: str, sport: int, dport: int,
                now: float) -> InboundExpectation | None:
        """The verdict a correct core gives on a datagram from GWLB (None: dropped, reason in ``drops``)."""
        if dport != self.geneve_port:
            self.drops["not_geneve_port"] += 1
            return None
        try:
            s = geneve.scan(payload, option_class=self.option_class)
        except geneve.GeneveError as e:
            self.drops[e.reason] += 1
            return None
        if s.inner_len > self.mtu:
            self.drops["oversize_inbound"] += 1
            return None
        inner = payload[s.header_len:s.header_len + s.inner_len]
        try:
            key = symmetric_key(inner)
        except InnerError:
            self.drops["bad_inner_packet"] += 1
            return None
        t = self.tunnels.get(s.eni_id)
        new = t is None or t.state == FAILED
        if t is not None and t.state == FAILED and now - t.failed_at < self.retry_interval:
            self.drops["tunnel_create_failed"] += 1
            return None
        if t is None:
            t = self.tunnels[s.eni_id] = ModelTunnel(CREATING, now)
        elif t.state == FAILED:
            t.state, t.pending = CREATING, []
        t.last_seen = now
        t.flows[key] = ModelFlow(payload[:s.header_len], (src, sport), (dst, dport), now)
        if t.state == CREATING:
            if len(t.pending) >= self.pending_limit:
                self.drops["tunnel_pending_overflow"] += 1
                return None
            t.pending.append(inner)
            return InboundExpectation(s.eni_id, inner, new, True)
        return InboundExpectation(s.eni_id, inner, new, False)

    # ------------------------------------------------------------------------------------ tunnel lifecycle

    def tunnel_ready(self, eni_id: int, now: float) -> list[bytes]:
        t = self.tunnels.get(eni_id)
        if t is None or t.state != CREATING:
            return []
        t.state = READY
        out, t.pending = t.pending, []
        return out

    def tunnel_failed(self, eni_id: int, now: float) -> None:
        t = self.tunnels.get(eni_id)
        if t is None or t.state != CREATING:
            return
        t.state, t.failed_at = FAILED, now
        if t.pending:
            self.drops["tunnel_create_failed"] += len(t.pending)
        t.pending = []

    def tick(self, now: float) -> list[int]:
        """Endpoints whose tunnels are retired now (idle past the tunnel timeout)."""
        gone = []
        if self.tunnel_timeout > 0:
            for eni, t in list(self.tunnels.items()):
                if t.state == READY and now - t.last_seen >= self.tunnel_timeout:
                    del self.tunnels[eni]
                    gone.append(eni)
        return gone

    # --------------------------------------------------------------------------------------------- outbound

    def outbound(self, eni_id: int, pkt: bytes, now: float) -> ModelFlow | None:
        """The flow a packet the OS sent out of ``eni_id``'s tunnel must be returned with, or None."""
        t = self.tunnels[eni_id]
        if len(pkt) > self.mtu:
            self.drops["oversize_return"] += 1
            return None
        try:
            key = symmetric_key(pkt)
        except InnerError:
            self.drops["bad_return_packet"] += 1
            return None
        if claims_more_than_present(pkt):  # GWLB would drop the return (truncated_inner)
            self.drops["bad_return_packet"] += 1
            return None
        f = t.flows.get(key)
        if f is None:
            self.drops["no_flow"] += 1
            return None
        if now - f.last_seen > self.flow_timeout:
            del t.flows[key]
            self.drops["expired_flow"] += 1
            return None
        f.last_seen = now
        t.last_seen = now
        return f

    def drops_match(self, core_drops: dict[str, int]) -> list[str]:
        """Reasons whose counts differ from a core's (empty: all agree).

        "no_flow" and "expired_flow" are compared as a sum: an expired entry may be swept before a return
        asks for it, and which of the two a core reports then depends on when it sweeps.
        """
        def merged(d: dict[str, int]) -> dict[str, int]:
            out = {k: v for k, v in d.items() if v and k not in ("no_flow", "expired_flow")}
            out["no_or_expired_flow"] = d.get("no_flow", 0) + d.get("expired_flow", 0)
            return out

        mine, theirs = merged(dict(self.drops)), merged(core_drops)
        return sorted(k for k in mine if mine[k] != theirs.get(k, 0))

    def knows(self, eni_id: int, pkt: bytes) -> bool:
        """The flow of ``pkt`` was seen from GWLB through ``eni_id`` (expired or not)."""
        t = self.tunnels.get(eni_id)
        try:
            return t is not None and symmetric_key(pkt) in t.flows
        except InnerError:
            return False
