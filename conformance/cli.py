"""``gwlb-conformance``: validate a GWLB appliance, requirement by requirement.

With no arguments it validates the built-in reference appliance. ``--appliance 'CMD'`` validates any other
(see ``--help`` for the placeholders). It runs the suite through pytest, so pytest's options can follow
``--`` (e.g. ``-- -k cookie -x``). Every option is checked before anything starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from gwlbsim.conformance import results
from gwlbsim.conformance.plugin import SUITE_DIR
from gwlbsim.conformance.requirements import REQUIREMENTS, markdown_table

from gwlbsim import cliargs
from gwlbsim.appliance import DATAPATHS, HEALTH_PROTOCOLS, MODES, ApplianceSpec
from gwlbsim.linuxio.netns import redelivering

EPILOG = """\
Placeholders in --appliance: {python} this Python; {hook} the shipped passthrough hook for gwlbtun-style
handlers (use as: -c 'sh {hook}' -r 'sh {hook}'); {hook:MODE} a deployment mode's (routed, nat, local);
{health_port}; {flow_timeout}; {tunnel_timeout}; {netns};
{address} (the appliance's address); {gwlb_address}; {index} (instance number); {workdir} (the run's
fresh temporary directory, shared by the instances, also their working directory: an appliance that reads
its configuration from the current directory needs an absolute path or a wrapper; use {index} in file names).

Example, AWS's gwlbtun:
  gwlb-conformance --appliance "/opt/gwlbtun -c 'sh {hook}' -r 'sh {hook}' -p {health_port} -t 3 -i 5" \\
      --tunnel-timeout 3 --flow-timeout 5

Verdicts per requirement: PASS, FAIL, NOT APPLICABLE (cannot apply to this kind of appliance, with the
reason), NOT RUN (applies, but this run could not check it: the reason says what to give).

