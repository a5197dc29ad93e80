"""The benchmark's namespaces: a GWLB side, one namespace per appliance, and a kernel-forwarding path.

::

    gwlb ──veth── <appliance k>       10.99.k.1 ↔ 10.99.k.2, MTU 9001; one per appliance subject
    gwlb ──veth── rtr ──veth── sink   10.98.0.1 → 10.98.0.2 | 10.97.0.1 → 10.97.0.2 (owns 172.16.0.1)

The generator and the appliances' receiver run in ``gwlb``; the kernel path's receiver runs in ``sink``.
Inner packets (``192.168.x.y -> 172.16.0.1``) sent plain from ``gwlb`` are forwarded by ``rtr`` (a router:
ip_forward on, no filtering) to ``sink``: the same inner traffic, without GENEVE, through one kernel
forwarding hop.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gwlbsim.appliance import REFERENCE_COMMAND, ApplianceSpec, RunningAppliance
from gwlbsim.bench.sink import KernelSink
from gwlbsim.bench.traffic import INNER_DPORT, INNER_DST
from gwlbsim.linuxio import linkpath, tun
from gwlbsim.linuxio.netns import Lab, entered
from gwlbsim.wire.geneve import GENEVE_PORT

MTU = 9001

REFERENCE = REFERENCE_COMMAND  #: the reference as the suite runs it (flow and tunnel timeouts at their defaults)
NAIVE = "{python} -m gwlbsim.bench.naive -c 'sh {hook}' -p {health_port}"


@dataclass(frozen=True)
class SubjectSpec:
    """Something to measure: ``kernel`` forwarding, or an appliance started with ``command``."""

    name: str
    command: str = ""  #: appliance command template (see gwlbsim.appliance); empty for the kernel path
    health: str = "http"

    @property
    def is_kernel(self) -> bool:
        return not self.command


KERNEL = SubjectSpec("kernel")
#: kernel forwarding with one more receive pass: each packet handed into a TUN device's receive path (tc mirred
#: to its ingress, through the CPU's backlog) before it is routed, as the fast path hands a datagram's inner
#: packet into gwi-; what that hand-over alone costs a router
KERNEL_PASS = SubjectSpec("kernel-pass")


def reference(extra_args: str = "", name: str = "reference") -> SubjectSpec:
    return SubjectSpec(name, f"{REFERENCE} {extra_args}".strip())


def naive() -> SubjectSpec:
    return SubjectSpec("naive", NAIVE, health="tcp")


@dataclass
class Subject:
    spec: SubjectSpec
    recv_ns: str  #: where the receiver runs
    bind: tuple[str, int]  #: what it binds
    src: str = ""  #: outer addresses of GENEVE traffic to this subject (appliances)
    dst: str = ""
    ns: str = ""  #: the appliance's namespace
    appliance: RunningAppliance | None = None
    rx_dev: str = ""  #: the device of ``recv_ns`` its returns arrive on
    router_ns: str = ""  #: kernel forwarding: the router's namespace
    inner_dst: str = INNER_DST  #: kernel forwarding: where its inner packets go

    @property
    def name(self) -> str:
        return self.spec.name

    def appliance_pids(self) -> list[int]:
        """Every process in the appliance's namespace (the appliance and its workers)."""
        if not self.ns:
            return []
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True, timeout=10)
        return [int(p) for p in out.stdout.split()]


