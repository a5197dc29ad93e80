"""The live topology: consumer namespaces per GWLB endpoint, the GWLB's namespace, one per appliance.

::

    cli<e> 10.10.0.2 ──┐                            ┌── app0 10.100.1.10 (zone a)
                       ep<e> ══ TUN gwlbe ══ fake GWLB (gwlb ns) ── br-a 10.100.1.1 ──┤
    srv<e> 10.20.0.2 ──┘   (the GWLB endpoint)      │   br-b 10.100.2.1 ──┴── app1 10.100.2.11 (zone b)

Every endpoint's client and server sides use the *same* addresses (10.10.0.2 and 10.20.0.2, fd00:10::2 and
fd00:20::2), as consumer VPCs with overlapping CIDRs do: only the ENI id tells them apart. In each endpoint
namespace, everything arriving from the client or the server is routed into the TUN device ``gwlbe``,
which the fake GWLB reads; what the GWLB delivers back is written into ``gwlbe`` and routed on to its
destination. So ordinary tools (ping, TCP, UDP) work end to end through the appliances.

Routes on the consumer side carry an MTU of 8500 (GWLB's), while the links themselves take 9000: bigger
packets can still be sent on purpose (raw sockets) to see the GWLB drop them.

With ``internet=True`` (the two-arm NAT deployment), an "internet" namespace is added, and every appliance
gets a second arm toward it, with its default routes::

    app<i> eth1 203.0.113.<10 + i> ── br-net 203.0.113.1 (inet ns) ── servers 198.51.100.10, 2001:db8:100::10
           2001:db8:113::<10 + i>        2001:db8:113::1

All of those are documentation addresses (RFC 5737, RFC 3849): nothing outside the namespaces is reachable.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace

from gwlbsim.linuxio.netns import Lab

GWLB_MTU = 8500
LINK_MTU = 9000
CLIENT_V4, SERVER_V4 = "10.10.0.2", "10.20.0.2"
CLIENT_V6, SERVER_V6 = "fd00:10::2", "fd00:20::2"
ENDPOINT_TABLE = 100
ENI_BASE = 0x2B8EE1D4DB0C5100
#: the internet side (two-arm deployments): its router on the appliances' second arm, and its servers
INTERNET_GATEWAY_V4, INTERNET_GATEWAY_V6 = "203.0.113.1", "2001:db8:113::1"
INTERNET_SERVER_V4, INTERNET_SERVER_V6 = "198.51.100.10", "2001:db8:100::10"
#: the appliances' second arm
UPLINK = "eth1"


@dataclass(frozen=True)
class Zone:
    name: str
    node: str  #: the GWLB node's address in this zone
    bridge: str


@dataclass(frozen=True)
class ApplianceSlot:
    index: int
    ns: str
    address: str
    zone: str
    gwlb_address: str  #: the node address of its zone
    #: its addresses on the second arm toward the internet ("" without one)
    uplink_v4: str = ""
    uplink_v6: str = ""

    @property
    def id(self) -> str:
        return f"app{self.index}"


@dataclass(frozen=True)
class EndpointSlot:
    index: int
    eni_id: int
    zone: str
    ep_ns: str  #: holds the TUN device the GWLB reads
    client_ns: str
    server_ns: str
    attachment_id: int = 0
    tun: str = "gwlbe"
    client_v4: str = CLIENT_V4
    server_v4: str = SERVER_V4
    client_v6: str = CLIENT_V6
    server_v6: str = SERVER_V6


@dataclass(frozen=True)
class Internet:
    """The internet side of two-arm deployments: a namespace routing between the appliances' second arms
    and the servers it holds."""

    ns: str
    server_v4: str = INTERNET_SERVER_V4
    server_v6: str = INTERNET_SERVER_V6
    gateway_v4: str = INTERNET_GATEWAY_V4
    gateway_v6: str = INTERNET_GATEWAY_V6


@dataclass
class Topology:
    lab: Lab
    gwlb_ns: str
    zones: list[Zone] = field(default_factory=list)
    appliances: list[ApplianceSlot] = field(default_factory=list)
    endpoints: list[EndpointSlot] = field(default_factory=list)
    internet: Internet | None = None

    @property
    def nodes(self) -> dict[str, str]:
        return {z.name: z.node for z in self.zones}

    def describe(self) -> str:
        lines = [f"fake GWLB: namespace {self.gwlb_ns}; nodes " +
                 ", ".join(f"{z.name}={z.node}" for z in self.zones)]
        for a in self.appliances:
            lines.append(f"appliance {a.id}: namespace {a.ns}, address {a.address}, zone {a.zone}"
                         + (f"; second arm {UPLINK} {a.uplink_v4}/{a.uplink_v6}" if a.uplink_v4 else ""))
        for e in self.endpoints:
            lines.append(f"endpoint {e.index} (ENI {e.eni_id:016x}, zone {e.zone}): client {e.client_ns} "
                         f"{e.client_v4}/{e.client_v6}, server {e.server_ns} {e.server_v4}/{e.server_v6}")
        if self.internet is not None:
            i = self.internet
            lines.append(f"internet: namespace {i.ns}, servers {i.server_v4}/{i.server_v6} (router "
                         f"{i.gateway_v4}/{i.gateway_v6})")
        return "\n".join(lines)


#: every GWLB node address (10.100.<zone>.1) and appliance address (10.100.<zone>.<10 + i>) is in here
NODES_CIDR = "10.100.0.0/16"
#: what the address plan holds: zones (one GWLB node each), appliances, endpoints
LIMITS = {"zones": (1, 9), "appliances": (1, 200), "endpoints": (1, 50)}


def build(lab: Lab, *, zones: int = 1, appliances: int = 2, endpoints: int = 1,
          internet: bool = False) -> Topology:
    """Create every namespace and link; nothing runs yet. ``internet``: the internet namespace, and a second
    arm for every appliance with its default routes through it (two-arm deployments)."""
    for what, n in (("zones", zones), ("appliances", appliances), ("endpoints", endpoints)):
        lo, hi = LIMITS[what]
        if not lo <= n <= hi:
            raise ValueError(f"{what} must be {lo} to {hi}, not {n}")
    gwlb = lab.namespace("gwlb")
    topo = Topology(lab, gwlb)
    lab.sysctl(gwlb, "net.ipv4.ip_forward", 0)
    for zi in range(zones):
        name = chr(ord("a") + zi)
        z = Zone(name, f"10.100.{zi + 1}.1", f"br-{name}")
        lab.bridge(gwlb, z.bridge, f"{z.node}/24", mtu=LINK_MTU)
        topo.zones.append(z)
    for i in range(appliances):
        z = topo.zones[i % zones]
        ns = lab.namespace(f"app{i}")
        addr = f"10.100.{topo.zones.index(z) + 1}.{10 + i}"
        lab.veth(ns, "eth0", gwlb, f"a{i}", addr_a=f"{addr}/24", mtu=LINK_MTU)
        lab.enslave(gwlb, f"a{i}", z.bridge)
        if zones > 1:  # the other zones' GWLB nodes are reached through this zone's, as through a VPC router
            lab.route(ns, NODES_CIDR, gateway=z.node)
        topo.appliances.append(ApplianceSlot(i, ns, addr, z.name, z.node))
    for e in range(endpoints):
        topo.endpoints.append(_endpoint(lab, e, topo.zones[e % zones].name))
    if internet:
        _internet(lab, topo)
    return topo


def _internet(lab: Lab, topo: Topology) -> None:
    net = Internet(lab.namespace("inet"))
    topo.internet = net
    lab.bridge(net.ns, "br-net", f"{net.gateway_v4}/24", f"{net.gateway_v6}/64", mtu=LINK_MTU)
    lab.configure(net.ns, "lo", f"{net.server_v4}/32", f"{net.server_v6}/128")
    lab.sysctl(net.ns, "net.ipv6.conf.all.accept_dad", 0)
    for n, a in enumerate(topo.appliances):
        v4, v6 = f"203.0.113.{10 + a.index}", f"2001:db8:113::{10 + a.index:x}"
        lab.veth(a.ns, UPLINK, net.ns, f"u{a.index}", addr_a=f"{v4}/24", mtu=LINK_MTU)
        lab.configure(a.ns, UPLINK, f"{v6}/64")
        lab.enslave(net.ns, f"u{a.index}", "br-net")
        lab.route(a.ns, "default", gateway=net.gateway_v4)
        lab.route(a.ns, "default", gateway=net.gateway_v6)
        topo.appliances[n] = replace(a, uplink_v4=v4, uplink_v6=v6)


def _endpoint(lab: Lab, e: int, zone: str) -> EndpointSlot:
    ep = lab.namespace(f"ep{e}")
    cli = lab.namespace(f"cli{e}")
    srv = lab.namespace(f"srv{e}")
    slot = EndpointSlot(e, ENI_BASE + e, zone, ep, cli, srv)
    lab.veth(cli, "eth0", ep, "to-cli", addr_a=f"{CLIENT_V4}/24", addr_b="10.10.0.1/24", mtu=LINK_MTU)
    lab.veth(srv, "eth0", ep, "to-srv", addr_a=f"{SERVER_V4}/24", addr_b="10.20.0.1/24", mtu=LINK_MTU)
    lab.configure(cli, "eth0", f"{CLIENT_V6}/64")
    lab.configure(srv, "eth0", f"{SERVER_V6}/64")
    lab.configure(ep, "to-cli", "fd00:10::1/64")
    lab.configure(ep, "to-srv", "fd00:20::1/64")
    lab.route(cli, "default", gateway="10.10.0.1", mtu=GWLB_MTU)
    lab.route(srv, "default", gateway="10.20.0.1", mtu=GWLB_MTU)
    lab.route(cli, "default", gateway="fd00:10::1", mtu=GWLB_MTU)
    lab.route(srv, "default", gateway="fd00:20::1", mtu=GWLB_MTU)
    for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv6.conf.all.forwarding", 1),
                       ("net.ipv4.conf.all.rp_filter", 0), ("net.ipv4.conf.default.rp_filter", 0)):
        lab.sysctl(ep, key, value)
    for ns in (cli, srv):
        lab.sysctl(ns, "net.ipv6.conf.all.accept_dad", 0)
    return slot


def plumb_endpoint(lab: Lab, slot: EndpointSlot) -> None:
    """Once the GWLB has created ``slot.tun`` in the endpoint namespace: route both sides into it."""
    ep = slot.ep_ns
    lab.sysctl(ep, f"net.ipv4.conf.{slot.tun}.rp_filter", 0)
    for family in (socket.AF_INET, socket.AF_INET6):
        for iif in ("to-cli", "to-srv"):
            lab.rule(ep, iif, ENDPOINT_TABLE, family=family)
    lab.route(ep, "default", dev=slot.tun, table=ENDPOINT_TABLE)
    lab.route(ep, "::/0", dev=slot.tun, table=ENDPOINT_TABLE)
