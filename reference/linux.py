"""The reference appliance's Linux driver: UDP and raw sockets, TUN devices, hooks, health, signals.

Threads:

* the datapath (the caller's thread): one epoll loop over the GENEVE socket, every tunnel device and a
  wake-up pipe; batched receive and send; a tick every quarter second for timeouts;
* the lifecycle worker: creates and destroys tunnels (devices + hooks) strictly in order, so that a tunnel
  being destroyed is gone before the same endpoint's next tunnel is created, and slow hooks never stall
  the datapath (packets for a tunnel being created wait in its pending queue);
* the health server's threads;
* the link resolver (gwlbsim.linuxio.linkpath): every second, the route and neighbour of each GWLB address.

The fast path, per batch of up to 64 GENEVE datagrams (one recvmmsg): validate each and write its inner
packet to the tunnel's gwi- (one write each); then read what came out of the tunnels' gwo- (one readv
each, straight into a send slot behind room for the outer headers), put the return header in front of it
in place, and send the slots with one sendmmsg: straight to the link (an AF_PACKET socket, the Ethernet
header and a virtio-net header leaving the UDP checksum to the device in front) once GWLB's neighbour is
known, else through the raw IP socket (also one return per GWLB address per second, which keeps the kernel's
neighbour entry confirmed; ``--raw-returns``: always). Nothing is allocated per packet beyond a few small
objects; address strings and sockaddrs are made once per peer.

With ``--udpthreads/--tunthreads N`` (N > 1) this loop runs in N worker processes and a supervisor keeps
tunnels, hooks and health: see gwlbsim.reference.workers.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gwlbsim.reference.core import ApplianceCore, Tunnel, TunnelState, put_return_header
from gwlbsim.reference.health import HealthServer
from gwlbsim.reference.hooks import HookResult, run_hook
from gwlbsim.reference.steering import attach_tun

from gwlbsim import __version__
from gwlbsim.linuxio import linkpath
from gwlbsim.linuxio.fastio import BatchReceiver, BatchSender, set_buffer, sockaddr
from gwlbsim.linuxio.tun import TunError, exists, open_tun
from gwlbsim.wire.hexdump import hexdump
from gwlbsim.wire.reasons import DropReason

log = logging.getLogger("gwlb-reference")

TICK = 0.25  # seconds between timeout checks: tunnels go within a second of -t
STALL_AFTER = 3.0  # the datapath is reported unhealthy when its loop has not turned for this long
TUN_READ_BUDGET = 256  # packets read from one device before looking at the others
UDP_BATCHES = 8  # receive batches taken before looking at the tunnels
TUN_QUEUE = 4096  # packets a tunnel device holds for us (the kernel's default, 500, overflows under bursts)
HEADROOM = 512  # room in front of a packet read from a tunnel: Ethernet + outer IPv4 + UDP + the longest GENEVE
Destination = tuple[bytes, int, "bytes | None", bool]
_VIA_IP: Destination = (b"", 0, None, False)

# Drop reasons of the driver (I/O failures), next to the core's.
TUN_WRITE_FAILED = DropReason.TUN_WRITE_FAILED
#: the packet met a tunnel whose device had been deleted under the appliance (``ip link del``): the tunnel is
#: rebuilt at once, from the next packet of its endpoint on
TUNNEL_DEVICE_GONE = DropReason.TUNNEL_DEVICE_GONE
SEND_FAILED = DropReason.SEND_FAILED
UDP_TRUNCATED = DropReason.UDP_TRUNCATED


@dataclass
class Options:
    """Everything the driver needs besides the core's :class:`gwlbsim.reference.core.Config`."""

    listen: str = "0.0.0.0"
    create_hook: list[str] | None = None
    destroy_hook: list[str] | None = None
    hook_timeout: float = 30.0
    health_port: int | None = None
    health_bind: str = "0.0.0.0"
    health_mode: str = "text"
    hexdump: bool = False
    batch: int = 64
    rcvbuf: int = 16 << 20
    sndbuf: int = 8 << 20
    #: send returns through the raw IP socket only (through the IP layer, so netfilter's output hooks see them,
    #: as gwlbtun's do) instead of straight to the link where the route and neighbour are known (faster)
    raw_returns: bool = False


@dataclass
class TunHandle:
    """A tunnel's devices as one datapath sees them: its queue of gwi- and of gwo-."""

    ingress_fd: int
    egress_fd: int
    #: every queue of a multi-queue tunnel, (gwi, gwo) per worker (only where the devices were created)
    queues: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class HookStats:
    create_ok: int = 0
    create_failed: int = 0
    destroy_ok: int = 0
    destroy_failed: int = 0
    last_create_error: str = ""


