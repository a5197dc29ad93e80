"""Cookies: every return must carry the cookie of the latest packet GWLB sent for that flow."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gwlbsim.conformance.environment import ConformanceEnv, check
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import cookie_of, cookie_text, raw_eni, tcp4, udp4

from gwlbsim.live.balancer import Captured
from gwlbsim.live.topology import ApplianceSlot
from gwlbsim.wire import geneve


@requirement("COOKIE-1")
def test_interleaved_flows_keep_their_own_cookies(gwlb: ConformanceEnv) -> None:
    """Eight UDP flows, both directions, all in flight at once in each round: every return carries its own
    flow's cookie (each flow has its own outer source port, as GWLB's are hashed per flow)."""
    flows = [(udp4(sport=41000 + i, payload=b"f"), udp4(sport=41000 + i, payload=b"r", reverse=True), 0x5000 + i,
              gwlb.next_sport()) for i in range(8)]
    cookie_by_port = {sport: cookie for _, _, cookie, sport in flows}
    for rnd in range(3):
        burst = [(geneve.build(inner, raw_eni(gwlb), cookie), sport)
                 for fwd, rev, cookie, sport in flows for inner in (fwd, rev)]
        got = gwlb.burst(burst)
        check(len(got) == len(burst), f"round {rnd}: {len(got)} of {len(burst)} packets came back; "
              + got.lost("the rest"))
        for r in got:
            want = cookie_by_port[r.sport]
            check(cookie_of(r.data) == want,
                  f"flow with cookie {want:#x} came back with {cookie_text(cookie_of(r.data))}", r.data)


@requirement("COOKIE-2")
def test_reused_five_tuple_switches_to_new_cookie_at_once(gwlb: ConformanceEnv) -> None:
    sport = gwlb.next_sport()
    fwd, rev = tcp4(sport=42000, flags="S"), tcp4(sport=42000, flags="SA", reverse=True)
    for cookie in (0x6001, 0x6002, 0x6003, 0x6004):
        for what, inner in (("SYN", fwd), ("SYN-ACK", rev)):
            sent = geneve.build(inner, raw_eni(gwlb), cookie)
            got = gwlb.echo(sent, sport=sport)
            check(got, got.lost(f"the {what} of the flow reopened with cookie {cookie:#x}"), sent)
            back = cookie_of(got[0].data)
            check(back == cookie, f"after GWLB renewed the flow's cookie to {cookie:#x}, the return carried "
                  f"{cookie_text(back)} (GWLB drops it)", got[0].data)


@requirement("COOKIE-3")
def test_endpoints_with_overlapping_addresses_are_never_mixed(gwlb: ConformanceEnv) -> None:
    """Two endpoints, the same inner 5-tuple, packets interleaved back to back: each return must carry its own
    endpoint's ENI id, attachment id and cookie (told apart by a tag in the inner payload)."""
    ids = {b"E0": (raw_eni(gwlb), 0, 0x7000, gwlb.next_sport()), b"E1": (gwlb.fresh_eni(), 77, 0x7001,
                                                                          gwlb.next_sport())}
    for rnd in range(5):
        burst = []
        for reverse in (False, True):
            for tag, (eni_id, att, cookie, sport) in ids.items():
                inner = udp4(sport=43000, reverse=reverse, payload=tag + bytes([rnd]))
                burst.append((geneve.build(inner, eni_id, cookie, att), sport))
        got = gwlb.burst(burst)
        check(len(got) == len(burst), f"round {rnd}: {len(got)} of {len(burst)} packets came back; "
              + got.lost("the rest"))
        for r in got:
            try:
                p = geneve.parse(r.data)
            except geneve.GeneveError as e:
                check(False, f"a return GWLB cannot use ({e.reason}: {e})", r.data)
            tag = p.inner[-3:-1]
            check(tag in ids, "a return whose inner payload is not one we sent", r.data)
            eni_id, att, cookie, sport = ids[tag]
            check((p.eni_id, p.attachment_id, p.cookie, r.sport) == (eni_id, att, cookie, sport),
                  f"a packet of endpoint {eni_id:016x} (attachment {att}, cookie {cookie:#x}, port {sport}) came back "
                  f"as endpoint {p.eni_id:016x}, attachment {p.attachment_id}, cookie {p.cookie:#x}, port {r.sport}",
                  r.data)


#: COOKIE-4's load: flows per (instance, endpoint), packets per flow per round, rounds, loss tolerated
CONCURRENT_FLOWS, PACKETS_PER_ROUND, ROUNDS, LOSS_TOLERANCE = 16, 4, 4, 0.01


