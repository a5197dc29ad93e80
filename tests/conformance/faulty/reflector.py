"""A minimal GWLB appliance for proving the conformance suite: reflects each GENEVE datagram back to GWLB.

Correct by default (validates with the project's codec, returns the datagram unchanged with the outer
addresses swapped and the ports kept, answers HTTP health checks). Each ``--fault`` breaks it in one way a
real appliance can be broken, so the suite must fail it on a specific requirement.

The other switches are correct behaviours that differ from the default (the suite's calibration set: it must
not fail any of them); they combine with each other and with ``--fault``:

``--stateful``       a stateful firewall: TCP passes only in flows opened by a SYN (see :class:`Firewall`)
``--health-lf``      HTTP health answered with bare LF line ends (RFC 9112 2.2 lets recipients accept them)
``--health-tcp``     health is TCP only: connections are accepted and closed, no HTTP is spoken
``--inner-lenient``  validates the GENEVE header and the AWS options only, not the inner packet's lengths
``--raw-receive``    GENEVE read from a raw IP socket, no UDP socket bound (see :class:`RawReceiver`)

``--health-lf`` and ``--health-tcp`` exclude each other (one health server). SIGTERM (or SIGINT) stops it with
status 0 after a one-line summary of what it received, reflected and dropped.

Usage: reflector.py --health-port 8080 [--fault NAME ...] [--stateful] [--health-lf | --health-tcp]
                    [--inner-lenient] [--raw-receive]
"""

from __future__ import annotations

import argparse
import array
import fcntl
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from types import FrameType
from typing import NamedTuple

from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_TCP, TCP_ACK, TCP_SYN, FiveTuple, InnerError, SymKey, flow_of, tcp_flags
from gwlbsim.wire.outer import OuterError, build_ipv4_udp, parse_ipv4_udp

FAULTS = {
    "drop-cookie": "returns the header without its flow cookie option",
    "rewrite-header": "returns the header with VNI and reserved bits zeroed",
    "swap-ports": "returns from port 6081 to GWLB's source port (ports swapped)",
    "originate": "also sends packets of flows it never received",
    "no-validation": "forwards whatever arrives, malformed or not",
    "crash-on-oversize": "dies on a datagram over 9000 bytes",
    "drop-non-first-fragments": "drops inner IPv4 and IPv6 fragments other than the first",
    "one-way-3tuple": "keys flows of protocols other than TCP and UDP one way: the answering side is dropped",
    "drops-some-pings": "drops every second ICMP and ICMPv6 echo reply",
    "no-reuseaddr": "binds its health port without SO_REUSEADDR (cannot restart while a TIME_WAIT is there)",
    "slow-restart": "takes 8 s to start",
    "dies-at-1025-flows": "exits at the 1025th distinct flow cookie (a fixed-size flow table)",
    "loses-under-load": "above 500 datagrams/s, drops one in 50 and sends another one twice (counts still match)",
    "loses-some-under-load": "above 500 datagrams/s, drops one in 200 (nothing duplicated)",
    "mangles-inner": "changes the last byte of every inner packet",
    "rejects-foreign-options": "drops datagrams carrying options of a class other than AWS's 0x0108",
    "drops-server-answers": "drops inner UDP from a lower port to a higher one (servers' answers)",
    "spoofs-neighbour": "sends its returns from the address next to its own (another instance's)",
    "drops-tcp-payload": "drops TCP segments that carry data and no SYN",
    "small-mtu": "drops inner packets over 1500 bytes",
    "drops-ipv4-options": "drops inner IPv4 packets with IP options",
    "forgets-idle-flows": "with --stateful: forgets a TCP flow idle for a second",
    "health-no-close": "HTTP health answers 200 but keeps the connection open",
    "slow-serial-health": "HTTP health answers one probe at a time, 0.3 s each",
    "health-sidecar": "HTTP health served by a separate process that keeps answering when the datapath stops",
    "forwards-control": "reflects control packets (O bit) and unknown critical options",
    "first-node-only": "returns everything to the first GWLB node it heard from (one rule per node address)",
}

