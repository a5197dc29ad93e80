"""Cookies: every return must carry the cookie of the latest packet GWLB sent for that flow."""

from __future__ import annotations

from conformance.environment import ConformanceEnv, check
from conformance.plugin import requirement
from conformance.suite.helpers import cookie_of, cookie_text, raw_eni, tcp4, udp4
from gwlbsim import geneve


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
