"""The conformance suite's world: a live fake GWLB with the appliance(s) under test, and ways to talk to them.

Everything here treats the appliance as a black box: it is started from a command, sent packets, probed on
its health port, and its namespace is looked at (devices, process). Nothing imports its code.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from gwlbsim.conformance.capture import Capture
from gwlbsim.conformance.results import NOT_APPLICABLE, NOT_RUN

from gwlbsim.appliance import ApplianceError, ApplianceSpec, RunningAppliance
from gwlbsim.config import GwlbConfig
from gwlbsim.linuxio.netns import Lab
from gwlbsim.live.balancer import Captured, LiveGwlb
from gwlbsim.live.session import GwlbSession, SessionOptions, health_check_for
from gwlbsim.live.topology import Topology
from gwlbsim.model import Encapsulation, GwlbModel
from gwlbsim.traffic.inner import udp_packet
from gwlbsim.traffic.record import Sent, write_pcap
from gwlbsim.wire import eni as eni_names
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import IPPROTO_UDP, InnerError, flow_of, symmetric_key
from gwlbsim.wire.outer import OuterError, parse_ipv4_udp


class ConformanceFailure(AssertionError):
    """A failed check, with the packet that shows it (hex-dumped and saved next to the test's pcap)."""

    def __init__(self, message: str, packet: bytes | None = None) -> None:
        super().__init__(message)
        self.packet = packet


def check(cond: object, message: str, packet: bytes | None = None) -> None:
    if not cond:
        raise ConformanceFailure(message, packet)


@dataclass
class Options:
    spec: ApplianceSpec
    instances: int = 2
    nodes: int = 2  #: GWLB nodes, one per zone; with more than one, cross-zone load balancing is on
    artifacts: Path | None = None
    rate: float = 2000.0  #: packets/s for the sustained-traffic check
    duration: float = 5.0  #: seconds of sustained traffic
    flows: int = 100_000  #: distinct flows driven through each instance (ROBUST-8)
    flow_rate: float = 5_000.0  #: new flows per second per instance, as the appliance declares it takes
    hypothesis_examples: int = 30
    kind: str = "auto"  #: "gwlbtun", "reflector" or "auto" (detected)
    tunnel_timeout: float | None = None  #: as declared by the user (None: not given)
    #: the appliance's flow timeouts for TCP and for other flows, as declared (None: not given)
    flow_timeouts: tuple[float | None, float | None] = (None, None)
    long: bool = False  #: run the checks that wait for minutes
    mode: str = "passthrough"  #: how the appliance is deployed (gwlbsim.appliance.MODES)


class InstanceCrashed(ConformanceFailure):
    """An appliance instance died while a test was using it (not stopped by the suite)."""


@dataclass(frozen=True)
class Crash:
    instance: int
    status: int | None  #: exit status; negative: the signal that ended it
    at: float  #: time.time() when it was noticed
    during: str  #: the test that was running

    @property
    def how(self) -> str:
        if self.status is None:
            return "vanished"
        if self.status < 0:
            try:
                name = signal.Signals(-self.status).name
            except ValueError:
                name = f"signal {-self.status}"
            return f"crashed ({name})"
        return f"exited with status {self.status}"


class Collector:
    """A tap that keeps what matches, and lets a test wait for it (and stops waiting when an instance dies)."""

    def __init__(self, want: Callable[[Captured], bool], env: ConformanceEnv | None = None) -> None:
        self.want = want
        self.env = env
        self.items: list[Captured] = []
        self.cond = threading.Condition()

    def __call__(self, c: Captured) -> None:
        if self.want(c):
            with self.cond:
                self.items.append(c)
                self.cond.notify_all()

    def wait_for(self, done: Callable[[list[Captured]], bool], timeout: float) -> list[Captured]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.05))
                if self.env is not None:
                    self.env.raise_if_crashed()
            return list(self.items)

    def wait(self, count: int = 1, timeout: float = 3.0) -> list[Captured]:
        return self.wait_for(lambda items: len(items) >= count, timeout)


