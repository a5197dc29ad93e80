"""Virtual-time mode: the GWLB model wired to appliance models in one process, with a simulated clock.

Each target is a :class:`VirtualAppliance` running the reference appliance's pure core as a one-arm
passthrough (what arrives on gwi- leaves by gwo-), answering health checks while it is up. Time only moves
when the simulation says so, so a run of hours with a million flows takes seconds, and the same seed gives
the same run.

A :class:`Workload` describes the traffic (flows, their arrival rate, packets per flow, protocol mix,
5-tuple reuse after idle timeouts) and health flaps (targets going down and up). :func:`run` returns a
:class:`Report` with the flow distribution over targets, flows moved or lost around failures, cookie
renewals, drops by reason and the real time it took.
"""

from __future__ import annotations

import heapq
import math
import queue
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gwlbsim.config import GwlbConfig
from gwlbsim.model import Flow, GwlbModel, ToEndpoint, ToTarget
from gwlbsim.reference.core import ApplianceCore, Config
from gwlbsim.traffic.inner import fill_template, flow_template
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN, FiveTuple


class VirtualAppliance:
    """A target: the reference core as a one-arm passthrough, with a switch to break it."""

    lost_total = 0  #: packets lost at down appliances, all of them (class-wide counter, read by the simulation)

    def __init__(self, target_id: str, address: str, core_config: Config | None = None) -> None:
        self.id = target_id
        self.address = address
        self.core = ApplianceCore(core_config or Config())
        self.up = True  #: datapath and health answer work
        self.received = 0
        self.lost = 0  #: packets that arrived while down

    def deliver(self, node: str, sport: int, payload: bytes, now: float) -> list[tuple[bytes, int]]:
        """A GENEVE payload from GWLB; returns the (payload, source port) of what goes back."""
        self.received += 1
        if not self.up:
            self.lost += 1
            VirtualAppliance.lost_total += 1
            return []
        core = self.core
        v = core.inbound(payload, 0, len(payload), node, self.address, sport, geneve.GENEVE_PORT, now)
        if v is None:
            return []
        tunnel = v.tunnel
        # creating devices is instant in virtual time
        inners = core.tunnel_ready(tunnel.eni_id, now) if v.queued else [payload[v.inner_start:v.inner_end]]
        out = []
        for inner in inners:
            flow = core.outbound(tunnel, inner, now)  # passthrough: gwi- straight to gwo-
            if flow is not None:
                out.append((flow.header + bytes(inner), flow.dst[1]))
        return out


@dataclass
class Flap:
    """Target ``target`` (index) goes down at ``at`` (simulated seconds) and comes back after ``down_for``."""

    at: float
    target: int
    down_for: float


@dataclass
class Workload:
    flows: int = 100_000
    rate: float = 10_000.0  #: new flows per simulated second
    packets_per_flow: int = 2  #: alternating directions, starting client -> server, sent at the flow's start
    tcp_fraction: float = 0.7  #: the rest is UDP
    reuse_fraction: float = 0.0  #: flows that reuse an earlier flow's 5-tuple after its idle timeout
    followup_after: float | None = None  #: each flow exchanges its packets once more this much later
    endpoints: int = 2
    flaps: list[Flap] = field(default_factory=list)
    warmup: float | None = None  #: simulated seconds before traffic (targets pass initial health checks)
    seed: int = 1
    #: "packet": every packet is encoded, sent through the GWLB model and a reference core and back;
    #: "flow": the same GWLB model decides on flows directly (no encoding, appliances up or down), for scale
    level: str = "packet"


@dataclass
class Report:
    flows: int
    packets_sent: int
    packets_returned: int
    simulated_seconds: float
    wall_seconds: float
    per_target_flows: dict[str, int]  #: flows each target was given when they were created
    per_target_live: dict[str, int]  #: flows on each target at the end (after any rebalancing)
    flows_moved: int
    flows_lost: int  #: flows with at least one packet lost at a down target
    packets_lost: int
    cookie_renewals: int
    fail_open_flows: int
    drops: dict[str, int]
    events: list[str]
    cloudwatch: dict[str, int]

    @property
    def flows_per_second(self) -> float:
        return self.flows / self.wall_seconds if self.wall_seconds else math.inf

    def distribution(self) -> dict[str, float]:
        v = list(self.per_target_flows.values())
        if not v:
            return {"min": 0, "max": 0, "mean": 0.0, "stdev": 0.0}
        mean = sum(v) / len(v)
        return {"min": min(v), "max": max(v), "mean": mean,
                "stdev": (sum((x - mean) ** 2 for x in v) / len(v)) ** 0.5}

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["flows_per_second"] = round(self.flows_per_second)
        d["distribution"] = self.distribution()
        return d

    def text(self) -> str:
        dist = self.distribution()
        lines = [
            f"simulated {self.flows} flows, {self.packets_sent} packets over {self.simulated_seconds:.0f} s of "
            f"virtual time in {self.wall_seconds:.2f} s ({self.flows_per_second:,.0f} flows/s)",
            f"returned {self.packets_returned} packets; lost at down targets {self.packets_lost} packets of "
            f"{self.flows_lost} flows; moved by rebalance {self.flows_moved}; fail-open flows {self.fail_open_flows}; "
            f"cookie renewals {self.cookie_renewals}",
            f"flows per target over {len(self.per_target_flows)} targets: min {dist['min']}, max {dist['max']}, "
            f"mean {dist['mean']:.1f}, stdev {dist['stdev']:.1f}",
        ]
        if self.drops:
            lines.append("drops: " + ", ".join(f"{k}={v}" for k, v in sorted(self.drops.items())))
        lines += [f"  {e}" for e in self.events[-20:]]
        return "\n".join(lines)


