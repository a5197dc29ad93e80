"""``gwlbsim``: the fake GWLB from the command line (up, demo, simulate, cleanup, bench)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gwlbsim import __version__, cliargs
from gwlbsim.appliance import HEALTH_PROTOCOLS, LOCAL_PORT, MODES, ApplianceError, ApplianceSpec, reference_command
from gwlbsim.bench.cli import main as bench_main
from gwlbsim.config import ConfigError, GwlbConfig, read_toml
from gwlbsim.linuxio.netns import NetnsError, cleanup, exit_status, sigterm_raises
from gwlbsim.live.session import GwlbSession, SessionOptions, health_check_for
from gwlbsim.live.topology import LIMITS
from gwlbsim.live.traffic import tcp_request, tcp_transfer, udp_exchange
from gwlbsim.progress import Progress
from gwlbsim.simulate import Flap, Workload, run


def _topology_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=cliargs.input_file, metavar="FILE",
                   help="TOML file with GWLB attributes (AWS names) and an optional [topology] table")
    for key, what in (("zones", "availability zones, one GWLB node each (default 1)"),
                      ("appliances", "appliances (targets), spread over the zones (default 2)"),
                      ("endpoints", "GWLB endpoints, each with a client and a server side (default 1)")):
        lo, hi = LIMITS[key]
        p.add_argument(f"--{key}", type=cliargs.whole_within(lo, hi), metavar="N", help=f"{what}; {lo}-{hi}")
    p.add_argument("--appliance", metavar="CMD",
                   help="appliance command template (default: the reference appliance); see README")
    p.add_argument("--mode", choices=tuple(MODES),
                   help="how the appliances are deployed: the reference gets that mode's shipped hook "
                   "({hook:MODE}); with --appliance, the mode shapes the topology only (nat adds the internet "
                   "namespace) and the command picks its hook. "
                   + "; ".join(f"{m}: {d}" for m, d in MODES.items()) + " (default passthrough)")
    p.add_argument("--health-protocol", choices=HEALTH_PROTOCOLS, help="how the appliance answers health")
    p.add_argument("--health-port", type=cliargs.port, help="the appliance's health port (default 8080)")
    p.add_argument("--health-path", help="HTTP health path (default /)")
    p.add_argument("--workdir", type=Path, help="where appliance logs go (default: a temporary directory)")


#: the [topology] keys of a config file: each checked as its command-line option is
_TOPOLOGY_KEYS = ("zones", "appliances", "endpoints", "appliance", "health_protocol", "health_port", "health_path",
                  "mode")


def _topology_value(path: Path, key: str, v: Any) -> Any:
    """A [topology] value, checked as the command line checks its option (the same messages)."""
    where = f"{path}: [topology] {key}"
    if key in LIMITS or key == "health_port":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: {v!r} is not a whole number")
        check = cliargs.port if key == "health_port" else cliargs.whole_within(*LIMITS[key])
        try:
            return check(str(v))
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"{where}: {e}") from None
    if not isinstance(v, str):
        raise ConfigError(f"{where}: {v!r} is not a string")
    choices = {"mode": tuple(MODES), "health_protocol": HEALTH_PROTOCOLS}.get(key)
    if choices is not None and v not in choices:
        raise ConfigError(f"{where}: {v!r} is not one of {', '.join(choices)}")
    return v


def _session_options(args: argparse.Namespace) -> Any:
    """The session the command line and the config file describe, every value checked (nothing is started)."""
    topo: dict[str, Any] = {}
    config = None
    if args.config:
        doc = read_toml(args.config)
        raw = doc.get("topology", {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{args.config}: [topology] must be a table")
        for k in raw:
            if k not in _TOPOLOGY_KEYS:
                raise ConfigError(f"{args.config}: unknown [topology] key {k!r}; known: "
                                  f"{', '.join(sorted(_TOPOLOGY_KEYS))}")
        topo = {k: _topology_value(args.config, k, v) for k, v in raw.items()}
        config = GwlbConfig.from_toml(args.config)
    pick = {k: getattr(args, k) if getattr(args, k) is not None else topo.get(k) for k in _TOPOLOGY_KEYS}
    mode = pick["mode"] or "passthrough"
    # with --appliance, the mode shapes the topology only (nat: the internet side); the command picks its hook
    spec = ApplianceSpec(command=reference_command(mode))
    changes = {k: v for k, v in (("command", pick["appliance"]), ("health_protocol", pick["health_protocol"]),
                                 ("health_port", pick["health_port"]), ("health_path", pick["health_path"]))
               if v is not None}
    if changes:
        try:
            spec = spec.with_(**changes)
        except ValueError as e:
            raise ConfigError(f"--appliance: {e}") from None
    if config is not None and "health_check" not in read_toml(args.config):
        config = replace(config, health_check=health_check_for(spec))
    return SessionOptions(zones=pick["zones"] or 1, appliances=pick["appliances"] or 2,
                          endpoints=pick["endpoints"] or 1, spec=spec, config=config, workdir=args.workdir, mode=mode)


# ------------------------------------------------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace) -> int:

    opts = _session_options(args)
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    print(f"gwlbsim {__version__}: bringing up {opts.zones} zone(s), {opts.appliances} appliance(s), "
          f"{opts.endpoints} endpoint(s)" + (f", {args.mode} mode" if args.mode else ""), flush=True)
    with GwlbSession(opts) as s:
        topo = s.topo
        assert topo is not None
        print(topo.describe())
        healthy = _wait_healthy(s, opts, args.ready_timeout, lambda m: print(m, flush=True))
        e0 = topo.endpoints[0]
        print("\nready. Try, in another shell:" if healthy else
              "\nup, but NOT every appliance is healthy (see the warning above). Try, in another shell:")
        print(f"  ip netns exec {e0.client_ns} ping {e0.server_v4}")
        print(f"  ip netns exec {e0.server_ns} python3 -m http.server 8000 --bind {e0.server_v4} &")
        print(f"  ip netns exec {e0.client_ns} curl http://{e0.server_v4}:8000/")
        for a in topo.appliances:
            print(f"  ip netns exec {a.ns} ip link   # appliance {a.id}'s devices")
        a0 = topo.appliances[0]
        if opts.mode == "local":
            print(f"  ip netns exec {e0.client_ns} curl http://{e0.server_v4}:{LOCAL_PORT}/   # answered by the "
                  "appliance itself (local termination)")
        if opts.mode in ("routed", "nat", "local"):
            print(f"  ip netns exec {a0.ns} ip rule   # {opts.mode} mode: each gwi- has its routing table")
            print(f"  ip netns exec {a0.ns} nft add table inet policy   # then a forward chain: its rules see "
                  "the traffic")
        if topo.internet is not None:
            net = topo.internet
            print(f"  ip netns exec {e0.client_ns} ping {net.server_v4}   # the internet, through the appliance's "
                  "second arm (NAT)")
            print(f"  ip netns exec {net.ns} python3 -m http.server 8001 --bind {net.server_v4} &")
            print(f"  ip netns exec {e0.client_ns} curl http://{net.server_v4}:8001/")
            print(f"  ip netns exec {a0.ns} nft list ruleset   # the hook's NAT, one table per tunnel")
        print("Ctrl-C (or SIGTERM) removes everything.\n", flush=True)
        last = 0.0
        while not stop.wait(0.5):
            if args.report_every and time.monotonic() - last >= args.report_every:
                last = time.monotonic()
                print(time.strftime("%H:%M:%S"), s.report(), sep="\n", flush=True)
            dead = [a.index for a in s.appliances if not a.alive()]
            if dead and args.exit_on_appliance_exit:
                print(f"appliance(s) {dead} exited", file=sys.stderr)
                return 1
    print("removed.")
    return 128 + stopped_by[0] if stopped_by else 0


# ----------------------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:

    opts = _session_options(args)
    prog = Progress("demo", stream=sys.stdout)
    ok = True
    with GwlbSession(opts) as s:
        topo = s.topo
        assert topo is not None
        prog.note(topo.describe())
        if not _wait_healthy(s, opts, args.ready_timeout, prog.note):
            ok = False
            _keep_logs(s, prog)
            prog.done("demo FAILED: the appliances did not become healthy")
            return 1
        prog.note(f"targets: {s.target_states()}")
        for e in topo.endpoints:
            for dst in (e.server_v4, e.server_v6):
                ok &= _demo_ping(s, e.index, dst, prog)
            ok &= _demo_tcp(s, e.index, prog)
            ok &= _demo_udp(s, e.index, prog)
            if opts.mode == "local":  # answered by the appliance itself, back through GWLB
                for v6 in (False, True):
                    msg = f"terminate {e.index} {'v6' if v6 else 'v4'}".encode()
                    got = tcp_request(s, e.index, LOCAL_PORT, msg, v6=v6)
                    done = got == msg[::-1]
                    ok &= done
                    dst = e.server_v6 if v6 else e.server_v4
                    prog.note(f"endpoint {e.index}: TCP to {dst} port {LOCAL_PORT} answered by the appliance: "
                              + ("ok" if done else f"FAILED (got {got!r})"))
            if topo.internet is not None:  # two-arm: out of the second arm, NATed, and the replies back
                net = topo.internet
                for dst in (net.server_v4, net.server_v6):
                    ok &= _demo_ping(s, e.index, dst, prog, " (internet)")
                ok &= _demo_tcp(s, e.index, prog, internet=True)
                ok &= _demo_udp(s, e.index, prog, internet=True)
        prog.note(s.report())
        if not ok:
            _keep_logs(s, prog)
        if len(s.appliances) > 1 and opts.spec.health_protocol != "none" and not args.no_failover:
            victim = s.appliances[0]
            prog.note(f"\nstopping appliance {victim.index} to show failover ...")
            victim.kill()
            s.wait_state(f"app{victim.index}", "unhealthy", args.ready_timeout)
            before = s.call(lambda m: m.targets[f"app{victim.index}"].flows)

            for port in range(20):
                udp_exchange(s, 0, 20000 + port)
            after = s.call(lambda m: m.targets[f"app{victim.index}"].flows)
            moved_ok = after == before
            ok &= moved_ok
            prog.note(f"new flows avoid the unhealthy appliance: {'ok' if moved_ok else 'FAILED'} "
                      f"(its flows {before} -> {after})")
            prog.note(s.report())
    prog.done("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def _wait_healthy(s: GwlbSession, opts: Any, timeout: float, say: Any) -> bool:
    """Wait for the appliances to pass GWLB's health checks; False (and a warning) when they do not in time.
    Appliances that answer none are not waited for: GWLB's checks fail and it fails open."""
    if opts.spec.health_protocol == "none":
        say("the appliances answer no health checks: GWLB sees them unhealthy and fails open (every target "
            "gets flows)")
        return True
    say("waiting for the appliances to pass their health checks ...")
    try:
        s.wait_healthy(timeout)
    except TimeoutError as e:
        print(f"warning: {e}", file=sys.stderr, flush=True)
        return False
    return True