#: The codec's reasons that concern the inner packet only, which ``--inner-lenient`` does not act on.
#: ``geneve.scan`` raises both only from its very last step (``_inner_len``), after the base header, the
#: protocol type, every option (overrun, length, duplicates, critical bits), the GWLB options' presence, the
#: O bit and the presence of an inner packet have all been checked: so a packet refused for one of them has a
#: valid GENEVE header and valid AWS options. ``truncated_inner``: the inner header is cut short or its length
#: field claims more bytes than are present. ``protocol_mismatch``: the inner version nibble contradicts the
#: protocol type; that is a fact about the inner packet too (the protocol type itself, 0x0800 or 0x86DD, is
#: still checked: ``bad_protocol_type``). A gwlbtun-style appliance with a tc mirred passthrough parses neither
#: (its TUN device only wants version 4 or 6, which this reflector does not model). Every other reason
#: (including ``no_inner_packet``) is a GENEVE or AWS option problem and is always dropped.
INNER_ONLY_REASONS = frozenset({geneve.TruncatedInner.reason, geneve.ProtocolMismatch.reason})

LF_RESPONSE = b"HTTP/1.1 200 OK\nContent-Length: 3\nConnection: close\n\nok\n"
_REQUEST_END = re.compile(rb"\n\r?\n")
_U16 = struct.Struct("!H")
IP_PKTINFO = 8
SIOCGIFCONF = 0x8912
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: 16-byte name, 24-byte union (a sockaddr_in at its start)


class Stats:
    """What the reflector did; printed as one line when it stops."""

    def __init__(self) -> None:
        self.received = 0
        self.reflected = 0
        self.drops: Counter[str] = Counter()  #: malformed GENEVE (by the codec's reason), over the MTU
        self.ignored: Counter[str] = Counter()  #: raw receive: IP packets that were not GENEVE for us
        self.send_errors = 0

    def summary(self, firewall: Firewall | None) -> str:
        def fmt(c: Counter[str]) -> str:
            return ",".join(f"{k}={v}" for k, v in sorted(c.items())) or "none"

        line = (f"reflector stopped: received={self.received} reflected={self.reflected} "
                f"dropped={sum(self.drops.values())} ({fmt(self.drops)})")
        if firewall is not None:
            line += (f" stateful: dropped={sum(firewall.drops.values())} ({fmt(firewall.drops)}) "
                     f"flows_opened={firewall.opened} flows_open={len(firewall.flows)}")
        if self.ignored:
            line += f" raw_ignored={sum(self.ignored.values())} ({fmt(self.ignored)})"
        if self.send_errors:
            line += f" send_errors={self.send_errors}"
        return line


# -------------------------------------------------------------------------------------------- validation


class Accepted(NamedTuple):
    header_len: int  #: where the inner packet starts
    inner_end: int  #: where it ends (its own length; with --inner-lenient, everything present if that is less)
    eni_id: int


def _eni_of(header: bytes) -> int:
    for o in geneve.GeneveHeader.from_bytes(header).options:
        if o.option_class == geneve.AWS_OPTION_CLASS and o.type == geneve.OPT_ENI_ID:
            return int.from_bytes(o.data, "big")
    raise geneve.MissingAwsOption("no ENI id option")  # cannot happen: scan checked it


def validate(data: bytes, lenient: bool) -> Accepted:
    """The datagram's layout if it may be reflected; raises :class:`geneve.GeneveError` if not."""
    try:
        s = geneve.scan(data)
    except geneve.GeneveError as e:
        if not lenient or e.reason not in INNER_ONLY_REASONS:
            raise
        # header and options are valid (see INNER_ONLY_REASONS): the inner packet is whatever follows
        header_len = geneve.BASE_HEADER_LEN + (data[0] & 0x3F) * 4
        return Accepted(header_len, len(data), _eni_of(data[:header_len]))
    return Accepted(s.header_len, s.header_len + s.inner_len, s.eni_id)


# ---------------------------------------------------------------------------------------------- firewall


