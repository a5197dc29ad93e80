"""``gwlbsim bench``: GENEVE one-arm passthrough through appliances in namespaces, next to the kernel.

For every traffic pattern of the matrix (inner size x flows x outer source ports) and every subject
(kernel forwarding of the same inner traffic, the reference appliance, a naive Python handler, ...): offered
and returned packets/s, loss, latency p50/p99, the appliance's CPU time per packet; every return checked
(GENEVE header byte for byte, the flow's cookie, inner headers, source port). Then fixed offered rates
(loss at that rate), optionally a search for the highest rate with loss under a bound, and the reference
core's flow-cache memory per flow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gwlbsim import cliargs
from gwlbsim.bench import extra, memory, report, topology, xdpgen
from gwlbsim.bench import fake_gwlb as _registers_gwlb_benchmarks  # noqa: F401  (registers with extra)
from gwlbsim.bench import fastpath_programs as _registers_fastpath_benchmark  # noqa: F401  (registers with extra)
from gwlbsim.bench import hotpath as _registers_hotpath_benchmarks  # noqa: F401  (registers with extra)
from gwlbsim.bench.runner import FLOOD, Cell, Measurement, Runner, Timing, matrix, overload_summary
from gwlbsim.bench.sink import KernelSink
from gwlbsim.bench.traffic import MAX_SIZE, MIN_SIZE
from gwlbsim.bench.xdpgen import XDP_MAX_SIZE
from gwlbsim.linuxio.bpfobj import Unavailable
from gwlbsim.linuxio.netns import Lab, owned_tempdir, sigterm_raises

DEFAULT_SIZES = "64,512,1500,8500"
DEFAULT_FLOWS = "1,64,10000"
TARGET_RATE = 140_000


def _ints(v: str) -> list[int]:
    try:
        out = [int(float(x)) for x in v.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a comma-separated list of numbers") from None
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def _words(choices: tuple[str, ...]) -> Any:
    def parse(v: str) -> list[str]:
        out = [x for x in v.split(",") if x]
        bad = [x for x in out if x not in choices]
        if bad or not out:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return out

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.Parser(prog="gwlbsim bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("matrix")
    m.add_argument("--sizes", type=_ints, default=_ints(DEFAULT_SIZES), metavar="B,..",
                   help=f"inner packet sizes in bytes ({MIN_SIZE}-{MAX_SIZE}; default {DEFAULT_SIZES})")
    m.add_argument("--flows", type=_ints, default=_ints(DEFAULT_FLOWS), metavar="N,..",
                   help=f"flow counts (default {DEFAULT_FLOWS})")
    m.add_argument("--ports", type=_words(("one", "many")), default=["many"], metavar="one,many",
                   help="outer source ports: one for all flows, or many (one per flow); default many")
    m.add_argument("--subjects", type=_words(("kernel", "kernel-pass", "reference", "naive")),
                   default=["kernel", "reference", "naive"], metavar="S,..",
                   help="what to measure: kernel (forwarding), kernel-pass (forwarding with one more receive pass, "
                   "through a TUN device: what the kernel path's hand-over into gwi- alone costs a router), reference, "
                   "naive (default kernel, reference, naive)")
    m.add_argument("--workers", type=_ints, default=[], metavar="N,..",
                   help="also measure the reference with N datapath workers (--udpthreads N --tunthreads N)")
    m.add_argument("--reference-args", default="", metavar="ARGS",
                   help="extra flags for every reference instance (e.g. --no-udp-checksum)")
    m.add_argument("--no-matrix", action="store_true", help="skip the unpaced matrix (fixed rates only)")
    r = p.add_argument_group("fixed rates")
    r.add_argument("--rates", type=_ints, default=[TARGET_RATE], metavar="PPS,..",
                   help=f"offered rates to measure loss at (default {TARGET_RATE}; 0 for none)")
    r.add_argument("--rate-traffic", type=_rate_cell, default=Cell(64, 64, "many"), metavar="SIZE,FLOWS,PORTS",
                   help="the traffic of the fixed-rate runs (default 64,64,many)")
    r.add_argument("--search", action="store_true",
                   help="also search the highest rate with loss <= --max-loss (bisection, --search-steps)")
    r.add_argument("--max-loss", type=cliargs.fraction, default=0.001, help="loss bound for --search (default 0.001)")
    r.add_argument("--search-steps", type=cliargs.whole_within(1, 100), default=6)
    r.add_argument("--step-runs", type=cliargs.whole_within(1, 9), default=1, metavar="N",
                   help="offer each rate of the search N times and judge it by the median run's loss, so that "
                        "one stall of the machine does not decide a step (default 1)")
    r.add_argument("--overload", type=cliargs.seconds, default=0.0, metavar="FACTOR",
                   help="also offer FACTOR (e.g. 2) times each subject's loss-free rate (found by --search, which "
                        "this implies) open-loop, --repeat times: what it still returns (the median offer), as a "
                        "share of that rate, and the p99 latency of the queue it builds")
    t = p.add_argument_group("timing")
    t.add_argument("--duration", type=cliargs.number_within(0.1, 3600), default=2.0,
                   help="measured seconds per run (default 2)")
    t.add_argument("--warmup", type=cliargs.seconds, default=0.5, help="unmeasured seconds first (default 0.5)")
    t.add_argument("--repeat", type=cliargs.whole_within(1, 1000), default=1,
                   help="repeat everything N times: medians and spread")
    t.add_argument("--batch", type=cliargs.whole_within(1, 1024), default=64,
                   help="generator datagrams per sendmmsg (default 64)")
    t.add_argument("--window", type=cliargs.whole_within(1, 1 << 20), default=1024,
                   help="'max' runs are closed-loop: at most this many packets unanswered (default 1024, and "
                        "at most 4 MiB)")
    t.add_argument("--late", type=cliargs.positive, default=0.1, metavar="SECS",
                   help="fixed rates: a packet back later than this counts as lost, so that a queue growing "
                        "all through the window fails the rate even if it is drained afterwards (default 0.1)")
    t.add_argument("--flood", action="store_true",
                   help="also run each matrix cell open-loop, flat out (the generator takes a core; what an "
                        "overloaded appliance does)")
    t.add_argument("--split-cpus", action="store_true",
                   help="give the generator CPU 0 alone (appliances are kept off it), steer each subject's receive "
                        "processing (RPS) to the other CPUs and count returns in the kernel (a BPF program; timed, "
                        "not checked byte for byte): a kernel datapath's work is otherwise done in the generator's "
                        "own send calls, so it can "
                        "never be offered more than it takes. Open-loop offers only (the matrix's closed-loop "
                        "'max' runs are skipped)")
    t.add_argument("--generator", choices=("socket", "xdp"), default="socket",
                   help="what sends the traffic: socket (a Python process, sendmmsg on a packet socket; about "
                        "1.2 Mpps here) or xdp (an XDP program run in live-frames mode: the same frames, paced in "
                        "the kernel, about 2.3 Mpps on one CPU; open-loop offers only, inner packets up to "
                        f"{XDP_MAX_SIZE} bytes); default socket")
    t.add_argument("--quick", action="store_true",
                   help="smoke run of a few seconds: 64 B, 64 flows, short runs, 20k-flow memory figure")
    o = p.add_argument_group("other")
    o.add_argument("--memory-flows", type=cliargs.whole_within(0, 100_000_000), default=1_000_000,
                   help="flows for the flow-cache memory figure (default 1000000; 0 skips it)")
    o.add_argument("--with", dest="with_", action="append", default=[], metavar="NAME",
                   help="also run a registered extra benchmark (see --list-extras)")
    o.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these: appliance, memory, or a registered extra benchmark")
    o.add_argument("--list-extras", action="store_true", help="list registered extra benchmarks and exit")
    o.add_argument("--json", type=cliargs.output_file, metavar="FILE",
                   help="write every measurement and the summary as JSON")
    o.add_argument("--logs", type=cliargs.output_dir, metavar="DIR", help="keep appliance and agent logs here")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def _apply_quick(args: argparse.Namespace) -> None:
    args.sizes, args.flows, args.ports = [64], [64], ["many"]
    args.duration, args.warmup = 0.5, 0.2
    args.rates = [20_000]
    args.memory_flows = min(args.memory_flows, 20_000) if args.memory_flows else 0
    args.search = False


def _rate_cell(spec: str) -> Cell:
    """--rate-traffic SIZE,FLOWS,PORTS."""
    try:
        size, flows, ports = spec.split(",")
        cell = Cell(int(size), int(flows), ports)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not SIZE,FLOWS,PORTS (e.g. 64,64,many)") from None
    if not MIN_SIZE <= cell.size <= MAX_SIZE or not 1 <= cell.flows <= 1 << 20 or ports not in ("one", "many"):
        raise argparse.ArgumentTypeError(f"{spec!r}: size {MIN_SIZE}-{MAX_SIZE}, flows 1-{1 << 20}, ports one or "
                                         "many")
    return cell


def _subjects(args: argparse.Namespace) -> list[topology.SubjectSpec]:
    specs = []
    for s in args.subjects:
        if s == "kernel":
            specs.append(topology.KERNEL)
        elif s == "kernel-pass":
            specs.append(topology.KERNEL_PASS)
        elif s == "reference":
            specs.append(topology.reference(args.reference_args))
        else:
            specs.append(topology.naive())
    for n in args.workers:
        specs.append(topology.reference(f"{args.reference_args} --udpthreads {n} --tunthreads {n}",
                                        name=f"reference-w{n}"))
    return specs


def _meta(argv: list[str]) -> dict[str, Any]:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return {"command": "gwlbsim bench " + " ".join(argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(), "kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "git": rev}


def run_appliances(args: argparse.Namespace, log: Any, searches: list[dict[str, Any]],
                   overloads: list[dict[str, Any]] | None = None) -> list[Measurement]:

    specs = _subjects(args)
    timing = Timing(args.warmup, args.duration, args.batch, args.window, late=args.late)
    cells = [] if args.no_matrix else matrix(args.sizes, args.flows, args.ports)
    if args.flood:
        cells += [Cell(c.size, c.flows, c.ports, FLOOD) for c in cells]
    if args.split_cpus or args.generator == "xdp":  # returns counted in the kernel, or sent by it: open loop only
        cells = [c for c in cells if c.rate != 0]
    out: list[Measurement] = []
    rates = [r for r in args.rates if r > 0]
    searching = args.repeat * (args.search_steps * args.step_runs + (args.overload > 0)) if args.search else 0
    planned = len(specs) * (1 + args.repeat * (len(cells) + len(rates)) + searching)
    each = args.warmup + args.duration + timing.quiet + 0.2
    log(f"gwlbsim bench: about {planned} runs of about {each:.1f} s each (at most; the search may stop early): "
        f"about {planned * each / 60:.1f} min")
    started, done = time.monotonic(), [0]

    def step(message: str) -> None:
        done[0] += 1
        k, elapsed = done[0], time.monotonic() - started
        log(f"[{k}/{planned}, eta {max(0.0, elapsed / k * (planned - k)):4.0f} s] {message}")

    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_raises())
        logdir = args.logs or stack.enter_context(owned_tempdir("gwlbsim-bench-"))  # removed however the run ends
        _measure(args, step, searches, overloads, stack.enter_context(Lab()), logdir, specs, timing, cells, out)
    return out


def _measure(args: argparse.Namespace, log: Any, searches: list[dict[str, Any]],
             overloads: list[dict[str, Any]] | None, lab: Lab, logdir: Path, specs: list[topology.SubjectSpec],
             timing: Timing, cells: list[Cell], out: list[Measurement]) -> None:
    rate_cell: Cell = args.rate_traffic
    rates = [r for r in args.rates if r > 0]
    topo = topology.build(lab, specs, logdir, split_cpus=args.split_cpus, generator=args.generator)
    runner = Runner(topo, timing, log)
    try:
        for s in topo.subjects:
            runner.prime(s)
        for rep in range(args.repeat):
            for cell in cells:
                for s in topo.subjects:
                    out.append(runner.measure(s, cell, rep))
            for rate in rates:
                cell = Cell(rate_cell.size, rate_cell.flows, rate_cell.ports, float(rate))
                for s in topo.subjects:
                    out.append(runner.measure(s, cell, rep))
        if args.search:  # every subject in turn, --repeat times over: the median of each one's loss-free rates
            found: dict[str, list[tuple[float, bool]]] = {}
            for _rep in range(args.repeat):
                for s in topo.subjects:
                    start = max((m.returned_pps for m in out if m.subject == s.name
                                 and (m.cell.size, m.cell.flows) == (rate_cell.size, rate_cell.flows)),
                                default=100_000.0)
                    found.setdefault(s.name, []).append(
                        runner.search(s, rate_cell, start, args.max_loss, args.search_steps,
                                      step_runs=args.step_runs))
            for s in topo.subjects:
                rates = [r for r, _ in found[s.name]]
                best, bound = statistics.median(rates), any(b for _, b in found[s.name])
                searches.append({"subject": s.name, "size": rate_cell.size, "flows": rate_cell.flows,
                                 "ports": rate_cell.ports, "max_loss": args.max_loss, "step_runs": args.step_runs,
                                 "rate": round(best),
                                 "rates": [round(r) for r in rates], "generator_bound": bound})
                if args.overload > 0 and overloads is not None and best > 0:  # --repeat offers: the median
                    ms = [runner.overload(s, rate_cell, best, args.overload, rep) for rep in range(args.repeat)]
                    out.extend(ms)
                    ms.sort(key=lambda m: m.returned_pps)
                    row = overload_summary(s.name, best, bound, args.overload, ms[len(ms) // 2])
                    row["returned_runs_pps"] = [round(m.returned_pps) for m in ms]
                    overloads.append(row)
    finally:
        runner.close()
        topology.close(topo)


def _against_forwarding(searched: list[dict[str, Any]]) -> None:
    """Each subject's loss-free rate as a share of kernel forwarding's (``kernel_ratio``) and, with repeats, each
    round's own share (``paired_ratios``: the two were searched back to back, so that a slow spell of the
    machine weighs on both)."""
    k = next((x for x in searched if x["subject"] == "kernel" and x["rate"]), None)
    for r in searched:
        if k is None or r is k:
            continue
        r["kernel_ratio"] = round(r["rate"] / k["rate"], 3)
        pairs = [a / b for a, b in zip(r["rates"], k["rates"], strict=False) if b]
        if len(pairs) > 1:
            r["paired_ratios"] = [round(x, 3) for x in pairs]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # "gwlbsim bench -- --quick": what the subcommand's REMAINDER passes on
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    extras = extra.available()
    if args.list_extras:
        width = max((len(name) for name in extras), default=0)
        for e in extras.values():
            print(f"{e.name:<{width}}  {e.description}")
        return 0
    if args.quick:
        _apply_quick(args)
    if args.overload < 0 or 0 < args.overload <= 1:
        parser.error(f"--overload {args.overload:g}: a factor above 1 (e.g. 2: twice the loss-free rate)")
    if args.overload:
        args.search = True
    for s in args.sizes:
        if not MIN_SIZE <= s <= MAX_SIZE:
            parser.error(f"inner size {s} outside {MIN_SIZE}-{MAX_SIZE}")
    if args.generator == "xdp":
        for s in {*([] if args.no_matrix else args.sizes), args.rate_traffic.size}:
            if s > XDP_MAX_SIZE:
                parser.error(f"inner size {s}: the XDP generator sends inner packets of at most {XDP_MAX_SIZE} "
                             f"bytes (one page per frame); use --generator socket")
    wanted = set(args.only) or {"appliance", "memory", *args.with_}
    unknown = wanted - {"appliance", "memory", *extras}
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: appliance, memory, "
                     f"{', '.join(extras) or '(no extras registered)'}")
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    meta = {**_meta(argv), "generator": args.generator}
    ms: list[Measurement] = []
    sections: dict[str, Any] = {}
    if "appliance" in wanted:
        if os.geteuid() != 0:
            print("gwlbsim bench: needs root (network namespaces, TUN devices, raw sockets)", file=sys.stderr)
            return 2
        # the BPF programs asked for, loaded once now: a clear error before anything starts
        for wanted_here, option, load in ((args.split_cpus, "--split-cpus", lambda: KernelSink().close()),
                                          (args.generator == "xdp", "--generator xdp", xdpgen.check)):
            try:
                if wanted_here:
                    load()
            except Unavailable as e:
                parser.error(f"{option}: {e}")
        searched: list[dict[str, Any]] = []
        overloaded: list[dict[str, Any]] = []
        ms = run_appliances(args, log, searched, overloaded)
        print(report.results_table(report.aggregate(ms)))
        rat = report.ratios(ms)
        if rat:
            print()
            print(report.ratio_table(rat))
        if searched:
            _against_forwarding(searched)
            sections["search"] = searched
            print()
            for r in searched:
                bound = " (the generator's limit: the subject may do more)" if r["generator_bound"] else ""
                spread = (f" (median of {', '.join(f'{x:,}' for x in r['rates'])})" if len(r["rates"]) > 1
                          else "")
                ratio = f", {r['kernel_ratio']:.2f}x kernel forwarding" if "kernel_ratio" in r else ""
                if "paired_ratios" in r:
                    pairs = r["paired_ratios"]
                    ratio += (f" (round by round: {', '.join(f'{x:.2f}' for x in pairs)}; "
                              f"median {statistics.median(pairs):.2f}x)")
                print(f"{r['subject']}: highest offered rate with loss <= {r['max_loss']:.2%} "
                      f"({r['size']} B inner, {r['flows']} flows): {r['rate']:,} packets/s{spread}{ratio}{bound}")
        if overloaded:
            sections["overload"] = overloaded
            print()
            print(report.overload_text(overloaded))
        errors = sum(m.echo_errors for m in ms)
        if errors:
            print(f"\n{errors} returned packets were WRONG (header not echoed, wrong port or length):")
            for m in ms:
                for ex in m.echo_error_examples[:2]:
                    print(f"  {m.subject} {m.cell.label}: {ex}")
    if "memory" in wanted and args.memory_flows > 0:
        mem = memory.measure(args.memory_flows, min(100_000, args.memory_flows))
        sections["memory"] = mem
        print()
        print(report.memory_text(mem))
    for name in sorted(wanted - {"appliance", "memory"}):
        res = extras[name].run(args)
        sections.setdefault("extra", {})[name] = res
        print(res.get("text", f"{name}: done"))
    meta["loadavg_end"] = os.getloadavg()
    if args.json:
        report.write_json(args.json, meta, ms, sections)
    return 1 if any(m.echo_errors for m in ms) else 0
