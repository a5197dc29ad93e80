"""Measurements: one traffic pattern through one subject for a while, and the matrix of them."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gwlbsim.bench.topology import Subject, Topology
from gwlbsim.bench.traffic import Traffic

MAX = 0.0  #: closed loop: as fast as the subject returns, a bounded window of packets unanswered
FLOOD = -1.0  #: open loop, flat out: the generator sends as fast as it can, whatever comes back


@dataclass(frozen=True)
class Cell:
    """One traffic pattern at one offered rate: packets/s, or :data:`MAX`, or :data:`FLOOD`."""

    size: int
    flows: int
    ports: str
    rate: float = MAX

    @property
    def offer(self) -> str:
        return "max" if self.rate == MAX else "flood" if self.rate < 0 else f"{self.rate / 1000:g}k"

    @property
    def label(self) -> str:
        return f"{self.size}B/{self.flows}f/{self.ports} {self.offer}"


@dataclass
class Timing:
    warmup: float = 0.5
    duration: float = 2.0
    batch: int = 64
    window: int = 1024  #: closed loop: packets allowed unanswered
    quiet: float = 0.3  #: after the generator stops, wait until nothing has arrived for this long
    max_wait: float = 5.0
    #: fixed rates: a packet back later than this counts as lost (a queue that grows all through the window
    #: means the rate is not sustained, even when it is drained afterwards)
    late: float = 0.1


@dataclass
class Measurement:
    subject: str
    cell: Cell
    repeat: int
    offered: int  #: packets sent in the measured window
    returned: int  #: of those, how many came back, correct
    seconds: float
    echo_errors: int
    duplicates: int
    latency_us: dict[str, float | None]
    cpu_seconds: dict[str, float]
    machine_busy: float | None
    udp_rcvbuf_drops: dict[str, int]
    tun_drops: int
    send_errors: int
    echo_error_examples: list[str] = field(default_factory=list)
    late: int = 0  #: of ``returned``, how many came back too late (fixed rates only): they count as lost

    @property
    def offered_pps(self) -> float:
        return self.offered / self.seconds if self.seconds > 0 else 0.0

    @property
    def returned_pps(self) -> float:
        return self.returned / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        """Packets not back, or back too late, as a fraction of those offered."""
        return 1.0 - (self.returned - self.late) / self.offered if self.offered else 0.0

    @property
    def cpu_us_per_packet(self) -> float | None:
        """Appliance CPU time (user + system, all its processes) per returned packet, in microseconds."""
        cpu = self.cpu_seconds.get("appliance")
        if cpu is None or not self.returned:
            return None
        return cpu / self.returned * 1e6

    @property
    def other_busy(self) -> float | None:
        """The machine's busy fraction not spent by the generator, the receiver or the appliance (other
        processes, and kernel work not charged to a process): how loaded the machine was by others."""
        if self.machine_busy is None or self.seconds <= 0:
            return None
        ours = sum(self.cpu_seconds.values()) / (self.seconds * (os.cpu_count() or 1))
        return max(0.0, self.machine_busy - ours)

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "size": self.cell.size, "flows": self.cell.flows, "ports": self.cell.ports,
            "rate": self.cell.rate, "repeat": self.repeat, "offered": self.offered, "returned": self.returned,
            "seconds": round(self.seconds, 4), "offered_pps": round(self.offered_pps),
            "returned_pps": round(self.returned_pps), "loss": round(self.loss, 6),
            "latency_us": self.latency_us, "cpu_seconds": self.cpu_seconds,
            "appliance_cpu_us_per_packet": _round(self.cpu_us_per_packet, 3),
            "machine_busy": self.machine_busy, "other_busy": _round(self.other_busy, 3),
            "udp_rcvbuf_drops": self.udp_rcvbuf_drops,
            "tun_drops": self.tun_drops, "echo_errors": self.echo_errors, "duplicates": self.duplicates,
            "send_errors": self.send_errors, "echo_error_examples": self.echo_error_examples,
            "late": self.late,
        }


def _round(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd)


class Runner:
    def __init__(self, topo: Topology, timing: Timing, progress: Callable[[str], None] | None = None) -> None:
        self.topo = topo
        self.timing = timing
        self.progress = progress or (lambda _m: None)
        self._nonce = 0
        fd, self.shm = tempfile.mkstemp(prefix="gwlbsim-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                        else None)
        os.write(fd, bytes(8))
        os.close(fd)
        atexit.register(self.close)

    def close(self) -> None:
        """Remove the shared counter file (also done at exit)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.shm)

    def traffic(self, subject: Subject, cell: Cell) -> Traffic:
        self._nonce += 1
        if subject.spec.is_kernel:
            return Traffic(cell.size, cell.flows, cell.ports, "plain", nonce=self._nonce, inner_dst=subject.inner_dst)
        return Traffic(cell.size, cell.flows, cell.ports, "geneve", subject.src, subject.dst, self._nonce)

    def measure(self, subject: Subject, cell: Cell, repeat: int = 0, timing: Timing | None = None) -> Measurement:
        t = timing or self.timing
        traffic = self.traffic(subject, cell)
        gen = self.topo.generator
        rcv = self.topo.receivers[subject.recv_ns]
        assert gen is not None
        app_pids = subject.appliance_pids()
        if subject.appliance is not None and not subject.appliance.alive():
            raise RuntimeError(f"{subject.name} is not running any more; its output:\n"
                               f"{subject.appliance.output_tail()}")
        sink = self.topo.sink
        if sink is not None and cell.rate == MAX:
            raise ValueError("closed-loop offers need the user-space receiver's count: not with the in-kernel sink")
        if self.topo.generator_kind == "xdp" and cell.rate == MAX:
            raise ValueError("the XDP generator sends open-loop only: no closed-loop offers")
        if sink is not None:
            sink.reset()
        else:
            rcv.call({"op": "recv", "traffic": traffic.as_dict(), "bind": list(subject.bind), "shm": self.shm})
        cpu = {"receiver": [rcv.pid]}
        netns = {"receiver": rcv.pid}
        if app_pids:
            cpu["appliance"] = app_pids
            netns["appliance"] = app_pids[0]
        try:
            g = gen.call({"op": "gen", "traffic": traffic.as_dict(), "rate": cell.rate, "warmup": t.warmup,
                          "duration": t.duration, "batch": t.batch, "window": t.window, "shm": self.shm,
                          "cpu": cpu, "netns": netns, "generator": self.topo.generator_kind})
        except Exception:
            if sink is None:
                with contextlib.suppress(Exception):
                    rcv.call({"op": "stop", "s0": 0, "s1": 0, "quiet": 0, "max_wait": 0})
            raise
        late = t.late if cell.rate > 0 else None
        if sink is not None:
            sink.wait_quiet(t.quiet, t.max_wait)
            r = sink.window(g["s0"], g["s1"], late)
        else:
            r = rcv.call({"op": "stop", "s0": g["s0"], "s1": g["s1"], "quiet": t.quiet, "max_wait": t.max_wait,
                          "late": late})
        m = Measurement(subject.name, cell, repeat, g["s1"] - g["s0"], r["returned"], g["t1"] - g["t0"],
                        r["echo_errors"], r["duplicates"], r["latency_us"], g["cpu_seconds"], g["machine_busy"],
                        g["udp_rcvbuf_drops"], g["tun_drops"], g["send_errors"], r["echo_error_examples"],
                        r.get("late", 0))
        self.progress(f"{subject.name:<12} {cell.label:<24} offered {m.offered_pps / 1000:8.1f} kpps  "
                      f"returned {m.returned_pps / 1000:8.1f} kpps  loss {m.loss * 100:6.2f}%  "
                      f"errors {m.echo_errors}" + (f"  late {m.late}" if m.late else ""))
        return m

    def prime(self, subject: Subject) -> None:
        """A little traffic first, so that tunnels exist and neighbours are resolved."""
        self.measure(subject, Cell(64, 1, "one", 2000.0), timing=Timing(0.3, 0.2, 16, 64, 0.2, 2.0))

    def search(self, subject: Subject, cell: Cell, start: float, max_loss: float, steps: int,
               repeat: int = 0, step_runs: int = 1) -> tuple[float, bool]:
        """The highest offered rate (packets/s) found with loss at most ``max_loss`` (doubling from ``start``
        until a rate fails, then bisection), and whether the search stopped because the generator could not
        offer more (then the subject is faster). ``step_runs``: each rate is offered that many times and judged
        by the median run's loss (so that one stall of the machine does not decide a step), and any wrong
        return fails it."""
        lo, hi = 0.0, 0.0  # the highest rate that passed, the lowest that failed (0: none yet)
        rate = max(start, 1000.0)
        for _ in range(steps):
            runs = sorted((self.measure(subject, Cell(cell.size, cell.flows, cell.ports, rate), repeat)
                           for _ in range(step_runs)), key=lambda x: x.loss)
            m = runs[len(runs) // 2]
            ok = m.loss <= max_loss and not any(x.echo_errors for x in runs)
            if m.offered_pps < 0.97 * rate:  # the generator cannot offer this much
                if ok:  # ... and the subject took all it could: the subject is faster than the generator
                    return max(lo, m.returned_pps), True
                rate = m.offered_pps  # what it can offer is too much already: search below that
            if ok:
                lo = rate
            else:
                hi = rate
            rate = (lo + hi) / 2 if hi else rate * 2
        return lo, False

    def overload(self, subject: Subject, cell: Cell, loss_free: float, factor: float,
                 repeat: int = 0) -> Measurement:
        """An open-loop offer of ``factor`` times the subject's loss-free rate: every return counts, however
        late, so that the returned rate is what the subject still does and the latency is the queue it builds."""
        timing = dataclasses.replace(self.timing, late=self.timing.max_wait * 1000)
        return self.measure(subject, Cell(cell.size, cell.flows, cell.ports, loss_free * factor), repeat, timing)


def overload_summary(subject: str, loss_free: float, bound: bool, factor: float, m: Measurement) -> dict[str, Any]:
    """What the overload offer showed, against the loss-free rate (JSON-ready)."""
    p99 = m.latency_us.get("p99")
    return {"subject": subject, "size": m.cell.size, "flows": m.cell.flows, "ports": m.cell.ports,
            "loss_free_pps": round(loss_free), "loss_free_generator_bound": bound, "factor": factor,
            "asked_pps": round(m.cell.rate), "offered_pps": round(m.offered_pps),
            "returned_pps": round(m.returned_pps),
            "returned_of_loss_free": round(m.returned_pps / loss_free, 4) if loss_free else None,
            "loss": round(m.loss, 6), "p50_us": m.latency_us.get("p50"), "p99_us": p99,
            # the generator could not offer what was asked: the subject was not overloaded by that factor
            "generator_bound": m.offered_pps < 0.97 * m.cell.rate}


def matrix(sizes: list[int], flows: list[int], ports: list[str]) -> list[Cell]:
    return [Cell(s, f, p) for s, f, p in itertools.product(sizes, flows, ports)]


def median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)