class Firewall:
    """A stateful firewall on the inner packets, per GWLB endpoint.

    Flows are keyed by (ENI id, symmetric flow key), the key :func:`gwlbsim.wire.flowkey.symmetric_key` gives, so
    both directions share one entry and endpoints with overlapping addresses never share one. A TCP segment
    of a flow that is not open is dropped, unless it is a SYN without ACK: that opens the flow, after which
    both directions pass whatever their flags (no FIN/RST tracking, no idle timeout: flows stay open; the
    oldest is forgotten beyond ``capacity``). Every packet that is not TCP passes and opens nothing.

    TCP fragments carry no ports or flags: one passes when a TCP flow between the same two addresses is open
    on that endpoint, else it is dropped. A packet whose protocol cannot be told (a broken IPv6 extension
    header chain, or with ``--inner-lenient`` an inner header cut short) is dropped as ``unclassifiable``.
    """

    def __init__(self, capacity: int = 1 << 20, idle: float | None = None) -> None:
        self.capacity = capacity
        self.idle = idle  #: forget a flow idle for this long (None: never)
        self.last: dict[tuple[int, SymKey], float] = {}
        self.flows: dict[tuple[int, SymKey], None] = {}  # insertion ordered: the oldest first
        self.hosts: dict[tuple[int, SymKey], None] = {}  # address pairs of open TCP flows (for fragments)
        self.drops: Counter[str] = Counter()
        self.opened = 0

    def allow(self, eni_id: int, buf: bytes, start: int, end: int) -> bool:
        try:
            ft, l4 = flow_of(buf, start, end)
        except InnerError:
            self.drops["unclassifiable"] += 1
            return False
        if ft.proto != IPPROTO_TCP:
            return True
        if l4 < 0:  # a fragment: keyed by its addresses (flow_of gives it ports 0)
            if (eni_id, ft.symmetric()) in self.hosts:
                return True
            self.drops["tcp_fragment_without_flow"] += 1
            return False
        key = (eni_id, ft.symmetric())
        if key in self.flows and self.idle is not None:
            now = time.monotonic()
            if now - self.last.get(key, now) > self.idle:
                del self.flows[key]
            else:
                self.last[key] = now
        if key in self.flows:
            return True
        if tcp_flags(buf, l4, end) & (TCP_SYN | TCP_ACK) == TCP_SYN:
            self._open(key, (eni_id, FiveTuple(ft.proto, ft.src, 0, ft.dst, 0).symmetric()))
            return True
        self.drops["tcp_not_open"] += 1
        return False

    def _open(self, key: tuple[int, SymKey], hosts: tuple[int, SymKey]) -> None:
        self.flows[key] = None
        if self.idle is not None:
            self.last[key] = time.monotonic()
        self.hosts[hosts] = None
        self.opened += 1
        for table in (self.flows, self.hosts):
            if len(table) > self.capacity:
                del table[next(iter(table))]


# -------------------------------------------------------------------------------------------- receiving

#: One received GENEVE datagram: UDP payload, GWLB's address and source port, the address it was sent to.
Datagram = tuple[bytes, str, int, str]


class UdpReceiver:
    """GENEVE from a UDP socket bound to port 6081; IP_PKTINFO tells which of our addresses it was sent to."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", geneve.GENEVE_PORT))
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

    def recv(self) -> Datagram | None:
        data, anc, _flags, (src, sport) = self.sock.recvmsg(65535, 64)
        local = next((socket.inet_ntoa(d[8:12]) for lvl, typ, d in anc if lvl == 0 and typ == IP_PKTINFO),
                     "0.0.0.0")
        return data, src, sport, local

    def close(self) -> None:
        self.sock.close()


def local_ipv4_addresses() -> frozenset[str]:
    """Every IPv4 address configured on this namespace's interfaces that are up (SIOCGIFCONF)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        size = 64
        while True:
            buf = array.array("B", bytes(size * _IFREQ_SIZE))
            req = struct.pack("iL", len(buf), buf.buffer_info()[0])
            length = struct.unpack("iL", fcntl.ioctl(s.fileno(), SIOCGIFCONF, req))[0]
            if length < len(buf):
                break
            size *= 2  # the table may have been cut short
    raw = buf.tobytes()[:length]
    return frozenset(socket.inet_ntoa(raw[i + 20:i + 24]) for i in range(0, length, _IFREQ_SIZE))


