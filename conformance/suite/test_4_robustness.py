"""Robustness: bad input is dropped, never forwarded, and never takes the appliance down."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given

from conformance.environment import ConformanceEnv, check
from conformance.plugin import requirement
from conformance.suite.helpers import eni, property_settings, tcp4, udp6
from fuzz import strategies as gst
from gwlbsim import geneve
from gwlbsim.live.topology import ENI_BASE

ENI = ENI_BASE  # the first endpoint of the suite's topology


def _good() -> bytes:
    return geneve.build(tcp4(flags="A"), ENI, 0x4242)


def _malformed() -> dict[str, bytes]:
    g = _good()
    wrong_len = geneve.GeneveHeader(options=(geneve.eni_option(ENI), geneve.attachment_option(0),
                                             geneve.GeneveOption(geneve.AWS_OPTION_CLASS, 3, b"\0" * 8)))
    return {
        "empty datagram": b"",
        "truncated GENEVE header": g[:5],
        "version 1": bytes([g[0] | 0x40]) + g[1:],
        "version 3": bytes([g[0] | 0xC0]) + g[1:],
        "option length beyond the packet": bytes([0x3F]) + g[1:30],
        "option running past the option area": g[:11] + b"\x1f" + g[12:],
        "protocol type 0x6558 (Ethernet)": g[:2] + b"\x65\x58" + g[4:],
        "protocol type 0x0806": g[:2] + b"\x08\x06" + g[4:],
        "IPv6 protocol type, IPv4 inner": g[:2] + b"\x86\xdd" + g[4:],
        "inner IP version 5": g[:40] + bytes([0x55]) + g[41:],
        "ENI id option missing": g[:10] + b"\x04" + g[11:],
        "attachment id option missing": g[:22] + b"\x05" + g[23:],
        "cookie option missing": g[:34] + b"\x06" + g[35:],
        "cookie option 8 bytes long": wrong_len.to_bytes() + tcp4(flags="A"),
        "no inner packet": g[:40],
        "inner packet truncated": g[:-5],
        "inner IPv4 header cut short": g[:50],
        "inner IPv6 packet truncated": geneve.build(udp6(), ENI, 1)[:-3],
    }


@requirement("ROBUST-1")
@pytest.mark.parametrize("case", list(_malformed()))
def test_malformed_input_is_dropped(gwlb: ConformanceEnv, case: str) -> None:
    data = _malformed()[case]
    back = gwlb.expect_nothing_back(data)
    check(not back, f"{case}: forwarded back to GWLB", back[0].data if back else data)
    check(gwlb.alive(), f"{case}: the appliance died")
    check(gwlb.health_status() == 200, f"{case}: the appliance is no longer healthy")
    ok = gwlb.echo(_good())
    check(ok, f"after {case}, a valid packet is no longer returned", _good())


@requirement("ROBUST-2")
@pytest.mark.parametrize("case", ["control packet (O bit)", "unknown critical option",
                                  "critical bit on a GWLB option type"])
def test_control_packets_and_unknown_critical_options(gwlb: ConformanceEnv, case: str) -> None:
    g = _good()
    if case.startswith("control"):
        data = g[:1] + bytes([g[1] | 0x80]) + g[2:]
    elif case.startswith("unknown"):
        hdr = geneve.GeneveHeader(critical=True, options=(*geneve.gwlb_options(ENI, 0, 0x4242),
                                                          geneve.GeneveOption(0xFF00, 0x80, b"\0" * 4)))
        data = hdr.to_bytes() + tcp4(flags="A")
    else:
        data = g[:34] + b"\x83" + g[35:]
    back = gwlb.expect_nothing_back(data)
    check(not back, f"{case}: forwarded (RFC 8926: must not be)", back[0].data if back else data)
    check(gwlb.alive() and gwlb.health_status() == 200, f"{case}: the appliance is no longer alive and healthy")


@requirement("ROBUST-3")
@pytest.mark.parametrize("size", [9000, 16_000, 32_000, 65_000])
def test_oversize_datagrams_are_survived(gwlb: ConformanceEnv, size: int) -> None:
    pad = size - 40 - 20 - 8
    from scapy.all import IP, UDP, raw

    inner = raw(IP(src="10.10.0.2", dst="10.20.0.2") / UDP(sport=3, dport=4) / (b"o" * pad))
    for data in (geneve.build(inner, ENI, 0x4343)[:size], b"\x00" * size):
        back = gwlb.expect_nothing_back(data)
        check(not back, f"a {size}-byte datagram was forwarded", back[0].data if back else None)
    check(gwlb.alive(), f"the appliance died on a {size}-byte datagram")
    check(gwlb.health_status() == 200, "the appliance is no longer healthy")


@requirement("ROBUST-4")
def test_generated_malformed_traffic_is_never_forwarded(gwlb: ConformanceEnv) -> None:
    @property_settings(gwlb)
    @given(mp=gst.malformed_packets())
    def dropped(mp) -> None:  # type: ignore[no-untyped-def]
        back = gwlb.expect_nothing_back(mp.payload, quiet=0.15)
        check(not back, f"malformed datagram ({mp.malformation}: {mp.detail}) was forwarded", mp.payload)

    dropped()
    check(gwlb.alive(), "the appliance died under generated malformed traffic")
    check(gwlb.health_status() == 200, "the appliance is no longer healthy after generated malformed traffic")


@requirement("ROBUST-5")
def test_sustained_traffic_without_loss(gwlb: ConformanceEnv) -> None:
    rate, duration = gwlb.options.rate, gwlb.options.duration
    flows = [tcp4(sport=20000 + i, flags="A", payload=b"s" * 64) for i in range(64)]
    delivered = 0
    lock = threading.Lock()

    def count(c) -> None:  # type: ignore[no-untyped-def]
        nonlocal delivered
        if c.kind == "delivered" and c.eni_id == eni(gwlb) and len(c.data) == len(flows[0]) \
                and c.data[20:22] in keys:
            with lock:
                delivered += 1

    keys = {f[20:22] for f in flows}
    for f in flows:  # open the flows (SYN) first so GWLB has them
        gwlb.through(eni(gwlb), tcp4(sport=int.from_bytes(f[20:22], "big"), flags="S"))
    gwlb.gwlb.add_tap(count)
    try:
        sent = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration:
            due = int(elapsed * rate)
            while sent < due:
                gwlb.gwlb.inject(eni(gwlb), flows[sent % len(flows)])
                sent += 1
            time.sleep(0.002)
        deadline = time.monotonic() + 5
        while delivered < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gwlb.gwlb.remove_tap(count)
    check(delivered == sent, f"{sent - delivered} of {sent} packets lost at {rate:g} packets/s for {duration:g} s")
