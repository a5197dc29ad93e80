"""The reference appliance's pure core, driven by Hypothesis with generated packet sequences and a fake clock,
checked step by step against the reference model in :mod:`gwlbsim.fuzz.core_model`.

Properties: the core never raises; it never returns a packet of a flow it did not see from GWLB through that
endpoint; a return always carries the latest header seen for the flow and goes back to where that packet
came from; flows idle past the timeout are never used; queued packets come out when the tunnel is ready.
"""

from __future__ import annotations

from gwlbsim.fuzz.core_model import ApplianceModel, ip_length_consistent
from gwlbsim.reference.core import ApplianceCore, Config, TunnelState
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.packets import GwlbFlow, MalformedPacket, ValidPacket
from gwlbsim.wire import geneve
from gwlbsim.wire.outer import parse_ipv4_udp

from .hyp import budget

ENIS = (0x2B8EE1D4DB0C51C4, 0x1, 0xFFFFFFFFFFFFFFFF)
GWLBS = ("10.0.0.1", "10.0.1.1")
ME = "10.0.0.2"
_STATE = {TunnelState.CREATING: "creating", TunnelState.READY: "ready", TunnelState.FAILED: "failed"}


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.flows: list[GwlbFlow] = []
        self.cookies: dict[int, int] = {}

    @initialize(flow_timeout=st.sampled_from([1.0, 10.0, 350.0]), tunnel_timeout=st.sampled_from([0.0, 5.0, 30.0]),
                pending_limit=st.sampled_from([2, 4096]),
                flows=gst.flow_lists(min_size=1, max_size=5, eni_ids=st.sampled_from(ENIS), extras=True,
                                     max_inner_size=300))
    def setup(self, flow_timeout: float, tunnel_timeout: float, pending_limit: int, flows: list[GwlbFlow]) -> None:
        kw = dict(flow_timeout=flow_timeout, tunnel_timeout=tunnel_timeout, pending_limit=pending_limit,
                  retry_interval=1.0)
        self.core = ApplianceCore(Config(max_flows=1_000_000, **kw))  # type: ignore[arg-type]
        self.model = ApplianceModel(**kw)  # type: ignore[arg-type]
        self.flows = flows

    # ------------------------------------------------------------------------------------------- inbound

    def _inbound(self, payload: bytes, src: str = GWLBS[0], sport: int = 60000, dport: int = 6081) -> None:
        want = self.model.inbound(payload, src, ME, sport, dport, self.now)
        got = self.core.inbound(payload, 0, len(payload), src, ME, sport, dport, self.now)
        if want is None:
            assert got is None, "the core accepted what it must drop"
            return
        assert got is not None, f"the core dropped a valid packet: {self.core.totals.drops}"
        assert (got.tunnel.eni_id, payload[got.inner_start:got.inner_end], got.new_tunnel, got.queued) == tuple(want)

    @rule(i=st.integers(0, 4), direction=st.sampled_from(["forward", "reverse"]), renew=st.booleans(),
          eni=st.none() | st.sampled_from(ENIS), gwlb=st.sampled_from(GWLBS), sport=st.none() | st.integers(1, 65535))
    def inbound_flow(self, i: int, direction: str, renew: bool, eni: int | None, gwlb: str, sport: int | None) -> None:
        """A packet of a known flow; sometimes a new cookie, another endpoint, GWLB address or source port."""
        f = self.flows[i % len(self.flows)]
        if renew:
            self.cookies[i] = self.cookies.get(i, f.cookie) + 1 & 0xFFFFFFFF
        if eni is not None:
            f = GwlbFlow(eni, f.attachment_id, f.cookie, f.sport, f.forward, f.reverse, f.extra_options,
                         f.vni, f.option_class, f.shuffled)
        self._inbound(f.payload(direction, self.cookies.get(i, f.cookie)), gwlb, sport or f.sport)

    @rule(vp=gst.valid_packets(eni_ids=st.sampled_from(ENIS), inner=gst.inner_packets(max_size=400)))
    def inbound_any_valid(self, vp: ValidPacket) -> None:
        self._inbound(vp.payload)

    @rule(mp=gst.malformed_packets())
    def inbound_malformed(self, mp: MalformedPacket) -> None:
        self._inbound(mp.payload)

    @rule(data=gst.datagrams(), dport=st.sampled_from([6081, 6082, 4789]))
    def inbound_anything(self, data: bytes, dport: int) -> None:
        self._inbound(data, dport=dport)

    # ------------------------------------------------------------------------------------------ tunnels

    @precondition(lambda self: any(t.state == "creating" for t in self.model.tunnels.values()))
    @rule(data=st.data(), fail=st.booleans())
    def tunnel_created(self, data: st.DataObject, fail: bool) -> None:
        eni = data.draw(st.sampled_from(sorted(e for e, t in self.model.tunnels.items() if t.state == "creating")))
        if fail:
            self.model.tunnel_failed(eni, self.now)
            self.core.tunnel_failed(eni, self.now)
        else:
            assert self.core.tunnel_ready(eni, self.now) == self.model.tunnel_ready(eni, self.now), \
                "queued packets come out in order when the tunnel is ready"

    @rule(dt=st.sampled_from([0.0, 0.001, 0.999, 1.0, 5.0, 10.0, 10.001, 30.0, 350.0, 350.001]) |
          st.integers(0, 400_000).map(lambda ms: ms / 1000))
    def clock(self, dt: float) -> None:
        self.now += dt

    @rule()
    def tick(self) -> None:
        gone = sorted(t.eni_id for t in self.core.tick(self.now))
        assert gone == sorted(self.model.tick(self.now)), "tunnels retire exactly when idle past -t"

    # ----------------------------------------------------------------------------------------- outbound

    def _outbound(self, eni: int, pkt: bytes) -> None:
        known = self.model.knows(eni, pkt)
        want = self.model.outbound(eni, pkt, self.now)
        got = self.core.outbound(self.core.tunnels[eni], pkt, self.now)
        if want is None:
            assert got is None, ("the core returned a packet of a flow it did not see through this endpoint"
                                 if not known else "the core used an expired flow")
            return
        assert got is not None, "the core refused to return a packet of a live flow"
        assert got.header == want.header, "the return must carry the flow's latest header"
        out = self.core.encapsulate(got, pkt)
        o = parse_ipv4_udp(out)
        assert (o.src, o.dst, o.sport, o.dport) == (want.local[0], want.gwlb[0], want.gwlb[1], want.local[1])
        assert o.checksum_ok
        assert out[o.payload_offset:] == want.header + pkt
        p = geneve.parse(out[o.payload_offset:])  # GWLB accepts every return
        assert p.header_bytes == want.header
        if ip_length_consistent(pkt):
            assert p.inner == pkt

    @precondition(lambda self: bool(self.model.tunnels))
    @rule(data=st.data(), i=st.integers(0, 4), direction=st.sampled_from(["forward", "reverse"]))
    def return_flow_packet(self, data: st.DataObject, i: int, direction: str) -> None:
        eni = data.draw(st.sampled_from(sorted(self.model.tunnels)))
        f = self.flows[i % len(self.flows)]
        self._outbound(eni, (f.forward if direction == "forward" else f.reverse).data)

    @precondition(lambda self: bool(self.model.tunnels))
    @rule(data=st.data(), pkt=gst.inner_packets(max_size=300).map(lambda p: p.data) | st.binary(max_size=80))
    def return_other_packet(self, data: st.DataObject, pkt: bytes) -> None:
        self._outbound(data.draw(st.sampled_from(sorted(self.model.tunnels))), pkt)

    # ---------------------------------------------------------------------------------------- invariants

    @invariant()
    def same_tunnels_and_counts(self) -> None:
        if not hasattr(self, "core"):
            return
        assert {e: _STATE[t.state] for e, t in self.core.tunnels.items()} == {
            e: t.state for e, t in self.model.tunnels.items()}
        assert self.core.flow_count == sum(len(t.flows) for t in self.core.tunnels.values())
        assert not self.model.drops_match(self.core.totals.drops), self.core.totals.drops


TestCore = CoreMachine.TestCase
TestCore.settings = budget(60, stateful_step_count=40)
