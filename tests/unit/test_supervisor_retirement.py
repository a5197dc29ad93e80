"""How a multi-process appliance's supervisor (``--udpthreads/--tunthreads N``) retires tunnels (idle ones in two
steps, those whose devices were deleted under it once per deletion), and how it gets fresh counters.

The supervisor decides from its workers' reports, which are up to a tick old; a packet a worker wrote into the
tunnel after its last report would be inside the devices when they go. So the supervisor only asks (``Closing``):
each worker lets go unless it used the tunnel after what the reports said, and the devices go once every
worker has let go. The real supervisor and worker code, over real socket pairs; the devices are stand-ins.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from gwlbsim.reference import protocol
from gwlbsim.reference.core import ApplianceCore, Config, Tunnel, TunnelState, TunnelTable
from gwlbsim.reference.lifecycle import TunHandle
from gwlbsim.reference.supervisor import CLOSE_WAIT, Supervisor
from gwlbsim.reference.worker import RemoteLifecycle, WorkerAppliance

from gwlbsim.linuxio.devstats import GoneDevicesDrops
from gwlbsim.linuxio.loop import EventLoop

ENI = 0x2B8EE1D4DB0C51C4
TIMEOUT = 10.0


@dataclass
class Devices:
    """Stands in for the supervisor's Lifecycle: records what it is asked to do."""

    created: list[int] = field(default_factory=list)
    destroyed: list[Tunnel] = field(default_factory=list)

    def create(self, t: Tunnel) -> None:
        self.created.append(t.eni_id)

    def destroy(self, t: Tunnel) -> None:
        self.destroyed.append(t)


class Bench:
    """A supervisor of two workers, with the workers' ends of the control sockets in the test's hands."""

    def __init__(self) -> None:
        sup = Supervisor.__new__(Supervisor)
        sup.config = Config(tunnel_timeout=TIMEOUT)
        sup.workers = 2
        sup.table = TunnelTable()
        sup.tunnels = sup.table.by_eni
        sup.closing = {}
        sup.tunnels_rebuilt = 0
        sup.retired_drops = GoneDevicesDrops()
        sup.reports = [None, None]
        sup._past = []
        sup.exited = {}
        self.devices = Devices()
        sup.lifecycle = self.devices  # type: ignore[assignment]
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
        sup.controls = [a for a, _ in pairs]
        self.workers = [b for _, b in pairs]
        for w in self.workers:
            w.settimeout(0)
        self.sup = sup
        self.fds = [*os.pipe(), *os.pipe()]
        t, _ = sup.table.need(ENI, 0.0, retry_interval=0.0) or (None, None)
        assert t is not None
        sup.table.ready(ENI)
        t.handle = TunHandle(-1, -1, queues=[(self.fds[0], self.fds[1]), (self.fds[2], self.fds[3])])
        self.tunnel = t

    def close(self) -> None:
        for s in (*self.sup.controls, *self.workers):
            s.close()
        for fd in self.fds:
            os.close(fd)

    def report(self, k: int, last_seen: float) -> None:
        self.sup.reports[k] = protocol.Status(k, last_seen, 1, {}, {str(ENI): {"last_seen": last_seen}})

    def heard(self, k: int) -> list[protocol.Message]:
        """What worker ``k`` was sent since the last look."""
        out: list[protocol.Message] = []
        while True:
            try:
                msg, fds = protocol.recv(self.workers[k])
            except BlockingIOError:
                return out
            for fd in fds:
                os.close(fd)
            assert msg is not None
            out.append(msg)

    def answer(self, k: int, msg: protocol.Message, now: float) -> None:
        protocol.send(self.workers[k], msg)
        self.sup._on_message(k, now)


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


def test_a_tunnel_idle_by_the_reports_is_only_asked_about_and_goes_when_every_worker_let_go(bench: Bench) -> None:
    bench.report(0, 3.0)
    bench.report(1, 5.0)
    bench.sup._retire_idle(5.0 + TIMEOUT - 0.1)
    assert bench.heard(0) == [] and not bench.sup.closing, "not idle yet by the latest report"
    bench.sup._retire_idle(5.0 + TIMEOUT)
    assert bench.heard(0) == bench.heard(1) == [protocol.Closing(ENI, 5.0)]
    bench.sup._retire_idle(5.0 + TIMEOUT + 1)
    assert bench.heard(0) == [] and bench.heard(1) == [], "asked once"
    bench.answer(0, protocol.Closed(ENI), 16.0)
    assert bench.devices.destroyed == [] and bench.tunnel.state is TunnelState.READY, "worker 1 has not answered"
    bench.answer(1, protocol.Closed(ENI), 16.1)
    assert bench.devices.destroyed == [bench.tunnel] and ENI not in bench.sup.tunnels
    assert bench.tunnel.state is TunnelState.RETIRED and not bench.sup.closing
    assert bench.heard(0) == bench.heard(1) == [], "no Retire: both have let go already"


