"""The conformance suite's world: a live fake GWLB with the appliance(s) under test, and ways to talk to them.

Everything here treats the appliance as a black box: it is started from a command, sent packets, probed on
its health port, and its namespace is looked at (devices, process). Nothing imports its code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conformance.capture import Capture
from gwlbsim import geneve
from gwlbsim.appliance import ApplianceSpec, RunningAppliance
from gwlbsim.flowkey import InnerError, symmetric_key
from gwlbsim.live.gwlb import Captured
from gwlbsim.live.session import GwlbSession, SessionOptions
from gwlbsim.model import Encapsulation, GwlbModel


class ConformanceFailure(AssertionError):
    """A failed check, with the packet that shows it (hex-dumped and saved next to the test's pcap)."""

    def __init__(self, message: str, packet: bytes | None = None) -> None:
        super().__init__(message)
        self.packet = packet


def check(cond: object, message: str, packet: bytes | None = None) -> None:
    if not cond:
        raise ConformanceFailure(message, packet)


def hexdump(data: bytes) -> str:
    return "\n".join(f"{i:04x}  {data[i:i + 16].hex(' '):<47}  "
                     + "".join(chr(b) if 32 <= b < 127 else "." for b in data[i:i + 16])
                     for i in range(0, len(data), 16))


@dataclass
class Options:
    spec: ApplianceSpec
    instances: int = 2
    artifacts: Path | None = None
    rate: float = 2000.0  #: packets/s for the sustained-traffic check
    duration: float = 5.0  #: seconds of sustained traffic
    hypothesis_examples: int = 30


class Collector:
    """A tap that keeps what matches, and lets a test wait for it."""

    def __init__(self, want: Callable[[Captured], bool]) -> None:
        self.want = want
        self.items: list[Captured] = []
        self.cond = threading.Condition()

    def __call__(self, c: Captured) -> None:
        if self.want(c):
            with self.cond:
                self.items.append(c)
                self.cond.notify_all()

    def wait(self, count: int = 1, timeout: float = 3.0) -> list[Captured]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.items)


@dataclass
class Auditor:
    """Watches every return: it must belong to a flow that was sent to that very appliance (SYM-2, SYM-3)."""

    sent: dict[str, set[tuple[int, int, tuple[int, int, int]]]] = field(default_factory=dict)
    violations: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, c: Captured) -> None:
        if c.kind in ("to_target", "raw_to_target"):
            key = _flow_id(c.data)
            if key is not None:
                with self.lock:
                    self.sent.setdefault(c.dst, set()).add(key)
        elif c.kind == "from_target":
            key = _flow_id(c.data)
            with self.lock:
                if key is not None and key not in self.sent.get(c.src, ()):
                    seen_elsewhere = [t for t, keys in self.sent.items() if key in keys]
                    what = (f"returned a flow sent to {', '.join(seen_elsewhere)} instead" if seen_elsewhere
                            else "returned a flow it never received")
                    self.violations.append((c.src, what, c.data))


def _flow_id(payload: bytes) -> tuple[int, int, tuple[int, int, int]] | None:
    try:
        s = geneve.scan(payload)
        start = s.header_len
        return s.eni_id, s.cookie, symmetric_key(payload, start, start + s.inner_len)
    except (geneve.GeneveError, InnerError):
        return None