TAIL = 24  #: bytes that tell a broken return from a datagram made up


@dataclass
class Auditor:
    """Watches every return: it must belong to a flow that was sent to that very appliance (SYM-2, SYM-3)."""

    sent: dict[str, set[tuple[int, int, tuple[int, int, int]]]] = field(default_factory=dict)
    violations: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the last bytes of every datagram sent to an appliance: an unparseable datagram ending like one of them
    #: is a broken return of it (the echo requirements judge that), one that does not came from nowhere
    tails: set[bytes] = field(default_factory=set)

    def __call__(self, c: Captured) -> None:
        if c.kind in ("to_target", "raw_to_target"):
            key = _flow_id(c.data)
            with self.lock:
                if len(c.data) >= TAIL:
                    self.tails.add(c.data[-TAIL:])
                if isinstance(key, tuple):
                    self.sent.setdefault(c.dst, set()).add(key)
        elif c.kind == "from_target":
            key = _flow_id(c.data)
            with self.lock:
                if key is None and (len(c.data) < TAIL or c.data[-TAIL:] not in self.tails):
                    self.violations.append((c.src, "sent a datagram GWLB cannot parse, carrying nothing it received",
                                            c.data))
                elif isinstance(key, tuple) and key not in self.sent.get(c.src, ()):
                    seen_elsewhere = [t for t, keys in self.sent.items() if key in keys]
                    what = (f"returned a flow sent to {', '.join(seen_elsewhere)} instead" if seen_elsewhere
                            else "returned a flow it never received")
                    self.violations.append((c.src, what, c.data))


def _flow_id(payload: bytes) -> tuple[int, int, tuple[int, int, int]] | bool | None:
    """The flow a GWLB datagram belongs to; None when GWLB cannot parse it; False when its inner packet has
    no flow key (GWLB parses it, but which flow it belongs to cannot be told)."""
    try:
        s = geneve.scan(payload)
    except geneve.GeneveError:
        return None
    try:
        return s.eni_id, s.cookie, symmetric_key(payload, s.header_len, s.header_len + s.inner_len)
    except InnerError:
        return False


@dataclass
class Echo:
    """What one probe saw: its returns, whether the marker behind it came back, what else the appliances sent."""

    returns: list[Captured]
    marker_back: bool
    others: list[Captured]
    waited: float
    strays: list[str] = field(default_factory=list)  #: the probe on the wire from the appliance, not to GWLB's 6081
    stale: list[Captured] = field(default_factory=list)  #: a probe's inner packet back on another outer port
    #: datagrams from the instance on a probe's port that are no probe's return (changed on the way through)
    changed: list[Captured] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.returns)

    def __len__(self) -> int:
        return len(self.returns)

    def __getitem__(self, i: int) -> Captured:
        return self.returns[i]

    def __iter__(self) -> Iterator[Captured]:
        return iter(self.returns)

    def lost(self, what: str = "the packet") -> str:
        """Why nothing (or too little) came back, as observed."""
        if self.changed:
            c = self.changed[0]
            inner = inner_of(c.data)
            what_changed = ("GWLB cannot parse it" if inner is None and _flow_id(c.data) is None
                            else "its inner packet is not the one sent")
            return (f"{what}: came back changed, on its own port {c.sport} ({what_changed}; "
                    f"{len(self.changed)} such datagram(s))")
        if self.strays:
            return (f"{what}: came back {self.strays[0]}, which GWLB never receives (returns must go to GWLB's "
                    f"address, port 6081, from the port GWLB sent from)")
        if self.stale:
            c = self.stale[0]
            return (f"{what}: its inner packet came back on another outer source port ({c.sport}: an earlier "
                    "packet's of the flow, or another flow's), not the one GWLB sent it from: GWLB matches returns to "
                    "the header and port of the flow's latest packet")
        if self.marker_back:
            head = (f"{what}: lost in the appliance (never returned, while a valid packet sent after it came back)")
        else:
            head = (f"{what}: nothing came back within {self.waited:.1f} s, not even a valid packet sent after it "
                    "(the appliance stalled or drops everything)")
        if self.others:
            o = self.others[0]
            head += (f"; meanwhile {len(self.others)} other datagram(s) came from the appliance side, e.g. from "
                     f"{o.src}:{o.sport} to {o.dst}:{o.dport}")
        return head


