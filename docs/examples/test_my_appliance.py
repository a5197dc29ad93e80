"""A vendor's own tests against the fake GWLB, with gwlbsim's pytest fixtures (``pytest --fixtures`` lists them).

Run as root, with your appliance (a command template: see ``gwlb-conformance --help`` for the placeholders)::

    pytest docs/examples/test_my_appliance.py --gwlb-appliance "/opt/fw/bin/fw -p {health_port}" --gwlb-instances 2

Without ``--gwlb-appliance`` the built-in reference appliance runs (as the project's CI does with this file).
"""

from __future__ import annotations

from scapy.all import IP, UDP, raw

from gwlbsim.wire import geneve


def test_a_packet_comes_back_with_the_header_gwlb_sent(gwlb_send) -> None:
    inner = raw(IP(src="10.1.0.5", dst="10.2.0.9") / UDP(sport=40000, dport=53) / b"query")
    echo = gwlb_send(inner, cookie=0x1234ABCD)
    assert echo, echo.lost("the DNS query")
    back = geneve.parse(echo.returns[0].data)
    assert back.cookie == 0x1234ABCD and back.inner == inner


def test_a_flow_through_gwlb_reaches_a_healthy_target_and_comes_back(gwlb_inject, gwlb_targets, gwlb_drops) -> None:
    assert set(gwlb_targets.values()) == {"healthy"}, gwlb_targets
    before = gwlb_drops()
    inner = raw(IP(src="10.10.0.1", dst="10.20.0.2") / UDP(sport=5353, dport=5353) / b"hello")
    sent, delivered = gwlb_inject(inner)
    assert len(sent) == 1 and delivered, "GWLB sent it to one target, and the appliance returned it"
    assert gwlb_drops() == before, "GWLB dropped nothing the appliance returned"


def test_what_gwlb_saw_can_be_captured(gwlb_capture, gwlb_inject) -> None:
    inner = raw(IP(src="10.10.0.3", dst="10.20.0.4") / UDP(sport=7000, dport=7001) / b"x")
    with gwlb_capture(lambda c: c.kind in ("to_target", "from_target") and c.data.endswith(b"x")) as col:
        gwlb_inject(inner)
        items = col.wait_for(lambda items: len(items) >= 2, 3)
    to_target = next(c for c in items if c.kind == "to_target")
    from_target = next(c for c in items if c.kind == "from_target")
    assert geneve.parse(from_target.data).cookie == geneve.parse(to_target.data).cookie
