"""Symmetry: each flow returns through the appliance that received it, and only flows it received."""

from __future__ import annotations

import select
import socket
import time
from collections import defaultdict

from gwlbsim.conformance.environment import ConformanceEnv, check, not_run
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import raw_eni
from scapy.all import ICMP, IP, TCP, UDP, IPv6, raw

from gwlbsim.live.balancer import Captured
from gwlbsim.wire import geneve


def _exchange_many(env: ConformanceEnv, ports: range, timeout: float = 3.0) -> tuple[int, int]:
    """UDP request/answer exchanges on many flows at once (one client port each): every query is sent, the
    server answers each as it arrives, and one shared deadline bounds the wait. Returns (answered, asked)."""
    slot = env.topo.endpoints[0]
    srv = env.session.server_socket(0)
    srv.bind((slot.server_v4, 9100))
    clients = []
    try:
        for port in ports:
            cli = env.session.client_socket(0)
            cli.bind((slot.client_v4, port))
            cli.setblocking(False)
            clients.append(cli)
        for cli in clients:
            cli.sendto(b"q", (slot.server_v4, 9100))
        deadline = time.monotonic() + timeout
        answered: set[int] = set()
        asked: set[object] = set()
        srv.setblocking(False)
        while len(answered) < len(clients) and time.monotonic() < deadline:
            ready, _, _ = select.select([srv, *clients], [], [], 0.05)
            for sock in ready:
                try:
                    _, addr = sock.recvfrom(100)
                except BlockingIOError:
                    continue
                if sock is srv:
                    if addr not in asked:
                        asked.add(addr)
                        srv.sendto(b"a", addr)
                else:
                    answered.add(sock.getsockname()[1])
            env.raise_if_crashed()
        return len(answered), len(clients)
    finally:
        for cli in clients:
            cli.close()
        srv.close()


def _unparseable(env: ConformanceEnv, since: int) -> list[tuple[str, str, bytes]]:
    """Datagrams GWLB cannot parse that carry nothing sent to the appliance (broken returns are the echo
    requirements' to judge)."""
    return [v for v in env.auditor.violations[since:] if v[1].startswith("sent a datagram GWLB cannot parse")]


@requirement("SYM-1")
def test_both_directions_return_through_the_receiving_appliance(gwlb: ConformanceEnv) -> None:
    if len(gwlb.instances) < 2:
        not_run("needs at least two appliance instances to tell symmetry from luck (--instances 2)")
    sent: dict[int, set[str]] = defaultdict(set)
    back: dict[int, set[str]] = defaultdict(set)

    def tap(c: Captured) -> None:
        if c.kind in ("to_target", "from_target"):
            try:
                cookie = geneve.scan(c.data).cookie
            except geneve.GeneveError:
                return  # the auditor records returns GWLB cannot parse
            (sent if c.kind == "to_target" else back)[cookie].add(c.dst if c.kind == "to_target" else c.src)

    gwlb.gwlb.add_tap(tap)
    try:
        answered, asked = _exchange_many(gwlb, range(34000, 34040))
        time.sleep(0.3)
    finally:
        gwlb.gwlb.remove_tap(tap)
    check(len({t for ts in sent.values() for t in ts}) >= 2, "the flows did not spread over the appliances")
    for cookie, targets in sent.items():
        check(len(targets) == 1, f"GWLB sent flow {cookie:#x} to several appliances: {targets}")
        check(back.get(cookie, targets) == targets, f"flow {cookie:#x} went to {', '.join(targets)} but came back "
              f"from {', '.join(sorted(back[cookie]))}")
    # both directions of every flow: each query reached the server and each answer reached the client
    check(answered == asked, f"{asked - answered} of {asked} UDP exchanges through GWLB were not completed (a "
          "query or its answer was lost): both directions of every flow must come back")


@requirement("SYM-2")
def test_no_appliance_returns_a_flow_sent_to_another(gwlb: ConformanceEnv) -> None:
    since = len(gwlb.auditor.violations)
    drops_before = gwlb.call(lambda m: m.metrics.drops.get("wrong_target", 0))
    _exchange_many(gwlb, range(34100, 34120))
    new = gwlb.auditor.violations[since:]
    wrong = [v for v in new if "instead" in v[1]]
    drops = gwlb.call(lambda m: m.metrics.drops.get("wrong_target", 0)) - drops_before
    check(not wrong and not drops, f"appliance {wrong[0][0] if wrong else '?'} returned flows sent to another "
          f"({len(wrong)} seen, GWLB dropped {drops} as wrong_target)", wrong[0][2] if wrong else None)


def _unseen_flows() -> list[tuple[str, bytes]]:
    """Packets of flows GWLB never sent (addresses from the test's own ranges), both address families."""
    return [("UDP", raw(IP(src="10.10.0.77", dst="10.20.0.77") / UDP(sport=4077, dport=53) / b"never-seen")),
            ("TCP", raw(IP(src="10.20.0.77", dst="10.10.0.77") / TCP(sport=443, dport=4078, flags="SA"))),
            ("ICMP", raw(IP(src="10.10.0.77", dst="10.20.0.77") / ICMP(id=77) / b"never-seen")),
            ("IPv6 UDP", raw(IPv6(src="fd00:10::77", dst="fd00:20::77") / UDP(sport=4079, dport=53) / b"n"))]


def _write_into(env: ConformanceEnv, instance: int, device: str, packet: bytes) -> bool:
    """Hand ``packet`` to the appliance as if its OS had sent it out of ``device`` (an AF_PACKET send on a TUN
    device reaches the appliance's reader). False if the device cannot take it (gone, or down)."""
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    s = env.lab.socket(env.instances[instance].ns, socket.AF_PACKET, socket.SOCK_DGRAM,
                               socket.htons(ethertype))
    try:
        s.sendto(packet, (device, ethertype))
        return True
    except OSError:
        return False
    finally:
        s.close()


@requirement("SYM-3")
def test_appliance_never_originates_flows(gwlb: ConformanceEnv) -> None:
    """Provoked, then watched: packets of flows GWLB never sent are written into every tunnel device of every
    instance (the way its OS would hand them over), after real flows have filled its flow cache; none may
    reach GWLB. Then anything the appliances send on their own for two seconds is caught too."""
    since = len(gwlb.auditor.violations)
    _exchange_many(gwlb, range(34200, 34210))
    offered = 0
    if gwlb.kind == "gwlbtun":
        for i, devices in enumerate(gwlb.tunnel_devices()):
            for device in devices:
                for _, pkt in _unseen_flows():
                    offered += _write_into(gwlb, i, device, pkt)
        # whatever they did with them, they have done once a packet sent to each instance has come back
        for i in range(len(gwlb.instances)):
            gwlb.echo(gwlb.marker(raw_eni(gwlb)), i, timeout=1)
    time.sleep(2)  # anything sent now on the appliances' own is caught by the auditor
    origin = [v for v in gwlb.auditor.violations[since:] if "never received" in v[1]]
    check(not origin, f"appliance {origin[0][0] if origin else '?'} sent {len(origin)} packet(s) of flows it never "
          f"received from GWLB ({offered} packets of never-seen flows were written into its tunnel devices)",
          origin[0][2] if origin else None)
    bad = _unparseable(gwlb, since)
    check(not bad, f"appliance {bad[0][0] if bad else ''} sent {len(bad)} datagram(s) GWLB cannot parse",
          bad[0][2] if bad else None)