@dataclass
class _Job:
    action: str  # "create" or "destroy"
    tunnel: Tunnel
    done: threading.Event = field(default_factory=threading.Event)


class Lifecycle(threading.Thread):
    """Creates and destroys tunnels in order; reports completions through ``results`` and a wake-up pipe."""

    def __init__(self, core: ApplianceCore, opts: Options, wake: Callable[[], None], queues: int = 1,
                 steering_fd: int | None = None) -> None:
        super().__init__(name="lifecycle", daemon=True)
        self.core = core
        self.opts = opts
        self.queues = queues  #: one queue per datapath worker (multi-queue devices when more than one)
        self.steering_fd = steering_fd  #: program choosing the queue of packets out of the devices
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.results: queue.Queue[tuple[str, Tunnel, TunHandle | None]] = queue.Queue()
        self.hooks = HookStats()
        self.busy_since: float | None = None
        self._wake = wake
        self._devices: dict[tuple[int, int], TunHandle] = {}  # (ENI, generation) -> the devices we opened

    def unhealthy_reasons(self, stopping: bool) -> list[str]:
        """Why tunnel management makes the appliance unhealthy (empty when it does not)."""
        reasons = []
        if not self.is_alive() and not stopping:
            reasons.append("tunnel lifecycle worker is not running")
        busy = self.busy_since
        if busy is not None and time.monotonic() - busy > self.opts.hook_timeout + 5:
            reasons.append("tunnel creation or destruction stuck")
        if self.hooks.last_create_error:
            reasons.append(f"last tunnel creation failed: {self.hooks.last_create_error}")
        return reasons

    def submit(self, action: str, tunnel: Tunnel) -> _Job:
        job = _Job(action, tunnel)
        self.jobs.put(job)
        return job

    def stop(self) -> None:
        self.jobs.put(None)

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.busy_since = time.monotonic()
            try:
                if job.action == "create":
                    self._create(job.tunnel)
                else:
                    self._destroy(job.tunnel)
            except Exception:
                log.exception("tunnel %s of %s failed", job.action, job.tunnel.ingress)
                if job.action == "create":
                    self.results.put(("failed", job.tunnel, None))
            finally:
                self.busy_since = None
                job.done.set()
                self._wake()

    def _hook(self, command: list[str] | None, action: str, t: Tunnel) -> HookResult | None:
        if not command:
            return None
        return run_hook(command, action, t.ingress, t.egress, t.eni_hex, self.opts.hook_timeout)

    def _create(self, t: Tunnel) -> None:
        try:
            gwi = self._open(t.ingress)
            try:
                gwo = self._open(t.egress)
            except (TunError, OSError):
                for fd in gwi:
                    os.close(fd)
                raise
        except (TunError, OSError) as e:
            self.hooks.last_create_error = str(e)
            self.hooks.create_failed += 1
            log.error("cannot create tunnel for ENI %s: %s", t.eni_hex, e)
            self.results.put(("failed", t, None))
            return
        handle = TunHandle(gwi[0], gwo[0], list(zip(gwi, gwo, strict=True)))
        self._devices[(t.eni_id, t.generation)] = handle
        log.info("tunnel %s/%s created for ENI %s (generation %d)", t.ingress, t.egress, t.eni_hex, t.generation)
        res = self._hook(self.opts.create_hook, "CREATE", t)
        if res is not None and not res.ok:
            self.hooks.create_failed += 1
            self.hooks.last_create_error = f"create hook: {res.error}"
        else:
            self.hooks.create_ok += 1
            self.hooks.last_create_error = ""
        self.results.put(("ready", t, handle))

    def _open(self, name: str) -> list[int]:
        """The device's queues: one file descriptor, or one per worker (multi-queue, steered)."""
        mtu, multi = self.core.config.mtu, self.queues > 1
        fds: list[int] = []
        try:
            for _ in range(self.queues):
                fds.append(open_tun(name, mtu=mtu, rp_filter=0, ipv6_link_local=False, txqueuelen=TUN_QUEUE,
                                    multi_queue=multi))
            if multi and self.steering_fd is not None:

                attach_tun(fds[0], self.steering_fd)
        except (TunError, OSError):
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def _destroy(self, t: Tunnel) -> None:
        res = self._hook(self.opts.destroy_hook, "DESTROY", t)
        if res is not None:
            if res.ok:
                self.hooks.destroy_ok += 1
            else:
                self.hooks.destroy_failed += 1
        h = self._devices.pop((t.eni_id, t.generation), None)
        if h is None:  # its creation failed: nothing to remove
            return
        for fds in h.queues or [(h.ingress_fd, h.egress_fd)]:
            for fd in fds:
                os.close(fd)
        t.handle = None
        for _ in range(100):  # the kernel unregisters the devices asynchronously; wait until they are gone
            if not exists(t.ingress) and not exists(t.egress):
                break
            time.sleep(0.01)
        else:
            log.warning("devices of %s still present after closing them", t.ingress)
        log.info("tunnel %s/%s destroyed", t.ingress, t.egress)