def test_a_worker_that_used_it_after_its_report_keeps_it(bench: Bench) -> None:
    bench.report(0, 5.0)
    bench.sup._retire_idle(5.0 + TIMEOUT)
    bench.answer(0, protocol.Closed(ENI), 15.1)
    bench.answer(1, protocol.Keep(ENI, 15.05), 15.1)
    assert bench.devices.destroyed == [] and bench.sup.tunnels[ENI] is bench.tunnel and not bench.sup.closing
    bench.sup._retire_idle(15.2)
    assert bench.heard(0) == [protocol.Closing(ENI, 5.0)] and bench.heard(1) == [protocol.Closing(ENI, 5.0)]
    assert bench.heard(0) == [], "the kept tunnel is not asked about again before another timeout"
    bench.sup._retire_idle(15.05 + TIMEOUT)
    assert bench.heard(0) == [protocol.Closing(ENI, 15.05)]


def test_a_worker_asking_for_the_tunnel_while_it_closes_keeps_it_and_gets_its_queues(bench: Bench) -> None:
    bench.sup._retire_idle(TIMEOUT)
    bench.answer(0, protocol.Closed(ENI), TIMEOUT)  # ... then a packet of the endpoint came to worker 0
    bench.heard(0)
    bench.answer(0, protocol.Need(ENI), TIMEOUT + 0.01)
    assert bench.heard(0) == [protocol.Ready(ENI, 1)], "the same devices, back to it"
    bench.answer(1, protocol.Closed(ENI), TIMEOUT + 0.02)
    assert bench.devices.destroyed == [] and bench.devices.created == [] and not bench.sup.closing


def test_a_need_after_the_devices_went_makes_the_next_generation(bench: Bench) -> None:
    bench.sup._retire_idle(TIMEOUT)
    bench.answer(0, protocol.Closed(ENI), TIMEOUT)
    bench.answer(1, protocol.Closed(ENI), TIMEOUT)
    bench.answer(0, protocol.Need(ENI), TIMEOUT + 0.01)
    assert bench.devices.destroyed == [bench.tunnel] and bench.devices.created == [ENI]
    assert bench.sup.tunnels[ENI].generation == 2


def test_a_silent_worker_delays_the_retirement_only_until_the_deadline(bench: Bench) -> None:
    bench.sup._retire_idle(TIMEOUT)
    bench.answer(0, protocol.Closed(ENI), TIMEOUT)
    bench.sup._retire_idle(TIMEOUT + CLOSE_WAIT - 0.01)
    assert bench.devices.destroyed == []
    bench.heard(1)
    bench.sup._retire_idle(TIMEOUT + CLOSE_WAIT)
    assert bench.devices.destroyed == [bench.tunnel] and not bench.sup.closing
    assert bench.heard(1) == [protocol.Retire(ENI)], "retired everywhere at once"


