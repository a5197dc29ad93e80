"""Tunnel lifecycle: devices and hooks, created and destroyed strictly in order, off the datapath.

A tunnel being destroyed is gone before the same endpoint's next tunnel is created, and slow hooks never stall
a datapath (packets for a tunnel being created wait in its pending queue, see
:meth:`gwlbsim.reference.core.ApplianceCore.inbound`). Completions come back as typed results
(:class:`Created`, :class:`CreateFailed`) on a queue, with a wake-up of the datapath's loop.

:class:`Lifecycle` is the one that does the work (a thread). A datapath worker of a multi-process appliance has a
stand-in with the same face (:class:`TunnelLifecycle`) that asks the supervisor instead
(:class:`gwlbsim.reference.worker.RemoteLifecycle`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from gwlbsim.reference.core import Tunnel
from gwlbsim.reference.hooks import HookResult, run_hook
from gwlbsim.reference.options import Options
from gwlbsim.reference.status import lifecycle_reasons
from gwlbsim.reference.steering import attach_tun

from gwlbsim.linuxio.tun import TunError, exists, open_tun

log = logging.getLogger("gwlb-reference")

TUN_QUEUE = 4096  # packets a tunnel device holds for us (the kernel's default, 500, overflows under bursts)


@dataclass
class TunHandle:
    """A tunnel's devices as one datapath sees them: its queue of gwi- and of gwo-."""

    ingress_fd: int
    egress_fd: int
    #: every queue of a multi-queue tunnel, (gwi, gwo) per worker (only where the devices were created)
    queues: list[tuple[int, int]] = field(default_factory=list)
    generation: int = 0  #: in a datapath worker, the supervisor's generation of these devices


@dataclass
class HookStats:
    """How the create and destroy hooks went so far (the status document's ``hooks``)."""

    create_ok: int = 0
    create_failed: int = 0
    destroy_ok: int = 0
    destroy_failed: int = 0
    last_create_error: str = ""


class Created(NamedTuple):
    """The tunnel's devices exist and its create hook ran: write its pending packets, watch its devices."""

    tunnel: Tunnel
    handle: TunHandle


class CreateFailed(NamedTuple):
    """The tunnel's devices could not be made: its pending packets are dropped; the next packet retries."""

    tunnel: Tunnel


Result = Created | CreateFailed


class TunnelLifecycle(Protocol):
    """What a datapath asks of tunnel management (:class:`Lifecycle`, or a worker's remote stand-in)."""

    results: queue.Queue[Result]
    hooks: HookStats

    def create(self, tunnel: Tunnel) -> None: ...

    def destroy(self, tunnel: Tunnel) -> None: ...

    def unhealthy_reasons(self, stopping: bool) -> list[str]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


@dataclass
class _Job:
    create: bool  # else destroy
    tunnel: Tunnel


class Lifecycle(threading.Thread):
    """Creates and destroys tunnels in order; reports completions through ``results`` and ``wake``."""

    def __init__(self, mtu: int, opts: Options, wake: Callable[[], None], queues: int = 1,
                 steering_fd: int | None = None) -> None:
        super().__init__(name="lifecycle", daemon=True)
        self.mtu = mtu
        self.opts = opts
        self.queues = queues  #: one queue per datapath worker (multi-queue devices when more than one)
        self.steering_fd = steering_fd  #: program choosing the queue of packets out of the devices
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.results: queue.Queue[Result] = queue.Queue()
        self.hooks = HookStats()
        self.busy_since: float | None = None
        self._wake = wake
        self._devices: dict[tuple[int, int], TunHandle] = {}  # (ENI, generation) -> the devices we opened

    def unhealthy_reasons(self, stopping: bool) -> list[str]:
        """Why tunnel management makes the appliance unhealthy (empty when it does not)."""
        return lifecycle_reasons(alive=self.is_alive(), stopping=stopping, busy_since=self.busy_since,
                                 now=time.monotonic(), hook_timeout=self.opts.hook_timeout,
                                 last_create_error=self.hooks.last_create_error)

    def create(self, tunnel: Tunnel) -> None:
        self.jobs.put(_Job(True, tunnel))

    def destroy(self, tunnel: Tunnel) -> None:
        self.jobs.put(_Job(False, tunnel))

    def stop(self) -> None:
        self.jobs.put(None)

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.busy_since = time.monotonic()
            try:
                if job.create:
                    self._create(job.tunnel)
                else:
                    self._destroy(job.tunnel)
            except Exception:
                log.exception("tunnel %s of %s failed", "create" if job.create else "destroy", job.tunnel.ingress)
                if job.create:
                    self.results.put(CreateFailed(job.tunnel))
            finally:
                self.busy_since = None
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
            self.results.put(CreateFailed(t))
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
        self.results.put(Created(t, handle))

    def _open(self, name: str) -> list[int]:
        """The device's queues: one file descriptor, or one per worker (multi-queue, steered)."""
        multi = self.queues > 1
        fds: list[int] = []
        try:
            for _ in range(self.queues):
                fds.append(open_tun(name, mtu=self.mtu, rp_filter=0, ipv6_link_local=False, txqueuelen=TUN_QUEUE,
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
