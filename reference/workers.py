"""Several datapath workers for one appliance (``--udpthreads/--tunthreads N``, N > 1): one process each.

Python runs one thread of Python at a time, so scaling with cores takes processes. Each worker is a
complete datapath (:class:`gwlbsim.reference.linux.Appliance` loop, its own core and flow cache, its own raw
socket); what the kernel hands to a worker is chosen so that a flow stays with one worker in both
directions (see :mod:`gwlbsim.reference.steering`):

* the workers' GENEVE sockets form one SO_REUSEPORT group, steered by the inner flow;
* every tunnel device is a multi-queue TUN with one queue per worker, steered by the same function.

The supervisor (the process that was started) keeps everything that must happen once: it creates and
destroys the tunnels (devices with a queue for each worker, hooks, strictly in order, by the same
:class:`gwlbsim.reference.linux.Lifecycle`), decides when an idle tunnel is retired (``-t``: idle in every
worker), serves health, and adds the workers' counters up into the usual status document.

Supervisor and workers talk over one SOCK_SEQPACKET socket pair per worker, in JSON messages:

    worker -> supervisor   {"op": "need", "eni": E}      the worker's core saw a new endpoint
                           {"op": "status", ...}         every tick: counters, flows, tunnels' last use
    supervisor -> worker   {"op": "ready", "eni": E}     + the worker's gwi and gwo queue descriptors
                           {"op": "failed", "eni": E}    creation failed (the worker's core retries later)
                           {"op": "retire", "eni": E}    the tunnel is being destroyed: forget it
                           {"op": "stop"}

A worker that dies is replaced: a fresh interpreter (``python -m gwlbsim.reference.workers``) takes over its socket of
the group and its queue of every tunnel, so the same flows are steered to it as before; it learns each flow
again from the flow's next packet from GWLB (until then, packets of those flows out of the tunnels are
dropped as ``no_flow``). While it is down, and when a worker dies more than ``MAX_RESTARTS`` times within
``RESTART_WINDOW`` seconds (it is then left down), the appliance reports itself unhealthy. Counters of a dead
worker are kept as of its last report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from gwlbsim.reference import steering
from gwlbsim.reference.core import ApplianceCore, Config, Tunnel, TunnelState
from gwlbsim.reference.linux import (
    STALL_AFTER,
    TICK,
    TOTALS,
    Appliance,
    HookStats,
    Lifecycle,
    Options,
    TunHandle,
    geneve_socket,
    health_server,
    status_document,
    tunnel_counters,
)
from gwlbsim.reference.logs import configure_logging

from gwlbsim import __version__
from gwlbsim.wire.reasons import DropReason

log = logging.getLogger("gwlb-reference")

_MSG = 1 << 16
RESTART_DELAY = 1.0  #: seconds between a worker's death and its replacement
MAX_RESTARTS = 5  #: replacements of one worker within RESTART_WINDOW, after which it is left down
RESTART_WINDOW = 60.0
UNKNOWN_TUNNEL_PACKET = DropReason.UNKNOWN_TUNNEL  # a packet out of a queue whose tunnel this worker never saw


def _send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, _MSG, 4)
    return (json.loads(data) if data else None), fds


# ------------------------------------------------------------------------------------------------ worker


class RemoteLifecycle:
    """A worker's stand-in for :class:`gwlbsim.reference.linux.Lifecycle`: creation is asked of the supervisor."""

    def __init__(self, control: socket.socket, wake: Callable[[], None]) -> None:
        self.control = control
        self.results: queue.Queue[tuple[str, Tunnel, TunHandle | None]] = queue.Queue()
        self.hooks = HookStats()
        self.busy_since: float | None = None
        self.handles: dict[int, TunHandle] = {}  #: ENI -> this worker's queues of the live tunnel
        self._wake = wake

    def submit(self, action: str, tunnel: Tunnel) -> None:
        if action == "create":
            h = self.handles.get(tunnel.eni_id)
            if h is not None:  # the devices exist already (another worker asked first)
                self.results.put(("ready", tunnel, h))
                self._wake()
            else:
                _send(self.control, {"op": "need", "eni": tunnel.eni_id})
        else:  # destroy: the supervisor removes the devices; this worker lets go of its queues
            self.release(tunnel.eni_id)

    def release(self, eni: int) -> None:
        h = self.handles.pop(eni, None)
        if h is not None:
            for fd in (h.ingress_fd, h.egress_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return True


class WorkerAppliance(Appliance):
    """One datapath worker: the appliance's loop, with tunnels and health left to the supervisor."""

    def __init__(self, core: ApplianceCore, opts: Options, udp: socket.socket, control: socket.socket,
                 index: int) -> None:
        self.control = control
        self.index = index
        remote = RemoteLifecycle(control, lambda: self.wake())
        super().__init__(core, replace(opts, health_port=None), udp=udp, lifecycle=remote)
        self.remote = remote
        self._epoll.register(control.fileno(), select.EPOLLIN)

    def _on_other(self, fd: int, now: float) -> None:
        if fd != self.control.fileno():
            super()._on_other(fd, now)
            return
        try:
            msg, fds = _recv(self.control)
        except OSError:
            msg, fds = None, []
        if msg is None:  # the supervisor is gone
            self.request_stop()
            return
        op, eni = msg.get("op"), msg.get("eni", 0)
        core = self.core
        if op == "ready":
            self.remote.release(eni)
            h = self.remote.handles[eni] = TunHandle(fds[0], fds[1])
            t = core.tunnels.get(eni)
            if t is not None and t.state is TunnelState.CREATING:
                self.remote.results.put(("ready", t, h))
                self._on_wake(now)
        elif op == "failed":
            t = core.tunnels.get(eni)
            if t is not None and t.state is TunnelState.CREATING:
                self.remote.results.put(("failed", t, None))
                self._on_wake(now)
        elif op == "retire":
            t = core.retire(eni)
            if t is not None:
                self._retire(t)  # stops watching its queues, and releases them
            self.remote.release(eni)
        elif op == "report":
            _send(self.control, self.report(now))
        elif op == "stop":
            self.request_stop()

    def _tick(self, now: float) -> None:
        super()._tick(now)
        self._drain_unadopted()
        try:
            _send(self.control, self.report(now))
        except OSError:
            self.request_stop()

    def _tunnel_gone(self, t: Tunnel) -> None:
        """The supervisor owns the devices: tell it, so that it retires the tunnel everywhere and builds it
        again when a worker next needs it (this worker's request comes after this message)."""
        if self.core.tunnels.get(t.eni_id) is t:
            with contextlib.suppress(OSError):
                _send(self.control, {"op": "gone", "eni": t.eni_id})
        super()._tunnel_gone(t)

    def _drain_unadopted(self) -> None:
        """Queues of tunnels this worker has no flow of get no packets, but drop any that arrive."""
        for eni, h in self.remote.handles.items():
            t = self.core.tunnels.get(eni)
            if t is not None and t.handle is h:
                continue
            for fd in (h.ingress_fd, h.egress_fd):
                with contextlib.suppress(OSError):
                    while os.read(fd, 65536):
                        self._drop(UNKNOWN_TUNNEL_PACKET)

    def report(self, now: float) -> dict[str, Any]:
        return {
            "op": "status", "worker": self.index, "heartbeat": now, "pid": os.getpid(), "totals": self.totals(),
            "tunnels": {str(t.eni_id): {"last_seen": t.last_seen, **tunnel_counters(t)}
                        for t in self.core.tunnels.values()},
        }

    def _shutdown(self) -> None:
        for t in self.core.retire_all():
            self._retire(t)
        for eni in list(self.remote.handles):
            self.remote.release(eni)
        self.close()
        self.control.close()


def run_worker(k: int, config: Config, opts: Options, udp: socket.socket, control: socket.socket,
               cpu: int | None) -> None:
    """Be datapath worker ``k`` until told to stop (or the supervisor is gone)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    core = ApplianceCore(replace(config, tunnel_timeout=0.0))  # the supervisor retires tunnels
    app = WorkerAppliance(core, opts, udp, control, k)
    signal.signal(signal.SIGTERM, lambda *_: app.request_stop())
    signal.signal(signal.SIGINT, lambda *_: app.request_stop())
    log.info("datapath worker %d (pid %d) running", k, os.getpid())
    app.run()


def worker_main(argv: list[str]) -> int:
    """``python -m gwlbsim.reference.workers SPEC UDP_FD CONTROL_FD``: a replacement worker, started by the supervisor
    (SPEC: JSON of the worker's index, the core's Config, the driver's Options, its CPU and log levels)."""
    if len(argv) != 3:
        print("usage: python -m gwlbsim.reference.workers SPEC UDP_FD CONTROL_FD "
              "(started by gwlb-reference's supervisor)", file=sys.stderr)
        return 2

    spec = json.loads(argv[0])
    configure_logging(bool(spec.get("debug")), None)
    for name, level in spec.get("levels", {}).items():
        logging.getLogger(name).setLevel(level)
    udp = socket.socket(fileno=int(argv[1]))
    control = socket.socket(fileno=int(argv[2]))
    run_worker(int(spec["index"]), Config(**spec["config"]), Options(**spec["opts"]), udp, control, spec.get("cpu"))
    return 0


# -------------------------------------------------------------------------------------------- supervisor


class Supervisor:
    """Starts the workers and keeps tunnels, hooks, idle timeouts and health in one place."""

    def __init__(self, config: Config, opts: Options, workers: int, cpus: list[int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if workers < 2:
            raise ValueError("a supervisor needs at least two workers")
        self.config = config
        self.opts = opts
        self.workers = workers
        self.cpus = sorted(cpus) if cpus else []
        self.clock = clock
        self.started = self.heartbeat = clock()
        self.stopping = threading.Event()
        self.tunnels: dict[int, Tunnel] = {}
        self.generations: dict[int, int] = {}
        self.reports: list[dict[str, Any] | None] = [None] * workers
        self.exited: dict[int, int] = {}  # worker index -> exit status
        self._reported = threading.Condition()
        self._report_count = 0
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen[bytes] | None] = []  #: replacements (None: forked at the start)
        self.controls: list[socket.socket] = []
        self.restarts = [0] * workers  #: replacements of each worker so far
        self._restart_times: list[list[float]] = [[] for _ in range(workers)]
        self._restart_at: dict[int, float] = {}  # worker index -> when to replace it
        self._spawned_at = [self.started] * workers
        self._past: list[dict[str, Any]] = []  # the last reports of dead workers: their counters still count
        self._ep: Any = None
        self._by_fd: dict[int, int] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._steer_udp = steering.load(steering.program(workers, encapsulated=True))
        self._steer_tun = steering.load(steering.program(workers, encapsulated=False))
        self.udps: list[socket.socket] = []
        try:
            for _ in range(workers):  # group index = bind order
                self.udps.append(geneve_socket(opts, self.config.geneve_port, reuseport=True))
        except OSError:
            for u in self.udps:
                u.close()
            raise
        steering.attach_reuseport(self.udps[0], self._steer_udp)
        self.lifecycle = Lifecycle(ApplianceCore(config), opts, self.wake, queues=workers,
                                   steering_fd=self._steer_tun)
        self.health = None
        try:
            self.health = health_server(opts, self.status)
        except OSError:
            self._close()
            raise

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake()

    # ---------------------------------------------------------------------------------------- workers

    def _fork_workers(self) -> None:
        """Before any thread starts: one child per worker, each with its socket of the group."""
        for k in range(self.workers):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    mine.close()
                    self._become_worker(k, theirs)
                    code = 0
                except BaseException:
                    log.exception("datapath worker %d failed", k)
                finally:
                    os._exit(code)
            theirs.close()
            self.controls.append(mine)
            self.pids.append(pid)
            self.procs.append(None)

    def _become_worker(self, k: int, control: socket.socket) -> None:
        for c in self.controls:
            c.close()
        if self.health is not None:
            self.health.server_close()
        for j, u in enumerate(self.udps):
            if j != k:
                u.close()  # the group keeps it: the supervisor holds every socket
        for fd in (self._wake_r, self._wake_w, self._steer_udp, self._steer_tun):
            os.close(fd)
        run_worker(k, self.config, self.opts, self.udps[k], control, self._cpu(k))

    def _cpu(self, k: int) -> int | None:
        return self.cpus[k % len(self.cpus)] if self.cpus else None

    def _spawn(self, k: int, now: float) -> None:
        """Replace dead worker ``k`` by a fresh interpreter with the same socket of the group."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        udp = self.udps[k]
        spec = {"index": k, "config": asdict(self.config), "opts": asdict(self.opts), "cpu": self._cpu(k),
                "debug": logging.getLogger().level <= logging.DEBUG,
                "levels": {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
                           if name.startswith("gwlb-reference") and isinstance(lg, logging.Logger) and lg.level}}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "gwlbsim.reference.workers", json.dumps(spec),
                                     str(udp.fileno()), str(theirs.fileno())], pass_fds=(udp.fileno(), theirs.fileno()))
        except OSError as e:
            mine.close()
            log.error("cannot start a replacement for datapath worker %d: %s", k, e)
            self._restart_at[k] = now + RESTART_DELAY
            return
        finally:
            theirs.close()
        self.controls[k].close()
        self.controls[k] = mine
        self.pids[k], self.procs[k] = proc.pid, proc
        self.reports[k] = None
        self._spawned_at[k] = now
        self.exited.pop(k, None)
        self.restarts[k] += 1
        self._by_fd[mine.fileno()] = k
        self._ep.register(mine.fileno(), select.EPOLLIN)
        log.warning("datapath worker %d replaced (pid %d, replacement %d)", k, proc.pid, self.restarts[k])
        for t in self.tunnels.values():
            if t.state is TunnelState.READY:
                self._send_ready(k, t)

    # --------------------------------------------------------------------------------------------- loop

    def run(self) -> None:
        self._fork_workers()
        self.lifecycle.start()
        if self.health is not None:
            self.health.start()
        ep = self._ep = select.epoll()
        ep.register(self._wake_r, select.EPOLLIN)
        self._by_fd = {c.fileno(): k for k, c in enumerate(self.controls)}
        for fd in self._by_fd:
            ep.register(fd, select.EPOLLIN)
        log.info("gwlb-reference %s listening for GENEVE on %s:%d with %d datapath workers%s", __version__,
                 self.opts.listen, self.config.geneve_port, self.workers,
                 f", health on {self.opts.health_bind}:{self.opts.health_port}" if self.health else "")
        next_tick = self.clock() + TICK
        while not self.stopping.is_set():
            events = ep.poll(TICK)
            now = self.heartbeat = self.clock()
            for fd, _ev in events:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                    self._on_results(now)
                elif fd in self._by_fd:
                    k = self._by_fd[fd]
                    if not self._on_message(k, now):
                        ep.unregister(fd)
                        del self._by_fd[fd]
            if now >= next_tick:
                next_tick = now + TICK
                self._retire_idle(now)
                self._reap(now)
        ep.close()
        self._shutdown()

    def _on_message(self, k: int, now: float) -> bool:
        try:
            msg, fds = _recv(self.controls[k])
        except OSError:
            msg, fds = None, []
        for fd in fds:
            os.close(fd)
        if msg is None:  # it is gone, or going: _reap collects it
            if not self.stopping.is_set():
                log.error("datapath worker %d stopped talking", k)
            return False
        op = msg.get("op")
        if op == "status":
            with self._reported:
                self.reports[k] = msg
                self._report_count += 1
                self._reported.notify_all()
        elif op == "gone":  # a worker found the devices deleted under the appliance
            t = self.tunnels.get(int(msg["eni"]))
            if t is not None and t.state is TunnelState.READY:
                log.warning("tunnel device %s or %s was deleted: rebuilding the tunnel", t.ingress, t.egress)
                self._retire(t)
        elif op == "need":
            eni = int(msg["eni"])
            t = self.tunnels.get(eni)
            if t is None or t.state is TunnelState.FAILED:
                self._create(eni, now)
            elif t.state is TunnelState.READY:
                self._send_ready(k, t)
        return True

    def _create(self, eni: int, now: float) -> None:
        gen = self.generations[eni] = self.generations.get(eni, 0) + 1
        t = self.tunnels[eni] = Tunnel(eni, now, now, generation=gen)
        self.lifecycle.submit("create", t)

    def _on_results(self, now: float) -> None:
        while True:
            try:
                what, t, handle = self.lifecycle.results.get_nowait()
            except queue.Empty:
                return
            if self.tunnels.get(t.eni_id) is not t:
                continue  # retired meanwhile: its destroy job removes the devices
            if what == "ready" and handle is not None:
                t.state, t.handle = TunnelState.READY, handle
                for k in range(self.workers):
                    self._send_ready(k, t)
            else:
                t.state, t.failed_at = TunnelState.FAILED, now
                self._broadcast({"op": "failed", "eni": t.eni_id})

    def _send_ready(self, k: int, t: Tunnel) -> None:
        if k in self.exited:
            return
        # (type: ignore below) only READY tunnels, which have devices, are announced
        gwi, gwo = t.handle.queues[k]  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            _send(self.controls[k], {"op": "ready", "eni": t.eni_id}, [gwi, gwo])

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for k, c in enumerate(self.controls):
            if k not in self.exited:
                with contextlib.suppress(OSError):
                    _send(c, msg)

    def last_use(self, t: Tunnel) -> float:
        """When any worker last moved a packet of the tunnel (its creation, if none did)."""
        key = str(t.eni_id)
        seen = [r["tunnels"][key]["last_seen"] for r in [*self.reports, *self._past] if r and key in r["tunnels"]]
        return max([t.last_seen, *seen])

    def _retire_idle(self, now: float) -> None:
        timeout = self.config.tunnel_timeout
        if timeout <= 0:
            return
        for t in list(self.tunnels.values()):
            if t.state is TunnelState.READY and now - self.last_use(t) >= timeout:
                log.info("tunnel %s idle for %g s: destroying", t.ingress, timeout)
                self._retire(t)

    def _retire(self, t: Tunnel) -> None:
        """Retire a tunnel in every worker, then destroy its devices (destroy hook)."""
        del self.tunnels[t.eni_id]
        t.state = TunnelState.RETIRED
        self._broadcast({"op": "retire", "eni": t.eni_id})
        self.lifecycle.submit("destroy", t)

    def _exit_status(self, k: int) -> int | None:
        """Worker ``k``'s exit status if it has exited (collected now), else None."""
        proc = self.procs[k]
        if proc is not None:
            return proc.poll()
        try:
            done, status = os.waitpid(self.pids[k], os.WNOHANG)
        except ChildProcessError:
            return -1
        return os.waitstatus_to_exitcode(status) if done else None

    def _reap(self, now: float) -> None:
        """Collect dead workers and replace them (unless stopping, or one dies too often)."""
        for k in range(self.workers):
            if k in self.exited:
                continue
            code = self._exit_status(k)
            if code is None:
                continue
            self.exited[k] = code
            log.error("datapath worker %d (pid %d) exited with status %d", k, self.pids[k], code)
            last = self.reports[k]
            if last is not None:
                self._past.append(last)
                self.reports[k] = None
            fd = self.controls[k].fileno()
            if self._by_fd.pop(fd, None) is not None:
                with contextlib.suppress(OSError):
                    self._ep.unregister(fd)
            recent = [t for t in self._restart_times[k] if now - t < RESTART_WINDOW]
            self._restart_times[k] = recent
            if len(recent) >= MAX_RESTARTS:
                log.error("datapath worker %d died %d times within %g s: left down", k, len(recent) + 1,
                          RESTART_WINDOW)
            elif not self.stopping.is_set():
                self._restart_at[k] = now + RESTART_DELAY
        for k, due in list(self._restart_at.items()):
            if now >= due and not self.stopping.is_set():
                del self._restart_at[k]
                self._restart_times[k].append(now)
                self._spawn(k, now)

    def _shutdown(self) -> None:
        log.info("shutting down: stopping %d workers, destroying %d tunnel(s)", self.workers, len(self.tunnels))
        self._broadcast({"op": "stop"})
        deadline = time.monotonic() + 10
        for k, pid in enumerate(self.pids):
            while k not in self.exited:
                code = self._exit_status(k)
                if code is not None:
                    self.exited[k] = code
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
        for t in self.tunnels.values():
            if t.state is not TunnelState.FAILED:
                self.lifecycle.submit("destroy", t)
        self.tunnels.clear()
        self.lifecycle.stop()
        self.lifecycle.join(self.opts.hook_timeout * 2 + 5)
        if self.lifecycle.is_alive():
            log.error("tunnel teardown did not finish in time")
        self._close()

    def _close(self) -> None:
        if self.health is not None:
            with contextlib.suppress(Exception):
                self.health.stop()
        for s in [*getattr(self, "udps", []), *self.controls]:
            s.close()
        for fd in (self._wake_r, self._wake_w, self._steer_udp, self._steer_tun):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ------------------------------------------------------------------------------------------- status

    def unhealthy_reasons(self) -> list[str]:
        now = self.clock()
        reasons = []
        if self.stopping.is_set():
            reasons.append("shutting down")
        if now - self.heartbeat > STALL_AFTER:
            reasons.append(f"supervisor loop stalled for {now - self.heartbeat:.1f} s")
        for k in range(self.workers):
            r = self.reports[k]
            if k in self.exited:
                reasons.append(f"datapath worker {k} exited" + (", being replaced" if k in self._restart_at else ""))
            elif r is None:
                if now - self._spawned_at[k] > STALL_AFTER:
                    reasons.append(f"datapath worker {k} never reported")
            elif now - r["heartbeat"] > STALL_AFTER:
                reasons.append(f"datapath worker {k} stalled for {now - r['heartbeat']:.1f} s")
        return reasons + self.lifecycle.unhealthy_reasons(self.stopping.is_set())

    def refresh(self, timeout: float = 0.5) -> None:
        """Ask every worker for its counters now and wait (a little) until all have answered."""
        with self._reported:
            want = self._report_count + self.workers - len(self.exited)
        self._broadcast({"op": "report"})
        deadline = time.monotonic() + timeout
        with self._reported:
            while self._report_count < want and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._reported.wait(left)

    def status(self) -> dict[str, Any]:
        """The same document as a single-process appliance's (gwlbsim.reference.linux.Appliance.status), summed
        over the workers (asked for fresh counters first), plus ``workers``."""
        self.refresh()
        now = self.clock()
        reports = [r for r in self.reports if r]
        past = [{**r, "totals": {**r["totals"], "flows": 0},  # a dead worker's counters, not its flows
                 "tunnels": {e: {**v, "flows": 0, "pending": 0} for e, v in r["tunnels"].items()}}
                for r in self._past]
        reports += past
        totals: dict[str, Any] = {k: {} if k == "drops" else 0 for k in TOTALS}
        for r in reports:
            for k, v in r["totals"].items():
                if k == "drops":
                    _add(totals["drops"], v)
                else:
                    totals[k] += v
        tunnels = []
        for t in list(self.tunnels.values()):
            key = str(t.eni_id)
            parts = [r["tunnels"][key] for r in reports if key in r["tunnels"]]
            drops: dict[str, int] = {}
            for p in parts:
                _add(drops, p["drops"])
            tunnels.append({
                "eni_id": t.eni_hex, "ingress": t.ingress, "egress": t.egress, "state": t.state.value,
                "generation": t.generation, "age_seconds": round(now - t.created_at, 3),
                "idle_seconds": round(now - self.last_use(t), 3),
                **{k: sum(p[k] for p in parts) for k in ("packets_in", "bytes_in", "packets_out", "bytes_out",
                                                         "flows", "pending")},
                "drops": drops,
            })
        return status_document(self.config, now - self.started, self.unhealthy_reasons(), self.lifecycle.hooks,
                               totals, tunnels, workers=self.workers, worker_restarts=sum(self.restarts))


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