class Simulation:
    """The fake GWLB and reference appliance cores wired together in virtual time, with no namespaces: flows
    of many endpoints through several targets, health flaps, failover and idle timeouts, run as fast as the
    CPU goes (a million flows in seconds)."""

    def __init__(self, config: GwlbConfig | None = None, targets: int = 4, zones: int = 1,
                 core_config: Config | None = None, seed: int = 1) -> None:
        self.config = config or GwlbConfig()
        self.rng = random.Random(seed)
        zone_names = [chr(ord("a") + i) for i in range(zones)]
        self.model = GwlbModel(self.config, {z: f"10.100.{i + 1}.1" for i, z in enumerate(zone_names)},
                               rng=random.Random(seed))
        self.zone_names = zone_names
        self.appliances: dict[str, VirtualAppliance] = {}
        for i in range(targets):
            zone = zone_names[i % zones]
            tid = f"t{i}"
            addr = f"10.{100 + i // 60000}.{(i // 250) % 240 + 16}.{i % 250 + 2}"
            self.model.register_target(tid, addr, zone, 0.0)
            self.appliances[addr] = VirtualAppliance(tid, addr, core_config)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.sent = 0
        self.returned = 0
        self.delivered: list[tuple[int, bytes]] | None = None  #: set to a list to keep what reaches consumers

    # ------------------------------------------------------------------------------------------- plumbing

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, fn))

    def send(self, eni_id: int, inner: bytes) -> list[ToEndpoint]:
        """One packet through GWLB and its appliance and back; returns what reaches the consumer side."""
        now = self.now
        model = self.model
        self.sent += 1
        out: list[ToEndpoint] = []
        for a in model.from_endpoint(eni_id, inner, now):
            if isinstance(a, ToEndpoint):
                out.append(a)
                continue
            assert isinstance(a, ToTarget)
            app = self.appliances[a.target.address]
            for payload, sport in app.deliver(a.node, a.sport, a.header + a.inner, now):
                for r in model.from_target(app.address, sport, a.node, geneve.GENEVE_PORT, payload, now):
                    if isinstance(r, ToEndpoint):
                        out.append(r)
                        self.returned += 1
        if self.delivered is not None:
            self.delivered.extend((r.eni_id, r.inner) for r in out)
        return out

    def health_round(self) -> None:
        m = self.model
        for p in m.due_probes(self.now):
            app = self.appliances[p.target.address]
            m.probe_result(p.target.id, p.checker, app.up, self.now)

    def advance(self, until: float) -> None:
        """Run scheduled work and timers up to ``until``."""
        m = self.model
        q = self._queue
        while True:
            nxt = q[0][0] if q else math.inf
            deadline = m.next_deadline()
            step = min(nxt, deadline if deadline is not None else math.inf, until)
            if step > until or step == math.inf:
                break
            self.now = max(self.now, step)
            if q and q[0][0] <= self.now:
                _, _, fn = heapq.heappop(q)
                fn()
                continue
            self.health_round()
            m.tick(self.now)
            if step >= until:
                break
        self.now = max(self.now, until)


#: the inner packets' templates (checksums zero: the model and the reference core never check them)
_TCP_TEMPLATE = flow_template(IPPROTO_TCP, window=8192)
_UDP_TEMPLATE = flow_template(IPPROTO_UDP)


def _packet(tcp: bool, client: bytes, server: bytes, cport: int, sport: int, forward: bool, syn: bool) -> bytes:
    """An inner packet of the flow (addresses and ports filled into a template)."""
    flags = (TCP_SYN if syn else TCP_ACK) if tcp else None  # SYN, then ACKs
    if forward:
        return fill_template(_TCP_TEMPLATE if tcp else _UDP_TEMPLATE, client, server, cport, sport, flags)
    return fill_template(_TCP_TEMPLATE if tcp else _UDP_TEMPLATE, server, client, sport, cport, flags)


