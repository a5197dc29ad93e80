"""The supervisor of a multi-process appliance (``--udpthreads/--tunthreads N``, N > 1): one process per worker.

Python runs one thread of Python at a time, so scaling with cores takes processes. Each worker
(:mod:`gwlbsim.reference.worker`) is a complete datapath; what the kernel hands to a worker is chosen so that a
flow stays with one worker in both directions (see :mod:`gwlbsim.reference.steering`):

* the workers' GENEVE sockets form one SO_REUSEPORT group, steered by the inner flow;
* every tunnel device is a multi-queue TUN with one queue per worker, steered by the same function.

The supervisor (the process that was started) keeps everything that must happen once: it creates and
destroys the tunnels (devices with a queue for each worker, hooks, strictly in order, by the same
:class:`gwlbsim.reference.lifecycle.Lifecycle`, through the same :class:`gwlbsim.reference.core.TunnelTable`
state machine as a worker's core), decides when an idle tunnel is retired (``-t``: idle in every worker),
serves health, and adds the workers' counters up into the usual status document. It talks with each worker
over one socket pair, in the typed messages of :mod:`gwlbsim.reference.protocol`, on one
:class:`gwlbsim.linuxio.loop.EventLoop`.

Retiring takes two steps, because the workers' reports are up to a tick old: a packet a worker wrote into the
tunnel after its last report would be inside the devices when they go. A tunnel the reports show idle is
*closing*: every worker is asked (``Closing``) and lets go of it unless it used the tunnel after what the
reports said (``Keep``: the tunnel stays); the devices are destroyed once every worker has let go
(``Closed``), so only after each has written nothing into them for the idle timeout. A worker that asks for
the tunnel meanwhile (``Need``) keeps it too.

A worker that dies is replaced: a fresh interpreter (``python -m gwlbsim.reference.worker``) takes over its
socket of the group and its queue of every tunnel, so the same flows are steered to it as before; it learns
each flow again from the flow's next packet from GWLB (until then, packets of those flows out of the tunnels
are dropped as ``no_flow``). While it is down, and when a worker dies more than ``MAX_RESTARTS`` times within
``RESTART_WINDOW`` seconds (it is then left down), the appliance reports itself unhealthy. Counters of a dead
worker are kept as of its last report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gwlbsim.reference import protocol, steering
from gwlbsim.reference.core import Config, Tunnel, TunnelState, TunnelTable
from gwlbsim.reference.datapath import TICK, geneve_socket, health_server
from gwlbsim.reference.lifecycle import Created, Lifecycle
from gwlbsim.reference.options import Options
from gwlbsim.reference.status import (
    ingress_rx_dropped,
    loop_reasons,
    status_document,
    sum_totals,
    sum_tunnel_counters,
    tunnel_entry,
    worker_reasons,
)
from gwlbsim.reference.worker import run_worker, worker_spec

from gwlbsim import __version__
from gwlbsim.linuxio import devstats
from gwlbsim.linuxio.loop import EventLoop

log = logging.getLogger("gwlb-reference")

RESTART_DELAY = 1.0  #: seconds between a worker's death and its replacement
MAX_RESTARTS = 5  #: replacements of one worker within RESTART_WINDOW, after which it is left down
RESTART_WINDOW = 60.0
CLOSE_WAIT = 5.0  #: seconds to wait for every worker's answer to Closing; then the tunnel is retired anyway


class _Closing:
    """A tunnel being retired: the workers whose answer is awaited, until when."""

    __slots__ = ("deadline", "tunnel", "waiting")

    def __init__(self, tunnel: Tunnel, waiting: set[int], deadline: float) -> None:
        self.tunnel = tunnel
        self.waiting = waiting
        self.deadline = deadline


class Supervisor:
    """Starts the workers and keeps tunnels, hooks, idle timeouts and health in one place."""

    def __init__(self, config: Config, opts: Options, workers: int, cpus: list[int] | None = None,
                 clock: Callable[[], float] = time.monotonic, datapath_reason: str = "--datapath python") -> None:
        """``datapath_reason``: why the Python datapath carries everything (the status's ``datapath``)."""
        if workers < 2:
            raise ValueError("a supervisor needs at least two workers")
        self.config = config
        self.datapath_reason = datapath_reason
        #: what the kernel dropped on the way into the gwi- of tunnels destroyed since
        self.retired_drops = devstats.GoneDevicesDrops()
        self.opts = opts
        self.workers = workers
        self.cpus = sorted(cpus) if cpus else []
        self.clock = clock
        self.started = clock()
        self.loop = EventLoop(TICK, clock)
        self.stopping = self.loop.stopping
        self.table = TunnelTable()
        self.tunnels = self.table.by_eni  #: the table's tunnels by ENI
        self.reports: list[protocol.Status | None] = [None] * workers
        self.exited: dict[int, int] = {}  # worker index -> exit status
        self._reported = threading.Condition()
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen[bytes] | None] = []  #: replacements (None: forked at the start)
        self.controls: list[socket.socket] = []
        self.restarts = [0] * workers  #: replacements of each worker so far
        self._restart_times: list[list[float]] = [[] for _ in range(workers)]
        self._restart_at: dict[int, float] = {}  # worker index -> when to replace it
        self._spawned_at = [self.started] * workers
        self._past: list[protocol.Status] = []  # the last reports of dead workers: their counters still count
        self.closing: dict[int, _Closing] = {}  #: tunnels being retired, by ENI
        #: tunnels retired because a device was deleted: counted here, once per rebuild (every worker may find out)
        self.tunnels_rebuilt = 0
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
        self.lifecycle = Lifecycle(config.mtu, opts, self.wake, queues=workers, steering_fd=self._steer_tun)
        self.health = None
        try:
            self.health = health_server(opts, self.status)
        except OSError:
            self._close()
            raise

    @property
    def heartbeat(self) -> float:
        return self.loop.heartbeat

    def wake(self) -> None:
        self.loop.wake()

    def request_stop(self) -> None:
        self.loop.stop()

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
        for fd in (*self.loop.wake_fds(), self._steer_udp, self._steer_tun):
            os.close(fd)
        run_worker(k, self.config, self.opts, self.udps[k], control, self._cpu(k))

    def _cpu(self, k: int) -> int | None:
        return self.cpus[k % len(self.cpus)] if self.cpus else None

    def _spawn(self, k: int, now: float) -> None:
        """Replace dead worker ``k`` by a fresh interpreter with the same socket of the group."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        udp = self.udps[k]
        levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
                  if name.startswith("gwlb-reference") and isinstance(lg, logging.Logger) and lg.level}
        spec = worker_spec(k, self.config, self.opts, self._cpu(k), levels,
                           logging.getLogger().level <= logging.DEBUG)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "gwlbsim.reference.worker", spec, str(udp.fileno()),
                                     str(theirs.fileno())], pass_fds=(udp.fileno(), theirs.fileno()))
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
        self.loop.watch(mine.fileno(), partial(self._on_message, k))
        log.warning("datapath worker %d replaced (pid %d, replacement %d)", k, proc.pid, self.restarts[k])
        for t in self.tunnels.values():
            if t.state is TunnelState.READY and t.eni_id not in self.closing:
                self._send_ready(k, t)

    # --------------------------------------------------------------------------------------------- loop

    def run(self) -> None:
        self._fork_workers()
        self.lifecycle.start()
        if self.health is not None:
            self.health.start()
        for k, c in enumerate(self.controls):
            self.loop.watch(c.fileno(), partial(self._on_message, k))
        log.info("gwlb-reference %s listening for GENEVE on %s:%d with %d datapath workers%s", __version__,
                 self.opts.listen, self.config.geneve_port, self.workers,
                 f", health on {self.opts.health_bind}:{self.opts.health_port}" if self.health else "")
        self.loop.run(on_tick=self._tick, on_wake=self._on_results)
        self._shutdown()

    def _tick(self, now: float) -> None:
        self._retire_idle(now)
        self._reap(now)

    def _on_message(self, k: int, now: float) -> None:
        control = self.controls[k]
        try:
            msg, fds = protocol.recv(control)
        except (OSError, protocol.ProtocolError) as e:
            log.error("datapath worker %d: %s", k, e)
            msg, fds = None, []
        for fd in fds:
            os.close(fd)
        if msg is None:  # it is gone, or going: _reap collects it
            if not self.stopping.is_set():
                log.error("datapath worker %d stopped talking", k)
            self.loop.unwatch(control.fileno())
            return
        match msg:
            case protocol.Status():
                with self._reported:
                    self.reports[k] = msg
                    self._reported.notify_all()
            case protocol.Gone(eni, generation):  # a worker found the devices deleted under the appliance
                t = self.tunnels.get(eni)
                # (another worker's report of the same deletion, come after the tunnel was built again, is not
                # about the new devices)
                if t is not None and t.state is TunnelState.READY and t.generation == generation:
                    log.warning("tunnel device %s or %s was deleted: rebuilding the tunnel", t.ingress, t.egress)
                    self.tunnels_rebuilt += 1
                    self._retire(t)
            case protocol.Closed(eni):
                c = self.closing.get(eni)
                if c is not None:
                    c.waiting.discard(k)
                    self._closed_by_all(c)
            case protocol.Keep(eni, last_seen):
                c = self.closing.pop(eni, None)
                if c is not None:
                    c.tunnel.last_seen = max(c.tunnel.last_seen, last_seen)
                    log.debug("tunnel %s used by datapath worker %d meanwhile: kept", c.tunnel.ingress, k)
            case protocol.Need(eni):
                if (c := self.closing.pop(eni, None)) is not None:
                    log.debug("tunnel %s asked for by datapath worker %d: kept", c.tunnel.ingress, k)
                need = self.table.need(eni, now, retry_interval=0.0)  # the worker's core waited its retry
                if need is not None and need[1]:
                    self.lifecycle.create(need[0])
                elif need is not None and need[0].state is TunnelState.READY:
                    self._send_ready(k, need[0])
            case _:
                log.error("datapath worker %d sent an unexpected %r", k, msg)

    def _on_results(self, now: float) -> None:
        while True:
            try:
                result = self.lifecycle.results.get_nowait()
            except queue.Empty:
                return
            t = result.tunnel
            if self.tunnels.get(t.eni_id) is not t:
                continue  # retired meanwhile: its destroy job removes the devices
            if isinstance(result, Created):
                self.table.ready(t.eni_id)
                t.handle = result.handle
                for k in range(self.workers):
                    self._send_ready(k, t)
            else:
                self.table.failed(t.eni_id, now)
                self._broadcast(protocol.Failed(t.eni_id))

    def _send_ready(self, k: int, t: Tunnel) -> None:
        if k in self.exited:
            return
        # (type: ignore below) only READY tunnels, which have devices, are announced
        gwi, gwo = t.handle.queues[k]  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            protocol.send(self.controls[k], protocol.Ready(t.eni_id, t.generation), [gwi, gwo])

    def _broadcast(self, msg: protocol.Message) -> None:
        for k, c in enumerate(self.controls):
            if k not in self.exited:
                with contextlib.suppress(OSError):
                    protocol.send(c, msg)

    def last_use(self, t: Tunnel) -> float:
        """When any worker last moved a packet of the tunnel (its creation, if none did)."""
        key = str(t.eni_id)
        seen = [r.tunnels[key]["last_seen"] for r in [*self.reports, *self._past] if r and key in r.tunnels]
        return max([t.last_seen, *seen])

    def _retire_idle(self, now: float) -> None:
        """Close the tunnels the reports show idle for ``-t`` (ask every worker to let go of them); retire those
        whose answers are overdue."""
        for t, since in self.table.unused(now, self.config.tunnel_timeout, self.last_use):
            if t.eni_id not in self.closing:
                self._begin_closing(t, since, now)
        for c in list(self.closing.values()):
            if now >= c.deadline:
                log.warning("tunnel %s: no answer from datapath worker(s) %s within %g s: destroying it anyway",
                            c.tunnel.ingress, ", ".join(map(str, sorted(c.waiting))), CLOSE_WAIT)
                self._retire(c.tunnel)

    def _begin_closing(self, t: Tunnel, since: float, now: float) -> None:
        c = self.closing[t.eni_id] = _Closing(t, {k for k in range(self.workers) if k not in self.exited},
                                              now + CLOSE_WAIT)
        for k in sorted(c.waiting):
            try:
                protocol.send(self.controls[k], protocol.Closing(t.eni_id, since))
            except OSError:
                c.waiting.discard(k)  # it is going: _reap collects it
        self._closed_by_all(c)

    def _closed_by_all(self, c: _Closing) -> None:
        """Destroy the closing tunnel's devices once no worker is left to answer."""
        if c.waiting:
            return
        t = c.tunnel
        del self.closing[t.eni_id]  # (a closing tunnel is in the table: it leaves both at once)
        log.info("tunnel %s idle for %g s: destroying", t.ingress, self.config.tunnel_timeout)
        self._take_out(t)
        self.lifecycle.destroy(t)

    def _retire(self, t: Tunnel) -> None:
        """Retire a tunnel in every worker at once, then destroy its devices (destroy hook)."""
        self.closing.pop(t.eni_id, None)
        self._take_out(t)
        self._broadcast(protocol.Retire(t.eni_id))
        self.lifecycle.destroy(t)

    def _take_out(self, t: Tunnel) -> None:
        """Take a tunnel out of the table, keeping what the kernel dropped on the way into its gwi-."""
        with self.retired_drops.lock:
            self.retired_drops.add([t.ingress])
            self.table.retire(t.eni_id)

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
            self.loop.unwatch(self.controls[k].fileno())
            for c in list(self.closing.values()):  # a dead worker writes nothing more into any tunnel
                c.waiting.discard(k)
                self._closed_by_all(c)
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
        self._broadcast(protocol.Stop())
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
        self.closing.clear()
        for t in self.table.retire_all():
            self.lifecycle.destroy(t)
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
        for fd in (self._steer_udp, self._steer_tun):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.loop.close()

    # ------------------------------------------------------------------------------------------- status

    def unhealthy_reasons(self) -> list[str]:
        now = self.clock()
        stopping = self.stopping.is_set()
        reasons = loop_reasons("supervisor", stopping, now, self.loop.heartbeat)
        for k in range(self.workers):
            r = self.reports[k]
            reasons += worker_reasons(k, exited=k in self.exited, replacing=k in self._restart_at,
                                      heartbeat=r.heartbeat if r is not None else None,
                                      spawned_at=self._spawned_at[k], now=now)
        return reasons + self.lifecycle.unhealthy_reasons(stopping)

    def refresh(self, timeout: float = 0.5) -> None:
        """Ask every worker for its counters now and wait (a little) until each live one has reported as of
        after the request (its report's time, the worker's clock: the system's monotonic one, as ours): a report
        it sent before, still on its way, or two of another worker's, do not stand for it."""
        asked = time.monotonic()
        self._broadcast(protocol.Report())
        deadline = asked + timeout

        def behind(k: int) -> bool:
            r = self.reports[k]
            return k not in self.exited and (r is None or r.heartbeat < asked)

        with self._reported:
            while not self.stopping.is_set() and any(behind(k) for k in range(self.workers)):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._reported.wait(left)

    def status(self) -> dict[str, Any]:
        """The same document as a single-process appliance's
        (:meth:`gwlbsim.reference.datapath.ReferenceAppliance.status`), summed over the workers (asked for fresh
        counters first), plus ``workers``."""
        self.refresh()
        now = self.clock()
        reports = [r for r in self.reports if r]
        reports += [r._replace(totals={**r.totals, "flows": 0},  # a dead worker's counters, not its flows
                               tunnels={e: {**v, "flows": 0, "pending": 0} for e, v in r.tunnels.items()})
                    for r in self._past]
        totals = sum_totals(r.totals for r in reports)
        totals["tunnels_rebuilt"] = self.tunnels_rebuilt
        tunnels = []
        with self.retired_drops.lock:
            dropped = devstats.receive_drops()
            for t in list(self.tunnels.values()):
                key = str(t.eni_id)
                counts = sum_tunnel_counters(r.tunnels[key] for r in reports if key in r.tunnels)
                tunnels.append(tunnel_entry(t, now, self.last_use(t), counts, dropped))
            retired = self.retired_drops.total
        totals["ingress_rx_dropped"] = ingress_rx_dropped(retired, tunnels)
        return status_document(self.config, now - self.started, self.unhealthy_reasons(), self.lifecycle.hooks,
                               totals, tunnels, datapath={"kind": "python", "reason": self.datapath_reason},
                               workers=self.workers, worker_restarts=sum(self.restarts))
