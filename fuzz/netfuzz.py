"""The network fuzzer: generated GENEVE traffic at a live appliance in a namespace, watched, failures minimized.

An appliance (any command template, see :mod:`gwlbsim.appliance`; the reference by default) runs in its own
namespace, linked by a veth pair to a "gwlb" namespace from which the fuzzer sends, from ``10.99.0.1`` to the
appliance at ``10.99.0.2`` port 6081, a paced mix of valid, malformed and mutated datagrams
(:mod:`fuzz.traffic_pool`). Every ``check_interval`` seconds it pauses and checks (:mod:`fuzz.watchdog`):
process alive, health answering, descriptors and devices bounded, and every probe flow returned with the
latest header; every datagram the appliance sends back must be one GWLB accepts.

On the first failure it stops and reduces the packets sent since the last good check (or, if those alone do
not reproduce it, everything sent) by replaying subsequences against a fresh appliance (:mod:`fuzz.minimize`),
then writes a reproducer (:mod:`fuzz.reproducer`).
"""

from __future__ import annotations

import random
import shlex
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fuzz import reproducer
from fuzz.minimize import Budget, minimize
from fuzz.packets import GwlbFlow
from fuzz.progress import Progress
from fuzz.reproducer import Sent
from fuzz.traffic_pool import PROBE_ENIS, TrafficPool, TrafficSource
from fuzz.watchdog import Failure, Limits, ReturnChecker, Watchdog
from gwlbsim import geneve
from gwlbsim.appliance import ApplianceError, ApplianceSpec, RunningAppliance
from gwlbsim.flowkey import InnerError, symmetric_key
from gwlbsim.netns import Lab
from gwlbsim.probe import GenevePeer

GWLB_IP, APP_IP = "10.99.0.1", "10.99.0.2"
LINK_MTU = 9001
_PROBE_KINDS = ("lost_flow", "wrong_return")


class FuzzError(RuntimeError):
    """The fuzzer could not do its job (the appliance does not start, or never returns valid traffic)."""


@dataclass
class Options:
    appliance: ApplianceSpec = field(default_factory=ApplianceSpec)
    rate: float = 1000.0  #: datagrams per second while sending
    duration: float = 60.0  #: seconds of sending (checks and minimization come on top)
    seed: int = 0
    out: Path = Path("gwlb-fuzz-results")
    check_interval: float = 1.0
    settle: float = 0.2  #: pause between the last datagram and the checks
    probe_timeout: float = 3.0
    probes: bool = True  #: check that valid flows are still returned (needs an appliance that returns them)
    probe_flows: int = 4
    pool_size: int = 400
    mix: tuple[int, int, int] = (3, 5, 2)  #: weights of valid, malformed, havoc
    limits: Limits = field(default_factory=Limits)
    minimize: bool = True
    minimize_seconds: float = 300.0
    minimize_replays: int = 150
    history: int = 200_000  #: datagrams kept for replay
    option_class: int = geneve.AWS_OPTION_CLASS


@dataclass
class Found:
    failure: Failure
    packets: int
    original: int
    replays: int
    minimized: bool
    reproduced: bool
    script: Path | None


