"""``gwlb-conformance``: validate a GWLB appliance, requirement by requirement.

With no arguments it validates the built-in reference appliance. ``--appliance 'CMD'`` validates any other
(see ``--help`` for the placeholders). It runs the suite through pytest, so pytest's options can follow
``--`` (e.g. ``-- -k cookie -x -n 2``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from conformance.requirements import REQUIREMENTS, markdown_table

EPILOG = """\
Placeholders in --appliance: {python} this Python; {hook} the shipped passthrough hook for gwlbtun-style
handlers (use as: -c 'sh {hook}' -r 'sh {hook}'); {health_port}; {flow_timeout}; {tunnel_timeout}; {netns};
{address} (the appliance's address); {gwlb_address}; {index} (instance number); {workdir}.

Example, AWS's gwlbtun:
  gwlb-conformance --appliance "/opt/gwlbtun -c 'sh {hook}' -r 'sh {hook}' -p {health_port} -t 3 -i 5" \\
      --tunnel-timeout 3 --flow-timeout 5

Exit status: 0 when no MUST requirement failed, 1 when one did, 2 for bad usage. Needs root.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gwlb-conformance", description="Validate a GWLB appliance against what "
                                "AWS Gateway Load Balancer needs, requirement by requirement.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--appliance", metavar="CMD", help="appliance command template (default: the reference)")
    p.add_argument("--health-protocol", choices=("http", "tcp", "none"), default="http")
    p.add_argument("--health-port", type=int, default=8080)
    p.add_argument("--health-path", default="/")
    p.add_argument("--instances", type=int, default=2, help="instances to run (symmetry and failover need 2)")
    p.add_argument("--ready-timeout", type=float, default=20.0, metavar="SECS")
    p.add_argument("--flow-timeout", type=float, metavar="SECS", help="the appliance's configured flow timeout")
    p.add_argument("--tunnel-timeout", type=float, metavar="SECS",
                   help="the appliance's configured tunnel idle timeout (0: none)")
    p.add_argument("--rate", type=float, default=2000.0, help="packets/s for the sustained-traffic check")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of sustained traffic")
    p.add_argument("--examples", type=int, default=30, help="Hypothesis examples per property")
    p.add_argument("--requirements", metavar="IDS", help="only these requirement ids, comma-separated")
    p.add_argument("--artifacts", type=Path, default=Path("conformance-artifacts"),
                   help="pcaps, hex dumps and logs of failures (default ./conformance-artifacts)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--json", type=Path, metavar="FILE", help="write results as JSON")
    p.add_argument("--list", action="store_true", help="print the requirements (Markdown) and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="less pytest output")
    p.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest (-k, -x, -n ...)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(markdown_table())
        return 0
    if args.requirements:
        unknown = [r for r in args.requirements.split(",") if r.strip() not in REQUIREMENTS]
        if unknown:
            print(f"gwlb-conformance: unknown requirement(s) {unknown}; see --list", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("gwlb-conformance: needs root (it builds network namespaces, veths and TUN devices)",
              file=sys.stderr)
        return 2
    if args.appliance is not None:
        from gwlbsim.appliance import ApplianceSpec

        try:
            ApplianceSpec(command=args.appliance, health_protocol=args.health_protocol,
                          health_port=args.health_port)
        except ValueError as e:
            print(f"gwlb-conformance: {e}", file=sys.stderr)
            return 2
    import pytest

    from conformance.plugin import SUITE_DIR

    pa = [str(SUITE_DIR), "--gwlb-conformance", "-p", "no:cacheprovider", "-o", "addopts=", "-o", "testpaths=",
          "--gwlb-health-protocol", args.health_protocol, "--gwlb-health-port", str(args.health_port),
          "--gwlb-health-path", args.health_path, "--gwlb-instances", str(args.instances),
          "--gwlb-ready-timeout", str(args.ready_timeout), "--gwlb-rate", str(args.rate),
          "--gwlb-duration", str(args.duration), "--gwlb-examples", str(args.examples),
          "--gwlb-artifacts", str(args.artifacts), "--rootdir", str(Path(__file__).parent)]
    if args.appliance is not None:
        pa += ["--gwlb-appliance", args.appliance]
    if args.flow_timeout is not None:
        pa += ["--gwlb-flow-timeout", str(args.flow_timeout)]
    if args.tunnel_timeout is not None:
        pa += ["--gwlb-tunnel-timeout", str(args.tunnel_timeout)]
    if args.requirements:
        pa += ["--gwlb-requirements", args.requirements]
    if args.junit:
        pa += ["--junitxml", str(args.junit)]
    if args.html:
        pa += ["--gwlb-html", str(args.html)]
    if args.json:
        pa += ["--gwlb-json", str(args.json)]
    pa += ["-q"] if args.quiet else ["-v"]
    pa += ["-rfEs", *args.pytest_args]
    code = pytest.main(pa)
    if code == pytest.ExitCode.OK or (code == pytest.ExitCode.NO_TESTS_COLLECTED and args.requirements):
        return 0
    return 1 if code == pytest.ExitCode.TESTS_FAILED else int(code) if int(code) != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