def run(workload: Workload, config: GwlbConfig | None = None, targets: int = 4, zones: int = 1,
        core_config: Config | None = None, progress: Callable[[int, int], None] | None = None,
        workers: int = 1) -> Report:
    """Simulate ``workload``; ``progress(done, total)`` is called now and then.

    With ``workers`` > 1 the flows are shared out over that many processes (flow i to worker i % workers).
    Each runs the same GWLB and appliances with the same health flaps and timers; flows are independent of
    each other, so the merged report describes one GWLB (fail-open random picks aside, which depend on the
    order flows meet a worker's random generator).
    """
    wall = time.perf_counter()
    if workers <= 1:
        r = _run_shard(workload, config, targets, zones, core_config, 0, 1, progress)
        r.wall_seconds = time.perf_counter() - wall
        return r
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    done = ctx.Value("q", 0)
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=_shard_worker, args=(workload, config, targets, zones, core_config, k, workers,
                                                      done, results), daemon=True) for k in range(workers)]
    for p in procs:
        p.start()
    parts: list[Report] = []
    try:
        while len(parts) < workers:
            try:
                parts.append(results.get(timeout=0.2))
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a simulation worker failed") from None
            if progress:
                progress(min(done.value, workload.flows), workload.flows)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    if progress:
        progress(workload.flows, workload.flows)
    merged = _merge(parts)
    merged.wall_seconds = time.perf_counter() - wall
    return merged


def _shard_worker(workload: Workload, config: GwlbConfig | None, targets: int, zones: int,
                  core_config: Config | None, shard: int, shards: int, done: Any, results: Any) -> None:
    last = 0

    def tick(i: int, _n: int) -> None:
        nonlocal last
        with done.get_lock():
            done.value += i - last
        last = i

    results.put(_run_shard(workload, config, targets, zones, core_config, shard, shards, tick))


def _merge(parts: list[Report]) -> Report:
    first = parts[0]
    per_target: dict[str, int] = {}
    live: dict[str, int] = {}
    drops: dict[str, int] = {}
    cw: dict[str, int] = {}
    for p in parts:
        for k, v in p.per_target_flows.items():
            per_target[k] = per_target.get(k, 0) + v
        for k, v in p.per_target_live.items():
            live[k] = live.get(k, 0) + v
        for k, v in p.drops.items():
            drops[k] = drops.get(k, 0) + v
        for k, v in p.cloudwatch.items():
            # host counts are the same GWLB seen by every worker; flows and packets add up
            cw[k] = v if k.endswith("HostCount") else cw.get(k, 0) + v
    return Report(
        flows=sum(p.flows for p in parts), packets_sent=sum(p.packets_sent for p in parts),
        packets_returned=sum(p.packets_returned for p in parts),
        simulated_seconds=max(p.simulated_seconds for p in parts), wall_seconds=0.0, per_target_flows=per_target,
        per_target_live=live,
        flows_moved=sum(p.flows_moved for p in parts), flows_lost=sum(p.flows_lost for p in parts),
        packets_lost=sum(p.packets_lost for p in parts), cookie_renewals=sum(p.cookie_renewals for p in parts),
        fail_open_flows=sum(p.fail_open_flows for p in parts), drops=drops, events=first.events, cloudwatch=cw)


