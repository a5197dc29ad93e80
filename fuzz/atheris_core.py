"""Coverage-guided fuzz target: the reference appliance's whole inbound/return path (``gwlbsim.reference.core``).

The input is a program of operations on one :class:`gwlbsim.reference.core.ApplianceCore` with a fake clock, each
checked against :class:`gwlbsim.fuzz.core_model.ApplianceModel`:

====  ==========  ==================================================================================
byte  operation   operands
====  ==========  ==================================================================================
0     inbound     u16 length (low 14 bits), that many bytes of GENEVE payload, 1 byte choosing the
                  GWLB address and port (high bit: a port other than 6081), u16 GWLB source port
1     ready       1 byte choosing a tunnel being created: devices made, queued packets written
2     failed      1 byte choosing a tunnel being created: its creation failed
3     clock       u16: the clock advances by that many hundredths of a second
4     tick        the periodic timeout work
5     return      1 byte choosing a tunnel, 1 byte choosing an inner packet seen inbound: the OS sends
                  it out of that tunnel
6     return raw  1 byte choosing a tunnel, 1 byte length, that many bytes: the OS sends them
7     reply       as 5, with the IPv4 addresses and ports swapped (the answer of the flow)
====  ==========  ==================================================================================

``check(data)`` raises if the core raises, accepts or drops a packet differently from the model, returns a
packet of a flow it never saw through that endpoint or whose entry expired, or returns one with a header
other than the flow's latest, to another address, or with bad lengths or checksums.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from gwlbsim.fuzz.core_model import ApplianceModel, ip_length_consistent
from gwlbsim.reference.core import ApplianceCore, Config, TunnelState

from gwlbsim.wire import geneve
from gwlbsim.wire.outer import parse_ipv4_udp

GWLBS = (("10.0.0.1", 60001), ("10.0.1.1", 60002))
ME = "10.0.0.2"
CONFIG = {"flow_timeout": 10.0, "tunnel_timeout": 30.0, "pending_limit": 4, "retry_interval": 1.0}
MAX_SEEN = 64

INBOUND, READY, FAILED, CLOCK, TICK, RETURN, RETURN_RAW, REPLY = range(8)
_STATE = {TunnelState.CREATING: "creating", TunnelState.READY: "ready", TunnelState.FAILED: "failed"}


class Op(NamedTuple):
    code: int
    data: bytes = b""
    a: int = 0  #: first selector / value operand
    b: int = 0  #: second operand


def encode(ops: Iterable[Op]) -> bytes:
    """The input bytes for a program (used to write the seed corpus)."""
    out = bytearray()
    for op in ops:
        out.append(op.code)
        if op.code == INBOUND:
            out += struct.pack("!H", len(op.data) & 0x3FFF) + op.data + bytes((op.a,)) + struct.pack("!H", op.b)
        elif op.code in (READY, FAILED):
            out.append(op.a)
        elif op.code == CLOCK:
            out += struct.pack("!H", op.a)
        elif op.code in (RETURN, REPLY):
            out += bytes((op.a, op.b))
        elif op.code == RETURN_RAW:
            out += bytes((op.a, len(op.data) & 0xFF)) + op.data[:255]
    return bytes(out)


def decode(data: bytes) -> Iterator[Op]:
    """The program in ``data``; a truncated last operation is ignored."""
    pos, n = 0, len(data)
    while pos < n:
        code = data[pos] % 8
        pos += 1
        if code == INBOUND:
            if pos + 2 > n:
                return
            size = struct.unpack_from("!H", data, pos)[0] & 0x3FFF
            pos += 2
            if pos + size + 3 > n:
                return
            payload = data[pos:pos + size]
            pos += size
            yield Op(code, payload, data[pos], struct.unpack_from("!H", data, pos + 1)[0])
            pos += 3
        elif code in (READY, FAILED):
            if pos + 1 > n:
                return
            yield Op(code, a=data[pos])
            pos += 1
        elif code == CLOCK:
            if pos + 2 > n:
                return
            yield Op(code, a=struct.unpack_from("!H", data, pos)[0])
            pos += 2
        elif code == TICK:
            yield Op(code)
        elif code in (RETURN, REPLY):
            if pos + 2 > n:
                return
            yield Op(code, a=data[pos], b=data[pos + 1])
            pos += 2
        else:
            if pos + 2 > n:
                return
            size = data[pos + 1]
            if pos + 2 + size > n:
                return
            yield Op(code, data[pos + 2:pos + 2 + size], data[pos])
            pos += 2 + size


def swapped(pkt: bytes) -> bytes:
    """An IPv4 packet with source and destination (addresses, and TCP/UDP ports) swapped."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return pkt
    ihl = (pkt[0] & 0x0F) * 4
    out = bytearray(pkt)
    out[12:16], out[16:20] = pkt[16:20], pkt[12:16]
    if pkt[9] in (6, 17) and len(pkt) >= ihl + 4:
        out[ihl:ihl + 2], out[ihl + 2:ihl + 4] = pkt[ihl + 2:ihl + 4], pkt[ihl:ihl + 2]
    return bytes(out)


