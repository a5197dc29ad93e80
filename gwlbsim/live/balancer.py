"""The fake GWLB running live: the model driven by real packets in the topology's namespaces.

One datapath thread reads each endpoint's TUN device and the GENEVE socket, asks the model, and sends what it
says: encapsulated packets to appliances (through a raw socket, so every outer header field is GWLB's), inner
packets back into endpoint TUN devices. A health thread runs the model's probes (TCP or HTTP, from the gwlb
namespace, several at once) and reports the results. Taps see every packet with the model's verdict, which
is what the conformance suite and the reports read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NamedTuple

from gwlbsim.linuxio import netns
from gwlbsim.linuxio.fastio import BatchReceiver, set_buffer
from gwlbsim.linuxio.httpprobe import http_probe, tcp_probe
from gwlbsim.linuxio.loop import EventLoop
from gwlbsim.linuxio.tun import open_tun
from gwlbsim.live.topology import LINK_MTU, Topology, plumb_endpoint
from gwlbsim.model import Dropped, GwlbModel, ProbeRequest, ToEndpoint, ToTarget
from gwlbsim.wire.geneve import GENEVE_PORT
from gwlbsim.wire.outer import OuterTemplate, fragment_ipv4

log = logging.getLogger("gwlbsim.live")

TICK = 0.05
TUN_BUDGET = 256
#: the GENEVE socket's receive buffer, in bytes (each small datagram takes about 1 KB of it)
RECEIVE_BUFFER = 32 << 20


def _link_local(pkt: bytes | bytearray) -> bool:
    """IPv6 to a link-scope address (fe80::/10, ff02::/16): not routable through an endpoint."""
    if pkt[0] >> 4 != 6:
        return False
    return (pkt[24] == 0xFE and pkt[25] & 0xC0 == 0x80) or (pkt[24] == 0xFF and pkt[25] & 0x0F == 2)


class Captured(NamedTuple):
    at: float
    kind: str  #: from_endpoint | to_target | from_target | delivered | raw_to_target
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes  #: the inner packet, or the GENEVE payload for to_target/from_target
    verdict: str  #: "" when accepted, else the drop reason
    eni_id: int = 0


Tap = Callable[[Captured], None]


class LiveGwlb:
    """The fake GWLB on real sockets: one datapath thread reads the endpoints' TUN devices and GENEVE returns
    on port 6081, asks the model (:class:`GwlbModel`, under a lock) and carries out its actions; a health
    thread probes the targets. Tests watch it through taps (``Captured`` records) and send crafted datagrams
    with :meth:`send_raw`."""

    def __init__(self, topo: Topology, model: GwlbModel, clock: Callable[[], float] = time.monotonic) -> None:
        self.topo = topo
        self.model = model
        self.clock = clock
        self.lock = threading.RLock()
        self.taps: list[Tap] = []
        self.loop = EventLoop(TICK, clock)
        self._stop = self.loop.stopping
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._buf = bytearray(65536)
        self._tun: dict[int, int] = {}  # ENI id -> TUN fd
        self._fd_eni: dict[int, int] = {}
        self._templates: dict[tuple[int, int, str, int, int], OuterTemplate] = {}
        self._threads: list[threading.Thread] = []
        self.io_errors: dict[str, int] = {}
        self._ident = 0
        self.probes_run = 0
        self.udp = netns.socket_in(topo.gwlb_ns)
        # past the system's limit (Debian's is 208 KB): a few seconds of returns at the suite's scale rates
        set_buffer(self.udp, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.udp.bind(("0.0.0.0", GENEVE_PORT))
        self.udp.setblocking(False)
        self.raw = netns.socket_in(topo.gwlb_ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        set_buffer(self.raw, socket.SO_SNDBUF, 8 << 20)
        self.rx = BatchReceiver(self.udp, 32, 65536, pktinfo=True)
        self._probe_pool = ThreadPoolExecutor(16, thread_name_prefix="probe")

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for slot in self.topo.endpoints:
            with netns.entered(slot.ep_ns):
                fd = open_tun(slot.tun, mtu=LINK_MTU, rp_filter=0, ipv6_link_local=False)
            self._tun[slot.eni_id] = fd
            self._fd_eni[fd] = slot.eni_id
            plumb_endpoint(self.topo.lab, slot)
        for name, fn in (("gwlb-datapath", self._datapath), ("gwlb-health", self._health)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.loop.stop()
        for t in self._threads:
            t.join(10)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        for fd in self._tun.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._tun.clear()
        for s in (self.udp, self.raw):
            s.close()
        self.loop.close()

    def __enter__(self) -> LiveGwlb:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------ API

    def call(self, fn: Callable[[GwlbModel], Any]) -> Any:
        """Run ``fn(model)`` under the model's lock (from any thread)."""
        with self.lock:
            return fn(self.model)

    def inject(self, eni_id: int, inner: bytes) -> None:
        """Handle ``inner`` as if it had entered through endpoint ``eni_id``."""
        self._commands.put(lambda: self._from_endpoint(eni_id, inner, self.clock()))
        self._wake()

    def send_raw(self, target_address: str, payload: bytes, sport: int = 60000, node: str | None = None) -> None:
        """Send a GENEVE payload the caller made (any bytes) to an appliance, outside the model."""
        node = node or self.topo.nodes[next(iter(self.topo.nodes))]

        def send() -> None:
            # an IP id, so that oversize datagrams can be fragmented on the way (as a router would)
            self._ident = (self._ident + 1) & 0xFFFF
            pkt = OuterTemplate(node, target_address, sport, GENEVE_PORT, b"", ident=self._ident).packet(payload)
            self._tap(Captured(self.clock(), "raw_to_target", node, sport, target_address, GENEVE_PORT, payload, ""))
            for frag in fragment_ipv4(pkt, LINK_MTU):
                self._send(frag, target_address)

        self._commands.put(send)
        self._wake()

    def add_tap(self, tap: Tap) -> None:
        with self.lock:
            self.taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        with self.lock, contextlib.suppress(ValueError):
            self.taps.remove(tap)

    # ------------------------------------------------------------------------------------------- datapath

    def _wake(self) -> None:
        self.loop.wake()

    def _tap(self, c: Captured) -> None:
        for t in list(self.taps):
            try:
                t(c)
            except Exception:  # a broken tap must not stop the GWLB
                log.exception("tap failed")

    def _from_endpoint(self, eni_id: int, inner: bytes, now: float) -> None:
        with self.lock:
            v = self.model.decide_from_endpoint(eni_id, inner, now)
            if self.taps:
                self._tap(Captured(now, "from_endpoint", "", 0, "", 0, inner, _reason(v), eni_id))
            self._act(list(v.answer) if isinstance(v, Dropped) else v, now)

    def _from_target(self, src: str, sport: int, dst: str, payload: bytes, now: float) -> None:
        with self.lock:
            v = self.model.decide_from_target(src, sport, dst, GENEVE_PORT, payload, now)
            if self.taps:
                self._tap(Captured(now, "from_target", src, sport, dst, GENEVE_PORT, payload, _reason(v)))
            if not isinstance(v, Dropped):
                self._act(v, now)

    def _act(self, actions: list[ToTarget | ToEndpoint], now: float) -> None:
        for a in actions:
            if isinstance(a, ToTarget):
                key = (a.flow.endpoint.eni_id, a.flow.cookie, a.target.address, a.sport, a.inner[0] >> 4)
                tpl = self._templates.get(key)
                if tpl is None:
                    if len(self._templates) > 200_000:
                        self._templates.clear()
                    tpl = OuterTemplate(a.node, a.target.address, a.sport, GENEVE_PORT, a.header,
                                        udp_checksum=self.model.sim.udp_checksum)
                    self._templates[key] = tpl
                if self.taps:
                    self._tap(Captured(now, "to_target", a.node, a.sport, a.target.address, GENEVE_PORT,
                                       a.header + a.inner, "", a.flow.endpoint.eni_id))
                self._send(tpl.packet(a.inner), a.target.address)
            else:
                if self.taps:
                    self._tap(Captured(now, "delivered", "", 0, "", 0, a.inner, "", a.eni_id))
                fd = self._tun.get(a.eni_id)
                if fd is not None:
                    try:
                        os.write(fd, a.inner)
                    except OSError as e:
                        self._io_error(f"endpoint_write_{e.errno}")

    def _send(self, pkt: bytes, address: str) -> None:
        try:
            self.raw.sendto(pkt, (address, 0))
        except OSError as e:
            self._io_error(f"send_{e.errno}")

    def _io_error(self, what: str) -> None:
        self.io_errors[what] = self.io_errors.get(what, 0) + 1

    def _datapath(self) -> None:
        loop = self.loop
        loop.watch(self.udp.fileno(), self._on_udp)
        for fd in self._tun.values():
            loop.watch(fd, partial(self._on_tun, fd))
        try:
            loop.run(on_tick=self._tick, on_wake=self._run_commands)
        except Exception:
            log.exception("fake GWLB datapath died")
            raise

    def _run_commands(self, now: float) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            cmd()

    def _tick(self, now: float) -> None:
        with self.lock:
            self.model.tick(now)

    def _on_udp(self, now: float) -> None:
        rx = self.rx
        for _ in range(8):
            n = rx.recv()
            for i in range(n):
                src, sport = rx.source(i)
                dst = rx.destination(i) or ""
                self._from_target(src, sport, dst, bytes(rx.views[i][:rx.lengths[i]]), now)
            if n < rx.batch:
                return

    def _on_tun(self, fd: int, now: float) -> None:
        eni = self._fd_eni.get(fd)
        if eni is None:
            return
        buf = self._buf
        for _ in range(TUN_BUDGET):
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                return
            except OSError as e:
                self._io_error(f"endpoint_read_{e.errno}")
                return
            if _link_local(buf):
                # the endpoint namespace's own IPv6 chatter (MLD, ND): a VPC route never carries it
                self._io_error("link_local_ignored")
                continue
            self._from_endpoint(eni, bytes(buf[:n]), now)

    # --------------------------------------------------------------------------------------------- health

    def _health(self) -> None:
        while not self._stop.wait(0.1):
            now = self.clock()
            with self.lock:
                due = self.model.due_probes(now)
            for req in due:
                self._probe_pool.submit(self._probe, req)

    def _probe(self, req: ProbeRequest) -> None:
        hc = self.model.config.health_check
        t = req.target
        timeout = float(hc.timeout)
        try:
            if hc.protocol == "TCP":
                r = tcp_probe(t.address, hc.port, timeout, ns=self.topo.gwlb_ns)
            else:
                r = http_probe(t.address, hc.port, hc.path, timeout, ns=self.topo.gwlb_ns,
                               tls=hc.protocol == "HTTPS")
        except Exception as e:  # a probe that cannot even run counts as failed
            log.warning("health probe of %s failed to run: %s", t.id, e)
            with self.lock:
                self.model.probe_result(t.id, req.checker, False, self.clock(), str(e))
            return
        self.probes_run += 1
        with self.lock:
            ok = self.model.probe_ok(r.status, r.ok)
            self.model.probe_result(t.id, req.checker, ok, self.clock(),
                                    r.error or (f"HTTP {r.status}" if r.status else "connected"))


def _reason(verdict: object) -> str:
    """A tap's verdict: the reason the model dropped the packet, or "" when it went on."""
    return verdict.reason if isinstance(verdict, Dropped) else ""
