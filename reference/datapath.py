"""The reference appliance's datapath on Linux: UDP and raw sockets, TUN devices, health; one event loop.

Threads:

* the datapath (the caller's thread): one :class:`gwlbsim.linuxio.loop.EventLoop` over the GENEVE socket,
  every tunnel device and a wake-up pipe; batched receive and send; a tick every quarter second for timeouts;
* the lifecycle worker (:mod:`gwlbsim.reference.lifecycle`): creates and destroys tunnels (devices + hooks)
  strictly in order, off the datapath;
* the health server's threads;
* the link resolver (:mod:`gwlbsim.linuxio.linkpath`): every second, the route and neighbour of each GWLB
  address.

The fast path, per batch of up to 64 GENEVE datagrams (one recvmmsg): validate each and write its inner
packet to the tunnel's gwi- (one write each); then read what came out of the tunnels' gwo- (one readv
each, straight into a send slot behind room for the outer headers), put the return header in front of it
in place, and send the slots with one sendmmsg: straight to the link, or through the raw IP socket (the
policy is :mod:`gwlbsim.reference.returns`). Nothing is allocated per packet beyond a few small objects;
address strings and sockaddrs are made once per peer.

With ``--udpthreads/--tunthreads N`` (N > 1) this loop runs in N worker processes
(:mod:`gwlbsim.reference.worker`) and a supervisor keeps tunnels, hooks and health
(:mod:`gwlbsim.reference.supervisor`).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gwlbsim.reference.core import ApplianceCore, Tunnel, put_return_header
from gwlbsim.reference.fastpath import COUNTERS, FastPath, Unavailable
from gwlbsim.reference.health import HealthServer
from gwlbsim.reference.lifecycle import Created, Lifecycle, TunHandle, TunnelLifecycle
from gwlbsim.reference.options import Options
from gwlbsim.reference.returns import ReturnPaths
from gwlbsim.reference.status import (
    ingress_rx_dropped,
    loop_reasons,
    status_document,
    tunnel_counters,
    tunnel_entry,
)

from gwlbsim import __version__
from gwlbsim.linuxio import devstats, linkpath
from gwlbsim.linuxio.fastio import BatchReceiver, BatchSender, set_buffer, sockaddr
from gwlbsim.linuxio.loop import EventLoop
from gwlbsim.wire.hexdump import hexdump
from gwlbsim.wire.reasons import DropReason

log = logging.getLogger("gwlb-reference")

TICK = 0.25  # seconds between timeout checks: tunnels go within a second of -t
TUN_READ_BUDGET = 256  # packets read from one device before looking at the others
UDP_BATCHES = 8  # receive batches taken before looking at the tunnels
HEADROOM = 512  # room in front of a packet read from a tunnel: Ethernet + outer IPv4 + UDP + the longest GENEVE

# Drop reasons of the driver (I/O failures), next to the core's.
TUN_WRITE_FAILED = DropReason.TUN_WRITE_FAILED
#: the packet met a tunnel whose device had been deleted under the appliance (``ip link del``): the tunnel is
#: rebuilt at once, from the next packet of its endpoint on
TUNNEL_DEVICE_GONE = DropReason.TUNNEL_DEVICE_GONE
SEND_FAILED = DropReason.SEND_FAILED
UDP_TRUNCATED = DropReason.UDP_TRUNCATED


class ReferenceAppliance:
    """The whole running appliance: sockets, the datapath loop, the lifecycle worker and the health server."""

    def __init__(self, core: ApplianceCore, opts: Options, clock: Callable[[], float] = time.monotonic,
                 udp: socket.socket | None = None, lifecycle: TunnelLifecycle | None = None) -> None:
        """``udp`` (an already bound GENEVE socket) and ``lifecycle`` (a worker's remote stand-in) are for
        datapath workers (:mod:`gwlbsim.reference.worker`); by default the appliance makes its own."""
        self.core = core
        self.opts = opts
        self.clock = clock
        self.started = clock()
        self.driver_drops: dict[str, int] = {}
        self.loop = EventLoop(TICK, clock)
        self.stopping = self.loop.stopping
        self.lifecycle: TunnelLifecycle = lifecycle or Lifecycle(core.config.mtu, opts, self.loop.wake)
        self.udp = udp or geneve_socket(opts, core.config.geneve_port)
        self.raw = self._raw_socket()
        self.link: socket.socket | None = None
        self.resolver: linkpath.Resolver | None = None
        if not opts.raw_returns:
            try:
                self.link = linkpath.link_socket(opts.sndbuf)
            except OSError as e:
                log.warning("no packet socket (%s): returns go through the IP layer", e.strerror)
        self.rx = BatchReceiver(self.udp, opts.batch, 65536, pktinfo=True)
        #: what goes in front of an outer packet sent to the link besides the Ethernet header: a virtio-net
        #: header asking the device to finish the UDP checksum (the payload is then not summed here)
        vnet = b""
        if self.link is not None:
            self.resolver = linkpath.Resolver()
            self.tx = BatchSender(self.link, opts.batch, HEADROOM + 65536, linkpath.SOCKADDR_LL_SIZE)
            if core.config.udp_checksum and linkpath.offload_checksums(self.link):
                vnet = linkpath.vnet_partial_udp()
        else:
            self.tx = BatchSender(self.raw, opts.batch, HEADROOM + 65536)
        resolver = self.resolver
        self.paths = ReturnPaths(resolver.routes if resolver is not None else None,
                                 resolver.want if resolver is not None else _nobody, sockaddr, vnet,
                                 linkpath.REFRESH)
        # a packet read from a tunnel lands in a send slot after room for the longest outer header
        self._tun_reads = [[v[HEADROOM:]] for v in self.tx.views]
        self.ip_returns = 0  #: returns sent one by one through the raw IP socket (with the link path on)
        self.tunnels_rebuilt = 0  #: tunnels retired because their device was deleted under the appliance
        #: what the kernel dropped on the way into the gwi- of tunnels retired idle since (a deleted device's
        #: count went with it)
        self.retired_drops = devstats.GoneDevicesDrops()
        self.health = None
        self.fast: FastPath | None = None
        self.datapath_reason = ""
        try:
            self.fast, self.datapath_reason = FastPath.start(opts.datapath, core.config.option_class,
                                                             core.config.udp_checksum, core.config.flow_timeout,
                                                             core.config.max_flows, opts.listen)
            self.health = health_server(opts, self.status)
        except (OSError, Unavailable):
            self.close()
            raise

    @property
    def heartbeat(self) -> float:
        return self.loop.heartbeat

    # ---------------------------------------------------------------------------------------------- sockets

    def _raw_socket(self) -> socket.socket:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            self.udp.close()
            self.loop.close()
            raise PermissionError(errno.EPERM, "a raw socket is needed to send returns with GWLB's source port: "
                                               "run as root or with CAP_NET_RAW") from None
        set_buffer(s, socket.SO_SNDBUF, self.opts.sndbuf)
        return s

    def wake(self) -> None:
        self.loop.wake()

    # ------------------------------------------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve until :meth:`request_stop`; then tear every tunnel down (destroy hooks run)."""
        self.lifecycle.start()
        if self.resolver is not None:
            self.resolver.start()
        if self.health is not None:
            self.health.start()
        self.loop.watch(self.udp.fileno(), self._on_udp)
        log.info("gwlb-reference %s listening for GENEVE on %s:%d%s", __version__, self.opts.listen,
                 self.core.config.geneve_port,
                 f", health on {self.opts.health_bind}:{self.opts.health_port}" if self.health else "")
        self.loop.run(on_tick=self._tick, on_wake=self._on_wake)
        self._shutdown()

    def _tick(self, now: float) -> None:
        if self.fast is not None:  # first: the tunnels' last-seen times include the kernel's traffic
            self.fast.tick(now, self.core, self.resolver.routes if self.resolver is not None else None)
        with self.retired_drops.lock:
            retired = self.core.tick(now)
            self.retired_drops.add(t.ingress for t in retired)
        for t in retired:
            self._retire(t)
        self.paths.tick(now)

    def request_stop(self) -> None:
        self.loop.stop()

    def _watch_tunnel(self, t: Tunnel, h: TunHandle) -> None:
        for fd in (h.ingress_fd, h.egress_fd):
            self.loop.watch(fd, partial(self._on_tun, t, fd))

    def _unwatch_tunnel(self, t: Tunnel) -> None:
        h = t.handle
        if isinstance(h, TunHandle):
            for fd in (h.ingress_fd, h.egress_fd):
                self.loop.unwatch(fd)

    def _on_udp(self, now: float) -> None:
        """GENEVE datagrams in: validate, remember the flow, write the inner packet to the tunnel's gwi-.

        After each batch, what came out of the egress devices written to is returned at once: the devices'
        queues stay short and no extra wake-up is needed.
        """
        rx, inbound, write = self.rx, self.core.inbound, os.write
        views, lengths, source, destination = rx.views, rx.lengths, rx.source, rx.destination
        port = self.core.config.geneve_port
        listen, dumping, fast = self.opts.listen, self.opts.hexdump, self.fast
        for _ in range(UDP_BATCHES):
            n = rx.recv()
            touched: dict[int, Tunnel] = {}  # by ENI
            for i in range(n):
                src, sport = source(i)
                view = views[i]
                if dumping:
                    log.debug("GENEVE from %s:%d:\n%s", src, sport, hexdump(view[:lengths[i]], "  "))
                v = inbound(view, 0, lengths[i], src, destination(i) or listen, sport, port, now)
                if v is None:
                    continue
                tunnel, start, end, new_tunnel, queued = v
                if new_tunnel:
                    self.lifecycle.create(tunnel)
                if fast is not None:  # this flow's header is the Python datapath's now
                    fast.learned(tunnel.eni_id, view, start, end)
                if not queued:
                    try:
                        # not queued: the tunnel is ready, so it has its devices
                        write(tunnel.handle.ingress_fd, view[start:end])  # type: ignore[union-attr]
                    except OSError as e:
                        if self._write_failed(tunnel, e):
                            continue
                    touched[tunnel.eni_id] = tunnel
            for tunnel in touched.values():
                if tunnel.handle is not None and self.core.tunnels.get(tunnel.eni_id) is tunnel:
                    self._on_tun(tunnel, tunnel.handle.egress_fd, now)
            if n < rx.batch:
                break
        if rx.truncated:
            self._drop(UDP_TRUNCATED, rx.truncated)
            rx.truncated = 0

    def _write_tun(self, t: Tunnel, pkt: bytes | memoryview) -> None:
        try:
            os.write(t.handle.ingress_fd, pkt)  # type: ignore[union-attr]  # only ready tunnels are written to
        except OSError as e:
            self._write_failed(t, e)

    def _write_failed(self, t: Tunnel, e: OSError) -> bool:
        """Count a failed write into ``t``'s gwi-; True when its device is gone (the tunnel is then retired)."""
        if e.errno == errno.EBADFD:
            self._drop(TUNNEL_DEVICE_GONE)
            self._tunnel_gone(t)
            return True
        self._drop(TUN_WRITE_FAILED)
        log.debug("write to %s failed: %s", t.ingress, e.strerror)
        return False

    def _on_tun(self, t: Tunnel, fd: int, now: float) -> None:
        """Packets out of a tunnel device: read each straight into a send slot, put the outer header in front
        of it there, send the slots in batches."""
        outbound, tx, reads = self.core.outbound, self.tx, self._tun_reads
        views, known, destination = tx.views, self.paths.known, self.paths.destination
        readv, dumping, fast = os.readv, self.opts.hexdump, self.fast
        for _ in range(TUN_READ_BUDGET):
            i = tx.count
            try:
                n = readv(fd, reads[i])
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EBADFD:  # its device was deleted: epoll reports EPOLLERR until we let go
                    self._tunnel_gone(t)
                else:
                    log.warning("read from %s failed: %s", t.ingress, e.strerror)
                break
            view = views[i]
            if dumping:
                # (type: ignore below) packets come only out of a ready tunnel's devices
                log.debug("from %s (%d bytes):\n%s", t.ingress if fd == t.handle.ingress_fd else t.egress,  # type: ignore[union-attr]
                          n, hexdump(view[HEADROOM:HEADROOM + n], "  "))
            if fast is not None:
                fast.adopt(self.core, t, view, HEADROOM, HEADROOM + n, now)
            flow = outbound(t, view, now, HEADROOM, HEADROOM + n)
            if flow is None:
                continue
            gwlb = flow.route.addressing[0]
            frame, frame_len, address, partial = known.get(gwlb) or destination(gwlb)
            start = put_return_header(flow, view, HEADROOM, n, partial)
            if address is None:  # this one through the IP layer
                self._send_ip(gwlb, view[start:HEADROOM + n])
                continue
            if frame_len:
                start -= frame_len
                view[start:start + frame_len] = frame
            tx.queue(start, HEADROOM + n, address)  # sends when the batch is full
        self._flush()

    def _send_ip(self, gwlb: str, packet: memoryview) -> None:
        self._flush()  # what is queued for the link goes first: the flows' order is kept
        try:
            self.raw.sendto(packet, (gwlb, 0))
            self.ip_returns += 1
        except OSError as e:
            self._drop(SEND_FAILED)
            log.debug("send to %s failed: %s", gwlb, e.strerror)

    def _flush(self) -> None:
        tx = self.tx
        if tx.count:
            tx.flush()
        if tx.failed:
            self._drop(SEND_FAILED, tx.failed)
            tx.failed = 0

    def _on_wake(self, now: float) -> None:
        """Tunnel management finished something: a created tunnel gets its devices watched and its pending
        packets written; a failed one drops them (counted) and is retried by its next packet."""
        while True:
            try:
                result = self.lifecycle.results.get_nowait()
            except queue.Empty:
                break
            t = result.tunnel
            if isinstance(result, Created):
                if self.core.tunnels.get(t.eni_id) is not t:  # retired meanwhile: its destroy job closes it
                    continue
                t.handle = result.handle
                self._watch_tunnel(t, result.handle)
                for pkt in self.core.tunnel_ready(t.eni_id, now):
                    self._write_tun(t, pkt)
                if self.fast is not None:  # after the queued packets: the kernel path takes the next ones
                    self.fast.tunnel_ready(t)
            else:
                self.core.tunnel_failed(t.eni_id, now)

    def _tunnel_gone(self, t: Tunnel) -> None:
        """A device of ``t`` was deleted under us (``ip link del``): the kernel detached our descriptors, so
        packets written to it vanish and nothing comes out. Retire it now (destroy hook, descriptors closed):
        the endpoint's next packet builds the tunnel again (create hook), instead of black-holing its
        traffic while health still says 200."""
        if self.core.tunnels.get(t.eni_id) is not t:
            return  # retired already
        log.warning("tunnel device %s or %s was deleted: rebuilding the tunnel from the next packet",
                    t.ingress, t.egress)
        self.tunnels_rebuilt += 1
        self.core.retire(t.eni_id)
        self._retire(t, idle=False)

    def _retire(self, t: Tunnel, idle: bool = True) -> None:
        if self.fast is not None:
            self.fast.tunnel_gone(t)
        self._unwatch_tunnel(t)
        if idle and self.core.config.tunnel_timeout:
            log.info("tunnel %s idle for %g s: destroying", t.ingress, self.core.config.tunnel_timeout)
        self.lifecycle.destroy(t)

    def _drop(self, reason: str, n: int = 1) -> None:
        self.driver_drops[reason] = self.driver_drops.get(reason, 0) + n

    def _shutdown(self) -> None:
        log.info("shutting down: destroying %d tunnel(s)", len(self.core.tunnels))
        for t in self.core.retire_all():
            if self.fast is not None:
                self.fast.tunnel_gone(t)
            self._unwatch_tunnel(t)
            self.lifecycle.destroy(t)
        self.lifecycle.stop()
        deadline = time.monotonic() + self.opts.hook_timeout * 2 + 5
        self.lifecycle.join(max(0.0, deadline - time.monotonic()))
        if self.lifecycle.is_alive():
            log.error("tunnel teardown did not finish in time")
        self.close()

    def close(self) -> None:
        if self.health is not None:
            try:
                self.health.stop()
            except Exception:
                pass
        if self.resolver is not None:
            self.resolver.stop()
        if self.fast is not None:
            self.fast.close()
            self.fast = None
        for s in ("udp", "raw", "link"):
            sock = getattr(self, s, None)
            if sock is not None:
                sock.close()
        self.loop.close()

    # --------------------------------------------------------------------------------------------- status

    def return_paths(self) -> dict[str, int]:
        """Returns sent so far straight to the link, and through the IP layer (raw socket)."""
        if self.link is not None:
            return {"returned_via_link": self.tx.sent, "returned_via_ip": self.ip_returns}
        return {"returned_via_link": 0, "returned_via_ip": self.tx.sent}

    def unhealthy_reasons(self) -> list[str]:
        stopping = self.stopping.is_set()
        return (loop_reasons("datapath", stopping, self.clock(), self.loop.heartbeat)
                + self.lifecycle.unhealthy_reasons(stopping))

    def totals(self) -> dict[str, Any]:
        """The ``totals`` of the status document (the core's counters, the driver's drops and the kernel
        path's packets added)."""
        core = self.core
        c = core.totals
        drops = dict(c.drops)
        for k, v in self.driver_drops.items():
            drops[k] = drops.get(k, 0) + v
        kp = self.fast.kernel.counters() if self.fast is not None else dict.fromkeys(COUNTERS, 0)
        return {"packets_in": c.in_packets + kp["in_fast"], "bytes_in": c.in_bytes + kp["in_fast_bytes"],
                "packets_out": c.out_packets + kp["out_fast"], "bytes_out": c.out_bytes + kp["out_fast_bytes"],
                "flows": core.flow_count, "flow_evictions": core.evictions, "drops": drops,
                "tunnels_rebuilt": self.tunnels_rebuilt, **self.return_paths()}

    def status(self) -> dict[str, Any]:
        now = self.clock()
        with self.retired_drops.lock:
            dropped = devstats.receive_drops()
            tunnels = [tunnel_entry(t, now, t.last_seen, self._tunnel_counters(t), dropped)
                       for t in list(self.core.tunnels.values())]
            retired = self.retired_drops.total
        totals = {**self.totals(), "ingress_rx_dropped": ingress_rx_dropped(retired, tunnels)}
        return status_document(self.core.config, now - self.started, self.unhealthy_reasons(),
                               self.lifecycle.hooks, totals, tunnels, datapath=self.datapath())

    def _tunnel_counters(self, t: Tunnel) -> dict[str, Any]:
        """A tunnel's counters: the Python datapath's, plus what the kernel path carried for it."""
        out = tunnel_counters(t)
        carried = self.fast.carried(t.eni_id) if self.fast is not None else None
        if carried is not None:
            for name, n in zip(("packets_in", "bytes_in", "packets_out", "bytes_out"), carried, strict=True):
                out[name] += n
        return out

    def datapath(self) -> dict[str, Any]:
        """Which datapath carries the common case, why, and the kernel path's own counters."""
        if self.fast is None:
            return {"kind": "python", "reason": self.datapath_reason}
        return {"kind": "kernel", "reason": self.datapath_reason, "kernel": self.fast.status()}


def _nobody(gwlb: str) -> None:
    pass


def geneve_socket(opts: Options, port: int, reuseport: bool = False) -> socket.socket:
    """The non-blocking UDP socket GENEVE arrives on, with a large receive buffer; clear error if taken."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        set_buffer(s, socket.SO_RCVBUF, opts.rcvbuf)
        s.bind((opts.listen, port))
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"cannot listen for GENEVE on {opts.listen}:{port}: {e.strerror}") from e
    s.setblocking(False)
    return s


def health_server(opts: Options, status: Callable[[], dict[str, Any]]) -> HealthServer | None:
    """The health-check HTTP server of ``-p``, or None without it; clear error if the port is taken."""
    if opts.health_port is None:
        return None
    try:
        return HealthServer((opts.health_bind, opts.health_port), status, opts.health_mode)
    except OSError as e:
        raise OSError(e.errno, f"cannot listen for health checks on {opts.health_bind}:{opts.health_port}: "
                               f"{e.strerror}") from e