def check(data: bytes) -> None:
    # (type: ignore below) CONFIG: settings of several types
    core = ApplianceCore(Config(max_flows=1_000_000, **CONFIG))  # type: ignore[arg-type]
    model = ApplianceModel(**CONFIG)  # type: ignore[arg-type]  # CONFIG: settings of several types
    now = 0.0
    seen: list[bytes] = []
    for op in decode(data):
        if op.code == INBOUND:
            src, sport = GWLBS[op.a & 1]
            sport = op.b or sport
            dport = 6082 if op.a & 0x80 else 6081
            want = model.inbound(op.data, src, ME, sport, dport, now)
            got = core.inbound(op.data, 0, len(op.data), src, ME, sport, dport, now)
            if want is None:
                assert got is None, "accepted a datagram it must drop"
                continue
            assert got is not None, "dropped a datagram it must accept"
            assert (got.tunnel.eni_id, op.data[got.inner_start:got.inner_end], got.new_tunnel, got.queued) == \
                tuple(want), "inbound verdict differs from the model"
            if len(seen) < MAX_SEEN:
                seen.append(want.inner)
        elif op.code in (READY, FAILED):
            creating = sorted(e for e, t in model.tunnels.items() if t.state == "creating")
            if not creating:
                continue
            eni = creating[op.a % len(creating)]
            if op.code == READY:
                assert core.tunnel_ready(eni, now) == model.tunnel_ready(eni, now), "queued packets differ"
            else:
                model.tunnel_failed(eni, now)
                core.tunnel_failed(eni, now)
        elif op.code == CLOCK:
            now += op.a / 100
        elif op.code == TICK:
            assert sorted(t.eni_id for t in core.tick(now)) == sorted(model.tick(now)), "retired tunnels differ"
        else:
            if not model.tunnels:
                continue
            enis = sorted(model.tunnels)
            eni = enis[op.a % len(enis)]
            if op.code == RETURN_RAW:
                pkt = op.data
            elif not seen:
                continue
            else:
                pkt = seen[op.b % len(seen)]
                if op.code == REPLY:
                    pkt = swapped(pkt)
            _check_return(core, model, eni, pkt, now)
        assert {e: _STATE[t.state] for e, t in core.tunnels.items()} == {e: t.state for e, t in model.tunnels.items()}
        assert core.flow_count == sum(len(t.flows) for t in core.tunnels.values()), "flow count drifted"
    assert not model.drops_match(core.totals.drops), f"drop counters differ: {model.drops_match(core.totals.drops)}"


def _check_return(core: ApplianceCore, model: ApplianceModel, eni: int, pkt: bytes, now: float) -> None:
    known = model.knows(eni, pkt)
    want = model.outbound(eni, pkt, now)
    got = core.outbound(core.tunnels[eni], pkt, now)
    if want is None:
        assert got is None, "returned a packet of an unseen flow" if not known else "used an expired flow"
        return
    assert got is not None, "refused to return a packet of a live flow"
    assert got.header == want.header, "return header is not the flow's latest"
    out = core.encapsulate(got, pkt)
    o = parse_ipv4_udp(out)
    assert (o.src, o.dst, o.sport, o.dport) == (want.local[0], want.gwlb[0], want.gwlb[1], want.local[1])
    assert o.checksum_ok, "bad UDP checksum on a return"
    assert out[o.payload_offset:] == want.header + pkt
    p = geneve.parse(out[o.payload_offset:])  # GWLB accepts every return
    assert p.header_bytes == want.header
    if ip_length_consistent(pkt):
        assert p.inner == pkt