def _keep_logs(s: GwlbSession, prog: Progress) -> None:
    kept = s.keep_logs()
    if kept is not None:
        prog.note(f"the appliances' logs are kept in {kept}")


def _demo_ping(s: Any, e: int, dst: str, prog: Progress, where: str = "") -> bool:

    r = s.run_client(e, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst], check=False)
    out = r.stdout.decode(errors="replace")
    summary = next((line for line in out.splitlines() if "packet loss" in line), out.strip()[-120:])
    prog.note(f"endpoint {e}: ping {dst}{where}: " + ("ok" if r.returncode == 0 else f"FAILED ({summary})"))
    return bool(r.returncode == 0)


def _demo_tcp(s: Any, e: int, prog: Progress, internet: bool = False) -> bool:

    ok = True
    for v6 in (False, True):
        r = tcp_transfer(s, e, 9000 + v6, size=1 << 20, v6=v6, internet=internet)
        where = f" over IPv{6 if v6 else 4}" + (" (internet)" if internet else "")
        prog.note(f"endpoint {e}: TCP 1 MiB{where}: {'ok, ' + r.detail if r.ok else 'FAILED: ' + r.detail}")
        ok &= r.ok
    return ok


def _demo_udp(s: Any, e: int, prog: Progress, internet: bool = False) -> bool:

    ok = True
    for v6 in (False, True):
        got = udp_exchange(s, e, 5353, v6=v6, internet=internet)
        done = got == b"gnip"
        where = f" over IPv{6 if v6 else 4}" + (" (internet)" if internet else "")
        prog.note(f"endpoint {e}: UDP exchange{where}: " + ("ok" if done else "FAILED (" + (
            "no answer" if got is None else f"answer {got!r}, expected b'gnip'") + ")"))
        ok &= done
    return ok