def _run_shard(workload: Workload, config: GwlbConfig | None, targets: int, zones: int,
               core_config: Config | None, shard: int, shards: int,
               progress: Callable[[int, int], None] | None) -> Report:
    wall = time.perf_counter()
    sim = Simulation(config, targets, zones, core_config, workload.seed + shard)
    rng = random.Random(workload.seed * 1000 + shard)
    model = sim.model
    enis = [0x1000 + i for i in range(workload.endpoints)]
    for i, e in enumerate(enis):
        model.add_endpoint(e, sim.zone_names[i % zones])
    hc = sim.config.health_check
    warmup = workload.warmup if workload.warmup is not None else \
        hc.interval * (hc.healthy_threshold + 1) + hc.interval
    sim.advance(warmup)

    apps = list(sim.appliances.values())
    for f in workload.flaps:
        app = apps[f.target % len(apps)]

        def down(app: VirtualAppliance = app) -> None:
            app.up = False

        def up(app: VirtualAppliance = app) -> None:
            app.up = True

        sim.at(warmup + f.at, down)
        sim.at(warmup + f.at + f.down_for, up)

    lost_at_start = VirtualAppliance.lost_total
    lost_flows: set[int] = set()
    by_eni = {e: model.endpoints[e] for e in enis}
    ppf = workload.packets_per_flow

    def exchange(eni: int, tcp: bool, client: bytes, server: bytes, cport: int, sport: int, ft: FiveTuple,
                 opening: bool) -> Flow | None:
        """The flow's packets, alternating directions; the first of a new TCP flow is its SYN. Returns the
        flow entry GWLB used for the first packet."""
        if workload.level == "packet":
            for k in range(ppf):
                sim.send(eni, _packet(tcp, client, server, cport, sport, k % 2 == 0, opening and k == 0))
            return model.flows.get(model._key(eni, ft))
        first = None
        for k in range(ppf):
            flags = (0x02 if opening and k == 0 else 0x10) if tcp else 0
            pkt_ft = ft if k % 2 == 0 else ft.reversed()
            sim.sent += 1
            flow = model.route(by_eni[eni], pkt_ft, flags, sim.now, 64)
            if k == 0 and isinstance(flow, Flow):
                first = flow
            if isinstance(flow, Flow):
                app = sim.appliances[flow.target.address]
                app.received += 1
                if app.up:
                    model.accept_return(flow, pkt_ft, flags, 64, sim.now)
                    sim.returned += 1
                else:
                    app.lost += 1
                    VirtualAppliance.lost_total += 1
        return first

    cookie_of: dict[tuple[object, ...], int] = {}
    renewals = 0
    reuse_pool: list[tuple[int, bytes, bytes, int, int, bool, float]] = []
    idle = max(sim.config.idle_timeout(True), sim.config.idle_timeout(False))
    n = workload.flows
    mine = len(range(shard, n, shards))
    step = 1.0 / workload.rate
    report_every = max(1, min(mine // 100, 5000))  # often enough for a real estimate with a billion flows
    t = warmup
    for done, i in enumerate(range(shard, n, shards)):
        t = warmup + (i + 1) * step
        sim.advance(t)
        if reuse_pool and t - reuse_pool[0][6] > idle and rng.random() < workload.reuse_fraction:
            eni, client, server, cport, sport, tcp, _ = reuse_pool.pop(0)
        else:
            eni = enis[i % len(enis)]
            client = struct.pack("!I", 0x0A000000 | (i & 0xFFFFFF))
            server = struct.pack("!I", 0xC0A80000 | (i * 7919 & 0xFFFF))
            cport, sport = 1024 + (i * 31) % 60000, 443 if i & 1 else 53
            tcp = rng.random() < workload.tcp_fraction
        lost = VirtualAppliance.lost_total
        ft = FiveTuple(6 if tcp else 17, int.from_bytes(client, "big"), cport, int.from_bytes(server, "big"), sport)
        flow = exchange(eni, tcp, client, server, cport, sport, ft, True)
        if VirtualAppliance.lost_total > lost:
            lost_flows.add(i)
        if workload.followup_after:
            def followup(eni: int = eni, tcp: bool = tcp, client: bytes = client, server: bytes = server,
                         cport: int = cport, sport: int = sport, ft: FiveTuple = ft, i: int = i) -> None:
                before = VirtualAppliance.lost_total
                exchange(eni, tcp, client, server, cport, sport, ft, False)
                if VirtualAppliance.lost_total > before:
                    lost_flows.add(i)

            sim.at(t + workload.followup_after, followup)
        if flow is not None:
            key = (eni, client, server, cport, sport, tcp)
            old = cookie_of.get(key)
            if old is not None and old != flow.cookie:
                renewals += 1
            cookie_of[key] = flow.cookie
        if workload.reuse_fraction and len(reuse_pool) < 100_000:
            reuse_pool.append((eni, client, server, cport, sport, tcp, sim.now))
        if progress and done % report_every == 0:
            progress(done, mine)
    sim.advance(t + (workload.followup_after or 0) + 1)
    if progress:
        progress(mine, mine)
    return Report(
        flows=mine, packets_sent=sim.sent, packets_returned=sim.returned, simulated_seconds=sim.now,
        wall_seconds=time.perf_counter() - wall,
        per_target_flows={tgt.id: tgt.assigned for tgt in model.targets.values()},
        per_target_live={tgt.id: tgt.flows for tgt in model.targets.values()},
        flows_moved=model.metrics.rebalanced_flows, flows_lost=len(lost_flows),
        packets_lost=VirtualAppliance.lost_total - lost_at_start, cookie_renewals=renewals,
        fail_open_flows=model.metrics.fail_open_flows, drops=dict(model.metrics.drops),
        events=[f"{e.at:10.1f} s  {e.text}" for e in model.events
                if "registered" not in e.text and "initial -> healthy" not in e.text],
        cloudwatch=model.cloudwatch())