class Appliance:
    """The whole running appliance: sockets, datapath loop, lifecycle worker and health server."""

    def __init__(self, core: ApplianceCore, opts: Options, clock: Callable[[], float] = time.monotonic,
                 udp: socket.socket | None = None, lifecycle: Any = None) -> None:
        """``udp`` (an already bound GENEVE socket) and ``lifecycle`` (something with Lifecycle's methods)
        are for datapath workers (gwlbsim.reference.workers); by default the appliance makes its own."""
        self.core = core
        self.opts = opts
        self.clock = clock
        self.started = clock()
        self.heartbeat = self.started
        self.driver_drops: dict[str, int] = {}
        self.stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.lifecycle = lifecycle or Lifecycle(core, opts, self.wake)
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
        self._vnet = b""
        if self.link is not None:
            self.resolver = linkpath.Resolver()
            self.tx = BatchSender(self.link, opts.batch, HEADROOM + 65536, linkpath.SOCKADDR_LL_SIZE)
            if core.config.udp_checksum and linkpath.offload_checksums(self.link):
                self._vnet = linkpath.vnet_partial_udp()
        else:
            self.tx = BatchSender(self.raw, opts.batch, HEADROOM + 65536)
        # a packet read from a tunnel lands in a send slot after room for the longest outer header
        self._tun_reads = [[v[HEADROOM:]] for v in self.tx.views]
        #: GWLB address -> (frame header to put in front, its length, destination address for self.tx or None
        #: to send the next return through the raw socket, whether the device finishes the UDP checksum)
        self._destinations: dict[str, Destination] = {}
        self._refresh: set[str] = set()  # addresses whose next return goes through the IP layer
        self.ip_returns = 0  #: returns sent one by one through the raw IP socket (with the link path on)
        self.tunnels_rebuilt = 0  #: tunnels retired because their device was deleted under the appliance
        self._next_refresh = 0.0
        self._fd_tunnel: dict[int, Tunnel] = {}
        self._epoll = select.epoll()
        self.health = None
        try:
            self.health = health_server(opts, self.status)
        except OSError:
            self.close()
            raise

    # ---------------------------------------------------------------------------------------------- sockets

    def _raw_socket(self) -> socket.socket:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            self.udp.close()
            raise PermissionError(errno.EPERM, "a raw socket is needed to send returns with GWLB's source port: "
                                               "run as root or with CAP_NET_RAW") from None
        set_buffer(s, socket.SO_SNDBUF, self.opts.sndbuf)
        return s

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------------------------------------- loop

    def run(self) -> None:
        """Serve until :meth:`request_stop`; then tear every tunnel down (destroy hooks run)."""
        self.lifecycle.start()
        if self.resolver is not None:
            self.resolver.start()
        if self.health is not None:
            self.health.start()
        ep = self._epoll
        ep.register(self.udp.fileno(), select.EPOLLIN)
        ep.register(self._wake_r, select.EPOLLIN)
        udp_fd = self.udp.fileno()
        log.info("gwlb-reference %s listening for GENEVE on %s:%d%s", __version__, self.opts.listen,
                 self.core.config.geneve_port,
                 f", health on {self.opts.health_bind}:{self.opts.health_port}" if self.health else "")
        next_tick = self.clock() + TICK
        while not self.stopping.is_set():
            events = ep.poll(TICK)
            now = self.clock()
            self.heartbeat = now
            for fd, _ev in events:
                if fd == udp_fd:
                    self._on_udp(now)
                elif fd == self._wake_r:
                    self._on_wake(now)
                else:
                    t = self._fd_tunnel.get(fd)
                    if t is not None:
                        self._on_tun(t, fd, now)
                    else:
                        self._on_other(fd, now)
            if now >= next_tick:
                next_tick = now + TICK
                self._tick(now)
        self._shutdown()

    def _tick(self, now: float) -> None:
        for t in self.core.tick(now):
            self._retire(t)
        if self.resolver is not None and now >= self._next_refresh:
            # every second, one return per GWLB address goes through the IP layer: the kernel keeps its
            # neighbour entry confirmed, and the address's link route is taken afresh from the resolver
            self._next_refresh = now + linkpath.REFRESH
            self._refresh.update(self._destinations)
            self._destinations.clear()

    def _on_other(self, fd: int, now: float) -> None:
        """An event on a descriptor that is neither ours nor a tunnel's any more: stop watching it."""
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake()

    def _on_udp(self, now: float) -> None:
        """GENEVE datagrams in: validate, remember the flow, write the inner packet to the tunnel's gwi-.

        After each batch, what came out of the egress devices written to is returned at once: the devices'
        queues stay short and no extra wake-up is needed.
        """
        rx, inbound, write = self.rx, self.core.inbound, os.write
        views, lengths, source, destination = rx.views, rx.lengths, rx.source, rx.destination
        port = self.core.config.geneve_port
        listen, dumping = self.opts.listen, self.opts.hexdump
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
                    self.lifecycle.submit("create", tunnel)
                if not queued:
                    try:
                        # not queued: the tunnel is ready, so it has its devices
                        write(tunnel.handle.ingress_fd, view[start:end])  # type: ignore[union-attr]
                    except OSError as e:
                        if e.errno == errno.EBADFD:
                            self._drop(TUNNEL_DEVICE_GONE)
                            self._tunnel_gone(tunnel)
                            continue
                        self._drop(TUN_WRITE_FAILED)
                        log.debug("write to %s failed: %s", tunnel.ingress, e.strerror)
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
            if e.errno == errno.EBADFD:
                self._drop(TUNNEL_DEVICE_GONE)
                self._tunnel_gone(t)
                return
            self._drop(TUN_WRITE_FAILED)
            log.debug("write to %s failed: %s", t.ingress, e.strerror)

    def _on_tun(self, t: Tunnel, fd: int, now: float) -> None:
        """Packets out of a tunnel device: read each straight into a send slot, put the outer header in front
        of it there, send the slots in batches."""
        outbound, tx, reads = self.core.outbound, self.tx, self._tun_reads
        views, destinations = tx.views, self._destinations
        readv, dumping = os.readv, self.opts.hexdump
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
            flow = outbound(t, view, now, HEADROOM, HEADROOM + n)
            if flow is None:
                continue
            gwlb = flow.route.addressing[0]
            dest = destinations.get(gwlb) or self._destination(gwlb)
            frame, frame_len, address, partial = dest
            start = put_return_header(flow, view, HEADROOM, n, partial)
            if address is None:  # this one through the IP layer
                self._send_ip(gwlb, view[start:HEADROOM + n])
                continue
            if frame_len:
                start -= frame_len
                view[start:start + frame_len] = frame
            tx.queue(start, HEADROOM + n, address)  # sends when the batch is full
        self._flush()

    def _destination(self, gwlb: str) -> Destination:
        """How returns reach ``gwlb``: straight to the link once its route is known (remembered), else (and
        once a second, so the kernel keeps the neighbour entry confirmed) through the raw IP socket."""
        if self.resolver is None:
            dest = self._destinations[gwlb] = (b"", 0, sockaddr(gwlb), False)
            return dest
        route = self.resolver.routes.get(gwlb)
        if route is None:
            self.resolver.want(gwlb)
            return _VIA_IP
        frame = self._vnet + route.frame
        dest = self._destinations[gwlb] = (frame, len(frame), route.address, bool(self._vnet))
        if gwlb in self._refresh:
            self._refresh.discard(gwlb)
            return _VIA_IP
        return dest

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
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                what, t, handle = self.lifecycle.results.get_nowait()
            except queue.Empty:
                break
            if what == "ready" and handle is not None:
                current = self.core.tunnels.get(t.eni_id)
                if current is None or current is not t:  # retired meanwhile: its destroy job closes it
                    continue
                t = current
                t.handle = handle
                for fd in (handle.ingress_fd, handle.egress_fd):
                    self._fd_tunnel[fd] = t
                    self._epoll.register(fd, select.EPOLLIN)
                for pkt in self.core.tunnel_ready(t.eni_id, now):
                    self._write_tun(t, pkt)
            elif what == "failed":
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
        h = t.handle
        if isinstance(h, TunHandle):
            for fd in (h.ingress_fd, h.egress_fd):
                self._fd_tunnel.pop(fd, None)
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass
        if idle and self.core.config.tunnel_timeout:
            log.info("tunnel %s idle for %g s: destroying", t.ingress, self.core.config.tunnel_timeout)
        self.lifecycle.submit("destroy", t)

    def _drop(self, reason: str, n: int = 1) -> None:
        self.driver_drops[reason] = self.driver_drops.get(reason, 0) + n

    def _shutdown(self) -> None:
        log.info("shutting down: destroying %d tunnel(s)", len(self.core.tunnels))
        for t in self.core.retire_all():
            if t.state is TunnelState.RETIRED and isinstance(t.handle, TunHandle):
                for fd in (t.handle.ingress_fd, t.handle.egress_fd):
                    self._fd_tunnel.pop(fd, None)
                    try:
                        self._epoll.unregister(fd)
                    except OSError:
                        pass
            self.lifecycle.submit("destroy", t)
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
        for s in ("udp", "raw", "link"):
            sock = getattr(self, s, None)
            if sock is not None:
                sock.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self._epoll.close()
        except AttributeError:
            pass

    # --------------------------------------------------------------------------------------------- status

    def return_paths(self) -> dict[str, int]:
        """Returns sent so far straight to the link, and through the IP layer (raw socket)."""
        if self.link is not None:
            return {"returned_via_link": self.tx.sent, "returned_via_ip": self.ip_returns}
        return {"returned_via_link": 0, "returned_via_ip": self.tx.sent}

    def unhealthy_reasons(self) -> list[str]:
        now = self.clock()
        reasons = []
        if self.stopping.is_set():
            reasons.append("shutting down")
        if now - self.heartbeat > STALL_AFTER:
            reasons.append(f"datapath loop stalled for {now - self.heartbeat:.1f} s")
        return reasons + self.lifecycle.unhealthy_reasons(self.stopping.is_set())

    def totals(self) -> dict[str, Any]:
        """The ``totals`` of the status document (the core's counters, the driver's drops added)."""
        core = self.core
        c = core.totals
        drops = dict(c.drops)
        for k, v in self.driver_drops.items():
            drops[k] = drops.get(k, 0) + v
        return {"packets_in": c.in_packets, "bytes_in": c.in_bytes, "packets_out": c.out_packets,
                "bytes_out": c.out_bytes, "flows": core.flow_count, "flow_evictions": core.evictions,
                "drops": drops, "tunnels_rebuilt": self.tunnels_rebuilt, **self.return_paths()}

    def status(self) -> dict[str, Any]:
        now = self.clock()
        tunnels = [{"eni_id": t.eni_hex, "ingress": t.ingress, "egress": t.egress, "state": t.state.value,
                    "generation": t.generation, "age_seconds": round(now - t.created_at, 3),
                    "idle_seconds": round(now - t.last_seen, 3), **tunnel_counters(t)}
                   for t in list(self.core.tunnels.values())]
        return status_document(self.core.config, now - self.started, self.unhealthy_reasons(),
                               self.lifecycle.hooks, self.totals(), tunnels)