# ------------------------------------------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:

    config = GwlbConfig.from_toml(args.config) if args.config else None
    flaps = [_flap(spec, args.targets) for spec in args.flap]
    if args.random_flaps:
        import random

        rng = random.Random(args.seed)
        span = args.flows / args.rate
        flaps += [Flap(rng.uniform(0, span), rng.randrange(args.targets), rng.uniform(5, 120))
                  for _ in range(args.random_flaps)]
    wl = Workload(flows=args.flows, rate=args.rate, packets_per_flow=args.packets_per_flow,
                  tcp_fraction=args.tcp_fraction, reuse_fraction=args.reuse_fraction, endpoints=args.endpoints,
                  flaps=flaps, seed=args.seed, followup_after=args.followup_after, level=args.level)
    prog = Progress("simulating flows", args.flows)
    report = run(wl, config, targets=args.targets, zones=args.zones, progress=lambda done, _total: prog.update(done),
                 workers=args.workers)
    prog.done()
    print(report.text())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def _flap(spec: str, targets: int) -> Flap:
    """``--flap AT:TARGET:DOWN_FOR``, checked against the simulated targets."""
    parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        at, target, down = float(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        raise ConfigError(f"--flap {spec!r}: expected AT:TARGET:DOWN_FOR, e.g. 30:2:60") from None
    if at < 0 or not down > 0:
        raise ConfigError(f"--flap {spec!r}: AT must be 0 or more and DOWN_FOR more than 0 seconds")
    if not 0 <= target < targets:
        raise ConfigError(f"--flap {spec!r}: target {target} does not exist (targets 0-{targets - 1})")
    return Flap(at, target, down)


def cmd_cleanup(args: argparse.Namespace) -> int:

    removed = cleanup(everything=args.all)
    print(f"removed {len(removed)} leftover(s) (namespaces, working directories)"
          + (": " + ", ".join(removed) if removed else ""))
    return 0


#: the shipped unit, with @GWLB_REFERENCE@ where the installed gwlb-reference goes
UNIT = Path(__file__).parent / "data" / "systemd" / "gwlb-reference.service"


def cmd_install_service(args: argparse.Namespace) -> int:
    exe = args.executable or shutil.which("gwlb-reference") or str(Path(sys.executable).parent / "gwlb-reference")
    if not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        raise ConfigError(f"--executable {exe}: not an executable file (install gwlbsim, or name gwlb-reference's "
                          "path)")
    unit = UNIT.read_text().replace("@GWLB_REFERENCE@", exe)
    if args.print:
        print(unit, end="")
        return 0
    dest = args.dest / UNIT.name
    dest.write_text(unit)
    print(f"wrote {dest} (gwlb-reference: {exe}). Its flags go in /etc/default/gwlb-reference as "
          "GWLB_REFERENCE_ARGS=...; then:\n  systemctl daemon-reload && systemctl enable --now gwlb-reference")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    return int(bench_main(args.bench_args) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.Parser(prog="gwlbsim", description="A fake AWS Gateway Load Balancer in network namespaces",
                       epilog="Exit status: 0 done, 1 failed, 2 bad usage (nothing was started), 130 interrupted "
                       "(SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP); every run removes what it created, "
                       "and gwlbsim cleanup what a SIGKILL left.")
    p.add_argument("--version", action="version", version=f"gwlbsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="bring up a topology with appliances and keep it running")
    _topology_args(up)
    up.add_argument("--ready-timeout", type=cliargs.number_within(0.5, 3600), default=60.0, metavar="SECS")
    up.add_argument("--report-every", type=cliargs.seconds, default=30.0, metavar="SECS",
                    help="print targets and metrics this often (0: never)")
    up.add_argument("--exit-on-appliance-exit", action="store_true")
    up.epilog = ("Runs until stopped: SIGINT (Ctrl-C), SIGTERM or SIGHUP removes everything and exits 128 + the "
                 "signal (130, 143, 129); after a SIGKILL, gwlbsim cleanup removes what is left.")
    up.set_defaults(fn=cmd_up)
    demo = sub.add_parser("demo", help="topology with reference appliances, real traffic, failover, a report")
    _topology_args(demo)
    demo.add_argument("--ready-timeout", type=cliargs.number_within(0.5, 3600), default=60.0, metavar="SECS")
    demo.add_argument("--no-failover", action="store_true",
                      help="skip the last part (one appliance stopped to show new flows avoiding it)")
    demo.set_defaults(fn=cmd_demo)
    sim = sub.add_parser("simulate", help="virtual time: the model with reference cores, at scale")
    sim.add_argument("--config", type=cliargs.input_file, metavar="FILE", help="TOML with GWLB attributes")
    sim.add_argument("--flows", type=cliargs.whole_within(1, 10**10), default=100_000, metavar="N",
                     help="flows to simulate (default 100000)")
    sim.add_argument("--rate", type=cliargs.positive, default=10_000.0, help="new flows per simulated second")
    sim.add_argument("--targets", type=cliargs.whole_within(1, 100_000), default=8, metavar="N")
    sim.add_argument("--zones", type=cliargs.whole_within(1, 64), default=1, metavar="N")
    sim.add_argument("--endpoints", type=cliargs.whole_within(1, 100_000), default=2, metavar="N")
    sim.add_argument("--packets-per-flow", type=cliargs.whole_within(1, 100_000), default=2, metavar="N")
    sim.add_argument("--tcp-fraction", type=cliargs.fraction, default=0.7, metavar="F", help="0 to 1 (default 0.7)")
    sim.add_argument("--reuse-fraction", type=cliargs.fraction, default=0.0, metavar="F",
                     help="flows that reuse an earlier flow's 5-tuple, 0 to 1 (default 0)")
    sim.add_argument("--followup-after", type=cliargs.positive, metavar="SECS",
                     help="every flow exchanges packets again this much later")
    sim.add_argument("--flap", action="append", default=[], metavar="AT:TARGET:DOWN_FOR",
                     help="target TARGET (index, 0 to --targets - 1) down at AT s for DOWN_FOR s (repeatable)")
    sim.add_argument("--random-flaps", type=cliargs.whole_within(0, 100_000), default=0, metavar="N")
    sim.add_argument("--seed", type=cliargs.whole, default=1)
    sim.add_argument("--level", choices=("packet", "flow"), default="packet",
                     help="packet: every packet through the model and a reference core (default); flow: the "
                          "model's decisions only, for millions of flows")
    sim.add_argument("--workers", type=cliargs.whole_within(1, 256), default=os.cpu_count() or 1, metavar="N",
                     help="processes to share the flows over (default: one per CPU)")
    sim.add_argument("--json", type=cliargs.output_file, metavar="FILE", help="also write the report as JSON")
    sim.set_defaults(fn=cmd_simulate)
    svc = sub.add_parser("install-service", help="install the reference appliance as a systemd service")
    svc.add_argument("--dest", type=cliargs.output_dir, default=Path("/etc/systemd/system"), metavar="DIR",
                     help="where the unit goes (default /etc/systemd/system)")
    svc.add_argument("--executable", metavar="PATH", help="gwlb-reference's path (default: the one installed)")
    svc.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    svc.set_defaults(fn=cmd_install_service)
    cl = sub.add_parser("cleanup", help="remove namespaces left by crashed or killed runs")
    cl.add_argument("--all", action="store_true", help="also those of runs still alive")
    cl.set_defaults(fn=cmd_cleanup)
    b = sub.add_parser("bench", help="benchmarks (see gwlbsim bench --help)", add_help=False)
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" is the benchmark's own (argparse would eat options)
        args = argparse.Namespace(bench_args=argv[1:], fn=cmd_bench)
    else:
        args = build_parser().parse_args(argv)
    try:
        with sigterm_raises():
            return int(args.fn(args))
    except (ConfigError, ValueError) as e:
        print(f"gwlbsim: {e}", file=sys.stderr)
        return 2
    except (NetnsError, ApplianceError, TimeoutError, PermissionError) as e:
        print(f"gwlbsim: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"gwlbsim: {str(e) or 'SIGINT'}: stopped; everything created was removed", file=sys.stderr)
        return exit_status(e)


if __name__ == "__main__":
    sys.exit(main())