def test_a_dead_worker_is_not_waited_for(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    class Loop:
        def unwatch(self, fd: int) -> None:
            pass

    sup = bench.sup
    sup.loop = Loop()  # type: ignore[assignment]
    sup.pids = [100, 101]
    sup._restart_times = [[], []]
    sup._restart_at = {}
    sup.stopping = EventLoop(1.0).stopping
    monkeypatch.setattr(Supervisor, "_exit_status", lambda self, k: 1 if k == 1 else None)
    sup._retire_idle(TIMEOUT)
    bench.answer(0, protocol.Closed(ENI), TIMEOUT)
    sup._reap(TIMEOUT + 0.1)
    assert 1 in sup.exited and bench.devices.destroyed == [bench.tunnel]
    other, _ = sup.table.need(ENI + 1, TIMEOUT, retry_interval=0.0) or (None, None)
    assert other is not None and sup.table.ready(ENI + 1) is other
    sup._retire_idle(2 * TIMEOUT)
    bench.answer(0, protocol.Closed(ENI + 1), 2 * TIMEOUT)
    assert bench.devices.destroyed == [bench.tunnel, other], "a later closing does not wait for the dead worker"


def test_without_a_timeout_nothing_closes(bench: Bench) -> None:
    bench.sup.config = Config(tunnel_timeout=0.0)
    bench.sup._retire_idle(1e6)
    assert not bench.sup.closing and bench.heard(0) == []


def test_a_deleted_device_rebuilds_the_tunnel_once_however_many_workers_report_it(bench: Bench) -> None:
    bench.answer(0, protocol.Gone(ENI, 1), 1.0)
    assert bench.devices.destroyed == [bench.tunnel] and bench.sup.tunnels_rebuilt == 1
    assert bench.heard(1) == [protocol.Retire(ENI)]
    bench.answer(0, protocol.Need(ENI), 1.01)  # the endpoint's next packet: generation 2 is built ...
    new = bench.sup.tunnels[ENI]
    assert new.generation == 2 and bench.devices.created == [ENI]
    new.state = TunnelState.READY  # ... and is ready by the time worker 1 reports the first deletion late
    bench.answer(1, protocol.Gone(ENI, 1), 1.5)
    assert bench.sup.tunnels[ENI] is new and bench.devices.destroyed == [bench.tunnel], "not the new devices"
    assert bench.sup.tunnels_rebuilt == 1
    bench.answer(1, protocol.Gone(ENI, 2), 2.0)
    assert bench.devices.destroyed == [bench.tunnel, new] and bench.sup.tunnels_rebuilt == 2


def _wait(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_status_waits_for_a_report_of_every_worker_made_after_it_asked(bench: Bench) -> None:
    """Worker 1's report from before the request is still on its way when worker 0 answers: that is not worker
    1's answer (counting reports, it was taken for one, and the status showed counters from before)."""
    sup = bench.sup
    sup._reported = threading.Condition()
    sup.stopping = threading.Event()
    protocol.send(bench.workers[1], protocol.Status(1, time.monotonic(), 1, {"packets_in": 1}, {}))
    stop, release, asked_1 = threading.Event(), threading.Event(), threading.Event()

    def loop() -> None:  # the supervisor's loop: each message to _on_message
        while not stop.is_set():
            for c in select.select(sup.controls, [], [], 0.02)[0]:
                sup._on_message(sup.controls.index(c), time.monotonic())

    def worker(k: int) -> None:  # answers the request, worker 1 only when released
        w = bench.workers[k]
        select.select([w], [], [], 10)
        msg, _ = protocol.recv(w)
        assert msg == protocol.Report()
        if k == 1:
            asked_1.set()
            assert release.wait(10)
        protocol.send(w, protocol.Status(k, time.monotonic(), 1, {"packets_in": 10 + k}, {}))

    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in (0, 1)]
    looping = threading.Thread(target=loop, daemon=True)
    threads = [*workers, looping]
    for t in workers:
        t.start()
    asking = threading.Thread(target=sup.refresh, kwargs={"timeout": 10.0}, daemon=True)
    started = time.monotonic()
    asking.start()
    try:
        # the loop takes the messages in only once the request is out: the earlier report is read after it
        _wait(lambda: asked_1.is_set() and not workers[0].is_alive(), "the request out, worker 0's answer sent")
        looping.start()
        _wait(lambda: sup.reports[0] is not None and sup.reports[1] is not None,
              "worker 0's answer and worker 1's earlier report taken in")
        assert sup.reports[1].totals == {"packets_in": 1}  # type: ignore[union-attr]
        assert asking.is_alive(), "the status did not wait for worker 1's answer"
        release.set()
        asking.join(10)
        assert not asking.is_alive()
        assert [r.totals["packets_in"] for r in sup.reports if r] == [10, 11]
        assert all(r.heartbeat >= started for r in sup.reports if r)
    finally:
        release.set()
        stop.set()
        for t in threads:
            t.join(10)


# ------------------------------------------------------------------------------------------ the worker's answer


@pytest.fixture
def worker() -> Iterator[WorkerAppliance]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    w = WorkerAppliance.__new__(WorkerAppliance)
    w.core = ApplianceCore(Config(tunnel_timeout=0.0))
    w.remote = RemoteLifecycle(a, lambda: None)
    w.lifecycle = w.remote  # type: ignore[assignment]
    w.fast = None
    w.loop = EventLoop(1.0)
    yield w
    w.loop.close()
    a.close()
    b.close()


def _adopted(w: WorkerAppliance, last_seen: float) -> tuple[Tunnel, list[int]]:
    t, _ = w.core.table.need(ENI, 0.0, retry_interval=0.0) or (None, None)
    assert t is not None
    fds = [*os.pipe()]
    t.handle = w.remote.handles[ENI] = TunHandle(fds[0], fds[1])
    w.core.table.ready(ENI)
    t.last_seen = last_seen
    return t, fds


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_worker_lets_go_of_a_tunnel_it_has_not_used_since_its_report(worker: WorkerAppliance) -> None:
    t, fds = _adopted(worker, last_seen=5.0)
    assert worker.closing(ENI, since=5.0) == protocol.Closed(ENI)
    assert ENI not in worker.core.tunnels and t.state is TunnelState.RETIRED
    assert ENI not in worker.remote.handles and all(_closed(fd) for fd in fds), "its queues released"


def test_a_worker_keeps_a_tunnel_it_used_after_its_report(worker: WorkerAppliance) -> None:
    t, fds = _adopted(worker, last_seen=5.5)
    assert worker.closing(ENI, since=5.0) == protocol.Keep(ENI, 5.5)
    assert worker.core.tunnels[ENI] is t and t.state is TunnelState.READY and not any(map(_closed, fds))
    for fd in fds:
        os.close(fd)


def test_a_worker_waiting_for_the_tunnel_keeps_it(worker: WorkerAppliance) -> None:
    t, _ = worker.core.table.need(ENI, 1.0, retry_interval=0.0) or (None, None)
    assert t is not None and t.state is TunnelState.CREATING
    assert worker.closing(ENI, since=5.0) == protocol.Keep(ENI, 1.0)
    assert worker.core.tunnels[ENI] is t


def test_a_worker_that_never_had_the_tunnel_lets_go(worker: WorkerAppliance) -> None:
    assert worker.closing(ENI, since=5.0) == protocol.Closed(ENI)
