"""Scale: many distinct flows through every instance at once, then the appliance must still be right."""

from __future__ import annotations

import struct
import time
from collections import Counter

from gwlbsim.conformance.environment import ConformanceEnv, check, not_run
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import cookie_of, cookie_text, raw_eni, udp4

from gwlbsim.live.topology import ApplianceSlot
from gwlbsim.wire import geneve

#: every RENEW-th flow is sent again, RENEW_LAG flows later, with a new cookie (GWLB re-created the flow)
RENEW, RENEW_LAG = 10, 500
LOSS_TOLERANCE = 0.01
PORTS = 60_000  #: inner source ports per destination port: flow n is (1024 + n % PORTS, 2000 + n // PORTS)


class _Flows:
    """Datagrams of flow n made from one template by patching its inner ports and its cookie (fast: no packet
    library per datagram). The inner UDP checksum is 0 (none), so patching the ports keeps the packet valid."""

    def __init__(self, eni_id: int, base_cookie: int) -> None:
        inner = bytearray(udp4(sport=1024, dport=2000, payload=b"scale"))
        inner[26:28] = b"\0\0"
        self.template = bytearray(geneve.build(bytes(inner), eni_id, 0x5CA1E))
        s = geneve.scan(bytes(self.template))
        self.cookie_at = bytes(self.template).index(struct.pack("!I", 0x5CA1E))
        self.ports_at = s.header_len + 20
        self.base = base_cookie

    def cookie(self, n: int, renewed: bool) -> int:
        return (self.base + 2 * n + renewed) & 0xFFFFFFFF or 1

    def datagram(self, n: int, renewed: bool = False) -> bytes:
        d = self.template
        struct.pack_into("!HH", d, self.ports_at, 1024 + n % PORTS, 2000 + n // PORTS)
        struct.pack_into("!I", d, self.cookie_at, self.cookie(n, renewed))
        return bytes(d)

    def flow_of(self, data: bytes, header_len: int) -> int | None:
        at = header_len + 20
        if len(data) < at + 4:
            return None
        sport, dport = struct.unpack_from("!HH", data, at)
        if data[header_len + 9] != 17 or not 1024 <= sport < 1024 + PORTS or dport < 2000:
            return None
        return (dport - 2000) * PORTS + sport - 1024


@requirement("ROBUST-8")
def test_many_distinct_flows_leave_the_appliance_right(gwlb: ConformanceEnv) -> None:
    """Every instance gets ``--flows`` distinct UDP flows at ``--flow-rate`` new flows a second (every tenth
    flow sent again later with a new cookie), all instances at once. Every return must carry its own flow's
    header (its cookie at the time), none duplicated, at most 1 % lost; every instance must still be alive and
    healthy, and afterwards an early flow renewed again and a brand-new flow must both come back right."""
    total, rate = gwlb.options.flows, gwlb.options.flow_rate
    apps = gwlb.topo.appliances
    e = raw_eni(gwlb)
    makers = [_Flows(e, 0x10000000 * (i + 1)) for i in range(len(apps))]
    sent: list[Counter[tuple[int, int]]] = [Counter() for _ in apps]  # per instance: (flow, cookie) -> count
    overflows = _gwlb_receive_overflows(gwlb)
    with gwlb.collecting(lambda c: c.kind == "from_target") as col:
        start = time.monotonic()
        for n in range(total):  # paced evenly (16 flows at a time), as GWLB spreads its flows: no bursts
            for i, app in enumerate(apps):
                _send(gwlb, app, makers[i], n, False, sent[i])
                if n % RENEW == 0 and n >= RENEW_LAG:  # a flow sent RENEW_LAG flows earlier, renewed
                    _send(gwlb, app, makers[i], n - RENEW_LAG, True, sent[i])
            if n % 16 == 15:
                due = start + (n + 1) / rate
                while (now := time.monotonic()) < due:
                    time.sleep(due - now)
                if n % 4096 == 4095:
                    gwlb.raise_if_crashed()
        offered = sum(sum(c.values()) for c in sent)
        took = time.monotonic() - start
        items = col.wait_for(lambda items: len(items) >= offered, timeout=10)
    gwlb.raise_if_crashed()
    back: list[Counter[tuple[int, int]]] = [Counter() for _ in apps]
    wrong: list[tuple[str, bytes]] = []
    by_address = {a.address: i for i, a in enumerate(apps)}
    for c in items:
        at = by_address.get(c.src)
        if at is None:
            continue
        i = at
        try:
            s = geneve.scan(c.data)
        except geneve.GeneveError as err:
            wrong.append((f"a return GWLB cannot parse ({err.reason})", c.data))
            continue
        flow = makers[i].flow_of(c.data, s.header_len)
        if flow is None:
            continue  # not one of this test's flows (a marker, a late return of an earlier test)
        key = (flow, s.cookie)
        if key not in sent[i]:
            wrong.append((f"instance {i}: flow {flow} came back with cookie {cookie_text(s.cookie)}, which GWLB "
                          f"never sent for it (its cookies: {makers[i].cookie(flow, False):#x}"
                          + (f", then {makers[i].cookie(flow, True):#x})" if flow % RENEW == 0 else ")"), c.data))
            continue
        back[i][key] += 1
    # a renewed flow's first packet that comes back after its renewal carries the flow's latest header (a return
    # carries the header its flow has when it leaves): it is that packet, late, not a duplicate of the renewal
    late_renewed = 0
    for i in range(len(apps)):
        for (flow, cookie), n in list(back[i].items()):
            old = (flow, makers[i].cookie(flow, False))
            if flow % RENEW == 0 and cookie == makers[i].cookie(flow, True) and n > sent[i][(flow, cookie)] \
                    and back[i][old] < sent[i][old]:
                moved = min(n - sent[i][(flow, cookie)], sent[i][old] - back[i][old])
                back[i][(flow, cookie)] -= moved
                back[i][old] += moved
                late_renewed += moved
    dups = sum(max(0, back[i][k] - sent[i][k]) for i in range(len(apps)) for k in back[i])
    got = sum(min(back[i][k], sent[i][k]) for i in range(len(apps)) for k in back[i])
    check(not wrong, f"{len(wrong)} of {offered} returns wrong with {total:,} flows per instance, e.g. {wrong[0][0]}"
          if wrong else "", wrong[0][1] if wrong else None)
    check(not dups, f"{dups} returns duplicated with {total:,} flows per instance"
          + (f" ({late_renewed} more came back after their flow's renewal, with its new header: not counted)"
             if late_renewed else ""))
    harness = _gwlb_receive_overflows(gwlb) - overflows
    if offered - got > LOSS_TOLERANCE * offered and harness:
        not_run(f"the fake GWLB could not keep up with the returns ({harness} datagrams overflowed its receive "
                f"buffer; {offered - got} of {offered} not seen): lower --flow-rate")
    check(offered - got <= LOSS_TOLERANCE * offered,
          f"{offered - got} of {offered} datagrams lost with {total:,} distinct flows per instance offered at "
          f"{rate:,.0f} new flows/s (took {took:.1f} s); at most {LOSS_TOLERANCE:.0%} may be lost: "
          + ", ".join(f"instance {i} returned {sum(min(back[i][k], sent[i][k]) for k in back[i])} of "
                      f"{sum(sent[i].values())}" for i in range(len(apps))))
    for i in range(len(apps)):
        check(gwlb.alive(i), f"instance {i} died after {total:,} flows")
        if gwlb.spec.health_protocol == "http":
            status = gwlb.health_status(i)
            check(status == 200, f"instance {i}: health says {status} after {total:,} flows")
        fl = makers[i]
        for what, n, cookie in (("the first flow, renewed once more", 0, fl.base ^ 0x0F0F0F0F or 1),
                                ("a brand-new flow", total, fl.cookie(total, False))):
            d = bytearray(fl.datagram(n))
            struct.pack_into("!I", d, fl.cookie_at, cookie)
            got_back = gwlb.echo(bytes(d), i)
            check(got_back, f"instance {i}, after {total:,} flows: " + got_back.lost(what), bytes(d))
            check(cookie_of(got_back[0].data) == cookie, f"instance {i}, after {total:,} flows: {what} came back "
                  f"with {cookie_text(cookie_of(got_back[0].data))}, not its cookie {cookie:#x}", got_back[0].data)


def _gwlb_receive_overflows(env: ConformanceEnv) -> int:
    """UDP receive-buffer overflows in the fake GWLB's namespace so far (its own sockets' drops)."""
    out = env.lab.run(env.topo.gwlb_ns, ["cat", "/proc/net/snmp"], check=False).stdout.decode()
    rows = [line.split()[1:] for line in out.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def _send(env: ConformanceEnv, app: ApplianceSlot, fl: _Flows, n: int, renewed: bool,
          sent: Counter[tuple[int, int]]) -> None:
    env.gwlb.send_raw(app.address, fl.datagram(n, renewed), 10_000 + n % 50_000, app.gwlb_address)
    sent[(n, fl.cookie(n, renewed))] += 1