class RawReceiver:
    """GENEVE read from an ``AF_INET``/``SOCK_RAW``/``IPPROTO_UDP`` socket: every UDP packet the namespace
    receives, IPv4 header included, is looked at here, and only UDP to port 6081 at one of our own addresses
    is kept, after the checks the kernel's UDP layer would have made (IPv4 and UDP lengths, UDP checksum;
    a zero checksum is accepted, as UDP over IPv4 allows).

    Fragments: Linux reassembles IPv4 fragments before it delivers to raw sockets (``ip_local_deliver`` runs
    ``ip_defrag`` first), so whole datagrams arrive here and this receiver does no reassembly of its own;
    anything that still shows a fragment offset or the MF bit is ignored (counted as ``fragment``).

    With no UDP socket bound to 6081 the kernel also answers every GENEVE datagram with an ICMP port
    unreachable to GWLB: expected, and what such appliances do in real life (GWLB ignores them).
    """

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.local = local_ipv4_addresses()
        self._refreshed = time.monotonic()

    def _is_local(self, address: str) -> bool:
        if address in self.local:
            return True
        now = time.monotonic()
        if now - self._refreshed >= 1.0:  # an address may have been added since: look again, once a second
            self._refreshed = now
            self.local = local_ipv4_addresses()
        return address in self.local

    def recv(self) -> Datagram | None:
        pkt = self.sock.recv(65536)
        ignored = self.stats.ignored
        if len(pkt) < 28 or pkt[0] >> 4 != 4 or (pkt[0] & 0x0F) < 5:
            ignored["bad_outer"] += 1
            return None
        if _U16.unpack_from(pkt, 6)[0] & 0x3FFF:
            ignored["fragment"] += 1
            return None
        ihl = (pkt[0] & 0x0F) * 4
        if len(pkt) < ihl + 8:
            ignored["bad_outer"] += 1
            return None
        if _U16.unpack_from(pkt, ihl + 2)[0] != geneve.GENEVE_PORT:
            return None  # UDP for someone else: not ours to count
        try:
            o = parse_ipv4_udp(pkt)
        except OuterError:
            ignored["bad_outer"] += 1
            return None
        if not self._is_local(o.dst):
            ignored["not_our_address"] += 1
            return None
        if not o.checksum_ok:
            ignored["bad_udp_checksum"] += 1
            return None
        return pkt[o.payload_offset:o.payload_offset + o.payload_len], o.src, o.sport, o.dst

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------------------------------------ health


def _listener(port: int, reuse: bool = True) -> socket.socket:
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse))
    lst.bind(("0.0.0.0", port))
    lst.listen(128)
    return lst


def _accept_loop(lst: socket.socket, handle: Callable[[socket.socket], None], threaded: bool) -> None:
    while True:
        try:
            conn, _ = lst.accept()
        except ConnectionAbortedError:
            continue
        except OSError:
            return  # the listener was closed
        if threaded:
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
        else:
            handle(conn)


def _answer_lf(conn: socket.socket) -> None:
    """Read the request head, answer with bare LF line ends, close."""
    with conn:
        try:
            conn.settimeout(5)
            head = b""
            while not _REQUEST_END.search(head) and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            conn.sendall(LF_RESPONSE)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _close_at_once(conn: socket.socket) -> None:
    conn.close()


def start_health(port: int, mode: str, reuse: bool = True, fault: frozenset[str] = frozenset()
                 ) -> tuple[int, Callable[[], None]]:
    """Listen on ``port`` (0: any) and serve health there from a thread (``mode``: http, lf or tcp); returns
    the port and how to stop listening. ``reuse``: bind with SO_REUSEADDR (as every server should);
    ``fault``: the health faults to have."""
    if mode == "http":
        keep_open, serial = "health-no-close" in fault, "slow-serial-health" in fault

        class Health(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def do_GET(self) -> None:
                if serial:
                    time.sleep(0.3)
                self.send_response(200)
                self.send_header("Content-Length", "3")
                if not keep_open:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"ok\n")
                if keep_open:
                    self.close_connection = False  # whatever the client asked for

            def log_message(self, *a: object) -> None:
                pass

        base = HTTPServer if serial else ThreadingHTTPServer

        class Server(base):  # type: ignore[valid-type, misc]
            allow_reuse_address = reuse

        srv = Server(("0.0.0.0", port), Health)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

        def stop() -> None:
            srv.shutdown()
            srv.server_close()

        return srv.server_address[1], stop
    lst = _listener(port, reuse)
    handle, threaded = (_answer_lf, True) if mode == "lf" else (_close_at_once, False)
    threading.Thread(target=_accept_loop, args=(lst, handle, threaded), daemon=True).start()

    def close() -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not
        try:
            lst.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        lst.close()

    return lst.getsockname()[1], close


# --------------------------------------------------------------------------------------------------- main


INNER_FAULTS = frozenset({"drop-non-first-fragments", "one-way-3tuple", "drops-some-pings", "rejects-foreign-options",
                          "drops-server-answers", "drops-tcp-payload", "small-mtu", "drops-ipv4-options"})
