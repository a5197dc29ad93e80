"""``gwlb-fuzz``: fuzz a live GWLB appliance's GENEVE handling over the network (or replay a reproducer).

Examples::

    gwlb-fuzz --time 300                                  # the reference appliance, 300 s at 1000/s
    gwlb-fuzz --appliance '/opt/fw/bin/fw --geneve --health {health_port}' --health-port 9000 --rate 5000
    gwlb-fuzz --replay results/20250101-120000-1-crashed-exit_1/sequence.pcap   # appliance from reproducer.json

Until the console script is installed, ``python -m gwlbsim.fuzz.cli`` does the same. Needs root (namespaces).
Exit status of a run: 0 no finding, or only SHOULD-level ones (listed, with reproducers; as in the conformance
suite, they do not fail a run); 1 a fatal or MUST-level finding; 3 only SHOULD-level findings and --strict;
2 bad options or the fuzzer could not run; 130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 hung up
(SIGHUP), everything removed. With --replay: 1 the reproducer's finding reproduced (any level; without
reproducer.json, any finding), 0 it did not, 2, 130, 143 and 129 as above.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from gwlbsim.fuzz.findings import CATALOGUE, MUST, Finding, order
from gwlbsim.fuzz.netfuzz import Found, FuzzError, NetworkFuzzer, Options, describe_command, worst
from gwlbsim.fuzz.reproducer import load_meta, recorded_finding, verdict
from gwlbsim.fuzz.watchdog import Limits

from gwlbsim import cliargs
from gwlbsim.appliance import HEALTH_PROTOCOLS, ApplianceSpec
from gwlbsim.linuxio.netns import NetnsError, require_root, sigterm_raises
from gwlbsim.linuxio.netns import exit_status as stopped_status
from gwlbsim.progress import Progress
from gwlbsim.traffic.strategies import keep_caches_out_of_the_working_directory
from gwlbsim.wire import geneve, pcap

_FINDINGS = "\n".join(
    f"  {k.name:<20} {'fatal, ' if k.fatal else ''}{k.level} {k.requirement}"
    + (" (ROBUST-2: control packets, unknown critical options)" if k.name.startswith("forwarded_m") else "")
    for k in CATALOGUE.values())

EPILOG = f"""\
The appliance command is a template (see gwlbsim.appliance): {{python}}, {{hook}}, {{health_port}},
{{flow_timeout}}, {{tunnel_timeout}}, {{netns}}, {{address}}, {{gwlb_address}}, {{index}}, {{workdir}} are filled
in. It runs in its own namespace at 10.99.0.2 and gets GENEVE from 10.99.0.1 (source ports vary) on UDP 6081;
it must send GWLB's packets back (one-arm) unless --no-probes.

Findings (kind: level and conformance requirement; see docs/fuzzing.md):
{_FINDINGS}
A fatal finding stops the sending; any other is recorded (repeats counted) and fuzzing goes on. At the end
each distinct finding, fatal first, then MUST, then SHOULD, is confirmed by replay against fresh instances
(reduced to a small sequence unless one known datagram caused it) and written as a reproducer directory
under --out (sequence.pcap, replay.sh, reproducer.json).

