"""The GWLB model against a simple specification, driven by Hypothesis with an injected clock.

The specification is a small dictionary of flows with the rules AWS documents: one entry for both
directions, a fresh cookie per entry, TCP flows need a SYN to start, idle timeouts of 350 s (TCP) and 120 s
(other), FIN/RST close, new flows only to healthy targets, existing flows stay put (no_rebalance), draining
targets get no new flows, and returns are accepted only with a live flow's cookie from its target.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from scapy.all import ICMP, IP, TCP, UDP, raw

from gwlbsim.config import GwlbConfig, HealthCheck, Simulator
from gwlbsim.model import DRAINING, HEALTHY, UNUSED, GwlbModel, ToTarget
from gwlbsim.wire import geneve

HC = HealthCheck(interval=5, timeout=2, healthy_threshold=2, unhealthy_threshold=2)
ENIS = (0xA, 0xB)
TARGETS = ("t0", "t1", "t2")
KINDS = ("udp", "icmp", "syn", "ack", "fin", "rst")


@dataclass
class SpecFlow:
    cookie: int
    target: str
    last_seen: float
    tcp: bool
    fins: set[bool]
    closed_at: float | None = None


def packet(i: int, forward: bool, kind: str) -> tuple[bytes, tuple[object, ...]]:
    a, b = f"10.0.0.{i + 1}", "192.168.0.1"
    src, dst = (a, b) if forward else (b, a)
    if kind in ("udp", "icmp"):
        l4 = UDP(sport=1000 + i if forward else 53, dport=53 if forward else 1000 + i) if kind == "udp" else ICMP()
    else:
        flags = {"syn": "S", "ack": "A", "fin": "FA", "rst": "R"}[kind]
        l4 = TCP(sport=1000 + i if forward else 80, dport=80 if forward else 1000 + i, flags=flags)
    proto = "udp" if kind == "udp" else "icmp" if kind == "icmp" else "tcp"
    return raw(IP(src=src, dst=dst) / l4), (i, proto)


class GwlbSpec(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        cfg = GwlbConfig(health_check=HC, deregistration_delay=30, simulator=Simulator(health_checkers=1, seed=0))
        self.m = GwlbModel(cfg, {"a": "10.100.1.1"})
        for e in ENIS:
            self.m.add_endpoint(e)
        for i, t in enumerate(TARGETS):
            self.m.register_target(t, f"10.100.1.{10 + i}", "a", 0.0)
        self.now = 0.0
        self.down: set[str] = set()
        self.flows: dict[tuple[object, ...], SpecFlow] = {}
        self.seen_cookies: set[tuple[int, int]] = set()
        self.last: dict[tuple[object, ...], ToTarget] = {}
        self.health_rounds(3)

    def health_rounds(self, n: int) -> None:
        for _ in range(n):
            for p in self.m.due_probes(self.now):
                self.m.probe_result(p.target.id, p.checker, p.target.id not in self.down, self.now)
            self.now += HC.interval
            self.m.tick(self.now)
        self._expire()

    def _timeout(self, f: SpecFlow) -> float:
        return 350.0 if f.tcp else 120.0

    def _alive(self, f: SpecFlow) -> bool:
        if f.closed_at is not None and self.now >= f.closed_at + 10:
            return False
        return self.now < f.last_seen + self._timeout(f)

    def _expire(self) -> None:
        for k in [k for k, f in self.flows.items() if not self._alive(f)]:
            del self.flows[k]

    @rule(eni=st.sampled_from(ENIS), i=st.integers(0, 1), forward=st.booleans(), kind=st.sampled_from(KINDS))
    def send(self, eni: int, i: int, forward: bool, kind: str) -> None:
        self._expire()
        pkt, fkey = packet(i, forward, kind)
        key = (eni, *fkey)
        spec = self.flows.get(key)
        if spec is not None and spec.closed_at is not None and kind == "syn":
            del self.flows[key]
            spec = None
        out = self.m.from_endpoint(eni, pkt, self.now)
        if spec is None and kind in ("ack", "fin", "rst"):
            assert out == [], "a TCP packet other than a SYN starts no flow"
            return
        if spec is None and all(t.state in (DRAINING, UNUSED) for t in self.m.targets.values()):
            assert out == [], "no registered target: nowhere to send a new flow"
            return
        assert len(out) == 1 and isinstance(out[0], ToTarget)
        a = out[0]
        cookie = geneve.parse(a.header + pkt).cookie
        if spec is None:
            assert (eni, cookie) not in self.seen_cookies, "every new flow entry gets a fresh cookie"
            healthy = [t for t in TARGETS if self.m.targets[t].state == HEALTHY]
            if healthy:
                assert a.target.id in healthy, "new flows go to healthy targets"
            spec = SpecFlow(cookie, a.target.id, self.now, kind not in ("udp", "icmp"), set())
            self.flows[key] = spec
            self.seen_cookies.add((eni, cookie))
        else:
            assert cookie == spec.cookie, "both directions and later packets keep the flow's cookie"
            assert a.target.id == spec.target, "no_rebalance: a flow stays on its target"
        spec.last_seen = self.now
        if kind == "rst" and spec.closed_at is None:
            spec.closed_at = self.now
        if kind == "fin":
            spec.fins.add(forward)
            if len(spec.fins) == 2 and spec.closed_at is None:
                spec.closed_at = self.now
        self.last[key] = a

    @rule(eni=st.sampled_from(ENIS), i=st.integers(0, 1), via_fin=st.booleans())
    def close_and_reopen(self, eni: int, i: int, via_fin: bool) -> None:
        """A connection closes (FINs both ways, or an RST) and the client reuses its 5-tuple at once."""
        self.send(eni, i, True, "syn")
        if via_fin:
            self.send(eni, i, True, "fin")
            self.send(eni, i, False, "fin")
        else:
            self.send(eni, i, False, "rst")
        self.send(eni, i, True, "syn")

    @rule(data=st.data())
    @precondition(lambda self: bool(self.last))
    def appliance_returns(self, data: st.DataObject) -> None:
        self._expire()
        key = data.draw(st.sampled_from(sorted(self.last, key=repr)))
        a = self.last[key]
        got = self.m.from_target(a.target.address, a.sport, a.node, 6081, a.header + a.inner, self.now)
        spec = self.flows.get(key)
        live = spec is not None and geneve.parse(a.header + a.inner).cookie == spec.cookie \
            and self.m.targets[spec.target].state != UNUSED
        assert bool(got) == live, (got, spec, self.now)
        if got and spec is not None:
            spec.last_seen = self.now

    @rule(cookie=st.integers(1, 2**32 - 1), eni=st.sampled_from(ENIS))
    def forged_cookie_is_dropped(self, cookie: int, eni: int) -> None:
        if (eni, cookie) in {(k[0], f.cookie) for k, f in self.flows.items()}:
            return
        inner, _ = packet(0, True, "udp")
        payload = geneve.build(inner, eni, cookie)
        assert self.m.from_target("10.100.1.10", 60000, "10.100.1.1", 6081, payload, self.now) == []

    @rule(dt=st.sampled_from([1.0, 9.0, 60.0, 119.0, 121.0, 349.0, 351.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.m.tick(self.now)
        self._expire()

    @rule(tid=st.sampled_from(TARGETS), up=st.booleans())
    def health_changes(self, tid: str, up: bool) -> None:
        (self.down.discard if up else self.down.add)(tid)
        self.health_rounds(3)

    @rule(tid=st.sampled_from(TARGETS))
    def deregister(self, tid: str) -> None:
        target = tid
        self.m.deregister_target(target, self.now)
        assert self.m.targets[target].state in (DRAINING, UNUSED)
        for f in self.flows.values():
            if f.target == target:
                f.last_seen = min(f.last_seen, self.now)  # drains: stays until the delay ends
        self.now += 31
        self.m.tick(self.now)
        for k in [k for k, f in self.flows.items() if f.target == target]:
            del self.flows[k]  # no_rebalance: the drained target's flows are gone
        self._expire()

    @invariant()
    def table_matches_spec(self) -> None:
        live = {k for k, f in self.m.flows.items() if now_alive(self.m, f, self.now)}
        assert len(live) == len(self.flows), (sorted(map(repr, live)), sorted(map(repr, self.flows)))
        assert self.m.cloudwatch()["HealthyHostCount"] == sum(
            1 for t in self.m.targets.values() if t.state == HEALTHY)


def now_alive(m: GwlbModel, f: object, now: float) -> bool:
    return not m._dead(f, now)  # type: ignore[arg-type]


TestGwlbSpec = GwlbSpec.TestCase
TestGwlbSpec.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