#: the counters of the status document's ``totals`` (``drops``: reason -> count)
TOTALS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "flows", "flow_evictions", "drops", "tunnels_rebuilt",
          "returned_via_link", "returned_via_ip")


def tunnel_counters(t: Tunnel) -> dict[str, Any]:
    """A tunnel's counters as the status document shows them."""
    c = t.counters
    return {"packets_in": c.in_packets, "bytes_in": c.in_bytes, "packets_out": c.out_packets,
            "bytes_out": c.out_bytes, "flows": len(t.flows), "pending": len(t.pending), "drops": dict(c.drops)}


def status_document(config: Any, uptime: float, reasons: list[str], hooks: HookStats, totals: dict[str, Any],
                    tunnels: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    """The health port's JSON document (schema ``gwlbsim.reference.status/1``, described in the README)."""
    return {
        "schema": "gwlbsim.reference.status/1",
        "version": __version__,
        "healthy": not reasons,
        "reasons": reasons,
        "uptime_seconds": round(uptime, 3),
        "config": {"flow_timeout": config.flow_timeout, "tunnel_timeout": config.tunnel_timeout,
                   "max_flows": config.max_flows, "mtu": config.mtu},
        "totals": totals,
        "hooks": {"create_ok": hooks.create_ok, "create_failed": hooks.create_failed,
                  "destroy_ok": hooks.destroy_ok, "destroy_failed": hooks.destroy_failed},
        "tunnels": tunnels,
        **more,
    }


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


def health_server(opts: Options, status: Callable[[], dict[str, Any]]) -> Any:
    """The health-check HTTP server of ``-p``, or None without it; clear error if the port is taken."""
    if opts.health_port is None:
        return None

    try:
        return HealthServer((opts.health_bind, opts.health_port), status, opts.health_mode)
    except OSError as e:
        raise OSError(e.errno, f"cannot listen for health checks on {opts.health_bind}:{opts.health_port}: "
                               f"{e.strerror}") from e