class ConformanceEnv:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        # the shipped hooks log their calls there (TIMEOUT-3 reads it)
        self.session = GwlbSession(SessionOptions(appliances=options.instances, endpoints=2, spec=options.spec,
                                                  workdir=workdir,
                                                  appliance_env={"GWLBSIM_HOOK_LOG": str(workdir / "hooks.log")}))
        self.auditor = Auditor()
        self.capture: Capture | None = None
        self._sport = 40000

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.session.start()
        self.gwlb.add_tap(self.auditor)
        topo = self.topo
        self.capture = Capture(topo.gwlb_ns, [z.bridge for z in topo.zones])
        self.session.wait_healthy(max(60.0, self.options.spec.ready_timeout))

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
        self.session.close()

    @property
    def gwlb(self):  # type: ignore[no-untyped-def]
        assert self.session.gwlb is not None, "the fake GWLB is not running"
        return self.session.gwlb

    @property
    def topo(self):  # type: ignore[no-untyped-def]
        assert self.session.topo is not None
        return self.session.topo

    @property
    def instances(self) -> list[RunningAppliance]:
        return self.session.appliances

    @property
    def spec(self) -> ApplianceSpec:
        return self.options.spec

    def call(self, fn: Callable[[GwlbModel], object]) -> object:
        return self.gwlb.call(fn)

    def next_sport(self) -> int:
        self._sport = 40000 + (self._sport - 40000 + 1) % 20000
        return self._sport

    # ------------------------------------------------------------------------------------- raw GENEVE

    @contextlib.contextmanager
    def collecting(self, want: Callable[[Captured], bool]) -> Iterator[Collector]:
        col = Collector(want)
        self.gwlb.add_tap(col)
        try:
            yield col
        finally:
            self.gwlb.remove_tap(col)

    def echo(self, payload: bytes, instance: int = 0, sport: int | None = None, timeout: float = 3.0,
             count: int = 1) -> list[Captured]:
        """Send a crafted GENEVE payload to an appliance; the datagrams it returns from that source port."""
        app = self.topo.appliances[instance]
        sport = sport or self.next_sport()
        with self.collecting(lambda c: c.kind == "from_target" and c.src == app.address and c.sport == sport) as col:
            self.gwlb.send_raw(app.address, payload, sport, app.gwlb_address)
            return col.wait(count, timeout)

    def burst(self, datagrams: list[tuple[bytes, int]], instance: int = 0, timeout: float = 3.0) -> list[Captured]:
        """Send several (payload, source port) back to back; returns what came back from those ports."""
        app = self.topo.appliances[instance]
        ports = {sport for _, sport in datagrams}
        with self.collecting(lambda c: c.kind == "from_target" and c.src == app.address and c.sport in ports) as col:
            for payload, sport in datagrams:
                self.gwlb.send_raw(app.address, payload, sport, app.gwlb_address)
            return col.wait(len(datagrams), timeout)

    def expect_nothing_back(self, payload: bytes, instance: int = 0, quiet: float = 0.4) -> list[Captured]:
        """Send a datagram that must not be forwarded; returns whatever came back (should be empty)."""
        app = self.topo.appliances[instance]
        with self.collecting(lambda c: c.kind == "from_target" and c.src == app.address) as col:
            self.gwlb.send_raw(app.address, payload, self.next_sport(), app.gwlb_address)
            time.sleep(quiet)
            return list(col.items)

    # ----------------------------------------------------------------------------------- through GWLB

    def through(self, eni_id: int, inner: bytes, timeout: float = 3.0) -> tuple[list[Captured], list[Captured]]:
        """Inject ``inner`` at an endpoint; returns (what GWLB sent to appliances, what was delivered back)."""
        def want(c: Captured) -> bool:
            return c.eni_id == eni_id and ((c.kind == "to_target" and c.data.endswith(inner))
                                           or (c.kind == "delivered" and c.data == inner))

        with self.collecting(want) as col:
            self.gwlb.inject(eni_id, inner)
            deadline = time.monotonic() + timeout
            with col.cond:
                while not any(c.kind == "delivered" for c in col.items):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    col.cond.wait(left)
                items = list(col.items)
        return [c for c in items if c.kind == "to_target"], [c for c in items if c.kind == "delivered"]

    @contextlib.contextmanager
    def encapsulation(self, encap: Encapsulation) -> Iterator[None]:
        old = self.call(lambda m: m.encap)
        self.call(lambda m: setattr(m, "encap", encap))
        try:
            yield
        finally:
            self.call(lambda m: setattr(m, "encap", old))

    def forget_flows(self) -> None:
        """GWLB forgets every flow, as after its idle timeout: the next packets get new cookies."""
        def forget(m: GwlbModel) -> None:
            for f in list(m.flows.values()):
                m._remove(f, 0.0)

        self.call(forget)

    # --------------------------------------------------------------------------------------- appliance

    def alive(self, instance: int = 0) -> bool:
        return self.instances[instance].alive()

    def health_status(self, instance: int = 0, timeout: float = 3.0) -> int | None:
        r = self.instances[instance].health(timeout)
        if self.spec.health_protocol == "tcp":
            return 200 if r.ok else None
        return r.status

    def restart(self, instance: int = 0) -> None:
        ra = self.instances[instance]
        ra.stop()
        ra.start(wait=True)

    def pause(self, instance: int) -> None:
        ra = self.instances[instance]
        if ra.proc is not None:
            os.killpg(ra.proc.pid, signal.SIGSTOP)

    def resume(self, instance: int) -> None:
        ra = self.instances[instance]
        if ra.proc is not None:
            os.killpg(ra.proc.pid, signal.SIGCONT)

    def ensure_healthy(self, timeout: float = 60.0) -> None:
        """Restart instances that died and wait until GWLB sees every one healthy (tests leave things so)."""
        for i, ra in enumerate(self.instances):
            if not ra.alive():
                ra.start(wait=True)
            self.resume(i)
        self.session.wait_healthy(timeout)

    def hook_calls(self) -> list[str]:
        p = self.workdir / "hooks.log"
        return p.read_text().splitlines() if p.exists() else []
