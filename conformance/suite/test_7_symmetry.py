"""Symmetry: each flow returns through the appliance that received it, and only flows it received."""

from __future__ import annotations

import select
import time
from collections import defaultdict

from conformance.environment import ConformanceEnv, check, not_run
from conformance.plugin import requirement
from gwlbsim import geneve
from gwlbsim.live.gwlb import Captured


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
                return
            (sent if c.kind == "to_target" else back)[cookie].add(c.dst if c.kind == "to_target" else c.src)

    gwlb.gwlb.add_tap(tap)
    try:
        answered, asked = _exchange_many(gwlb, range(34000, 34040))
        time.sleep(0.3)
    finally:
        gwlb.gwlb.remove_tap(tap)
    check(answered > 0, f"none of {asked} UDP exchanges through GWLB was answered: the appliances carry no traffic")
    check(len({t for ts in sent.values() for t in ts}) >= 2, "the flows did not spread over the appliances")
    for cookie, targets in sent.items():
        check(len(targets) == 1, f"GWLB sent flow {cookie:#x} to several appliances: {targets}")
        # a flow that never came back is a loss (the TRAFFIC requirements judge that), not asymmetry
        check(back.get(cookie, targets) == targets, f"flow {cookie:#x} went to {', '.join(targets)} but came back "
              f"from {', '.join(sorted(back[cookie]))}")


@requirement("SYM-2")
def test_no_appliance_returns_a_flow_sent_to_another(gwlb: ConformanceEnv) -> None:
    _exchange_many(gwlb, range(34100, 34120))
    wrong = [v for v in gwlb.auditor.violations if "instead" in v[1]]
    drops = gwlb.call(lambda m: m.metrics.drops.get("wrong_target", 0))
    check(not wrong and not drops, f"appliance {wrong[0][0] if wrong else '?'} returned flows sent to another "
          f"({len(wrong)} seen, GWLB dropped {drops} as wrong_target)", wrong[0][2] if wrong else None)


@requirement("SYM-3")
def test_appliance_never_originates_flows(gwlb: ConformanceEnv) -> None:
    _exchange_many(gwlb, range(34200, 34210))
    # let the appliances run a while: anything they send now on their own is caught by the auditor
    time.sleep(2)
    origin = [v for v in gwlb.auditor.violations if "never received" in v[1]]
    check(not origin, f"appliance {origin[0][0] if origin else '?'} sent {len(origin)} packet(s) of flows it never "
          "received from GWLB", origin[0][2] if origin else None)