@dataclass
class _Flow:
    instance: int
    eni_id: int
    attachment: int
    sport: int  #: GWLB's outer source port for the flow
    port: int  #: the inner client port
    index: int
    headers: list[bytes] = field(default_factory=list)  #: every header sent for the flow, oldest first

    def packet(self, cookie: int, seq: int) -> tuple[bytes, bytes]:
        """(the datagram, its header): forward and reverse alternate; the inner payload names flow and seq."""
        inner = udp4(sport=self.port, reverse=seq % 2 == 1, payload=b"C4" + struct.pack("!HH", self.index, seq))
        data = geneve.build(inner, self.eni_id, cookie, self.attachment)
        return data, data[:len(data) - len(inner)]


@requirement("COOKIE-4")
def test_many_flows_in_flight_with_cookies_renewed_mid_stream(gwlb: ConformanceEnv) -> None:
    """Every instance gets packets of many flows of two endpoints at once, interleaved packet by packet; in some
    rounds half of the flows get a new cookie in the middle of the round. Each return is matched to the packet it
    answers (by its inner payload) and must come from that instance to that flow's port, with the header of its
    own packet or a later header of its own flow (never another flow's, never an older one)."""
    endpoints = [(raw_eni(gwlb), 0), (gwlb.fresh_eni(), 0x3C)]
    flows = [_Flow(i, e, att, gwlb.next_sport(), 44000 + len(endpoints) * k + j, 0)
             for i in range(len(gwlb.instances)) for j, (e, att) in enumerate(endpoints)
             for k in range(CONCURRENT_FLOWS)]
    for n, f in enumerate(flows):
        f.index = n
    sent: dict[tuple[int, int], tuple[_Flow, bytes, int]] = {}  # (flow, seq) -> flow, header, index of header
    seen: set[tuple[int, int]] = set()
    problems: list[tuple[str, bytes]] = []
    apps = gwlb.topo.appliances
    seq = 0
    for rnd in range(ROUNDS):
        order: list[tuple[_Flow, bytes]] = []
        for k in range(PACKETS_PER_ROUND):
            for f in flows:
                renew = rnd % 2 == 1 and f.index % 2 == 0 and k == PACKETS_PER_ROUND // 2
                if not f.headers or renew:
                    f.headers.append(b"")
                cookie = 0xC4000000 + f.index * 16 + len(f.headers)
                data, header = f.packet(cookie, seq + k)
                f.headers[-1] = header
                sent[(f.index, seq + k)] = (f, header, len(f.headers) - 1)
                order.append((f, data))
        seq += PACKETS_PER_ROUND
        returns = gwlb.send_interleaved([(f.instance, data, f.sport) for f, data in order], order[0][0].eni_id)
        for r in returns:
            problems.extend(_judge(r, apps, sent, seen, flows))
        if problems:
            break
    total = len(sent)
    lost = [k for k in sent if k not in seen]
    check(not problems, f"{len(problems)} wrong return(s) with {len(flows)} flows in flight, e.g. "
          + "; ".join(p for p, _ in problems[:3]), problems[0][1] if problems else None)
    check(len(lost) <= LOSS_TOLERANCE * total,
          f"{len(lost)} of {total} packets did not come back ({len(flows)} flows in flight; at most "
          f"{LOSS_TOLERANCE:.0%} may be lost)")


def _judge(r: Captured, apps: list[ApplianceSlot], sent: dict[tuple[int, int], tuple[_Flow, bytes, int]],
           seen: set[tuple[int, int]], flows: list[_Flow]) -> list[tuple[str, bytes]]:
    try:
        p = geneve.scan(r.data)
    except geneve.GeneveError as e:
        return [(f"a return GWLB cannot parse ({e.reason}) from {r.src}:{r.sport}", r.data)]
    inner = r.data[p.header_len:]
    tag = inner[-6:]
    if len(inner) < 6 or tag[:2] != b"C4":
        return [(f"a datagram from {r.src}:{r.sport} that answers none of the packets sent", r.data)]
    index, seq = struct.unpack("!HH", tag[2:])
    if (index, seq) not in sent:
        return [(f"a datagram from {r.src}:{r.sport} that answers none of the packets sent", r.data)]
    f, header, h = sent[(index, seq)]
    out = []
    if (index, seq) in seen:
        out.append((f"packet {seq} of flow {index} came back twice", r.data))
    seen.add((index, seq))
    app = apps[f.instance]
    if (r.src, r.dst, r.sport) != (app.address, app.gwlb_address, f.sport):
        out.append((f"packet {seq} of flow {index} came back from {r.src} to {r.dst}:{r.dport} from port "
                    f"{r.sport}, not from {app.address} to {app.gwlb_address} from {f.sport}", r.data))
    back = r.data[:p.header_len]
    if back not in f.headers[h:]:
        owner = next((g for g in flows if back in g.headers), None)
        whose = ("an older header of its own flow" if back in f.headers else
                 f"the header of flow {owner.index}" if owner is not None else "a header never sent")
        out.append((f"packet {seq} of flow {index} (cookie {cookie_text(geneve.scan(header).cookie)}) came back "
                    f"with {whose} (cookie {cookie_text(p.cookie)})", r.data))
    return out
