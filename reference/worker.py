"""One datapath worker of a multi-process appliance (``--udpthreads/--tunthreads N``, N > 1).

A worker is a complete datapath (:class:`gwlbsim.reference.datapath.ReferenceAppliance`'s loop, its own core and flow
cache, its own raw socket) whose tunnels and health are the supervisor's (:mod:`gwlbsim.reference.supervisor`):
its tunnel lifecycle is a stand-in (:class:`RemoteLifecycle`) that asks the supervisor for devices and gets
its queues of them back (:mod:`gwlbsim.reference.protocol`).

``python -m gwlbsim.reference.worker SPEC UDP_FD CONTROL_FD`` is how the supervisor starts a replacement for a
dead worker (a fresh interpreter, not a fork of the threaded supervisor).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from gwlbsim.reference import protocol
from gwlbsim.reference.core import ApplianceCore, Config, Tunnel, TunnelState
from gwlbsim.reference.datapath import ReferenceAppliance
from gwlbsim.reference.lifecycle import Created, CreateFailed, HookStats, Result, TunHandle
from gwlbsim.reference.logs import configure_logging
from gwlbsim.reference.options import Options
from gwlbsim.reference.status import tunnel_counters

from gwlbsim.wire.reasons import DropReason

log = logging.getLogger("gwlb-reference")

UNKNOWN_TUNNEL_PACKET = DropReason.UNKNOWN_TUNNEL  # a packet out of a queue whose tunnel this worker never saw


class RemoteLifecycle:
    """A worker's stand-in for :class:`gwlbsim.reference.lifecycle.Lifecycle`: creation is asked of the
    supervisor, which owns the devices; this worker holds only its queues of them."""

    def __init__(self, control: socket.socket, wake: Callable[[], None]) -> None:
        self.control = control
        self.results: queue.Queue[Result] = queue.Queue()
        self.hooks = HookStats()
        self.handles: dict[int, TunHandle] = {}  #: ENI -> this worker's queues of the live tunnel
        self._wake = wake

    def create(self, tunnel: Tunnel) -> None:
        h = self.handles.get(tunnel.eni_id)
        if h is not None:  # the devices exist already (another worker asked first)
            self.results.put(Created(tunnel, h))
            self._wake()
        else:
            protocol.send(self.control, protocol.Need(tunnel.eni_id))

    def destroy(self, tunnel: Tunnel) -> None:
        """The supervisor removes the devices; this worker lets go of its queues."""
        self.release(tunnel.eni_id)

    def release(self, eni: int) -> None:
        h = self.handles.pop(eni, None)
        if h is not None:
            for fd in (h.ingress_fd, h.egress_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def unhealthy_reasons(self, stopping: bool) -> list[str]:
        return []  # the supervisor's health covers tunnel management

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return True


class WorkerAppliance(ReferenceAppliance):
    """One datapath worker: the appliance's loop, with tunnels and health left to the supervisor."""

    def __init__(self, core: ApplianceCore, opts: Options, udp: socket.socket, control: socket.socket,
                 index: int) -> None:
        self.control = control
        self.index = index
        remote = RemoteLifecycle(control, lambda: self.wake())
        super().__init__(core, replace(opts, health_port=None), udp=udp, lifecycle=remote)
        self.remote = remote
        self.loop.watch(control.fileno(), self._on_control)

    def _on_control(self, now: float) -> None:
        try:
            msg, fds = protocol.recv(self.control)
        except (OSError, protocol.ProtocolError) as e:
            log.error("datapath worker %d: %s", self.index, e)
            msg, fds = None, []
        if msg is None:  # the supervisor is gone
            self.request_stop()
            return
        core = self.core
        match msg:
            case protocol.Ready(eni, generation):
                self.remote.release(eni)
                h = self.remote.handles[eni] = TunHandle(fds[0], fds[1], generation=generation)
                t = core.tunnels.get(eni)
                if t is not None and t.state is TunnelState.CREATING:
                    self.remote.results.put(Created(t, h))
                    self._on_wake(now)
            case protocol.Failed(eni):
                t = core.tunnels.get(eni)
                if t is not None and t.state is TunnelState.CREATING:
                    self.remote.results.put(CreateFailed(t))
                    self._on_wake(now)
            case protocol.Closing(eni, since):
                protocol.send(self.control, self.closing(eni, since))
            case protocol.Retire(eni):
                self._let_go(eni)
            case protocol.Report():
                protocol.send(self.control, self.report(now))
            case protocol.Stop():
                self.request_stop()
            case _:
                log.error("datapath worker %d: unexpected %r from the supervisor", self.index, msg)

    def closing(self, eni: int, since: float) -> protocol.Closed | protocol.Keep:
        """The supervisor sees the tunnel idle, last used at ``since`` as far as the reports tell: let go of it
        unless this worker used it after that (its report was not in yet) or is waiting for it. A worker that lets
        go has written nothing into the tunnel for the idle timeout, so nothing of its is left inside the
        devices when they go; its next packet of the endpoint asks for the tunnel again."""
        t = self.core.tunnels.get(eni)
        if t is not None and (t.state is TunnelState.CREATING or
                              (t.state is TunnelState.READY and t.last_seen > since)):
            return protocol.Keep(eni, t.last_seen)
        self._let_go(eni)
        return protocol.Closed(eni)

    def _let_go(self, eni: int) -> None:
        """Forget the tunnel and its flows, stop watching its queues and release them."""
        t = self.core.retire(eni)
        if t is not None:
            self._retire(t)
        self.remote.release(eni)

    def _tick(self, now: float) -> None:
        super()._tick(now)
        self._drain_unadopted()
        try:
            protocol.send(self.control, self.report(now))
        except OSError:
            self.request_stop()

    def _tunnel_gone(self, t: Tunnel) -> None:
        """The supervisor owns the devices: tell it, so that it retires the tunnel everywhere and builds it
        again when a worker next needs it (this worker's request comes after this message)."""
        if self.core.tunnels.get(t.eni_id) is t:
            generation = t.handle.generation if isinstance(t.handle, TunHandle) else 0
            with contextlib.suppress(OSError):
                protocol.send(self.control, protocol.Gone(t.eni_id, generation))
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

    def report(self, now: float) -> protocol.Status:
        return protocol.Status(self.index, now, os.getpid(), self.totals(),
                               {str(t.eni_id): {"last_seen": t.last_seen, **tunnel_counters(t)}
                                for t in self.core.tunnels.values()})

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
    signal.signal(signal.SIGHUP, lambda *_: app.request_stop())
    log.info("datapath worker %d (pid %d) running", k, os.getpid())
    app.run()


def worker_spec(k: int, config: Config, opts: Options, cpu: int | None, levels: dict[str, int],
                debug: bool) -> str:
    """What a replacement worker is told on its command line (JSON)."""
    return json.dumps({"index": k, "config": asdict(config), "opts": asdict(opts), "cpu": cpu, "debug": debug,
                       "levels": levels})


def worker_main(argv: list[str]) -> int:
    """``python -m gwlbsim.reference.worker SPEC UDP_FD CONTROL_FD``: a replacement worker, started by the
    supervisor (SPEC: JSON of the worker's index, the core's Config, the driver's Options, its CPU and log
    levels)."""
    if len(argv) != 3:
        print("usage: python -m gwlbsim.reference.worker SPEC UDP_FD CONTROL_FD "
              "(started by gwlb-reference's supervisor)", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.loads(argv[0])
    configure_logging(bool(spec.get("debug")), None)
    for name, level in spec.get("levels", {}).items():
        logging.getLogger(name).setLevel(level)
    udp = socket.socket(fileno=int(argv[1]))
    control = socket.socket(fileno=int(argv[2]))
    run_worker(int(spec["index"]), Config(**spec["config"]), Options(**spec["opts"]), udp, control, spec.get("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