#: how long after the marker's return a forward of a datagram that must not be forwarded may still come
#: back (multi-threaded appliances reorder a little)
MARKER_GRACE = 0.15
#: how long after the marker's return a probe that must come back may still do so: appliances with a fast path
#: and a slow one (an in-kernel common case, an exception path in user space) return a marker of the common
#: case well ahead of a probe the slow path takes; only a probe that is really lost costs this wait
MISSING_GRACE = 0.6
#: after this many probes in a row whose marker never came back, the appliance returns nothing: waits shrink to
#: STALLED_WAIT seconds until a marker comes back again (a broken appliance fails fast, a working one never stalls)
STALL_AFTER, STALLED_WAIT = 3, 0.5
#: the same after the markers of a batch spread over every instance (more in flight, more reordering)
INTERLEAVED_GRACE = 0.3
MARKER_ENI_PORT = 9  # inner UDP destination port of marker packets (discard)
MARKER_PAYLOAD = b"marker"
FRESH_ENI_BASE = 0x0E57_0000_0000_0000


class ConformanceEnv:
    """The live world of one conformance run: the fake GWLB, the appliance instances, and their supervision.

    Tests talk to appliances only through it. It watches every instance: one that dies on its own makes the
    running test fail at once with how it died (``InstanceCrashed``), and is restarted before the next test.
    """

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        # the shipped hooks log their calls there (TIMEOUT-3 reads it)
        # every node reaches every instance (cross-zone): an appliance must answer each node at its own address
        config = GwlbConfig(health_check=health_check_for(options.spec), cross_zone=options.nodes > 1)
        self.session = GwlbSession(SessionOptions(appliances=options.instances, endpoints=2, spec=options.spec,
                                                  zones=options.nodes, config=config,
                                                  workdir=workdir,
                                                  appliance_env={"GWLBSIM_HOOK_LOG": str(workdir / "hooks.log")},
                                                  mode=options.mode))
        self.auditor = Auditor()
        self.capture: Capture | None = None
        self._sport = 40000
        self._eni_seq = 0
        self._marker_seq = 0
        self._marker_misses = 0  #: probes in a row whose marker did not come back
        self._through_misses = 0  #: packets in a row injected at an endpoint that were not delivered back
        self.kind = options.kind  #: "gwlbtun" (tunnel devices) or "reflector"; detected when "auto"
        self.kind_reason = "declared with --kind" if options.kind != "auto" else ""
        self.test_name = "start-up"
        self.test_eni = 0
        self.crashes: list[Crash] = []
        self.restarts: list[tuple[int, str]] = []  #: (instance, why) for each restart the suite made
        self._expected_down: set[int] = set()
        self._test_mark = 0  # crashes before this index belong to earlier tests
        self._noticed: set[tuple[int, int]] = set()  # (instance, start count) whose death is recorded
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.history: dict[str, deque[tuple[float, int, bytes]]] = {}
        self.unrestartable = ""  #: set once an instance could not be restarted: every later test is NOT RUN

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.session.start()
        self.gwlb.add_tap(self.auditor)
        self.gwlb.add_tap(self._remember_sent)
        topo = self.topo
        self.capture = Capture(topo.gwlb_ns, [z.bridge for z in topo.zones])
        self.session.wait_healthy(max(60.0, self.options.spec.ready_timeout))
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()
        if self.kind == "auto":
            self.kind, self.kind_reason = self._detect_kind()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(2)
        if self.capture is not None:
            self.capture.close()
        self.session.close()

    @property
    def gwlb(self) -> LiveGwlb:
        assert self.session.gwlb is not None, "the fake GWLB is not running"
        return self.session.gwlb

    @property
    def lab(self) -> Lab:
        """The namespaces of the running session."""
        return self.session.running()[0]

    @property
    def topo(self) -> Topology:
        assert self.session.topo is not None
        return self.session.topo

    @property
    def instances(self) -> list[RunningAppliance]:
        return self.session.appliances

    @property
    def spec(self) -> ApplianceSpec:
        return self.options.spec

    def call(self, fn: Callable[[GwlbModel], object]) -> Any:
        return self.gwlb.call(fn)

    def next_sport(self) -> int:
        self._sport = 40000 + (self._sport - 40000 + 1) % 20000
        return self._sport

    def fresh_eni(self) -> int:
        """An ENI id no earlier packet of this run used: its tunnel starts clean."""
        self._eni_seq += 1
        return FRESH_ENI_BASE + (os.getpid() << 20) + self._eni_seq

    # ------------------------------------------------------------------------------------ supervision

    def _remember_sent(self, c: Captured) -> None:
        if c.kind in ("to_target", "raw_to_target"):
            h = self.history.get(c.dst)
            if h is None:
                h = self.history[c.dst] = deque(maxlen=64)
            h.append((time.time(), c.sport, c.data))

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            for i, ra in enumerate(self.instances):
                if i in self._expected_down or ra.proc is None:
                    continue
                key = (i, ra.starts)
                if key in self._noticed:
                    continue
                status = ra.proc.poll()
                if status is not None:
                    self._noticed.add(key)
                    self.crashes.append(Crash(i, status, time.time(), self.test_name))

    def crashes_in_test(self) -> list[Crash]:
        """Instances that died on their own since the running test began."""
        return self.crashes[self._test_mark:]

    def raise_if_crashed(self) -> None:
        """Fail the running test at once if an instance died on its own since it started."""
        new = self.crashes_in_test()
        if new:
            c = new[0]
            raise InstanceCrashed(f"instance {c.instance} {c.how} during this test")

    def begin_test(self, name: str) -> list[str]:
        """Before each test: every instance alive and healthy, from a known state. Returns what was done."""
        if self.unrestartable:
            raise ApplianceError(self.unrestartable)
        notes = []
        for i, ra in enumerate(self.instances):
            if i in self._expected_down:
                self.resume(i)
                self._expected_down.discard(i)
            if not ra.alive():
                crash = next((c for c in reversed(self.crashes) if c.instance == i), None)
                why = f"{crash.how} during {crash.during}" if crash else "was not running"
                try:
                    self._restart(i, f"before {name}: it {why}")
                except ApplianceError as e:
                    self.unrestartable = f"instance {i} {why} and could not be restarted: {str(e).splitlines()[0]}"
                    raise ApplianceError(self.unrestartable) from None
                notes.append(f"instance {i} restarted before {name}: it {why}")
        if notes:
            self.session.wait_healthy(max(60.0, self.spec.ready_timeout))
            self._marker_misses = self._through_misses = 0  # a fresh instance gets full waits again
        self.test_name = name
        self._test_mark = len(self.crashes)
        self.test_eni = self.fresh_eni()
        return notes

    def _restart(self, i: int, why: str) -> None:
        self.restart(i)
        self.restarts.append((i, why))

    def reproducer(self, crash: Crash, directory: Path) -> Path | None:
        """The datagrams sent to the crashed instance just before it died, as a pcap and a replay script."""

        app = self.topo.appliances[crash.instance]
        sent = [Sent(sport, data, "conformance") for t, sport, data in self.history.get(app.address, ())
                if t <= crash.at]
        if not sent:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        pcap_path = directory / f"crash-instance{crash.instance}.pcap"
        write_pcap(pcap_path, sent, app.gwlb_address, app.address)
        script = directory / f"crash-instance{crash.instance}.replay.sh"
        health = ("" if self.spec.health_protocol == "none"
                  else f" --health-port {self.spec.health_port}")
        script.write_text("#!/bin/sh\n# replays the last datagrams sent to the instance before it "
                          f"{crash.how}\nexec gwlb-fuzz --replay {shlex.quote(str(pcap_path))} --appliance "
                          f"{shlex.quote(self.spec.command)}{health}\n")
        script.chmod(0o755)
        return pcap_path

    def log_offsets(self) -> list[int]:
        return [_size(ra.log_path) for ra in self.instances]

    def log_since(self, offsets: list[int]) -> dict[int, str]:
        out = {}
        for i, ra in enumerate(self.instances):
            start = offsets[i] if i < len(offsets) else 0
            try:
                with open(ra.log_path, "rb") as f:
                    f.seek(start)
                    text = f.read(64 << 10).decode(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                out[i] = text
        return out

    def tunnel_devices(self) -> list[dict[str, int]]:
        """Per instance: its gwi-/gwo- devices and their interface indexes."""
        prefixes = (eni_names.INGRESS_PREFIX, eni_names.EGRESS_PREFIX)
        out = []
        for ra in self.instances:
            try:
                devs = ra.device_indexes()
            except Exception:  # its namespace cannot be read (a test's attribution must not fail on that)
                devs = {}
            out.append({n: i for n, i in devs.items() if n.startswith(prefixes)})
        return out

    def _detect_kind(self) -> tuple[str, str]:
        probe = self.fresh_eni()
        got = self.echo(geneve.build(udp_probe(1), probe, 1), timeout=5)
        gwi, gwo = eni_names.device_names(probe)
        devs = self.tunnel_devices()[0]
        if gwi in devs or gwo in devs:
            return "gwlbtun", f"{gwi}/{gwo} appeared for a new endpoint"
        if not got:
            return "reflector", "the detection probe was not returned, so no tunnel devices could be seen"
        return "reflector", "a new endpoint's packet came back with no gwi-/gwo- devices created"

    def not_applicable_unless_tunnels(self, what: str) -> None:
        if self.kind != "gwlbtun":
            not_applicable(f"{what} needs gwlbtun-style tunnel devices; this appliance has none "
                                f"({self.kind_reason})")

    # ------------------------------------------------------------------------------------- raw GENEVE

    @contextlib.contextmanager
    def collecting(self, want: Callable[[Captured], bool]) -> Iterator[Collector]:
        col = Collector(want, self)
        self.gwlb.add_tap(col)
        try:
            yield col
        finally:
            self.gwlb.remove_tap(col)

    def marker(self, eni_id: int) -> bytes:
        """A valid packet of a flow of its own (UDP, so any firewall passes it): sent behind a probe, its return
        shows the appliance has processed the probe."""
        self._marker_seq += 1
        return geneve.build(udp_probe(1024 + self._marker_seq % 60000, dport=MARKER_ENI_PORT, payload=MARKER_PAYLOAD),
                            eni_id, 0x4D000000 + self._marker_seq)

    def _eni_of(self, payload: bytes) -> int:
        try:
            return geneve.scan(payload).eni_id
        except geneve.GeneveError:
            return self.test_eni or self.topo.endpoints[0].eni_id

    def send_batch(self, datagrams: list[tuple[bytes, int]], instance: int = 0, timeout: float = 3.0,
                   count: int | None = None, node: str | None = None) -> Echo:
        """Send (payload, source port) datagrams to an instance from a GWLB node (default: its zone's), then a
        marker; wait until ``count`` datagrams came back from those ports (default: one each), or the marker
        came back and a little more, or the timeout. Every datagram from the appliance side in that window is
        kept, whichever node it went to."""
        app = self.topo.appliances[instance]
        node = node or app.gwlb_address
        ports = {sport for _, sport in datagrams}
        want = len(datagrams) if count is None else count
        sent_inners = [inner_of(p) for p, _ in datagrams]

        def ours(c: Captured) -> bool:
            """A return of one of these probes: from the instance, on a probe's port, carrying a probe's inner
            packet (a datagram the appliance made up on the same port is not a return of ours)."""
            if c.src != app.address or c.sport not in ports:
                return False
            back = inner_of(c.data)
            return any(c.data == p for p, _ in datagrams) or (back is not None and any(
                s is not None and same_inner(s, back) for s in sent_inners))

        msport = self.next_sport()
        marker = self.marker(self._eni_of(datagrams[0][0]) if datagrams else self.test_eni)
        grace = MARKER_GRACE if want > len(datagrams) else MISSING_GRACE
        seen_marker: list[float] = []

        def done(items: list[Captured]) -> bool:
            mine = sum(1 for c in items if ours(c))
            if mine >= want:
                return True
            if not seen_marker and any(c.sport == msport for c in items):
                seen_marker.append(time.monotonic())
            return bool(seen_marker) and time.monotonic() - seen_marker[0] >= grace

        start = time.monotonic()
        wall = time.time()
        if self._marker_misses >= STALL_AFTER:  # it has returned nothing for a while: stop waiting long
            timeout = min(timeout, STALLED_WAIT)
        with self.collecting(lambda c: c.kind == "from_target") as col:
            for payload, sport in datagrams:
                self.gwlb.send_raw(app.address, payload, sport, node)
            self.gwlb.send_raw(app.address, marker, msport, node)
            items = col.wait_for(done, timeout)
        self.raise_if_crashed()
        mine = [c for c in items if ours(c)]
        others = [c for c in items if c.sport != msport and not ours(c)]
        back = any(c.sport == msport for c in items)
        self._marker_misses = 0 if back else self._marker_misses + 1
        strays = [] if len(mine) >= want else self.strays(wall, app.address, [p for p, _ in datagrams])
        # a probe's inner packet back on another port: an earlier packet's of its flow, or another flow's (the
        # marker's included: a return given the header of the latest packet received, whatever its flow)
        changed = [c for c in others if c.src == app.address and c.sport in ports]
        stale = [c for c in items if c.src == app.address and not ours(c) and any(
            s is not None and (b := inner_of(c.data)) is not None and same_inner(s, b) for s in sent_inners)]
        return Echo(mine, back, others, time.monotonic() - start, strays, stale, changed)

    def send_interleaved(self, datagrams: list[tuple[int, bytes, int]], eni_id: int,
                         timeout: float = 3.0) -> list[Captured]:
        """Send (instance, payload, source port) datagrams in the order given, each from its instance's node,
        then a marker (of ``eni_id``) to every instance. Returns every datagram any instance sent until every
        marker came back and, besides, as many as were sent or a little more time; or until the timeout.

        Markers are left out: this call's own, and an earlier call's that comes back late on its own port (a
        marker is sent after the data, so it may well come back after the data did; waiting for them all keeps
        one call's markers out of the next call's window). A marker's inner packet on one of the datagrams'
        ports is kept: that is a return with another flow's packet."""
        apps = self.topo.appliances
        markers = {self.next_sport(): i for i in range(len(apps))}
        back_at: list[float] = []

        def done(items: list[Captured]) -> bool:
            if not back_at:
                if not set(markers) <= {c.sport for c in items}:
                    return False
                back_at.append(time.monotonic())
            if sum(1 for c in items if c.sport not in markers) >= len(datagrams):
                return True
            return time.monotonic() - back_at[0] >= INTERLEAVED_GRACE

        with self.collecting(lambda c: c.kind == "from_target") as col:
            for i, payload, sport in datagrams:
                self.gwlb.send_raw(apps[i].address, payload, sport, apps[i].gwlb_address)
            for sport, i in markers.items():
                self.gwlb.send_raw(apps[i].address, self.marker(eni_id), sport, apps[i].gwlb_address)
            items = col.wait_for(done, timeout)
        self.raise_if_crashed()
        ports = {sport for _, _, sport in datagrams}
        return [c for c in items if c.sport not in markers and (c.sport in ports or not is_marker(c.data))]

    def strays(self, since: float, address: str, payloads: list[bytes]) -> list[str]:
        """Datagrams on the wire from an appliance that carry one of ``payloads`` but not to GWLB's GENEVE
        port: returns GWLB never receives (wrong ports or address), described."""
        if self.capture is None:
            return []
        wanted = {p for p in payloads if p}
        found = []
        for _, frame in self.capture.settled_since(since):
            if len(frame) < 14 + 28 or frame[12:14] != b"\x08\x00":
                continue
            try:
                o = parse_ipv4_udp(frame[14:])
            except OuterError:
                continue
            if o.src != address or (o.dport == geneve.GENEVE_PORT and o.dst in self.topo.nodes.values()):
                continue
            if bytes(frame[14 + o.payload_offset:14 + o.payload_offset + o.payload_len]) in wanted:
                found.append(f"from {o.src}:{o.sport} to {o.dst}:{o.dport}")
        return found

    def echo(self, payload: bytes, instance: int = 0, sport: int | None = None, timeout: float = 3.0,
             count: int = 1, node: str | None = None) -> Echo:
        """Send a crafted GENEVE payload to an appliance; the datagrams it returns from that source port."""
        return self.send_batch([(payload, sport or self.next_sport())], instance, timeout, count, node)

    def burst(self, datagrams: list[tuple[bytes, int]], instance: int = 0, timeout: float = 3.0) -> Echo:
        """Send several (payload, source port) back to back; what came back from those ports."""
        return self.send_batch(datagrams, instance, timeout)

    def expect_nothing_back(self, payload: bytes, instance: int = 0, timeout: float = 3.0) -> Echo:
        """Send a datagram that must not be forwarded, then a marker. Every datagram any instance sends until
        the marker is back (the appliance has demonstrably processed what came before it) is returned in
        ``others``/``returns``: all of them are forwards of the bad datagram."""
        sport = self.next_sport()
        e = self.send_batch([(payload, sport)], instance, timeout, count=2 ** 30)
        forwarded = e.returns + [c for c in e.others if payload and c.data.endswith(payload[-40:])]
        return Echo(forwarded, e.marker_back, [], e.waited)

    # ----------------------------------------------------------------------------------- through GWLB

    def through(self, eni_id: int, inner: bytes, timeout: float = 3.0) -> tuple[list[Captured], list[Captured]]:
        """Inject ``inner`` at an endpoint; returns (what GWLB sent to appliances, what was delivered back)."""
        def want(c: Captured) -> bool:
            return c.eni_id == eni_id and ((c.kind == "to_target" and c.data.endswith(inner))
                                           or (c.kind == "delivered" and same_inner(inner, c.data)))

        if self._through_misses >= STALL_AFTER:  # nothing has come back through GWLB for a while
            timeout = min(timeout, STALLED_WAIT)
        with self.collecting(want) as col:
            self.gwlb.inject(eni_id, inner)
            items = col.wait_for(lambda items: any(c.kind == "delivered" for c in items), timeout)
        delivered = [c for c in items if c.kind == "delivered"]
        self._through_misses = 0 if delivered else self._through_misses + 1
        return [c for c in items if c.kind == "to_target"], delivered

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

    def healthy(self, instance: int = 0, timeout: float = 3.0) -> bool:
        """Healthy as the appliance's own health protocol says (always, without a health check)."""
        if self.spec.health_protocol == "none":
            return True
        return self.health_status(instance, timeout) == 200

    def restart(self, instance: int = 0) -> float:
        """Stop an instance and start it again (a restart the test asked for, not a crash). Returns when it was
        started again (``time.monotonic()``)."""
        ra = self.instances[instance]
        self._expected_down.add(instance)
        ra.stop()
        started = time.monotonic()
        ra.start(wait=True)  # if it fails to start, the caller reports why: that is no crash of a running one
        self._expected_down.discard(instance)
        return started

    def kill(self, instance: int) -> None:
        """Kill an instance on purpose (SIGKILL); the next test starts it again."""
        self._expected_down.add(instance)
        self.instances[instance].kill()

    def pause(self, instance: int) -> None:
        ra = self.instances[instance]
        if ra.proc is not None:
            self._expected_down.add(instance)
            os.killpg(ra.proc.pid, signal.SIGSTOP)

    def resume(self, instance: int) -> None:
        ra = self.instances[instance]
        if ra.proc is not None and ra.alive():
            os.killpg(ra.proc.pid, signal.SIGCONT)

    def ensure_healthy(self, timeout: float = 60.0) -> None:
        """Start instances the test stopped and wait until GWLB sees every one healthy (tests leave things so)."""
        for i, ra in enumerate(self.instances):
            self.resume(i)
            if not ra.alive():
                ra.start(wait=True)
            self._expected_down.discard(i)
        self.session.wait_healthy(timeout)

    def hook_calls(self) -> list[str]:
        p = self.workdir / "hooks.log"
        return p.read_text().splitlines() if p.exists() else []


def not_applicable(reason: str) -> NoReturn:
    """End the test: its requirement cannot apply to this appliance (reported as NOT APPLICABLE, not SKIP)."""
    pytest.skip(NOT_APPLICABLE + reason)


def not_run(reason: str) -> NoReturn:
    """End the test: it applies but could not run in this configuration (the run is then INCOMPLETE)."""
    pytest.skip(NOT_RUN + reason)


def udp_probe(sport: int, dport: int = 53, payload: bytes = b"probe", src: str = "10.10.0.2",
              dst: str = "10.20.0.2") -> bytes:
    """An inner UDP packet (the suite's default probe: any firewall passes the first packet of a UDP flow)."""
    return udp_packet(src, dst, sport, dport, payload).data


def is_marker(datagram: bytes) -> bool:
    """The datagram carries a marker's inner packet (:meth:`ConformanceEnv.marker`: UDP to the discard port,
    payload ``marker``), whatever header it came back with."""
    inner = inner_of(datagram)
    if inner is None or not inner.endswith(MARKER_PAYLOAD):
        return False
    try:
        flow, _ = flow_of(inner)
    except InnerError:
        return False
    return flow.proto == IPPROTO_UDP and MARKER_ENI_PORT in (flow.sport, flow.dport)


def inner_of(datagram: bytes) -> bytes | None:
    """The payload after a GENEVE header whose option area is well formed, whatever its options (a return that
    lost a GWLB option still shows whether its inner packet came back unchanged); None when not GENEVE."""
    try:
        return datagram[geneve.GeneveHeader.from_bytes(datagram).length:]
    except geneve.GeneveError:
        return None


def same_inner(sent: bytes, back: bytes) -> bool:
    """The inner packet came back unchanged, a router's TTL / hop-limit decrement (and the IPv4 header
    checksum that follows it) aside: appliances that route through their kernel do that."""
    if sent == back:
        return True
    if len(sent) != len(back) or not sent:
        return False
    v = sent[0] >> 4
    if v == 4 and len(sent) >= 20:
        return back[8] < sent[8] and sent[:8] + sent[9:10] + sent[12:] == back[:8] + back[9:10] + back[12:]
    if v == 6 and len(sent) >= 40:
        return back[7] < sent[7] and sent[:7] + sent[8:] == back[:7] + back[8:]
    return False


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0
