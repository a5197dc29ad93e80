"""Robustness: bad input is dropped, never forwarded, and never takes the appliance down.

"Never forwarded" is judged on every instance until a valid packet sent right after the bad one has come back
(the appliance has demonstrably processed what came before it), not after a fixed pause.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from gwlbsim.conformance.environment import ConformanceEnv, check, not_run
from gwlbsim.conformance.plugin import requirement
from gwlbsim.conformance.suite.helpers import eni, property_settings, raw_eni, tcp4, udp4, udp6
from hypothesis import given

from gwlbsim.linuxio.cpushare import OtherWork, OtherWorkMeter
from gwlbsim.linuxio.netns import NETNS_DIR
from gwlbsim.live.balancer import Captured
from gwlbsim.traffic import strategies as gst
from gwlbsim.traffic.malformations import MALFORMATIONS
from gwlbsim.wire import geneve
from gwlbsim.wire.checksum import internet_checksum
from gwlbsim.wire.geneve import INNER_REASONS

GENEVE_MALFORMATIONS = [k for k, m in MALFORMATIONS.items() if m.reason not in INNER_REASONS]
INNER_MALFORMATIONS = [k for k, m in MALFORMATIONS.items() if m.reason in INNER_REASONS]


def _good(e: int) -> bytes:
    return geneve.build(udp4(sport=5999), e, 0x4242)


def _malformed(e: int) -> dict[str, bytes]:
    """Malformed GENEVE or AWS options (ROBUST-1)."""
    g = _good(e)
    wrong_len = geneve.GeneveHeader(options=(geneve.eni_option(e), geneve.attachment_option(0),
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
        "ENI id option missing": g[:10] + b"\x04" + g[11:],
        "attachment id option missing": g[:22] + b"\x05" + g[23:],
        "cookie option missing": g[:34] + b"\x06" + g[35:],
        "cookie option 8 bytes long": wrong_len.to_bytes() + udp4(sport=5999),
        "no inner packet": g[:40],
        "no options at all (Opt Len 0)": b"\x00\x00\x08\x00\x00\x00\x00\x00" + udp4(sport=5999),
        "only a foreign option, no GWLB ones": geneve.GeneveHeader(
            options=(geneve.GeneveOption(0xFF01, 0x01, b"\0" * 4),)).to_bytes() + udp4(sport=5999),
    }


def _malformed_inner(e: int) -> dict[str, bytes]:
    """Well-formed GENEVE around a malformed inner packet (ROBUST-6)."""
    g = _good(e)
    return {
        "IPv6 protocol type, IPv4 inner": g[:2] + b"\x86\xdd" + g[4:],
        "inner IP version 5": g[:40] + bytes([0x55]) + g[41:],
        "inner packet truncated (IPv4 total length overclaims)": g[:-5],
        "inner IPv4 header cut short": g[:50],
        "inner IPv6 packet truncated (payload length overclaims)": geneve.build(udp6(), e, 1)[:-3],
    }


def _never_forwarded(env: ConformanceEnv, case: str, data: bytes) -> None:
    seen = env.expect_nothing_back(data)
    check(not seen, f"{case}: forwarded back to GWLB", seen[0].data if seen else data)
    check(seen.marker_back, f"{case}: a valid packet sent right after it did not come back either (the appliance "
          "stopped forwarding valid traffic, or never did)", data)


def _still_well(env: ConformanceEnv, case: str) -> None:
    for i in range(len(env.instances)):
        check(env.alive(i), f"{case}: instance {i} died")
    check(env.healthy(), f"{case}: the appliance is no longer healthy (health says {env.health_status()})")


@requirement("ROBUST-1")
@pytest.mark.parametrize("case", list(_malformed(0)))
def test_malformed_input_is_dropped(gwlb: ConformanceEnv, case: str) -> None:
    _never_forwarded(gwlb, case, _malformed(raw_eni(gwlb))[case])
    _still_well(gwlb, case)


@requirement("ROBUST-6")
@pytest.mark.parametrize("case", list(_malformed_inner(0)))
def test_malformed_inner_packets_are_not_passed_through(gwlb: ConformanceEnv, case: str) -> None:
    _never_forwarded(gwlb, case, _malformed_inner(raw_eni(gwlb))[case])
    _still_well(gwlb, case)


@requirement("ROBUST-6")
def test_generated_malformed_inner_packets_are_not_passed_through(gwlb: ConformanceEnv) -> None:
    @property_settings(gwlb)
    @given(mp=gst.malformed_packets(malformations=INNER_MALFORMATIONS, vectors=False))
    def dropped(mp) -> None:
        _never_forwarded(gwlb, f"malformed inner packet ({mp.malformation}: {mp.detail})", mp.payload)

    dropped()
    _still_well(gwlb, "after generated malformed inner packets")


@requirement("ROBUST-2")
@pytest.mark.parametrize("case", ["control packet (O bit)", "unknown critical option",
                                  "critical bit on a GWLB option type"])
def test_control_packets_and_unknown_critical_options(gwlb: ConformanceEnv, case: str) -> None:
    e = raw_eni(gwlb)
    g = _good(e)
    if case.startswith("control"):
        data = g[:1] + bytes([g[1] | 0x80]) + g[2:]
    elif case.startswith("unknown"):
        hdr = geneve.GeneveHeader(critical=True, options=(*geneve.gwlb_options(e, 0, 0x4242),
                                                          geneve.GeneveOption(0xFF00, 0x80, b"\0" * 4)))
        data = hdr.to_bytes() + udp4(sport=5999)
    else:
        data = g[:34] + b"\x83" + g[35:]
    # positive control: the same packet without the offending bit is carried
    ok = gwlb.echo(g)
    check(ok, ok.lost(f"the same packet without the {case.split(' (')[0]}"), g)
    seen = gwlb.expect_nothing_back(data)
    check(not seen, f"{case}: forwarded (RFC 8926: must not be)", seen[0].data if seen else data)
    check(seen.marker_back, f"{case}: a valid packet sent right after it did not come back either", data)
    _still_well(gwlb, case)


@requirement("ROBUST-3")
@pytest.mark.parametrize("size", [9000, 16_000, 32_000, 65_000])
def test_oversize_datagrams_are_survived(gwlb: ConformanceEnv, size: int) -> None:
    """Survival: the appliance lives, stays healthy and carries valid traffic. A well-formed large datagram may
    be dropped or come back intact; it must not come back changed."""
    pad = size - 40 - 20 - 8
    from scapy.all import IP, UDP, raw

    inner = raw(IP(src="10.10.0.2", dst="10.20.0.2") / UDP(sport=3, dport=4) / (b"o" * pad))
    data = geneve.build(inner, raw_eni(gwlb), 0x4343)[:size]
    seen = gwlb.expect_nothing_back(data, timeout=5)
    for r in seen:
        check(r.data == data, f"a {size}-byte datagram came back changed ({len(r.data)} bytes)", r.data)
    gwlb.expect_nothing_back(b"\x00" * size, timeout=5)  # garbage of that size: survived is all that is judged
    _still_well(gwlb, f"after a {size}-byte datagram")
    ok = gwlb.echo(_good(raw_eni(gwlb)))
    check(ok, ok.lost(f"a valid packet after a {size}-byte datagram"), _good(raw_eni(gwlb)))


@requirement("ROBUST-4")
def test_generated_malformed_traffic_is_never_forwarded(gwlb: ConformanceEnv) -> None:
    @property_settings(gwlb)
    @given(mp=gst.malformed_packets(malformations=GENEVE_MALFORMATIONS)
           .filter(lambda mp: mp.reason not in INNER_REASONS))
    def dropped(mp) -> None:
        _never_forwarded(gwlb, f"malformed datagram ({mp.malformation}: {mp.detail})", mp.payload)

    dropped()
    _still_well(gwlb, "after generated malformed traffic")


#: other processes' work on the host (CPUs' worth, averaged over the traffic) from which a loss is not laid at the
#: appliance: it may not have been given the CPU (a zero-loss check on a shared CI runner)
BUSY_HOST_CPUS = 0.25
#: how many times the sustained traffic is sent when each loss came while the host was busy
SUSTAINED_ATTEMPTS = 3
SUSTAINED_FLOWS = 64


@dataclass
class _Sustained:
    sent: int
    unique: int
    dups: int
    carriers: dict[str, set[int]]  #: instance address -> the flows GWLB sent it
    other: OtherWork  #: other processes' share of the host while the traffic was sent


def _sustain(gwlb: ConformanceEnv, first_port: int) -> _Sustained:
    """64 TCP flows (source ports from first_port) opened through GWLB, then data at --rate for --duration, each
    packet numbered by its IP id, so that each one is accounted for (a duplicate cannot hide a loss)."""
    rate, duration = gwlb.options.rate, gwlb.options.duration
    nflows = SUSTAINED_FLOWS
    templates = [bytearray(tcp4(sport=first_port + i, flags="A", payload=b"s" * 64)) for i in range(nflows)]
    size = len(templates[0])
    ports = {bytes(t[20:22]): i for i, t in enumerate(templates)}
    syns = [tcp4(sport=first_port + i, flags="S") for i in range(nflows)]
    with gwlb.collecting(lambda c: c.kind == "delivered" and c.eni_id == eni(gwlb) and len(c.data) == len(syns[0])
                         and c.data[20:22] in ports) as opened:
        for syn in syns:  # open the flows (SYN) first, all at once, so GWLB has them
            gwlb.gwlb.inject(eni(gwlb), syn)
        got = opened.wait(nflows, timeout=5)
    check(len(got) == nflows, f"only {len(got)} of {nflows} flows could be opened (their SYN came back "
          "through GWLB) before the sustained traffic")
    delivered: Counter[tuple[int, int]] = Counter()
    carriers: dict[str, set[int]] = {}
    last = [time.monotonic()]  # when the latest packet was delivered
    lock = threading.Lock()

    def count(c: Captured) -> None:
        if c.eni_id != eni(gwlb):
            return
        if c.kind == "delivered" and len(c.data) == size and bytes(c.data[20:22]) in ports:
            with lock:
                delivered[(ports[bytes(c.data[20:22])], int.from_bytes(c.data[4:6], "big"))] += 1
                last[0] = time.monotonic()
        elif c.kind == "to_target" and len(c.data) > size and bytes(c.data[-size + 20:-size + 22]) in ports:
            with lock:
                carriers.setdefault(c.dst, set()).add(ports[bytes(c.data[-size + 20:-size + 22])])

    meter = OtherWorkMeter(namespaces=[NETNS_DIR / app.ns for app in gwlb.instances])
    gwlb.gwlb.add_tap(count)
    try:
        sent = 0
        meter.start()
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration:
            due = int(elapsed * rate)
            while sent < due:
                flow, seq = sent % nflows, (sent // nflows) & 0xFFFF
                pkt = templates[flow]
                pkt[4:6] = seq.to_bytes(2, "big")  # the IP id numbers the packet; its header checksum follows
                pkt[10:12] = b"\0\0"
                pkt[10:12] = internet_checksum(bytes(pkt[:20])).to_bytes(2, "big")
                gwlb.gwlb.inject(eni(gwlb), bytes(pkt))
                sent += 1
            time.sleep(0.002)
            gwlb.raise_if_crashed()
        other = meter.stop()
        # late packets: until all are in, or none came for 2 s since the last one or the end of the traffic (an
        # appliance still draining a queue keeps delivering), 5 s at most
        ended = time.monotonic()
        deadline = ended + 5
        while True:
            with lock:
                arrived, quiet = len(delivered), time.monotonic() - max(last[0], ended)
            if arrived >= sent or quiet > 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        gwlb.gwlb.remove_tap(count)
    with lock:
        return _Sustained(sent, len(delivered), sum(n - 1 for n in delivered.values()), carriers, other)


@requirement("ROBUST-5")
def test_sustained_traffic_without_loss(gwlb: ConformanceEnv) -> None:
    """Sustained traffic (``_sustain``): every packet delivered exactly once, and every instance alive must have
    carried flows. A loss while other processes kept the host busy (``BUSY_HOST_CPUS``) is not laid at the
    appliance: the traffic is sent again on fresh flows, and if every attempt lost packets on a busy host the
    requirement is NOT RUN. A loss on a host that was not busy, or any duplicate, fails it at once."""
    rate, duration = gwlb.options.rate, gwlb.options.duration
    busy: list[str] = []
    for attempt in range(SUSTAINED_ATTEMPTS):
        run = _sustain(gwlb, 20000 + attempt * SUSTAINED_FLOWS)
        check(run.sent > 0, "nothing was sent")
        lost = run.sent - run.unique
        what = f"{lost} of {run.sent} packets lost" if lost else "no packet lost"
        check(not run.dups, f"{what} and {run.dups} delivered twice at {rate:g} packets/s for {duration:g} s")
        if not lost:
            break
        check(run.other.cpus >= BUSY_HOST_CPUS,
              f"{what} at {rate:g} packets/s for {duration:g} s (meanwhile other processes used "
              f"{run.other.cpus:.2f} CPUs of the host, too little to lay the loss there)")
        busy.append(f"{what} while other processes used {run.other.cpus:.2f} CPUs of the host")
    else:
        not_run(f"at {rate:g} packets/s for {duration:g} s, every attempt lost packets while the host was busy with "
                f"other work ({'; '.join(busy)}): run it on a quieter host")
    for i, app in enumerate(gwlb.topo.appliances):
        check(gwlb.alive(i), f"instance {i} died during the sustained traffic")
        check(run.carriers.get(app.address), f"instance {i} carried none of the {SUSTAINED_FLOWS} flows (GWLB saw "
              f"it {gwlb.session.target_states().get(app.id, '?')}): every instance must carry its share")


_ICMP_ERRORS = {3: "destination unreachable", 11: "time exceeded", 12: "parameter problem"}
_UNREACHABLE = {0: "net", 1: "host", 2: "protocol", 3: "port", 4: "fragmentation needed", 13: "prohibited"}


def _icmp_errors_from(env: ConformanceEnv, since: float, addresses: set[str]) -> list[tuple[str, bytes]]:
    """ICMP errors on the wire from an appliance address to a GWLB node, about a datagram to port 6081."""
    assert env.capture is not None
    nodes = set(env.topo.nodes.values())
    found = []
    for _, frame in env.capture.settled_since(since):
        ip = frame[14:]
        if frame[12:14] != b"\x08\x00" or len(ip) < 20 + 8 + 28 or ip[9] != 1:
            continue
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        icmp = ip[(ip[0] & 0x0F) * 4:]
        if src not in addresses or dst not in nodes or icmp[0] not in _ICMP_ERRORS:
            continue
        quoted = icmp[8:]
        qudp = quoted[(quoted[0] & 0x0F) * 4:]
        if quoted[9] != 17 or len(qudp) < 4 or int.from_bytes(qudp[2:4], "big") != geneve.GENEVE_PORT:
            continue
        what = _ICMP_ERRORS[icmp[0]] + (f" ({_UNREACHABLE.get(icmp[1], icmp[1])})" if icmp[0] == 3 else "")
        found.append((f"ICMP {what} from {src} to {dst}", frame[14:]))
    return found


@requirement("ROBUST-7")
def test_no_icmp_errors_about_datagrams_it_processed(gwlb: ConformanceEnv) -> None:
    """Valid datagrams to every instance from every node: the appliance (or its kernel) must not answer them
    with ICMP errors (port unreachable for each datagram when GENEVE is read from a raw socket and no UDP
    socket is bound on 6081)."""
    since = time.time()
    sent = 0
    for i in range(len(gwlb.instances)):
        for node in gwlb.topo.nodes.values():
            batch = [(geneve.build(udp4(sport=6100 + n), raw_eni(gwlb), 0x7700 + n), gwlb.next_sport())
                     for n in range(10)]
            got = gwlb.send_batch(batch, i, node=node)
            check(got, got.lost("valid datagrams"), batch[0][0])
            sent += len(batch)
    errors = _icmp_errors_from(gwlb, since, {a.address for a in gwlb.topo.appliances})
    check(not errors, f"{len(errors)} ICMP error(s) about {sent} valid datagrams the appliance processed, e.g. "
          f"{errors[0][0] if errors else ''}: it reports as undeliverable traffic it carried",
          errors[0][1] if errors else None)