_PINGS = [0]


def faulty_drop(fault: set[str], data: bytes, a: Accepted, initiators: dict[tuple[int, SymKey], bytes]) -> bool:
    """Whether one of the inner-packet faults drops this packet."""
    try:
        ft, l4 = flow_of(data, a.header_len, a.inner_end)
    except InnerError:
        return False
    inner = data[a.header_len:a.inner_end]
    v6 = inner[0] >> 4 == 6
    if "rejects-foreign-options" in fault:
        options = geneve.GeneveHeader.from_bytes(data[:a.header_len]).options
        if any(o.option_class != geneve.AWS_OPTION_CLASS for o in options):
            return True
    if "small-mtu" in fault and len(inner) > 1500:
        return True
    if "drops-ipv4-options" in fault and not v6 and inner[0] & 0x0F > 5:
        return True
    if "drops-server-answers" in fault and ft.proto == 17 and l4 >= 0 and ft.sport < ft.dport:
        return True
    if "drops-tcp-payload" in fault and ft.proto == IPPROTO_TCP and l4 >= 0 \
            and not tcp_flags(data, l4, a.inner_end) & TCP_SYN and a.inner_end > l4 + (data[l4 + 12] >> 4) * 4:
        return True
    if "drop-non-first-fragments" in fault and l4 < 0:
        if not v6 and _U16.unpack_from(inner, 6)[0] & 0x1FFF:
            return True
        if v6 and inner[6] == 44 and _U16.unpack_from(inner, 42)[0] & 0xFFF8:
            return True
    if "one-way-3tuple" in fault and ft.proto not in (6, 17) and not (v6 and ft.proto == 58) and ft.proto != 1:
        first = initiators.setdefault((a.eni_id, ft.symmetric()), inner[12:16] if not v6 else inner[8:24])
        if first != (inner[12:16] if not v6 else inner[8:24]):
            return True
    if "drops-some-pings" in fault and l4 >= 0 and ((ft.proto == 1 and data[l4] == 0)
                                                    or (ft.proto == 58 and data[l4] == 129)):
        _PINGS[0] += 1
        return _PINGS[0] % 2 == 0
    return False


def _health_sidecar(port: int, mode: str) -> None:
    """Serve health from a child in a session of its own: stopping the reflector's process group leaves it
    answering. It dies with the reflector (PR_SET_PDEATHSIG)."""
    import ctypes

    if os.fork() == 0:
        os.setsid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        start_health(port, mode)
        while True:
            time.sleep(3600)


def rewrite(data: bytes, fault: set[str]) -> bytes:
    s = geneve.scan(data)
    hdr = geneve.GeneveHeader.from_bytes(data[:s.header_len])
    inner = data[s.header_len:]
    if "drop-cookie" in fault:
        hdr = geneve.GeneveHeader(hdr.protocol, hdr.vni, tuple(o for o in hdr.options if o.type != 3),
                                  hdr.oam, hdr.critical, hdr.reserved_flags, hdr.reserved)
    if "rewrite-header" in fault:
        hdr = geneve.GeneveHeader(hdr.protocol, 0, hdr.options)
    return hdr.to_bytes() + inner


