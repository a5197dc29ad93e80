"""The network fuzzer: generated GENEVE traffic at a live appliance in a namespace, watched, findings reproduced.

An appliance (any command template, see :mod:`gwlbsim.appliance`; the reference by default) runs in its own
namespace, linked by a veth pair to a "gwlb" namespace from which the fuzzer sends, from ``10.99.0.1`` to the
appliance at ``10.99.0.2`` port 6081, a paced mix of valid, malformed and mutated datagrams
(:mod:`gwlbsim.fuzz.traffic_pool`) and a few oversize ones (above the link MTU, up to 65,000 bytes). Every
``check_interval`` seconds it pauses and checks (:mod:`gwlbsim.fuzz.watchdog`): process alive, health answering,
descriptors and devices bounded, and every probe flow returned with the latest header; every datagram the
appliance sends back is judged against what it was sent.

Findings follow the catalogue of :mod:`gwlbsim.fuzz.findings` (the conformance suite's requirement ids and levels). A
non-fatal finding (a wrong or forwarded return) is recorded, with the datagram whose return was judged when
the return is one of them and the datagrams sent since the last check otherwise, and fuzzing goes on; repeats
of a finding (same kind and reason) are counted. A fatal finding (crash, hang, unhealthy, lost probe flows,
descriptor or device leak) stops the sending.

At the end every distinct finding is reproduced against fresh appliances and written as a reproducer
(:mod:`gwlbsim.fuzz.reproducer`), the fatal one first: a finding caused by one known datagram is confirmed by
replaying that datagram alone; any other is reduced (:mod:`gwlbsim.fuzz.minimize`) from the datagrams sent since the
last check before it (or, if those alone do not reproduce it, everything sent until then).
"""

from __future__ import annotations

import random
import re
import shlex
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

from gwlbsim.fuzz import reproducer
from gwlbsim.fuzz.findings import MUST, PROBE_KINDS, Finding, matches, order
from gwlbsim.fuzz.minimize import Budget, minimize
from gwlbsim.fuzz.traffic_pool import PROBE_ENIS, TrafficPool, TrafficSource
from gwlbsim.fuzz.watchdog import Limits, ReturnChecker, Watchdog

from gwlbsim.appliance import ApplianceError, ApplianceSpec, RunningAppliance
from gwlbsim.linuxio.netns import Lab, owned_tempdir
from gwlbsim.probe import GenevePeer
from gwlbsim.progress import Progress
from gwlbsim.traffic.packets import GwlbFlow
from gwlbsim.traffic.record import Sent
from gwlbsim.wire import geneve
from gwlbsim.wire.flowkey import InnerError, symmetric_key

GWLB_IP, APP_IP = "10.99.0.1", "10.99.0.2"
LINK_MTU = 9001
OVERSIZE_MIN, OVERSIZE_MAX = 9001, 65000  #: oversize datagram sizes (UDP payload bytes; fragmented on the link)

#: Where a finding is noted: the finding, the datagram whose return was judged (if known), whether a probe
#: round found it.
Note = Callable[[Finding, Sent | None, bool], None]


class FuzzError(RuntimeError):
    """The fuzzer could not do its job (the appliance does not start, or never returns valid traffic)."""


@dataclass
class Options:
    appliance: ApplianceSpec = field(default_factory=ApplianceSpec)
    rate: float = 1000.0  #: datagrams per second while sending
    duration: float = 60.0  #: seconds of sending (checks and reproduction come on top)
    seed: int = 0
    out: Path = Path("gwlb-fuzz-results")
    check_interval: float = 1.0
    settle: float = 0.2  #: pause between the last datagram and the checks
    probe_timeout: float = 3.0
    probes: bool = True  #: check that valid flows are still returned (needs an appliance that returns them)
    probe_flows: int = 4
    pool_size: int = 400
    mix: tuple[int, int, int] = (3, 5, 2)  #: weights of valid, malformed, havoc
    oversize: float = 0.005  #: share of datagrams that are oversize (OVERSIZE_MIN to OVERSIZE_MAX bytes)
    limits: Limits = field(default_factory=Limits)
    minimize: bool = True  #: replay findings to confirm and reduce them (else write what was recorded)
    minimize_seconds: float = 300.0  #: for all findings together
    minimize_replays: int = 150  #: per finding
    history: int = 200_000  #: datagrams kept for replay
    option_class: int = geneve.AWS_OPTION_CLASS