class Agent:
    """A generator or receiver process (gwlbsim.bench.agent) in a namespace, one JSON line each way."""

    def __init__(self, lab: Lab, ns: str, log: Path) -> None:
        self.ns = ns
        self._log = open(log, "ab")  # noqa: SIM115 - lives as long as the agent
        self.proc = lab.popen(ns, [sys.executable, "-m", "gwlbsim.bench.agent"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark agent in {self.ns} died (exit {self.proc.poll()}); "
                               f"see {self._log.name}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"benchmark agent in {self.ns}: {out['error']}")
        return out

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.send(cmd)
        return self.answer()

    def close(self) -> None:
        try:
            self.send({"op": "quit"})
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._log.close()


@dataclass
class Topology:
    lab: Lab
    workdir: Path
    gwlb: str = ""
    subjects: list[Subject] = field(default_factory=list)
    generator: Agent | None = None
    receivers: dict[str, Agent] = field(default_factory=dict)
    sink: KernelSink | None = None  #: with split CPUs: returns are counted in the kernel
    tun_fds: list[int] = field(default_factory=list)  #: TUN devices held open (kernel-pass's hand-over device)
    generator_kind: str = "socket"  #: "socket" or "xdp" (:mod:`gwlbsim.bench.xdpgen`)

    def subject(self, name: str) -> Subject:
        for s in self.subjects:
            if s.name == name:
                return s
        raise KeyError(name)


def steer_receive(lab: Lab, ns: str, ifname: str, cpus: set[int]) -> None:
    """Process what ``ifname`` in ``ns`` receives on ``cpus`` (RPS), not on the CPU of whoever sent it."""
    mask = sum(1 << c for c in cpus)
    lab.run(ns, ["sh", "-c", f"echo {mask:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"])


def build(lab: Lab, specs: list[SubjectSpec], workdir: Path, ready_timeout: float = 30.0,
          split_cpus: bool = False, generator: str = "socket") -> Topology:
    """Create the namespaces, links, agents, and start the appliances (waiting until they are healthy).
    ``split_cpus``: the generator keeps CPU 0 to itself and every subject's receive processing runs on the other
    CPUs, so that a subject in the kernel (whose work is otherwise done on the sender's CPU, in its send call)
    can be offered more than it can take; returns are then counted in the kernel (:mod:`gwlbsim.bench.sink`).
    ``generator="xdp"``: frames are sent by an XDP program (:mod:`gwlbsim.bench.xdpgen`), so each device they
    arrive on gets GRO (and with it the NAPI that a veth needs to take XDP transmissions)."""
    workdir.mkdir(parents=True, exist_ok=True)
    topo = Topology(lab, workdir, generator_kind=generator)
    topo.gwlb = g = lab.namespace("gwlb")
    app_index = 0
    for spec in specs:
        if spec.is_kernel:
            topo.subjects.append(_kernel_path(lab, g, topo, extra_pass=spec == KERNEL_PASS))
            continue
        app_index += 1
        k = app_index
        ns = lab.namespace(f"app{k}")
        src, dst = f"10.99.{k}.1", f"10.99.{k}.2"
        lab.veth(g, f"app{k}", ns, "eth0", addr_a=f"{src}/24", addr_b=f"{dst}/24", mtu=MTU)
        aspec = ApplianceSpec(command=spec.command, health_protocol=spec.health, ready_timeout=ready_timeout,
                              name=spec.name)
        app = RunningAppliance(lab, aspec, ns, dst, g, src, k, workdir / spec.name)
        topo.subjects.append(Subject(spec, g, (src, GENEVE_PORT), src, dst, ns, app, f"app{k}"))
    if generator == "xdp":
        for s in topo.subjects:  # an appliance's uplink, or the kernel path's router
            with entered(s.ns or s.router_ns):
                linkpath.gro("eth0", True)
    topo.generator = Agent(lab, g, workdir / "generator.log")
    for s in topo.subjects:
        if s.recv_ns not in topo.receivers:
            topo.receivers[s.recv_ns] = Agent(lab, s.recv_ns, workdir / f"receiver-{s.recv_ns}.log")
    if split_cpus:
        others = set(os.sched_getaffinity(0)) - {0}
        if not others:
            raise RuntimeError("--split-cpus needs at least two CPUs")
        os.sched_setaffinity(topo.generator.pid, {0})
        for a in topo.receivers.values():
            os.sched_setaffinity(a.pid, others)
        for s in topo.subjects:  # an appliance's uplink, or the kernel path's router
            steer_receive(lab, s.ns or s.router_ns, "eth0", others)
        topo.sink = KernelSink()
        for s in topo.subjects:
            topo.sink.attach(s.recv_ns, s.rx_dev)
    for s in topo.subjects:
        if s.appliance is not None:
            s.appliance.start(wait=True)
            if split_cpus:  # CPU 0 is the generator's alone: the appliance's threads (and what they start) too
                pin(s.appliance_pids(), set(os.sched_getaffinity(0)) - {0})
    return topo


def pin(pids: list[int], cpus: set[int]) -> None:
    """Keep every thread of these processes on ``cpus`` (children they start later inherit it)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


def _kernel_path(lab: Lab, g: str, topo: Topology, extra_pass: bool = False) -> Subject:
    """A router and a sink; with ``extra_pass`` (KERNEL_PASS) their own pair, other addresses and inner
    destination, and the router hands each packet into a TUN device's receive path before routing it."""
    name, net, dst = ("rtrp", 96, "172.17") if extra_pass else ("rtr", 98, INNER_DST.rsplit(".", 2)[0])
    rtr = lab.namespace(name)
    sink = lab.namespace("sinkp" if extra_pass else "sink")
    lab.veth(g, name, rtr, "eth0", addr_a=f"10.{net}.0.1/24", addr_b=f"10.{net}.0.2/24", mtu=MTU)
    lab.veth(rtr, "eth1", sink, "eth0", addr_a=f"10.{net - 1}.0.1/24", addr_b=f"10.{net - 1}.0.2/24", mtu=MTU)
    lab.configure(sink, "eth0", f"{dst}.0.1/32")
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter",
                "net.ipv4.conf.eth1.rp_filter"):
        lab.sysctl(rtr, key, 0)
    lab.sysctl(rtr, "net.ipv4.ip_forward", 1)
    lab.route(g, f"{dst}.0.0/16", gateway=f"10.{net}.0.2")
    lab.route(rtr, f"{dst}.0.0/16", gateway=f"10.{net - 1}.0.2")
    lab.route(sink, "192.168.0.0/16", gateway=f"10.{net - 1}.0.1")
    if extra_pass:
        with entered(rtr):  # held open by the benchmark: a TUN device without a reader has no carrier
            topo.tun_fds.append(tun.open_tun("pass0", mtu=MTU, rp_filter=0, ipv6_link_local=False))
        lab.run(rtr, ["tc", "qdisc", "add", "dev", "eth0", "ingress"])
        lab.run(rtr, ["tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "ip", "prio", "1", "u32",
                      "match", "u32", "0", "0", "action", "mirred", "ingress", "redirect", "dev", "pass0"])
    return Subject(KERNEL_PASS if extra_pass else KERNEL, sink, ("0.0.0.0", INNER_DPORT), rx_dev="eth0",
                   router_ns=rtr, inner_dst=f"{dst}.0.1")


def close(topo: Topology) -> None:
    """Stop agents and appliances (the lab removes the namespaces)."""
    if topo.sink is not None:
        topo.sink.close()
        topo.sink = None
    for fd in topo.tun_fds:
        os.close(fd)
    topo.tun_fds.clear()
    for a in [topo.generator, *topo.receivers.values()]:
        if a is not None:
            a.close()
    for s in topo.subjects:
        if s.appliance is not None:
            s.appliance.stop()