class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--health-port", type=int, default=8080)
    p.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS))
    p.add_argument("--stateful", action="store_true", help="stateful firewall: TCP only in flows a SYN opened")
    health = p.add_mutually_exclusive_group()
    health.add_argument("--health-lf", action="store_true", help="HTTP health with bare LF line ends")
    health.add_argument("--health-tcp", action="store_true", help="TCP-only health: accept and close")
    p.add_argument("--inner-lenient", action="store_true",
                   help="validate GENEVE and the AWS options only, not the inner packet's lengths")
    p.add_argument("--raw-receive", action="store_true", help="read GENEVE from a raw socket, bind no UDP port")
    args = p.parse_args(argv)
    fault = set(args.fault)

    stats = Stats()
    firewall = Firewall(idle=1.0 if "forgets-idle-flows" in fault else None) if args.stateful else None
    rx: UdpReceiver | RawReceiver | None = None
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    # the health threads (and the threads they start) inherit a mask that blocks the stop signals, so the
    # kernel always delivers them to the main thread, whose blocking receive they interrupt
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            # the datapath first, health last: once health answers, GENEVE is already received
            rx = RawReceiver(stats) if args.raw_receive else UdpReceiver()
            rawsock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            mode = "lf" if args.health_lf else "tcp" if args.health_tcp else "http"
            if "slow-restart" in fault:
                time.sleep(8)
            if "health-sidecar" in fault:
                _health_sidecar(args.health_port, mode)
            else:
                start_health(args.health_port, mode, reuse="no-reuseaddr" not in fault, fault=frozenset(fault))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        switches = [s for s in ("stateful", "health_lf", "health_tcp", "inner_lenient", "raw_receive")
                    if getattr(args, s)]
        print("reflector ready", FAULTS.keys() & fault, "switches:", " ".join(switches) or "none",
              f"health: {mode} on port {args.health_port}", flush=True)
        rng = random.Random(1)
        initiators: dict[tuple[int, SymKey], bytes] = {}
        first_node = ""
        cookies: set[int] = set()
        recent: deque[float] = deque()
        while True:
            got = rx.recv()
            if got is None:
                continue
            data, src, sport, local = got
            if len(data) > 9000 and "crash-on-oversize" in fault:
                os._exit(3)
            stats.received += 1
            count = stats.received
            accepted: Accepted | None = None
            try:
                accepted = validate(data, args.inner_lenient)
            except geneve.GeneveError as e:
                if "forwards-control" in fault and e.reason in ("control_packet", "unknown_critical_option"):
                    accepted = Accepted(geneve.BASE_HEADER_LEN + (data[0] & 0x3F) * 4, len(data), 0)
                elif "no-validation" not in fault:
                    stats.drops[e.reason] += 1
                    continue
            if accepted is not None and "no-validation" not in fault \
                    and accepted.inner_end - accepted.header_len > geneve.GWLB_MTU:
                stats.drops["over_mtu"] += 1
                continue
            if accepted is not None and "dies-at-1025-flows" in fault:
                cookies.add(geneve.scan(data).cookie)
                if len(cookies) > 1024:
                    print("flow table full", flush=True)
                    os._exit(4)
            if accepted is not None and fault & INNER_FAULTS and faulty_drop(fault, data, accepted, initiators):
                stats.drops["fault"] += 1
                continue
            if firewall is not None and accepted is not None \
                    and not firewall.allow(accepted.eni_id, data, accepted.header_len, accepted.inner_end):
                continue
            try:
                out = rewrite(data, fault) if fault & {"drop-cookie", "rewrite-header"} else data
            except geneve.GeneveError:
                out = data
            s_port, d_port = (geneve.GENEVE_PORT, sport) if "swap-ports" in fault else (sport, geneve.GENEVE_PORT)
            if "mangles-inner" in fault and accepted is not None and accepted.inner_end > accepted.header_len:
                out = out[:accepted.inner_end - 1] + bytes([out[accepted.inner_end - 1] ^ 0xFF]) \
                    + out[accepted.inner_end:]
            if "spoofs-neighbour" in fault:
                a, b, c, d = local.split(".")
                local = f"{a}.{b}.{c}.{int(d) ^ 1}"
            if "first-node-only" in fault:
                src = first_node = first_node or src
            copies = 1
            if "loses-under-load" in fault or "loses-some-under-load" in fault:
                now = time.monotonic()
                recent.append(now)
                while recent and recent[0] < now - 1:
                    recent.popleft()
                if len(recent) > 500 and "loses-some-under-load" in fault:
                    copies = 0 if count % 200 == 0 else 1
                elif len(recent) > 500:
                    copies = 0 if count % 50 == 0 else 2 if count % 50 == 25 else 1
            try:
                for _ in range(copies):
                    rawsock.sendto(build_ipv4_udp(local, src, s_port, d_port, out, ttl=64), (src, 0))
                stats.reflected += 1
            except OSError as e:
                stats.send_errors += 1
                print(f"send failed: {e}", flush=True)
            if "originate" in fault and count % 3 == 0:
                try:
                    s = geneve.scan(data)
                    forged = geneve.build(bytes.fromhex("450000280001000040060000c0a80001c0a8000204000050"
                                                        "00000000000000005002200000000000"),
                                          s.eni_id, rng.getrandbits(32) | 1)
                    rawsock.sendto(build_ipv4_udp(local, src, sport, geneve.GENEVE_PORT, forged, ttl=64), (src, 0))
                except geneve.GeneveError:
                    pass
    except _Stop:
        print(stats.summary(firewall), flush=True)
        if rx is not None:
            rx.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