@dataclass
class Record:
    """A distinct finding while fuzzing: its first occurrence and what was sent up to it."""

    finding: Finding
    origin: Sent | None  #: the datagram whose return was judged, when known
    window: list[Sent]  #: datagrams sent since the last check before it
    upto: int  #: datagrams sent in all when it was first seen
    probes: bool  #: found by a probe round (a replay must send probes too)
    at: float  #: seconds into fuzzing when first seen
    count: int = 1


@dataclass
class Found:
    finding: Finding
    count: int  #: occurrences while fuzzing
    at: float  #: seconds into fuzzing of the first
    packets: int
    original: int
    replays: int
    minimized: bool
    reproduced: bool
    script: Path | None
    how: str = ""  #: how the reproducer's sequence was obtained, for people
    sent_before: int = 0  #: datagrams sent when it was first seen


@dataclass
class Summary:
    seconds: float = 0.0
    sending_seconds: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)
    send_errors: Counter[str] = field(default_factory=Counter)
    returns: int = 0
    probe_rounds: int = 0
    checks: int = 0
    found: list[Found] = field(default_factory=list)  #: fatal first, then MUST, then SHOULD
    command: str = ""
    seed: int = 0
    fds: tuple[int, int] = (0, 0)
    devices: tuple[int, int] = (0, 0)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def grades(self) -> Counter[str]:
        """Distinct findings by grade (FATAL, MUST, SHOULD)."""
        return Counter(f.finding.grade for f in self.found)

    def render(self) -> str:
        valid = self.sent["valid"] + self.sent["probe"] + self.sent["havoc:valid"]
        havoc = self.sent["havoc"] + self.sent["havoc:valid"]
        malformed = self.total - valid - self.sent["havoc"] - self.sent["oversize"]
        rate = self.total / self.sending_seconds if self.sending_seconds else 0.0
        lines = [f"gwlb-fuzz: {self.seconds:.1f} s against {self.command} (seed {self.seed})",
                 f"  sent {self.total:,} datagrams ({rate:,.0f}/s while sending): valid {valid:,} "
                 f"(probes {self.sent['probe']:,}), malformed {malformed:,}, havoc {havoc:,} "
                 f"(valid {self.sent['havoc:valid']:,}), oversize {self.sent['oversize']:,}"]
        by_class = sorted((k, v) for k, v in self.sent.items()
                          if k not in ("valid", "probe", "havoc", "havoc:valid", "oversize"))
        for i in range(0, len(by_class), 4):
            lines.append("    " + ", ".join(f"{k} {v:,}" for k, v in by_class[i:i + 4]))
        if self.send_errors:
            lines.append("  send errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.send_errors.items())))
        lines.append(f"  returns {self.returns:,}; {self.probe_rounds} probe rounds; {self.checks} checks; "
                     f"fds {self.fds[0]} -> {self.fds[1]}; devices {self.devices[0]} -> {self.devices[1]}")
        if not self.found:
            lines.append("  findings: none")
            return "\n".join(lines)
        g = self.grades()
        lines.append(f"  findings: {g['FATAL']} fatal, {g['MUST']} MUST, {g['SHOULD']} SHOULD "
                     f"({len(self.found)} distinct, {sum(f.count for f in self.found):,} in all)")
        for f in self.found:
            x = f.finding
            times = "once" if f.count == 1 else f"{f.count:,} times"
            lines.append(f"  {x.grade} {x.kind} ({x.reason}) [{x.level} {x.requirement}], {times}, first after "
                         f"{f.at:.1f} s: {x.detail}")
            lines.append(f"    reproducer: {f.script} ({f.packets:,} packet{'s' if f.packets != 1 else ''}, {f.how})")
        return "\n".join(lines)


class Bench:
    """The namespaces, the link and the GENEVE peer; starts fresh appliance instances on demand."""

    def __init__(self, spec: ApplianceSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.app: RunningAppliance | None = None
        self.instances = 0

    def __enter__(self) -> Bench:
        self.lab = Lab()
        try:
            self.gwlb = self.lab.namespace("gwlb")
            self.ns = self.lab.namespace("app")
            self.lab.veth(self.gwlb, "to-app", self.ns, "eth0", addr_a=f"{GWLB_IP}/24", addr_b=f"{APP_IP}/24",
                          mtu=LINK_MTU)
            self.peer = GenevePeer(self.gwlb, GWLB_IP, APP_IP)
        except BaseException:
            self.lab.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.app is not None:
                self.app.kill()
            self.peer.close()
        finally:
            self.lab.close()

    def start(self) -> RunningAppliance:
        """Kill the running instance, if any, and start a fresh one (ready when this returns)."""
        if self.app is not None:
            self.app.kill()
        self.app = RunningAppliance(self.lab, self.spec, self.ns, APP_IP, self.gwlb, GWLB_IP, self.instances,
                                    self.workdir)
        self.instances += 1
        self.app.start(wait=True)
        self.peer.drain(0.01)
        return self.app

    def send(self, s: Sent, errors: Counter[str]) -> None:
        try:
            self.peer.send(s.payload, sport=s.sport)
        except OSError as e:
            errors[e.strerror or type(e).__name__] += 1

    def receive(self, timeout: float = 0.0) -> list[bytes]:
        """Every datagram waiting (after up to ``timeout`` for the first)."""
        out = []
        r = self.peer.recv(timeout)
        while r is not None:
            out.append(r.payload)
            r = self.peer.recv(0)
        return out


def oversize(rng: random.Random, base: bytes, sport: int) -> Sent:
    """An oversize datagram (``OVERSIZE_MIN`` to ``OVERSIZE_MAX`` bytes): zeros, or ``base`` (a pool packet)
    padded with zeros or random bytes (with a valid ``base`` it is valid GENEVE with trailing bytes)."""
    size = rng.randint(OVERSIZE_MIN, 16_000) if rng.random() < 0.5 else rng.randint(16_001, OVERSIZE_MAX)
    style = rng.randrange(3)
    if style == 0:
        data = bytes(size)
    else:
        pad = size - len(base)
        data = base + (bytes(pad) if style == 1 else rng.randbytes(pad))
    return Sent(sport, data, "oversize")


class NetworkFuzzer:
    def __init__(self, options: Options, progress: Progress | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.o = options
        self.progress = progress or Progress()
        self.say = say or self.progress.note
        self.summary = Summary(command=options.appliance.command, seed=options.seed)
        self._cookie = random.Random(options.seed).randrange(1 << 32)
        self._history: deque[Sent] = deque(maxlen=options.history)
        self._seq = 0  # datagrams sent while fuzzing (the history holds the last ``history`` of them)
        self._window_start = 0  # ``_seq`` at the end of the last check
        self._records: dict[tuple[str, str], Record] = {}
        self._fuzz_start = time.monotonic()

    # ---------------------------------------------------------------------------------------------- fuzzing

    def run(self) -> Summary:
        started = time.monotonic()
        self.say(f"building traffic pools (seed {self.o.seed}) ...")
        self.pool = TrafficPool.build(seed=self.o.seed, size=self.o.pool_size, probes=self.o.probe_flows,
                                      option_class=self.o.option_class)
        source = TrafficSource(self.pool, random.Random(self.o.seed), mix=self.o.mix)
        big = random.Random(self.o.seed + 0x0515E)  # its own stream: the pool traffic stays that of the seed
        with owned_tempdir("gwlb-fuzz-") as tmp, Bench(self.o.appliance, tmp) as bench:
            self.bench = bench
            if self.o.limits.device_growth is None:  # two devices per endpoint (as gwlbtun) and some slack
                self.o.limits = replace(self.o.limits, device_growth=2 * len(self.pool.allowed_enis) + 16)
            app = self._start(bench)
            dog = Watchdog(app, self.o.limits)
            checker = ReturnChecker(self.o.option_class)
            self.summary.fds = (dog.base_fds, dog.base_fds)
            self.summary.devices = (dog.base_devices, dog.base_devices)
            self._fuzz_start = time.monotonic()
            fatal = None
            if self.o.probes:
                fatal = self._probe_round(checker, self._note, lambda s: self._send(s, checker))
                self.summary.probe_rounds += 1
            if fatal is not None:
                raise FuzzError(f"the appliance did not return valid traffic at the start ({fatal.detail}); "
                                "the fuzzer needs an appliance that sends GWLB's packets back (e.g. with a one-arm "
                                "passthrough hook), or --no-probes\n" + app.output_tail())
            self._window_start = self._seq
            end = self._fuzz_start + self.o.duration
            while fatal is None and time.monotonic() < end:
                fatal = self._burst(source, big, min(end, time.monotonic() + self.o.check_interval), checker, dog)
                if fatal is None:
                    time.sleep(self.o.settle)
                    self._collect(checker, self._note)
                    fatal = dog.check()
                    self.summary.checks += 1
                    if fatal is None and self.o.probes:
                        fatal = self._probe_round(checker, self._note, lambda s: self._send(s, checker))
                        self.summary.probe_rounds += 1
                self.summary.returns = checker.returns
                self.summary.fds = (dog.base_fds, dog.fds)
                self.summary.devices = (dog.base_devices, dog.devices)
                if fatal is None:
                    self._window_start = self._seq
                self._show()
            if fatal is not None:
                self.say(f"FATAL {fatal.describe()}; sending stopped")
                self._collect(checker, self._note)  # returns already on their way are judged too
                self.summary.returns = checker.returns
            self._show(final=True)
            self.progress.done()
            log = app.output_tail(80)
            records = sorted(self._records.values(), key=lambda r: (order(r.finding), r.upto))
            if fatal is not None:
                records.insert(0, Record(fatal, None, self._tail(self._seq - self._window_start), self._seq,
                                         fatal.kind in PROBE_KINDS, time.monotonic() - self._fuzz_start))
            self._reproduce_all(records, log)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _start(self, bench: Bench) -> RunningAppliance:
        try:
            return bench.start()
        except ApplianceError as e:
            raise FuzzError(str(e)) from None

    def _send(self, s: Sent, checker: ReturnChecker) -> None:
        """Send a datagram while fuzzing: kept for replay, told to the checker, counted."""
        self.bench.send(s, self.summary.send_errors)
        self._history.append(s)
        self._seq += 1
        checker.sent(s)
        self.summary.sent[s.label] += 1

    def _tail(self, n: int) -> list[Sent]:
        """The last ``n`` datagrams sent (as many as the history still holds)."""
        return list(islice(reversed(self._history), min(n, len(self._history))))[::-1]

    def _upto(self, upto: int) -> list[Sent]:
        """The datagrams the history still holds among the first ``upto`` sent."""
        first = self._seq - len(self._history)
        return list(islice(self._history, 0, max(0, upto - first)))

    def _note(self, finding: Finding, origin: Sent | None, probes: bool) -> None:
        """Record a non-fatal finding and go on: its first occurrence with the datagrams behind it, then a count."""
        rec = self._records.get(finding.key)
        if rec is not None:
            rec.count += 1
            return
        self._records[finding.key] = Record(finding, origin, self._tail(self._seq - self._window_start), self._seq,
                                            probes, time.monotonic() - self._fuzz_start)
        self.say(f"{finding.grade} {finding.describe()} (recorded; fuzzing goes on)")

    def _burst(self, source: TrafficSource, big: random.Random, until: float, checker: ReturnChecker,
               dog: Watchdog) -> Finding | None:
        t0 = time.monotonic()
        sent = 0
        last_alive = t0
        try:
            while (now := time.monotonic()) < until:
                due = int((now - t0) * self.o.rate) + 1
                batch = 0
                while sent < due and batch < 256:  # after a stall, catch up gradually
                    if self.o.oversize > 0 and big.random() < self.o.oversize:
                        base = (big.choice(self.pool.valid).payload if self.pool.valid and big.random() < 0.5
                                else big.choice(self.pool.malformed).payload)
                        s = oversize(big, base, big.choice(source.sports))
                    else:
                        s = source.next()
                    self._send(s, checker)
                    sent += 1
                    batch += 1
                self._collect(checker, self._note)
                if now - last_alive > 0.05:
                    if f := dog.crashed():
                        return f
                    last_alive = now
                self._show()
                time.sleep(0.001)
            return None
        finally:
            self.summary.sending_seconds += time.monotonic() - t0

    def _collect(self, checker: ReturnChecker, note: Note, probes: bool = False) -> None:
        """Judge every return waiting."""
        for payload in self.bench.receive():
            if judged := checker.received(payload):
                note(judged.finding, judged.origin, probes)

    def _probe_round(self, checker: ReturnChecker, note: Note, send: Callable[[Sent], None]) -> Finding | None:
        """Send every probe flow with a fresh cookie; each must come back, with exactly that header.

        Returns the fatal ``lost_flow`` finding if some do not come back; a wrong return is noted."""
        self._collect(checker, note)
        expected: dict[tuple[int, object], tuple[bytes, GwlbFlow]] = {}
        for flow in self.pool.probes:
            self._cookie = (self._cookie + 1) & 0xFFFFFFFF
            vp = flow.packet("forward", self._cookie)
            send(Sent(flow.sport, vp.payload, "probe"))
            expected[(flow.eni_id, flow.key)] = (vp.header_bytes, flow)
        deadline = time.monotonic() + self.o.probe_timeout
        got: set[tuple[int, object]] = set()
        while len(got) < len(expected) and (left := deadline - time.monotonic()) > 0:
            for payload in self.bench.receive(left):
                judged = checker.received(payload)
                if judged is not None:
                    note(judged.finding, judged.origin, True)
                try:
                    s = geneve.scan(payload, option_class=self.o.option_class)
                except geneve.GeneveError:
                    continue
                if s.eni_id not in PROBE_ENIS:
                    continue
                try:
                    key = (s.eni_id, symmetric_key(payload, s.header_len, s.header_len + s.inner_len))
                except InnerError:
                    continue
                if key in expected:
                    want, flow = expected[key]
                    if judged is None and payload[:s.header_len] != want:  # a header sent earlier for the flow
                        note(Finding("wrong_return", "stale_header",
                                     f"probe flow {flow.forward.five_tuple().describe()} of ENI {flow.eni_id:016x} "
                                     f"came back with header {payload[:s.header_len].hex()}, sent earlier for the "
                                     f"flow; the latest sent was {want.hex()}"), None, True)
                    got.add(key)
        missing = [expected[k][1] for k in expected if k not in got]
        if missing:
            flows = "; ".join(f"{f.forward.five_tuple().describe()} (ENI {f.eni_id:016x})" for f in missing)
            return Finding("lost_flow", "probes_not_returned",
                           f"{len(missing)} of {len(expected)} probe flows not returned within "
                           f"{self.o.probe_timeout:g} s: {flows}")
        return None

    def _show(self, final: bool = False) -> None:
        s = self.summary
        elapsed = time.monotonic() - self._fuzz_start
        findings = f", findings {len(self._records)}" if self._records else ""
        self.progress.line(f"[{elapsed:5.1f}/{self.o.duration:g} s] sent {s.total:,} "
                             f"(valid {s.sent['valid'] + s.sent['probe']:,}, havoc {s.sent['havoc']:,}), "
                             f"returns {s.returns:,}, checks {s.checks}, fds {s.fds[1]}, devices {s.devices[1]}"
                             f"{findings}", force=final)

    # ----------------------------------------------------------------------------------------- replaying

    def replay(self, packets: Sequence[Sent], *, probes: bool | None = None) -> list[Finding]:
        """Start a fresh appliance, send ``packets`` at the configured rate, then check it once: every finding
        (repeats included), a fatal one first."""
        app = self._start(self.bench)
        dog = Watchdog(app, self.o.limits)
        checker = ReturnChecker(self.o.option_class)
        found: list[Finding] = []

        def note(f: Finding, _origin: Sent | None, _probes: bool) -> None:
            found.append(f)

        def send(s: Sent) -> None:
            self.bench.send(s, Counter())
            checker.sent(s)

        t0 = time.monotonic()
        for i, s in enumerate(packets):
            while time.monotonic() - t0 < i / self.o.rate:
                time.sleep(0.0005)
            send(s)
            if i % 64 == 63:
                self._collect(checker, note)
                if f := dog.crashed():
                    return [f, *found]
        time.sleep(self.o.settle)
        self._collect(checker, note)
        fatal = dog.check()
        if fatal is None and (self.o.probes if probes is None else probes):
            fatal = self._probe_round(checker, note, send)
        return [fatal, *found] if fatal is not None else found

    def replay_file(self, path: Path) -> tuple[list[Sent], list[Finding]]:
        """``--replay``: the datagrams of a pcap against a fresh appliance."""
        packets = reproducer.read_pcap(path)
        self.pool = TrafficPool.build(seed=self.o.seed, size=0, probes=self.o.probe_flows if self.o.probes else 0,
                                      option_class=self.o.option_class)
        with owned_tempdir("gwlb-fuzz-") as tmp, Bench(self.o.appliance, tmp) as bench:
            self.bench = bench
            return packets, self.replay(packets)

    # ------------------------------------------------------------------------------------- reproducing

    def _reproduce_all(self, records: list[Record], log: str) -> None:
        """A reproducer for every distinct finding, in report order; minimization shares one time limit."""
        deadline = time.monotonic() + self.o.minimize_seconds
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i, rec in enumerate(records, 1):
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stamp}-{i}-{rec.finding.kind}-{rec.finding.reason}")
            self.summary.found.append(self._reproduce(rec, self.o.out / name, log, deadline))

    def _reproduce(self, rec: Record, out: Path, log: str, deadline: float) -> Found:
        target = rec.finding
        budget = Budget(max_tests=self.o.minimize_replays, seconds=max(0.0, deadline - time.monotonic()))
        probes = self.o.probes and (target.kind in PROBE_KINDS or rec.probes)

        def fails(seq: list[Sent]) -> bool:
            found = self.replay(seq, probes=probes)
            shown = ", ".join(sorted({f.kind for f in found})) or "no finding"
            self.progress.line(f"reproducing {target.kind} ({target.reason}): replay {budget.tests} of at most "
                                 f"{budget.max_tests}: {len(seq):,} packets -> {shown}", force=True)
            return matches(found, target)

        window = rec.window
        items: list[Sent] = [rec.origin] if rec.origin is not None else window
        original = window if rec.origin is None or rec.origin in window else [*window, rec.origin]
        minimized = reproduced = False
        how = "not replayed (--no-minimize)"
        if self.o.minimize and budget.spent():
            how = "not replayed: the time limit for minimization was spent"
        elif self.o.minimize:
            if rec.origin is not None:
                budget.tests += 1
                if fails([rec.origin]):  # one datagram: nothing to reduce
                    minimized = reproduced = True
                    how = "the datagram whose return was judged; reproduced alone in 1 replay"
                else:
                    self.say(f"{target.kind}: the datagram whose return was judged does not reproduce it alone")
            if not reproduced and budget.spent():
                how = f"not reproduced in {budget.tests} replay(s) before the time limit for minimization was spent"
            elif not reproduced:
                everything = self._upto(rec.upto)
                self.say(f"{target.kind}: reducing {len(window):,} datagrams sent since the last check before it by "
                         "replaying them against fresh appliances ...")
                r = minimize(window, fails, budget)
                if not r.reproduced and len(everything) > len(window) and not budget.spent():
                    self.say(f"not reproduced by those alone; trying all {len(everything):,} datagrams sent until "
                             "then ...")
                    r = minimize(everything, fails, budget)
                    original = everything
                reproduced = r.reproduced
                if r.reproduced:
                    items, minimized = r.items, True
                    how = f"minimized from {len(original):,} in {budget.tests} replays" + \
                        ("" if r.complete else " (budget spent: may not be minimal)")
                else:
                    how = f"did NOT reproduce in {budget.tests} replays; the recorded datagrams are kept"
            self.progress.done()
        f = target
        script = reproducer.write(out, kind=f.kind, detail=f.detail, reason=f.reason, level=f.level,
                                  requirement=f.requirement, fatal=f.fatal, count=rec.count, sequence=items,
                                  original=original, appliance=self._appliance_meta(), seed=self.o.seed,
                                  replays=budget.tests, minimized=minimized, reproduced=reproduced, src=GWLB_IP,
                                  dst=APP_IP, log_tail=log)
        self.say(f"reproducer written: {script}")
        return Found(target, rec.count, rec.at, len(items), len(original), budget.tests, minimized, reproduced,
                     script, how, rec.upto)

    def _appliance_meta(self) -> dict[str, object]:
        spec = self.o.appliance
        return {"command": spec.command, "health_protocol": spec.health_protocol, "health_port": spec.health_port,
                "health_path": spec.health_path}


def worst(found: Sequence[Found]) -> str | None:
    """The gravest grade among ``found`` (FATAL, MUST, SHOULD), or None."""
    return min((f.finding.grade for f in found), key=("FATAL", MUST, "SHOULD").index, default=None)


def describe_command(spec: ApplianceSpec) -> str:
    return "the reference appliance" if spec.command == ApplianceSpec().command else shlex.quote(spec.command)
