"""Benchmarks of the fake GWLB itself, registered with ``gwlbsim bench`` (``--only gwlb-generator`` etc.).

* ``gwlb-generator``: the fake GWLB as a load generator: packets it encapsulated for many flows (with their
  real headers and checksums), sent in batches to an appliance namespace. Packets/s generated.
* ``gwlb-live``: the fake GWLB with its flow table: consumer traffic routed into the endpoint, through the
  model, encapsulated and sent to an appliance. Packets/s processed.
* ``simulate``: virtual time, flows/s at the flow level (a million flows over 300 targets with health flaps)
  and at the packet level.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import Any

from gwlbsim.appliance import ApplianceSpec
from gwlbsim.bench.extra import register
from gwlbsim.config import GwlbConfig
from gwlbsim.linuxio import netns
from gwlbsim.linuxio.fastio import PacketRing
from gwlbsim.live.session import GwlbSession, SessionOptions
from gwlbsim.model import GwlbModel, ToTarget
from gwlbsim.simulate import Flap, Workload, run
from gwlbsim.traffic.inner import IPV4_HEADER_LEN, UDP_HEADER_LEN, ipv4, udp_datagram
from gwlbsim.wire.flowkey import IPPROTO_UDP
from gwlbsim.wire.outer import OuterTemplate

SINK = "10.100.1.10"
NODE = "10.100.1.1"
ENI = 0xBE4C


def _inner(i: int, size: int = 64) -> bytes:
    """An IPv4 UDP packet of flow ``i`` (checksums aside: nothing on the way checks them)."""
    src, dst = bytes([10, 10, i >> 8 & 255, i & 255]), bytes([10, 20, 0, 2])
    udp = udp_datagram(src, dst, 1024 + i, 53, bytes(size - IPV4_HEADER_LEN - UDP_HEADER_LEN), checksum=False)
    return ipv4(src, dst, IPPROTO_UDP, udp, checksum=False)


def _healthy_model(targets: dict[str, str]) -> GwlbModel:
    m = GwlbModel(GwlbConfig(), {"a": NODE})
    m.add_endpoint(ENI, "a")
    for tid, addr in targets.items():
        m.register_target(tid, addr, "a", 0.0)
    now = 0.0
    while m.healthy_count() < len(targets):  # pass the health checks in virtual time
        for p in m.due_probes(now):
            m.probe_result(p.target.id, p.checker, True, now)
        now += 1.0
    return m


@register("gwlb-generator", "fake GWLB as a load generator: encapsulated packets/s sent to an appliance")
def generator(opts: argparse.Namespace) -> dict[str, Any]:

    duration = 1.0 if getattr(opts, "quick", False) else float(getattr(opts, "duration", 2.0)) * 2
    flows = 1024
    model = _healthy_model({"sink": SINK})
    packets = []
    for i in range(flows):
        a = model.from_endpoint(ENI, _inner(i), 1000.0)[0]
        assert isinstance(a, ToTarget)
        packets.append(OuterTemplate(a.node, a.target.address, a.sport, 6081, a.header).packet(a.inner))
    with netns.Lab() as lab:
        gw = lab.namespace("gwlb")
        sink = lab.namespace("sink")
        lab.veth(gw, "to-sink", sink, "eth0", addr_a=f"{NODE}/24", addr_b=f"{SINK}/24")
        drain = lab.socket(sink)
        drain.bind(("0.0.0.0", 6081))  # never read: the kernel drops what overflows, no ICMP back
        raw = lab.socket(gw, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        ring = PacketRing(raw, packets, (SINK, 0))
        sent = 0
        start = time.perf_counter()
        cpu0 = time.process_time()
        i = 0
        while (elapsed := time.perf_counter() - start) < duration:
            for _ in range(64):
                sent += ring.send(i, 64)
                i = (i + 64) % flows
        cpu = time.process_time() - cpu0
        raw.close()
        drain.close()
    pps = sent / elapsed
    return {"text": f"fake GWLB as a load generator: {pps:,.0f} packets/s ({flows} flows, 64-byte inner, "
                    f"{cpu / sent * 1e6:.2f} us CPU per packet)",
            "generated_pps": round(pps), "flows": flows, "cpu_us_per_packet": round(cpu / sent * 1e6, 3)}


SINK_APPLIANCE = ("{python} -c \"import socket,time;u=socket.socket(2,2);u.bind(('0.0.0.0',6081));"
                  "t=socket.socket();t.setsockopt(1,2,1);t.bind(('0.0.0.0',{health_port}));t.listen(64);"
                  "exec('while 1: t.accept()[0].close()')\"")


@register("gwlb-live", "fake GWLB live with its flow table: consumer packets/s through the model to an appliance")
def live(opts: argparse.Namespace) -> dict[str, Any]:

    duration = 2.0 if getattr(opts, "quick", False) else 5.0
    spec = ApplianceSpec(command=SINK_APPLIANCE, health_protocol="tcp", name="sink")
    flows = 256
    with GwlbSession(SessionOptions(appliances=1, spec=spec)) as s:
        s.wait_healthy(60)
        lab, topo = s.running()
        slot = topo.endpoints[0]
        raw = lab.socket(slot.client_ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        packets = []
        for i in range(flows):
            p = bytearray(_inner(i))
            p[12:16] = socket.inet_aton(slot.client_v4)
            p[16:20] = socket.inet_aton(slot.server_v4)
            packets.append(bytes(p))
        ring = PacketRing(raw, packets, (slot.server_v4, 0))
        before = s.call(lambda m: m.metrics.packets)
        cpu0 = os.times()
        start = time.perf_counter()
        i = 0
        offered = 0
        while (elapsed := time.perf_counter() - start) < duration:
            offered += ring.send(i, 16)
            i = (i + 16) % flows
            time.sleep(0)
        time.sleep(0.2)
        done = s.call(lambda m: m.metrics.packets) - before
        cpu = os.times()
        raw.close()
    pps = done / elapsed
    used = (cpu.user + cpu.system) - (cpu0.user + cpu0.system)
    return {"text": f"fake GWLB live (flow table, encapsulation, raw send): {pps:,.0f} packets/s processed "
                    f"of {offered / elapsed:,.0f} offered ({flows} flows)",
            "processed_pps": round(pps), "offered_pps": round(offered / elapsed), "flows": flows,
            "process_cpu_seconds": round(used, 2)}


@register("simulate", "virtual time: flows/s of a million-flow simulation (flow level) and at the packet level")
def simulate(opts: argparse.Namespace) -> dict[str, Any]:

    quick = getattr(opts, "quick", False)
    n = 100_000 if quick else 1_000_000
    flaps = [Flap(5.0 * k, 37 * k % 300, 60.0) for k in range(1, 11)]
    workers = os.cpu_count() or 1
    fl = run(Workload(flows=n, rate=20_000, flaps=flaps, level="flow"), targets=300, workers=workers)
    pn = 20_000 if quick else 100_000
    pk = run(Workload(flows=pn, rate=20_000, flaps=flaps), targets=300, workers=workers)
    return {"text": f"virtual time, {n:,} flows over 300 targets with 10 flaps (flow level, {workers} workers): "
                    f"{fl.wall_seconds:.1f} s ({fl.flows_per_second:,.0f} flows/s); packet level, {pn:,} flows: "
                    f"{pk.wall_seconds:.1f} s ({pk.flows_per_second:,.0f} flows/s)",
            "flow_level": {"flows": n, "seconds": round(fl.wall_seconds, 2), "flows_per_s": round(fl.flows_per_second),
                           "workers": workers},
            "packet_level": {"flows": pn, "seconds": round(pk.wall_seconds, 2),
                             "flows_per_s": round(pk.flows_per_second), "workers": workers}}