@dataclass
class Summary:
    seconds: float = 0.0
    sending_seconds: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)
    send_errors: Counter[str] = field(default_factory=Counter)
    returns: int = 0
    probe_rounds: int = 0
    checks: int = 0
    found: list[Found] = field(default_factory=list)
    command: str = ""
    seed: int = 0
    fds: tuple[int, int] = (0, 0)
    devices: tuple[int, int] = (0, 0)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def render(self) -> str:
        valid = self.sent["valid"] + self.sent["probe"] + self.sent["havoc:valid"]
        havoc = self.sent["havoc"] + self.sent["havoc:valid"]
        malformed = self.total - valid - self.sent["havoc"]
        rate = self.total / self.sending_seconds if self.sending_seconds else 0.0
        lines = [f"gwlb-fuzz: {self.seconds:.1f} s against {self.command} (seed {self.seed})",
                 f"  sent {self.total:,} datagrams ({rate:,.0f}/s while sending): valid {valid:,} "
                 f"(probes {self.sent['probe']:,}), malformed {malformed:,}, havoc {havoc:,} "
                 f"(valid {self.sent['havoc:valid']:,})"]
        by_class = sorted((k, v) for k, v in self.sent.items()
                          if k not in ("valid", "probe", "havoc", "havoc:valid"))
        for i in range(0, len(by_class), 4):
            lines.append("    " + ", ".join(f"{k} {v:,}" for k, v in by_class[i:i + 4]))
        if self.send_errors:
            lines.append("  send errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.send_errors.items())))
        lines.append(f"  returns {self.returns:,}; {self.probe_rounds} probe rounds; {self.checks} checks; "
                     f"fds {self.fds[0]} -> {self.fds[1]}; devices {self.devices[0]} -> {self.devices[1]}")
        if not self.found:
            lines.append("  failures: none")
        for f in self.found:
            lines.append(f"  FAILURE {f.failure.kind}: {f.failure.detail}")
            how = (f"minimized from {f.original:,} in {f.replays} replays" if f.minimized
                   else "not minimized" if f.reproduced else "did NOT reproduce on replay; full window kept")
            lines.append(f"    reproducer: {f.script} ({f.packets:,} packets, {how})")
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


class NetworkFuzzer:
    def __init__(self, options: Options, progress: Progress | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.o = options
        self.progress = progress or Progress()
        self.say = say or self.progress.message
        self.summary = Summary(command=options.appliance.command, seed=options.seed)
        self._cookie = random.Random(options.seed).randrange(1 << 32)

    # ---------------------------------------------------------------------------------------------- fuzzing

    def run(self) -> Summary:
        started = time.monotonic()
        self.say(f"building traffic pools (seed {self.o.seed}) ...")
        self.pool = TrafficPool.build(seed=self.o.seed, size=self.o.pool_size, probes=self.o.probe_flows,
                                      option_class=self.o.option_class)
        source = TrafficSource(self.pool, random.Random(self.o.seed), mix=self.o.mix)
        history: deque[Sent] = deque(maxlen=self.o.history)
        with tempfile.TemporaryDirectory(prefix="gwlb-fuzz-") as tmp, Bench(self.o.appliance, Path(tmp)) as bench:
            self.bench = bench
            if self.o.limits.device_growth is None:  # two devices per endpoint (as gwlbtun) and some slack
                self.o.limits = replace(self.o.limits, device_growth=2 * len(self.pool.allowed_enis) + 16)
            app = self._start(bench)
            dog = Watchdog(app, self.o.limits)
            checker = ReturnChecker(self.o.option_class)
            self.summary.fds = (dog.base_fds, dog.base_fds)
            self.summary.devices = (dog.base_devices, dog.base_devices)
            failure = self._probe_round(history, checker) if self.o.probes else None
            if failure is not None:
                raise FuzzError(f"the appliance did not return valid traffic at the start ({failure.detail}); "
                                "the fuzzer needs an appliance that sends GWLB's packets back (e.g. with a one-arm "
                                "passthrough hook), or --no-probes\n" + app.output_tail())
            window_start = self.summary.total  # datagrams sent before the last good check
            self._fuzz_start = time.monotonic()
            end = self._fuzz_start + self.o.duration
            while failure is None and time.monotonic() < end:
                failure = self._burst(source, min(end, time.monotonic() + self.o.check_interval), history, checker,
                                      dog)
                if failure is None:
                    time.sleep(self.o.settle)
                    failure = self._collect(checker) or dog.check()
                    self.summary.checks += 1
                    if failure is None and self.o.probes:
                        failure = self._probe_round(history, checker)
                self.summary.returns = checker.returns
                self.summary.fds = (dog.base_fds, dog.fds)
                self.summary.devices = (dog.base_devices, dog.devices)
                if failure is None:
                    window_start = self.summary.total
                self._show()
            self._show(final=True)
            self.progress.done()
            if failure is not None:
                log = app.output_tail(80)
                packets = list(history)  # the last ``history`` datagrams sent (all of them, usually)
                window = packets[len(packets) - min(len(packets), self.summary.total - window_start):]
                self.summary.found.append(self._handle(failure, window, packets, log))
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _start(self, bench: Bench) -> RunningAppliance:
        try:
            return bench.start()
        except ApplianceError as e:
            raise FuzzError(str(e)) from None

    def _burst(self, source: TrafficSource, until: float, history: deque[Sent], checker: ReturnChecker,
               dog: Watchdog) -> Failure | None:
        t0 = time.monotonic()
        sent = 0
        last_alive = t0
        try:
            while (now := time.monotonic()) < until:
                due = int((now - t0) * self.o.rate) + 1
                batch = 0
                while sent < due and batch < 256:  # after a stall, catch up gradually
                    s = source.next()
                    self.bench.send(s, self.summary.send_errors)
                    history.append(s)
                    checker.sent(s.payload)
                    self.summary.sent[s.label] += 1
                    sent += 1
                    batch += 1
                if f := self._collect(checker):
                    return f
                if now - last_alive > 0.05:
                    if f := dog.crashed():
                        return f
                    last_alive = now
                self._show()
                time.sleep(0.001)
            return None
        finally:
            self.summary.sending_seconds += time.monotonic() - t0

    def _collect(self, checker: ReturnChecker) -> Failure | None:
        for payload in self.bench.receive():
            if f := checker.received(payload):
                return f
        return None

    def _probe_round(self, history: deque[Sent] | list[Sent], checker: ReturnChecker,
                     tally: bool = True) -> Failure | None:
        """Send every probe flow with a fresh cookie; each must come back with exactly that header.

        ``tally``: count what is sent in the summary (not for replays)."""
        if f := self._collect(checker):
            return f
        expected: dict[tuple[int, object], tuple[bytes, GwlbFlow]] = {}
        for flow in self.pool.probes:
            self._cookie = (self._cookie + 1) & 0xFFFFFFFF
            vp = flow.packet("forward", self._cookie)
            s = Sent(flow.sport, vp.payload, "probe")
            self.bench.send(s, self.summary.send_errors)
            history.append(s)
            checker.sent(s.payload)
            if tally:
                self.summary.sent["probe"] += 1
            expected[(flow.eni_id, flow.key)] = (vp.header_bytes, flow)
        if tally:
            self.summary.probe_rounds += 1
        deadline = time.monotonic() + self.o.probe_timeout
        got: set[tuple[int, object]] = set()
        while len(got) < len(expected) and (left := deadline - time.monotonic()) > 0:
            for payload in self.bench.receive(left):
                if f := checker.received(payload):
                    return f
                s = geneve.scan(payload, option_class=self.o.option_class)
                if s.eni_id not in PROBE_ENIS:
                    continue
                try:
                    key = (s.eni_id, symmetric_key(payload, s.header_len, s.header_len + s.inner_len))
                except InnerError:
                    continue
                if key in expected:
                    want, flow = expected[key]
                    if payload[:s.header_len] != want:
                        return Failure("wrong_return", f"probe flow {flow.forward.five_tuple().describe()} of ENI "
                                                       f"{flow.eni_id:016x} came back with header "
                                                       f"{payload[:s.header_len].hex()}, the latest sent was "
                                                       f"{want.hex()}")
                    got.add(key)
        missing = [expected[k][1] for k in expected if k not in got]
        if missing:
            flows = "; ".join(f"{f.forward.five_tuple().describe()} (ENI {f.eni_id:016x})" for f in missing)
            return Failure("lost_flow", f"{len(missing)} of {len(expected)} probe flows not returned within "
                                        f"{self.o.probe_timeout:g} s: {flows}")
        return None

    def _show(self, final: bool = False) -> None:
        s = self.summary
        elapsed = time.monotonic() - getattr(self, "_fuzz_start", time.monotonic())
        self.progress.update(f"[{elapsed:5.1f}/{self.o.duration:g} s] sent {s.total:,} "
                             f"(valid {s.sent['valid'] + s.sent['probe']:,}, havoc {s.sent['havoc']:,}), "
                             f"returns {s.returns:,}, checks {s.checks}, fds {s.fds[1]}, devices {s.devices[1]}",
                             force=final)

    # ----------------------------------------------------------------------------------------- replaying

    def replay(self, packets: Sequence[Sent], *, probes: bool | None = None) -> Failure | None:
        """Start a fresh appliance, send ``packets`` at the configured rate, then check it once."""
        app = self._start(self.bench)
        dog = Watchdog(app, self.o.limits)
        checker = ReturnChecker(self.o.option_class)
        t0 = time.monotonic()
        for i, s in enumerate(packets):
            while time.monotonic() - t0 < i / self.o.rate:
                time.sleep(0.0005)
            self.bench.send(s, Counter())
            checker.sent(s.payload)
            if i % 64 == 63 and (f := self._collect(checker) or dog.crashed()):
                return f
        time.sleep(self.o.settle)
        f = self._collect(checker) or dog.check()
        if f is None and (self.o.probes if probes is None else probes):
            f = self._probe_round([], checker, tally=False)
        return f

    def replay_file(self, path: Path) -> tuple[list[Sent], Failure | None]:
        """``--replay``: the datagrams of a pcap against a fresh appliance."""
        packets = reproducer.read_pcap(path)
        self.pool = TrafficPool.build(seed=self.o.seed, size=0, probes=self.o.probe_flows if self.o.probes else 0,
                                      option_class=self.o.option_class)
        with tempfile.TemporaryDirectory(prefix="gwlb-fuzz-") as tmp, Bench(self.o.appliance, Path(tmp)) as bench:
            self.bench = bench
            return packets, self.replay(packets)

    def _handle(self, failure: Failure, window: list[Sent], everything: list[Sent], log: str) -> Found:
        self.say(f"FAILURE {failure.kind}: {failure.detail}")
        budget = Budget(max_tests=self.o.minimize_replays, seconds=self.o.minimize_seconds)
        probes = failure.kind in _PROBE_KINDS

        def fails(seq: list[Sent]) -> bool:
            f = self.replay(seq, probes=probes)
            self.progress.update(f"minimizing: replay {budget.tests} of at most {budget.max_tests}: "
                                 f"{len(seq):,} packets -> {f.kind if f else 'no failure'}", force=True)
            return f is not None and f.kind == failure.kind

        items, minimized, reproduced = window, False, False
        if self.o.minimize:
            self.say(f"reducing {len(window):,} datagrams sent since the last good check by replaying them "
                     "against fresh appliances ...")
            r = minimize(window, fails, budget)
            if not r.reproduced and len(everything) > len(window):
                self.say(f"not reproduced by those alone; trying all {len(everything):,} datagrams sent ...")
                r = minimize(everything, fails, budget)
                items = everything
            self.progress.done()
            reproduced = r.reproduced
            if r.reproduced:
                items, minimized = r.items, True
        out = self.o.out / f"{time.strftime('%Y%m%d-%H%M%S')}-{failure.kind}"
        spec = self.o.appliance
        script = reproducer.write(out, kind=failure.kind, detail=failure.detail, sequence=items,
                                  original=window if len(items) <= len(window) else everything,
                                  appliance={"command": spec.command, "health_protocol": spec.health_protocol,
                                             "health_port": spec.health_port, "health_path": spec.health_path},
                                  seed=self.o.seed, replays=budget.tests, minimized=minimized, reproduced=reproduced,
                                  src=GWLB_IP, dst=APP_IP, log_tail=log)
        self.say(f"reproducer written: {script}")
        return Found(failure, len(items), len(window), budget.tests, minimized, reproduced, script)


def describe_command(spec: ApplianceSpec) -> str:
    return "the reference appliance" if spec.command == ApplianceSpec().command else shlex.quote(spec.command)

