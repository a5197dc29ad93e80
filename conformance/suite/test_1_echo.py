"""Echo: what comes back must be what went out, to the byte, with the outer addresses swapped."""

from __future__ import annotations

import itertools

from gwlbsim.conformance.environment import ConformanceEnv, check, inner_of, same_inner
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import (
    icmp4,
    opening_syn,
    private_only,
    property_settings,
    raw_eni,
    tcp4,
    udp4,
    udp6,
)
from hypothesis import given
from hypothesis import strategies as st

from gwlbsim.traffic import strategies as gst
from gwlbsim.wire import geneve


@requirement("ECHO-1")
def test_outer_addresses_swapped_and_ports_kept(gwlb: ConformanceEnv) -> None:
    """Every instance, from every GWLB node (cross-zone: each node reaches each instance): the return must go
    to the node that sent, to port 6081, from the port it sent from. Returns to any other address or port are
    found on the wire (the capture) and reported as such."""
    for i, app in enumerate(gwlb.topo.appliances):
        for zone, node in gwlb.topo.nodes.items():
            sport = gwlb.next_sport()
            payload = geneve.build(udp4(sport=5000 + i), raw_eni(gwlb), 0x1000 + i)
            got = gwlb.echo(payload, i, sport, node=node)
            # addressing is judged on any datagram back on the probe's port (ECHO-3 judges what it carries)
            back = got.returns or got.changed
            check(back, f"appliance {app.id}, from the node of zone {zone} ({node}): " + got.lost("a valid packet"),
                  payload)
            r = back[0]
            check(r.dst == node, f"appliance {app.id}: a packet from GWLB node {node} came back to {r.dst} (returns "
                  "must go to the node that sent them)", r.data)


@requirement("ECHO-2")
def test_header_comes_back_byte_for_byte(gwlb: ConformanceEnv) -> None:
    extras = (geneve.GeneveOption(0xFF01, 0x22, b"abcdefgh", reserved=5), geneve.GeneveOption(0x0103, 0x7F),
              geneve.GeneveOption(0x0108, 0x09, b"\x01\x02\x03\x04"))
    gwlb_opts = geneve.gwlb_options(raw_eni(gwlb), 9, 0x11223344)
    layouts = [
        dict(options=gwlb_opts),
        dict(options=(extras[0], *gwlb_opts, extras[1]), vni=0xABCDEF),
        dict(options=(gwlb_opts[2], extras[2], gwlb_opts[0], gwlb_opts[1]), reserved_flags=0x2A, reserved=0xA5),
        dict(options=(*gwlb_opts[::-1], *extras), vni=1, reserved_flags=0x3F, reserved=0xFF),
    ]
    for kw in layouts:
        # (type: ignore below) each layout is a dict of differently typed fields
        hdr = geneve.GeneveHeader(protocol=geneve.ETH_P_IP, **kw)  # type: ignore[arg-type]
        sent = hdr.to_bytes() + udp4(payload=b"data")
        got = gwlb.echo(sent)
        check(got, got.lost("a valid packet with this header layout"), sent)
        back = got[0].data
        check(back[:hdr.length] == hdr.to_bytes(),
              f"returned header differs from the one sent (sent {hdr.to_bytes().hex()}, got "
              f"{back[:hdr.length].hex()})", back)


@requirement("ECHO-3")
def test_inner_packet_comes_back_unchanged(gwlb: ConformanceEnv) -> None:
    inners = {"TCP SYN with data": tcp4(payload=b"x" * 100), "UDP": udp4(payload=b"y" * 1000),
              "ICMP echo": icmp4(), "IPv6 UDP": udp6(payload=b"z" * 300)}
    for cookie, (what, inner) in enumerate(inners.items(), 0xABC):  # four flows, a cookie each
        sent = geneve.build(inner, raw_eni(gwlb), cookie)
        got = gwlb.echo(sent)
        check(got, got.lost(what), sent)
        back = inner_of(got[0].data)
        check(back is not None and same_inner(inner, back), f"{what}: inner packet changed on the way through",
              got[0].data)


@requirement("ECHO-4")
def test_any_valid_layout_is_echoed(gwlb: ConformanceEnv) -> None:
    sports = itertools.count(50000)
    fresh = raw_eni(gwlb)

    @property_settings(gwlb)
    @given(vp=gst.valid_packets(eni_ids=st.just(fresh), cookies=st.integers(1, 2**32 - 1),
                                inner=gst.inner_packets(max_size=8500, routable=True, private=private_only(gwlb))))
    def echoed(vp) -> None:
        sport = next(sports)
        syn = opening_syn(vp.inner)
        if syn is not None:  # open the flow with the same header, as GWLB would have
            opened = gwlb.echo(vp.header_bytes + syn, sport=sport)
            check(opened, opened.lost("the SYN opening a generated TCP flow"), vp.header_bytes + syn)
        got = gwlb.echo(vp.payload, sport=sport)
        check(got, got.lost(f"a valid packet (inner {vp.inner_kind or 'packet'})"), vp.payload)
        p = geneve.parse(got[0].data)
        check(p.header_bytes == vp.header_bytes, "header changed", got[0].data)
        check(same_inner(vp.inner, p.inner), "inner packet changed", got[0].data)

    echoed()