Exit status: 0 conformant (every MUST requirement in scope ran and passed, or does not apply); 1 a MUST
requirement failed; 2 bad usage (nothing was started); 3 could not run (the appliance could not be started
or never became ready; every requirement NOT RUN); 4 incomplete (no MUST failed, but a MUST requirement in
scope did not run); 130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP). Every run removes
what it created.
Needs root.
"""


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.Parser(prog="gwlb-conformance", description="Validate a GWLB appliance against what "
                                "AWS Gateway Load Balancer needs, requirement by requirement.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appliance", metavar="CMD", help="appliance command template (default: the reference)")
    p.add_argument("--mode", choices=tuple(MODES), default="passthrough",
                   help="how the appliance is deployed (the reference gets that mode's shipped hook, {hook:MODE}): "
                   + "; ".join(f"{m}: {d}" for m, d in MODES.items()) + ". Requirements of another mode are NOT "
                   "APPLICABLE")
    p.add_argument("--datapath", choices=DATAPATHS, default="auto",
                   help="the built-in reference's datapath: kernel (its eBPF fast path), python, or auto (default: "
                   "the kernel path where it can run); not with --appliance")
    p.add_argument("--kind", choices=("auto", "gwlbtun", "reflector"), default="auto",
                   help="gwlbtun: tunnel devices (gwi-/gwo-) and hooks; reflector: none (raw socket, kernel "
                   "NAT); auto (default): detected from the first packet. Decides what is NOT APPLICABLE")
    p.add_argument("--health-protocol", choices=HEALTH_PROTOCOLS, default="http",
                   help="how the appliance answers health checks; none: no health checks at all")
    p.add_argument("--health-port", type=cliargs.port, default=8080)
    p.add_argument("--health-path", default="/")
    p.add_argument("--instances", type=cliargs.whole_within(1, 8), default=2,
                   help="instances to run, 1-8 (symmetry and failover need 2; default 2)")
    p.add_argument("--nodes", type=cliargs.whole_within(1, 4), default=2,
                   help="GWLB nodes (zones), 1-4, with cross-zone load balancing: every instance gets traffic "
                        "from every node and must answer each at its own address (default 2)")
    p.add_argument("--ready-timeout", type=cliargs.number_within(0.5, 600), default=20.0, metavar="SECS",
                   help="seconds an instance may take to become healthy (0.5-600)")
    p.add_argument("--flow-timeout", type=cliargs.number_within(0.5, 86400), metavar="SECS",
                   help="the appliance's configured flow timeout (TCP flows; also the others unless "
                        "--other-flow-timeout says otherwise)")
    p.add_argument("--other-flow-timeout", type=cliargs.number_within(0.5, 86400), metavar="SECS",
                   help="the appliance's flow timeout for non-TCP flows, if it differs")
    p.add_argument("--long", action="store_true",
                   help="also run the checks that wait for minutes (an idle flow of up to GWLB's 350 s)")
    p.add_argument("--tunnel-timeout", type=cliargs.number_within(0, 86400), metavar="SECS",
                   help="the appliance's configured tunnel idle timeout (0: none)")
    p.add_argument("--rate", type=cliargs.number_within(1, 1_000_000), default=2000.0,
                   help="packets/s for the sustained-traffic check")
    p.add_argument("--duration", type=cliargs.number_within(0.5, 3600), default=5.0,
                   help="seconds of sustained traffic")
    p.add_argument("--flows", type=cliargs.whole_within(1000, 10_000_000), default=100_000,
                   help="distinct flows driven through each instance, 1000-10000000 (default 100000)")
    p.add_argument("--flow-rate", type=cliargs.number_within(100, 10_000_000), default=5_000.0, metavar="N",
                   help="new flows per second per instance the appliance takes (default 5000)")
    p.add_argument("--examples", type=cliargs.whole_within(1, 100_000), default=30,
                   help="Hypothesis examples per property")
    p.add_argument("--requirements", metavar="IDS", type=_requirement_ids,
                   help="only these requirement ids, comma-separated (see --list)")
    p.add_argument("--policy-drops", metavar="IDS", type=_requirement_ids,
                   help="requirements whose test traffic (see docs/conformance.md) the appliance's policy drops on "
                   "purpose: reported NOT APPLICABLE, marked as declared")
    p.add_argument("--artifacts", type=Path, default=Path("conformance-artifacts"),
                   help="pcaps, hex dumps, logs and crash reproducers of failures (default ./conformance-artifacts)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--json", type=Path, metavar="FILE", help="write results as JSON")
    p.add_argument("--list", action="store_true", help="print the requirements (Markdown) and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="less pytest output")
    p.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest (-k, -x ...)")
    return p


def _requirement_ids(text: str) -> str:
    ids = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in ids if r not in REQUIREMENTS]
    if unknown or not ids:
        raise argparse.ArgumentTypeError(f"unknown requirement(s) {', '.join(unknown) or '(none given)'}; "
                                         "see --list")
    return ",".join(ids)


def check_options(args: argparse.Namespace) -> str | None:
    """Everything that can be wrong before anything starts: the one-line reason, or None."""
    for opt in ("junit", "html", "json"):
        path: Path | None = getattr(args, opt)
        if path is not None and not path.parent.is_dir():
            return f"--{opt} {path}: directory {path.parent} does not exist"
        if path is not None and path.is_dir():
            return f"--{opt} {path}: is a directory"
    if not args.artifacts.parent.is_dir():
        return f"--artifacts {args.artifacts}: directory {args.artifacts.parent} does not exist"
    if args.artifacts.exists() and not args.artifacts.is_dir():
        return f"--artifacts {args.artifacts}: not a directory"
    if not args.health_path.startswith("/"):
        return f"--health-path {args.health_path!r}: must start with /"
    if args.appliance is not None and args.datapath != "auto":
        return "--datapath chooses the built-in reference's datapath; with --appliance, put it in the command"
    if args.appliance is not None:
        if not args.appliance.strip():
            return "--appliance: empty command"
        try:
            ApplianceSpec(command=args.appliance, health_protocol=args.health_protocol,
                          health_port=args.health_port, ready_timeout=args.ready_timeout)
        except ValueError as e:
            return f"--appliance: {e}"
    return None


def missing_command(args: argparse.Namespace) -> str | None:
    """The appliance's program, when it cannot be found (a run that could not run, not a usage error)."""
    if args.appliance is None:
        return None

    prog = ApplianceSpec(command=args.appliance).program()
    if "/" in prog:
        if not os.path.isfile(prog) or not os.access(prog, os.X_OK):
            return f"command not found or not executable: {prog}"
    elif shutil.which(prog) is None:
        return f"command not found: {prog}"
    return None


#: a correct appliance's run, per requirement, beyond its sustained traffic and its flows (measured: the reference's
#: whole suite, 38 requirements, takes about 100 s on two vCPUs)
_SECONDS_PER_REQUIREMENT = 2.0


def expected_duration(args: argparse.Namespace) -> str:
    """What to expect up front: a correct appliance's run time (a faulty one's is similar: every check stops at
    its first evidence; --long adds the minutes of GWLB's idle timeout)."""
    n = len(args.requirements.split(",")) if args.requirements else len(REQUIREMENTS)
    scale = args.flows / args.flow_rate if not args.requirements or "ROBUST-8" in args.requirements else 0.0
    seconds = n * _SECONDS_PER_REQUIREMENT + scale + args.duration + (400.0 if args.long else 0.0)
    return (f"gwlb-conformance: {n} requirement(s), {args.instances} instance(s); expect about "
            f"{seconds / 60:.0f} min" if seconds >= 90 else f"gwlb-conformance: {n} requirement(s), "
            f"{args.instances} instance(s); expect about {seconds:.0f} s")


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that pytest tears everything down."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


_OWNER = os.getpid()
_STOPPING = (signal.SIGTERM, signal.SIGHUP)