Exit status: 0 no finding or only SHOULD-level ones, 1 a fatal or MUST-level finding, 3 only SHOULD-level
findings with --strict, 2 bad options or the fuzzer could not run. --replay: 1 the finding reproduced, else 0.
"""


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.Parser(prog="gwlb-fuzz", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appliance", metavar="CMD", help="appliance command template (default: the reference)")
    p.add_argument("--health-port", type=cliargs.port, default=None, metavar="PORT", help="health check port (8080)")
    p.add_argument("--health-protocol", choices=HEALTH_PROTOCOLS, default=None,
                   help="health check: HTTP 200, TCP connect, or none (default http)")
    p.add_argument("--health-path", default=None, metavar="PATH", help="HTTP health path (default /)")
    p.add_argument("--ready-timeout", type=cliargs.positive, default=20.0, metavar="SECS",
                   help="seconds for a fresh instance to become healthy (default 20)")
    p.add_argument("--rate", type=cliargs.positive, default=1000.0, metavar="PPS", help="datagrams per second (1000)")
    p.add_argument("--time", type=cliargs.positive, default=60.0, metavar="SECS", help="seconds of sending (60)")
    p.add_argument("--seed", type=cliargs.whole, default=None, help="random seed (default 0; with --replay: the run's)")
    p.add_argument("--out", type=cliargs.output_dir, default=Path("gwlb-fuzz-results"), metavar="DIR",
                   help="where reproducers go (default ./gwlb-fuzz-results)")
    p.add_argument("--replay", type=_pcap_file, metavar="PCAP", help="replay a sequence against a fresh appliance")
    g = p.add_argument_group("tuning")
    g.add_argument("--check-interval", type=cliargs.positive, default=1.0, metavar="SECS",
                   help="seconds of traffic between checks (1)")
    g.add_argument("--probe-timeout", type=cliargs.positive, default=3.0, metavar="SECS",
                   help="seconds to wait for valid flows to come back (3)")
    g.add_argument("--health-timeout", type=cliargs.positive, default=3.0, metavar="SECS",
                   help="seconds before an unanswered health check counts as a hang (3)")
    g.add_argument("--settle", type=cliargs.positive, default=0.2, metavar="SECS",
                   help="pause after sending before checking, in runs and replays (0.2)")
    g.add_argument("--no-probes", action="store_true", help="do not check that valid flows are returned")
    g.add_argument("--oversize", type=_share, default=0.005, metavar="SHARE",
                   help="share of datagrams above the link MTU, up to 65,000 bytes (0.005; 0: none)")
    g.add_argument("--pool", type=cliargs.whole_within(10, 100_000), default=400, metavar="N",
                   help="distinct generated packets per kind, 10-100000 (400)")
    g.add_argument("--max-fd-growth", type=cliargs.whole, default=64, metavar="N",
                   help="descriptor growth allowed (64)")
    g.add_argument("--max-device-growth", type=cliargs.whole, default=None, metavar="N",
                   help="device growth allowed (default: 2 per endpoint used + 16)")
    g.add_argument("--no-minimize", action="store_true",
                   help="do not replay findings: write what was recorded as reproducers")
    g.add_argument("--minimize-time", type=cliargs.positive, default=300.0, metavar="SECS",
                   help="time limit for confirming and minimizing all findings together (300)")
    p.add_argument("--strict", action="store_true", help="exit with status 3 when only SHOULD-level findings")
    g.add_argument("--option-class", type=cliargs.option_class, default=geneve.AWS_OPTION_CLASS, metavar="N",
                   help="option class of the GWLB options (default 0x0108)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_caches_out_of_the_working_directory()
    meta = None
    if args.replay is not None:
        meta = load_meta(args.replay)
    base = (meta or {}).get("appliance", {})
    try:
        spec = ApplianceSpec(command=args.appliance or base.get("command") or ApplianceSpec().command,
                             health_protocol=args.health_protocol or base.get("health_protocol", "http"),
                             health_port=args.health_port or base.get("health_port", 8080),
                             health_path=args.health_path or base.get("health_path", "/"),
                             ready_timeout=args.ready_timeout,
                             name="reference" if not (args.appliance or base) else "appliance")
    except ValueError as e:
        parser.error(str(e))
    try:
        require_root("gwlb-fuzz (network namespaces)")
    except NetnsError as e:
        print(f"gwlb-fuzz: {e}", file=sys.stderr)
        return 2

    seed = args.seed if args.seed is not None else int((meta or {}).get("seed", 0))
    options = Options(appliance=spec, rate=args.rate, duration=args.time, seed=seed, out=args.out,
                      check_interval=args.check_interval, probe_timeout=args.probe_timeout, settle=args.settle,
                      probes=not args.no_probes, pool_size=args.pool, oversize=args.oversize,
                      limits=Limits(args.max_fd_growth, args.max_device_growth, args.health_timeout),
                      minimize=not args.no_minimize, minimize_seconds=args.minimize_time,
                      option_class=args.option_class)
    progress = Progress(stream=sys.stderr)
    fuzzer = NetworkFuzzer(options, progress, say=lambda m: progress.note(f"gwlb-fuzz: {m}"))
    fuzzer.summary.command = describe_command(spec)
    try:
        with sigterm_raises():
            if args.replay is not None:
                return _replay(fuzzer, args.replay)
            summary = fuzzer.run()
    except FuzzError as e:
        progress.done()
        print(f"gwlb-fuzz: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        progress.done()
        print(f"gwlb-fuzz: {str(e) or 'SIGINT'}: stopped", file=sys.stderr)
        return stopped_status(e)
    print(summary.render())
    return exit_status(summary.found, strict=args.strict)


def exit_status(found: Sequence[Found], *, strict: bool = False) -> int:
    """A run's exit status from its findings: 1 fatal or MUST, 3 only SHOULD with ``strict``, else 0."""

    grade = worst(found)
    if grade in ("FATAL", MUST):
        return 1
    return 3 if grade is not None and strict else 0


def _replay(fuzzer: object, path: Path) -> int:

    assert isinstance(fuzzer, NetworkFuzzer)
    packets, findings = fuzzer.replay_file(path)
    print(f"gwlb-fuzz: replayed {len(packets)} datagram(s) from {path} against {fuzzer.summary.command}")
    for i, p in enumerate(packets[:20]):
        print(f"  {i + 1:3}: {p.label or 'unlabelled'} ({verdict(p.payload, fuzzer.o.option_class)}), "
              f"{len(p.payload)} bytes from port {p.sport}: "
              f"{p.payload[:24].hex()}{'...' if len(p.payload) > 24 else ''}")
    if len(packets) > 20:
        print(f"  ... and {len(packets) - 20} more")
    want = recorded_finding(load_meta(path))
    kind, reason = want.get("kind"), want.get("reason")

    def is_wanted(f: Finding) -> bool:  # a fatal finding is the same whatever its exit status or signal
        return not kind or (f.kind == kind and (f.fatal or not reason or f.reason == reason))

    counts = Counter(f.key for f in findings)
    first = {f.key: f for f in reversed(findings)}
    reproduced = False
    for key in sorted(counts, key=lambda k: order(first[k])):  # fatal first, then MUST, then SHOULD
        f = first[key]
        times = "" if counts[key] == 1 else f" ({counts[key]} times)"
        if is_wanted(f):
            reproduced = True
            print(f"gwlb-fuzz: REPRODUCED {f.describe()}{times}")
        else:
            print(f"gwlb-fuzz: also found {f.describe()}{times}")
    if not reproduced:
        print("gwlb-fuzz: did not reproduce" + (f" {kind}" + (f" ({reason})" if reason else "") if kind else "")
              + ("" if findings else ": no finding, the appliance survived the sequence"))
        return 0
    return 1


def _pcap_file(text: str) -> Path:
    """--replay: an existing, readable classic pcap file."""
    path = cliargs.input_file(text)
    try:
        pcap.read(path)
    except (OSError, pcap.PcapError) as e:
        raise argparse.ArgumentTypeError(f"{text}: {e}") from None
    return path


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not within 0-1")
    return v


if __name__ == "__main__":
    sys.exit(main())
