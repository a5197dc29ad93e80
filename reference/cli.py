"""``gwlb-reference``: the reference GWLB appliance, with gwlbtun's command-line flags."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from gwlbsim.reference.core import ApplianceCore, Config
from gwlbsim.reference.datapath import ReferenceAppliance
from gwlbsim.reference.fastpath import DATAPATHS, Unavailable
from gwlbsim.reference.hooks import parse_hook
from gwlbsim.reference.logs import configure_logging
from gwlbsim.reference.options import Options
from gwlbsim.reference.responder import LocalResponder
from gwlbsim.reference.supervisor import Supervisor

from gwlbsim import __version__, cliargs
from gwlbsim.wire import geneve

EPILOG = """\
Hook arguments (as gwlbtun): HOOK CREATE|DESTROY <ingress gwi-X> <egress gwo-X> <ENI id, 16 hex digits>.
X is the ENI id in base 60. Hooks run without a shell, bounded by --hook-timeout.

Health (-p): HTTP/1.1 200 when healthy, 503 when not: the datapath loop stalled or died, a tunnel could not
be created or its create hook failed (until a later creation succeeds), a hook is stuck, or the appliance
is shutting down. Needs root (TUN devices, a raw socket for returns).

Stopping: SIGTERM, SIGINT or SIGHUP destroys every tunnel (running the destroy hook) and exits: 0 for SIGTERM
(a service's normal stop), 130 for SIGINT, 129 for SIGHUP. Exit status 1: could not start; 2: bad usage.
"""


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.Parser(
        prog="gwlb-reference",
        description="Reference AWS Gateway Load Balancer appliance: receives GENEVE on UDP 6081, gives each GWLB "
                    "endpoint a pair of TUN devices (gwi-X in, gwo-X out) and returns what the OS sends out of "
                    "them to GWLB with the flow's GENEVE header.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("gwlbtun-compatible options")
    g.add_argument("-c", metavar="FILE", dest="create_hook", help="command to run when a tunnel has been created")
    g.add_argument("-r", metavar="FILE", dest="destroy_hook", help="command to run before a tunnel is destroyed")
    g.add_argument("-t", metavar="SECS", dest="tunnel_timeout", type=cliargs.seconds, default=0.0,
                   help="destroy a tunnel after this many seconds without traffic either way (0 = never; default)")
    g.add_argument("-i", metavar="SECS", dest="flow_timeout", type=cliargs.positive, default=350.0,
                   help="flow cache idle timeout; match GWLB's (default 350)")
    g.add_argument("-p", metavar="PORT", dest="health_port", type=cliargs.port, help="serve health status on TCP PORT")
    g.add_argument("-s", dest="simple", action="store_true", help="health: status code only, no body")
    g.add_argument("-j", dest="json", action="store_true", help="health: body in JSON")
    g.add_argument("-d", dest="debug", action="store_true", help="debug output")
    g.add_argument("-x", dest="hexdump", action="store_true", help="hex dumps of packets (with -d)")
    g.add_argument("--udpthreads", type=cliargs.count, default=1, metavar="N",
                   help="datapath workers (processes; the larger of --udpthreads and --tunthreads; default 1). "
                        "Each worker handles both directions of its flows: SO_REUSEPORT sockets and "
                        "multi-queue tunnels, steered by the inner flow")
    g.add_argument("--tunthreads", type=cliargs.count, default=1, metavar="N", help="as --udpthreads")
    g.add_argument("--udpaffinity", type=cliargs.cpu_list, metavar="CPUS",
                   help="pin the datapath to these CPUs (e.g. 0,2-3); with several workers, worker k to the "
                        "k-th CPU of the list (round robin)")
    g.add_argument("--tunaffinity", type=cliargs.cpu_list, metavar="CPUS",
                   help="accepted for compatibility; see --udpaffinity")
    g.add_argument("--logging", metavar="SPEC",
                   help="log levels: LEVEL or SECTION=LEVEL,... (sections: core, hooks, health)")
    e = p.add_argument_group("further options")
    e.add_argument("--listen", default="0.0.0.0", metavar="ADDR", help="address to receive GENEVE on")
    e.add_argument("--health-bind", default="0.0.0.0", metavar="ADDR", help="address for the health port")
    e.add_argument("--max-flows", type=cliargs.count, default=1_000_000, metavar="N",
                   help="bound on flow-cache entries (least recently used evicted; default 1000000); also the "
                        "kernel path's flow map, allocated at start: about 177 bytes of kernel memory per entry")
    e.add_argument("--hook-timeout", type=cliargs.positive, default=30.0, metavar="SECS",
                   help="kill a hook still running after this long (default 30)")
    e.add_argument("--no-udp-checksum", action="store_true",
                   help="send returns with a zero outer UDP checksum, as gwlbtun does (faster)")
    e.add_argument("--raw-returns", action="store_true",
                   help="send every return through a raw IP socket, so netfilter's output hooks see them (as with "
                        "gwlbtun); by default returns go straight to the link once the route and neighbour of "
                        "GWLB's address are known (faster; one return per second still takes the IP layer)")
    e.add_argument("--option-class", type=cliargs.option_class, default=geneve.AWS_OPTION_CLASS, metavar="N",
                   help="GENEVE option class of the GWLB options (default 0x0108, AWS; Tencent uses 0x0167)")
    e.add_argument("--datapath", choices=DATAPATHS, default="auto",
                   help="kernel: GWLB's own layout with IPv4 or IPv6 inside is carried by BPF programs (tcx) and "
                        "the rest by Python, or fail; python: Python carries everything; auto (default): kernel "
                        "where it loads, else python, saying why (health, -j)")
    e.add_argument("--local-responder", type=cliargs.port, metavar="PORT",
                   help="answer TCP flows diverted to PORT in this namespace (IP_TRANSPARENT; local termination, "
                        "with the shipped local hook): an HTTP request gets a short answer, anything else its "
                        "first message reversed")
    e.add_argument("--version", action="version", version=f"gwlb-reference {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.simple and args.json:
        parser.error("-s and -j exclude each other")
    try:
        configure_logging(args.debug, args.logging)
        config = Config(flow_timeout=args.flow_timeout, tunnel_timeout=args.tunnel_timeout,
                        max_flows=args.max_flows, option_class=args.option_class,
                        udp_checksum=not args.no_udp_checksum)
    except ValueError as e:
        parser.error(str(e))
    hooks = {}
    for flag, k in (("-c", "create_hook"), ("-r", "destroy_hook")):
        try:
            hooks[k] = parse_hook(getattr(args, k)) if getattr(args, k) is not None else None
        except ValueError as e:
            parser.error(f"{flag}: {e}")
    cpus = set(args.udpaffinity) if args.udpaffinity else None
    log = logging.getLogger("gwlb-reference")
    workers = max(args.udpthreads, args.tunthreads)

    opts = Options(listen=args.listen, create_hook=hooks["create_hook"], destroy_hook=hooks["destroy_hook"],
                   hook_timeout=args.hook_timeout, health_port=args.health_port, health_bind=args.health_bind,
                   health_mode="simple" if args.simple else "json" if args.json else "text",
                   hexdump=args.hexdump and args.debug, raw_returns=args.raw_returns, datapath=args.datapath)
    if workers > 1 and args.datapath == "kernel":
        parser.error("--datapath kernel runs in one process so far: not with --udpthreads/--tunthreads above 1")
    datapath_reason = "--datapath python"
    if workers > 1:
        if args.datapath == "auto":
            datapath_reason = f"--udpthreads/--tunthreads {workers}: the kernel path runs in one process so far"
            log.warning("%s: the Python datapath carries everything", datapath_reason)
        opts.datapath = "python"
    app: Any
    try:
        if workers > 1:
            app = Supervisor(config, opts, workers, sorted(cpus) if cpus else None, datapath_reason=datapath_reason)
        else:
            if cpus:
                os.sched_setaffinity(0, cpus)
            app = ReferenceAppliance(ApplianceCore(config), opts)
    except Unavailable as e:
        print(f"gwlb-reference: --datapath kernel: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gwlb-reference: {e.strerror or e}", file=sys.stderr)
        if e.errno in (1, 13):
            print("gwlb-reference: needs root or CAP_NET_ADMIN + CAP_NET_RAW (TUN devices, raw socket)",
                  file=sys.stderr)
        return 1

    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stopped_by.append(signum)
        app.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    responder = None
    if args.local_responder:
        try:
            responder = LocalResponder(args.local_responder).start()
        except OSError as e:
            print(f"gwlb-reference: --local-responder {args.local_responder}: {e.strerror or e}", file=sys.stderr)
            return 1
    try:
        app.run()
    finally:
        if responder is not None:
            responder.close()
    log.info("stopped")
    # SIGTERM is a service's normal stop (as systemd sends it): 0; an interrupt or a hang-up: 128 + the signal
    return 128 + stopped_by[0] if stopped_by and stopped_by[0] != signal.SIGTERM else 0


if __name__ == "__main__":
    sys.exit(main())