def _on_signal(signum: int, frame: object) -> None:
    if os.getpid() != _OWNER:  # a forked helper (pyroute2 forks some) inherited this handler: just die
        os._exit(128 + signum)
    raise _Terminated(signum)


class _Outcome:
    """Catches the run's results as pytest finishes (a plugin object handed to pytest.main)."""

    def __init__(self) -> None:
        self.results: results.Results | None = None
        self.interrupted = False
        self.exit_status = results.EXIT_INTERRUPTED  #: 128 + the signal that stopped the run

    def pytest_sessionstart(self, session: Any) -> None:
        # after pytest has put in its own unraisable-exception hook (which would turn a stop signal raised in
        # an at-fork callback into a warning, and the run would go on): such a signal is sent again
        sys.unraisablehook = redelivering(sys.unraisablehook)

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        self.results = session.config.stash.get(results.RESULTS, None)

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.interrupted = True
        if isinstance(excinfo.value, _Terminated):
            self.exit_status = 128 + excinfo.value.signum


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(markdown_table())
        return 0
    problem = check_options(args)
    if problem:
        parser.exit(results.EXIT_USAGE, f"gwlb-conformance: {problem}\n")
    if os.geteuid() != 0:
        parser.exit(results.EXIT_USAGE, "gwlb-conformance: needs root (it builds network namespaces, veths and "
                    "TUN devices)\n")
    missing = missing_command(args)
    if missing:
        print(f"gwlb-conformance: COULD NOT RUN: {missing}", file=sys.stderr)
        return results.EXIT_COULD_NOT_RUN
    if not args.quiet:
        print(expected_duration(args), file=sys.stderr, flush=True)
    from gwlbsim.traffic.strategies import keep_caches_out_of_the_working_directory

    keep_caches_out_of_the_working_directory()  # the run's children (appliances) inherit it too
    import pytest

    pa = [str(SUITE_DIR), "--gwlb-conformance", "-p", "no:cacheprovider", "-o", "addopts=", "-o", "testpaths=",
          "--gwlb-health-protocol", args.health_protocol, "--gwlb-health-port", str(args.health_port),
          "--gwlb-health-path", args.health_path, "--gwlb-instances", str(args.instances),
          "--gwlb-nodes", str(args.nodes),
          "--gwlb-ready-timeout", str(args.ready_timeout), "--gwlb-rate", str(args.rate),
          "--gwlb-duration", str(args.duration),
          "--gwlb-flows", str(args.flows), "--gwlb-flow-rate", str(args.flow_rate),
          "--gwlb-examples", str(args.examples),
          "--gwlb-artifacts", str(args.artifacts), "--gwlb-kind", args.kind, "--gwlb-mode", args.mode,
          "--gwlb-datapath", args.datapath,
          "--rootdir", str(Path(__file__).parent)]
    if args.appliance is not None:
        pa += ["--gwlb-appliance", args.appliance]
    if args.flow_timeout is not None:
        pa += ["--gwlb-flow-timeout", str(args.flow_timeout)]
    if args.other_flow_timeout is not None:
        pa += ["--gwlb-other-flow-timeout", str(args.other_flow_timeout)]
    if args.long:
        pa += ["--gwlb-long"]
    if args.tunnel_timeout is not None:
        pa += ["--gwlb-tunnel-timeout", str(args.tunnel_timeout)]
    if args.requirements:
        pa += ["--gwlb-requirements", args.requirements]
    if args.policy_drops:
        pa += ["--gwlb-policy-drops", args.policy_drops]
    if args.junit:
        pa += ["--junitxml", str(args.junit)]
    if args.html:
        pa += ["--gwlb-html", str(args.html)]
    if args.json:
        pa += ["--gwlb-json", str(args.json)]
    pa += ["-q"] if args.quiet else ["-v"]
    pa += ["-rfE", "-p", "no:timeout", *args.pytest_args]
    global _OWNER
    _OWNER = os.getpid()
    outcome = _Outcome()
    old = {sig: signal.signal(sig, _on_signal) for sig in _STOPPING}
    try:
        code = pytest.main(pa, plugins=[outcome])
    except KeyboardInterrupt as e:  # a signal between pytest's own handlers: nothing of the run is left
        return 128 + e.signum if isinstance(e, _Terminated) else results.EXIT_INTERRUPTED
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if outcome.interrupted:
        return outcome.exit_status
    if outcome.results is None:  # pytest stopped before the run (its own usage error, or an internal one)
        return results.EXIT_USAGE if code == pytest.ExitCode.USAGE_ERROR else results.EXIT_COULD_NOT_RUN
    if not outcome.results.by_requirement and not outcome.results.could_not_run:
        print(f"gwlb-conformance: INCOMPLETE: no requirement ran (pytest exit status {int(code)})", file=sys.stderr)
        return results.EXIT_INCOMPLETE
    return outcome.results.status()[0]

if __name__ == "__main__":
    sys.exit(main())
