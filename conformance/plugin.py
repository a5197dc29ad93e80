"""The conformance suite as a pytest plugin (entry point ``pytest11: gwlb_conformance``).

Inert unless asked: ``pytest --gwlb-conformance`` (the reference appliance) or ``pytest --gwlb-appliance
'CMD'`` adds the suite to the run. It composes with ``-k``, ``-x``, markers and pytest-xdist (each worker
builds its own namespaces). Results are reported requirement by requirement; only MUST failures make the
exit status non-zero.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from gwlbsim.conformance import results
from gwlbsim.conformance.requirements import REQUIREMENTS

from gwlbsim.appliance import DATAPATHS, HEALTH_PROTOCOLS, MODES, ApplianceSpec, reference_command
from gwlbsim.wire.hexdump import hexdump

SUITE_DIR = Path(__file__).parent / "suite"
MARKER = "gwlb_requirement"
_start_key = pytest.StashKey[float]()


def requirement(req_id: str) -> pytest.MarkDecorator:
    """Mark a test as checking requirement ``req_id`` (see gwlbsim.conformance.requirements)."""
    if req_id not in REQUIREMENTS:
        raise KeyError(f"unknown requirement {req_id!r}")
    return getattr(pytest.mark, MARKER)(req_id)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gwlb", "GWLB appliance conformance")
    g.addoption("--gwlb-conformance", action="store_true", help="run the GWLB conformance suite")
    g.addoption("--gwlb-appliance", metavar="CMD", help="appliance command template (implies --gwlb-conformance; "
                "default: the reference appliance). Placeholders: {python} {hook} {health_port} {flow_timeout} "
                "{tunnel_timeout} {netns} {address} {gwlb_address} {index} {workdir}")
    g.addoption("--gwlb-health-protocol", choices=HEALTH_PROTOCOLS, default="http")
    g.addoption("--gwlb-health-port", type=int, default=8080)
    g.addoption("--gwlb-health-path", default="/")
    g.addoption("--gwlb-instances", type=int, default=2, help="appliance instances (symmetry and failover need 2)")
    g.addoption("--gwlb-nodes", type=int, default=2, help="GWLB nodes (one per zone, cross-zone balancing on)")
    g.addoption("--gwlb-ready-timeout", type=float, default=20.0, help="seconds for an instance to become healthy")
    g.addoption("--gwlb-flow-timeout", type=float, default=None,
                help="the flow timeout the appliance is configured with (reference default here: 5)")
    g.addoption("--gwlb-other-flow-timeout", type=float, default=None,
                help="the appliance's flow timeout for non-TCP flows, if not the same as --gwlb-flow-timeout")
    g.addoption("--gwlb-long", action="store_true", default=False,
                help="run the checks that need real waits of minutes (idle timeouts up to GWLB's 350 s)")
    g.addoption("--gwlb-tunnel-timeout", type=float, default=None,
                help="the tunnel idle timeout it is configured with; 0 = none (reference default here: 3)")
    g.addoption("--gwlb-rate", type=float, default=2000.0, help="packets/s of the sustained-traffic check")
    g.addoption("--gwlb-duration", type=float, default=5.0, help="seconds of the sustained-traffic check")
    g.addoption("--gwlb-flows", type=int, default=100_000, help="distinct flows driven through each instance")
    g.addoption("--gwlb-flow-rate", type=float, default=5_000.0, help="new flows per second per instance")
    g.addoption("--gwlb-examples", type=int, default=30, help="Hypothesis examples per property")
    g.addoption("--gwlb-artifacts", type=Path, default=None, help="directory for pcaps and hex dumps of failures")
    g.addoption("--gwlb-json", type=Path, default=None, help="write results as JSON")
    g.addoption("--gwlb-html", type=Path, default=None, help="write a self-contained HTML report")
    g.addoption("--gwlb-mode", choices=tuple(MODES), default="passthrough",
                help="how the appliance is deployed: " + "; ".join(f"{m}: {d}" for m, d in MODES.items()))
    g.addoption("--gwlb-datapath", choices=DATAPATHS, default="auto",
                help="the built-in reference's datapath (kernel, python, auto); ignored with --gwlb-appliance")
    g.addoption("--gwlb-kind", choices=("auto", "gwlbtun", "reflector"), default="auto",
                help="gwlbtun: tunnel devices gwi-/gwo- and hooks; reflector: none (raw socket, kernel NAT); "
                "auto: detected from the first packet")
    g.addoption("--gwlb-policy-drops", default=None, metavar="IDS",
                help="requirements whose test traffic the appliance's policy drops on purpose (reported NOT "
                "APPLICABLE, declared)")
    g.addoption("--gwlb-requirements", default=None, metavar="IDS",
                help="only these requirements (comma-separated ids, e.g. ECHO-2,COOKIE-1)")


def active(config: pytest.Config) -> bool:
    return bool(config.getoption("--gwlb-conformance") or config.getoption("--gwlb-appliance"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(id): the GWLB conformance requirement a test checks")
    if not active(config):
        return
    if str(SUITE_DIR) not in config.args and not any(Path(a).resolve() == SUITE_DIR for a in config.args
                                                     if os.path.exists(a)):
        config.args.append(str(SUITE_DIR))
    wanted = config.getoption("--gwlb-requirements")
    config.stash[results.RESULTS] = results.Results(
        requested=frozenset(x.strip() for x in wanted.split(",")) if wanted else None)


def declared_flow_timeouts(config: pytest.Config) -> tuple[float | None, float | None]:
    """The appliance's flow timeouts (TCP, other) as declared; the reference's when it is the appliance."""
    tcp = config.getoption("--gwlb-flow-timeout")
    if tcp is None and config.getoption("--gwlb-appliance") is None:
        tcp = spec_from(config).flow_timeout
    other = config.getoption("--gwlb-other-flow-timeout")
    return tcp, tcp if other is None else other


def spec_from(config: pytest.Config) -> ApplianceSpec:
    cmd = config.getoption("--gwlb-appliance")
    flow_t = config.getoption("--gwlb-flow-timeout")
    tun_t = config.getoption("--gwlb-tunnel-timeout")
    if cmd is None:  # the reference, configured with short timeouts so the timeout checks run quickly
        cmd = reference_command(config.getoption("--gwlb-mode"), config.getoption("--gwlb-datapath"))
        flow_t = 5.0 if flow_t is None else flow_t
        tun_t = 3.0 if tun_t is None else tun_t
    return ApplianceSpec(command=cmd, health_protocol=config.getoption("--gwlb-health-protocol"),
                         health_port=config.getoption("--gwlb-health-port"),
                         health_path=config.getoption("--gwlb-health-path"),
                         ready_timeout=config.getoption("--gwlb-ready-timeout"),
                         flow_timeout=350.0 if flow_t is None else flow_t,
                         tunnel_timeout=0.0 if tun_t is None else tun_t,
                         name="reference" if config.getoption("--gwlb-appliance") is None else "appliance")


def declared_tunnel_timeout(config: pytest.Config) -> float | None:
    """The tunnel timeout the user declared (the reference's is known); None when nobody said."""
    t = config.getoption("--gwlb-tunnel-timeout")
    if t is None and config.getoption("--gwlb-appliance") is None:
        return spec_from(config).tunnel_timeout
    return t


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not active(config):
        return
    wanted = config.getoption("--gwlb-requirements")
    ids = {x.strip() for x in wanted.split(",")} if wanted else None
    if ids:
        unknown = ids - set(REQUIREMENTS)
        if unknown:
            raise pytest.UsageError(f"unknown requirement(s) {sorted(unknown)}; see gwlb-conformance --list")
    policy = config.getoption("--gwlb-policy-drops")
    declared = {x.strip() for x in policy.split(",")} if policy else set()
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        m = item.get_closest_marker(MARKER)
        if m is None:
            keep.append(item)
            continue
        req = REQUIREMENTS[m.args[0]]
        item.user_properties += [("requirement", req.id), ("level", req.level), ("area", req.area)]
        if req.id in declared:
            item.add_marker(pytest.mark.skip(reason=results.NOT_APPLICABLE + "the appliance's policy drops this "
                                             "test traffic on purpose (declared with --policy-drops)"))
        (keep if ids is None or req.id in ids else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _results(config: pytest.Config) -> results.Results | None:
    return config.stash.get(results.RESULTS, None)


def _cause(e: BaseException) -> tuple[str, str]:
    """(one line, the rest) of why the appliance could not be run."""
    text = str(e).strip() or type(e).__name__
    first, _, rest = text.partition("\n")
    first = first.removesuffix("; its output:").strip()
    last = next((ln.strip() for ln in reversed(rest.splitlines()) if ln.strip() and not ln.startswith("---")), "")
    return (f"{first}; last output: {last[:200]}" if last else first), rest


@pytest.fixture(scope="session")
def gwlb(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The live fake GWLB with the appliance instances under test (one per pytest-xdist worker): ``--gwlb-instances``
    instances of ``--gwlb-appliance`` (the reference appliance by default), deployed ``--gwlb-mode``, behind
    ``--gwlb-nodes`` GWLB nodes with two endpoints. Needs root; skips with the reason otherwise. Its ``topo``
    (endpoints, appliances and their addresses), ``session`` (the fake GWLB's session) and the helpers the
    other ``gwlb_*`` fixtures use are available to your own tests."""
    if os.geteuid() != 0:
        pytest.skip(results.NOT_RUN + "the GWLB conformance suite needs root: it builds network namespaces")
    # Imported here, not at the top: pytest loads this plugin in every session of every project that has gwlbsim
    # installed, and the live world (pyroute2, the fake GWLB) adds about 50 ms more to each (python -X importtime).
    from gwlbsim.conformance.environment import ConformanceEnv, Options

    from gwlbsim.appliance import ApplianceError
    from gwlbsim.linuxio.netns import owned_tempdir

    config = request.config
    opts = Options(spec=spec_from(config), instances=config.getoption("--gwlb-instances"),
                   nodes=config.getoption("--gwlb-nodes"),
                   artifacts=config.getoption("--gwlb-artifacts"), rate=config.getoption("--gwlb-rate"),
                   duration=config.getoption("--gwlb-duration"), flows=config.getoption("--gwlb-flows"),
                   flow_rate=config.getoption("--gwlb-flow-rate"),
                   hypothesis_examples=config.getoption("--gwlb-examples"), kind=config.getoption("--gwlb-kind"),
                   tunnel_timeout=declared_tunnel_timeout(config),
                   flow_timeouts=declared_flow_timeouts(config), long=config.getoption("--gwlb-long"),
                   mode=config.getoption("--gwlb-mode"))
    with owned_tempdir("gwlb-conformance-") as tmp:
        env = ConformanceEnv(opts, tmp)
        try:
            try:
                env.start()
            except (ApplianceError, TimeoutError) as e:
                env.close()
                _keep_logs(opts.artifacts, tmp)
                line, rest = _cause(e)
                res = _results(config)
                if res is not None:
                    res.could_not_run = line
                    res.could_not_run_detail = rest
                # every test is NOT RUN (pytest re-raises a session fixture's skip at once for each)
                pytest.skip(results.NOT_RUN + f"could not run the appliance: {line}")
            except BaseException:
                env.close()
                raise
            yield env
        finally:
            env.close()
            _keep_logs(opts.artifacts, tmp)


# --------------------------------------------------------------------------------- fixtures for vendors' tests


@pytest.fixture
def gwlb_send(gwlb: Any) -> Callable[..., Any]:
    """Send one packet to an appliance instance as GWLB does, and get what comes back.

    ``gwlb_send(inner, instance=0, endpoint=0, cookie=None)``: ``inner`` (bytes: an IPv4 or IPv6 packet) is
    wrapped in GWLB's GENEVE header (the endpoint's ENI id, an attachment id and ``cookie``, fresh by default)
    and sent from the instance's GWLB node, followed by a marker; the answer is an ``Echo``: ``returns`` (the
    datagrams that came back on the packet's port, each a ``Captured`` with ``data`` the GENEVE payload),
    ``marker_back`` (the appliance processed the packet), and ``lost()`` saying why nothing came back. Truthy
    when something came back."""
    import itertools
    import random

    from gwlbsim.wire import geneve

    cookies = itertools.count(random.randrange(1, 1 << 31))

    def send(inner: bytes, instance: int = 0, endpoint: int = 0, cookie: int | None = None) -> Any:
        eni = gwlb.topo.endpoints[endpoint].eni_id
        return gwlb.echo(geneve.build(inner, eni, next(cookies) if cookie is None else cookie), instance)

    return send


@pytest.fixture
def gwlb_inject(gwlb: Any) -> Callable[..., Any]:
    """Inject a packet at a GWLB endpoint, as a client behind it sends one: GWLB picks the target (its flow
    table, stickiness, health), encapsulates, and delivers what the appliance returns.

    ``gwlb_inject(inner, endpoint=0)`` returns ``(sent, delivered)``: the ``Captured`` datagrams GWLB sent to
    targets for it, and the inner packets delivered back at the endpoint (empty when the appliance lost it)."""
    def inject(inner: bytes, endpoint: int = 0) -> Any:
        return gwlb.through(gwlb.topo.endpoints[endpoint].eni_id, inner)

    return inject


@pytest.fixture
def gwlb_targets(gwlb: Any) -> dict[str, str]:
    """GWLB's view of its targets now: target id (``app0``, ``app1``, ...) -> ``healthy``, ``unhealthy``, ..."""
    return dict(gwlb.session.target_states())


@pytest.fixture
def gwlb_drops(gwlb: Any) -> Callable[[], dict[str, int]]:
    """``gwlb_drops()``: what GWLB has dropped so far, reason -> count (a return it could not match to a flow,
    a datagram it cannot parse, ...): take it before and after your traffic."""
    return lambda: dict(gwlb.call(lambda m: dict(m.metrics.drops)))


@pytest.fixture
def gwlb_capture(gwlb: Any) -> Callable[..., Any]:
    """``with gwlb_capture(want) as col: ...``: every datagram GWLB sees while the block runs for which
    ``want(captured)`` is true, in ``col.items`` (``Captured``: ``kind`` is ``from_endpoint``, ``to_target``,
    ``from_target`` or ``delivered``; ``data``, addresses, ports, ``verdict`` ("" or GWLB's drop reason));
    ``col.wait_for(predicate, timeout)`` waits for what you expect."""
    return gwlb.collecting


def _keep_logs(artifacts: Path | None, tmp: Path) -> None:
    """Keep the appliances' output with the artifacts."""
    if artifacts is None:
        return
    artifacts.mkdir(parents=True, exist_ok=True)
    for log in tmp.glob("*.log"):
        (artifacts / log.name).write_bytes(log.read_bytes())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_start_key] = time.time()
    yield


_logs_key = pytest.StashKey[list[int]]()
_devices_key = pytest.StashKey[list[dict[str, int]]]()


@pytest.fixture(autouse=True)
def _gwlb_supervised(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around every requirement test: instances restarted if an earlier test left one dead, a fresh ENI, and
    the appliance log and tunnel devices noted, for attributing a failure."""
    item = request.node
    if item.get_closest_marker(MARKER) is None or "gwlb" not in getattr(item, "fixturenames", ()):
        yield
        return
    env = request.getfixturevalue("gwlb")
    try:
        notes = env.begin_test(item.nodeid)
    except Exception as e:
        line, _ = _cause(e)
        pytest.skip(results.NOT_RUN + line)
    for n in notes:
        item.user_properties.append(("note", n))
    item.stash[_logs_key] = env.log_offsets()
    item.stash[_devices_key] = env.tunnel_devices()
    yield


def artifact_dir(base: Path, nodeid: str) -> Path:
    """One directory per test (and per parameter): ``test_x.py::test_y[case]`` -> ``test_x__test_y_case``."""
    name = nodeid.rsplit("/", 1)[-1].replace(".py::", "__").replace("::", "__")
    return base / re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


_ERROR_LINE = re.compile(r"error|fail|cannot|can't|exclusiv|traceback|denied|abort|fatal|segfault", re.I)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if rep.when != "call" or item.get_closest_marker(MARKER) is None:
        return
    env = getattr(item, "funcargs", {}).get("gwlb")
    if env is None:
        return
    artifacts: Path | None = item.config.getoption("--gwlb-artifacts")
    where = artifact_dir(artifacts, item.nodeid) if artifacts is not None else None
    crashes = env.crashes_in_test()
    if crashes:  # a crash is the finding, whatever the test's own checks said after it
        c = crashes[0]
        msg = f"instance {c.instance} {c.how} during this test"
        repro = env.reproducer(c, where) if where is not None else None
        if repro is not None:
            msg += f"; the datagrams sent to it before are in {repro} (replay: {repro.with_suffix('.replay.sh')})"
            rep.user_properties.append(("reproducer", str(repro)))
        rep.outcome = "failed"
        rep.longrepr = msg
    if not rep.failed:
        return
    exc = call.excinfo.value if call.excinfo else None
    packet = getattr(exc, "packet", None)

    if packet:
        rep.sections.append(("offending packet", hexdump(packet)))
    # attribution: what the appliance said and did while the test ran
    found: list[str] = []
    logs = env.log_since(item.stash.get(_logs_key, []))
    for i, text in logs.items():
        lines = text.splitlines()
        rep.sections.append(("appliance log", f"instance {i}, during this test (last 60 lines):\n"
                             + "\n".join(lines[-60:])))
        at = next((n for n, ln in enumerate(lines) if _ERROR_LINE.search(ln)), None)
        bad = None if at is None else lines[at]
        if at is not None and lines[at].lstrip().startswith("Traceback"):  # its last line says why
            bad = next((ln for ln in lines[at + 1:] if ln and not ln[0].isspace()), bad)
        if bad:
            found.append(f"instance {i} logged: {bad.strip()[:200]}")
    before = item.stash.get(_devices_key, [])
    after = env.tunnel_devices()
    for i, (b, a) in enumerate(zip(before, after, strict=False)):
        redone = sorted(n for n in b.keys() & a.keys() if b[n] != a[n])
        if redone:
            found.append(f"instance {i} re-created {', '.join(redone)} during this test")
    if found:
        rep.user_properties.append(("attribution", "; ".join(found)))
        rep.sections.append(("supervision", "\n".join(found)))
    if where is None:
        return
    where.mkdir(parents=True, exist_ok=True)
    for i, text in logs.items():
        (where / f"appliance-{i}.log").write_text(text)
        rep.user_properties.append(("log", str(where / f"appliance-{i}.log")))
    if env.capture is not None:
        pcap = where / "capture.pcap"
        n = env.capture.write(pcap, item.stash.get(_start_key, 0.0))
        rep.user_properties.append(("pcap", str(pcap)))
        rep.sections.append(("capture", f"{n} frames written to {pcap}"))
    if packet:
        (where / "offending.hex").write_text(hexdump(packet) + "\n")
        rep.user_properties.append(("hexdump", str(where / "offending.hex")))


_config: pytest.Config | None = None


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _config
    _config = session.config
    now = time.monotonic()
    session.config.stash[_progress_key] = [now, 0.0, now]
    session.config.stash[_session_key] = session  # for the progress lines' test count


#: at most this often, a line saying how far the run is and when it should end
PROGRESS_EVERY = 15.0
_progress_key = pytest.StashKey[list[float]]()  # [started, tests done, last line printed]
_session_key = pytest.StashKey[pytest.Session]()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect outcomes by requirement (on the controller too, when pytest-xdist runs the tests)."""
    if _config is None:
        return
    res = _config.stash.get(results.RESULTS, None)
    if res is not None:
        res.add(report)
        if report.when == "teardown":
            _progress(_config)


def _progress(config: pytest.Config) -> None:
    """Every PROGRESS_EVERY seconds of a suite run (not with -q): tests done of all, and an estimate of the rest
    from the pace so far."""
    now = time.monotonic()
    state = config.stash.setdefault(_progress_key, [now, 0.0, now])
    state[1] += 1
    session = config.stash.get(_session_key, None)
    total = session.testscollected if session is not None else 0
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not total or reporter is None or config.option.verbose < 0 or now - state[2] < PROGRESS_EVERY:
        return
    state[2] = now
    done, elapsed = int(state[1]), now - state[0]
    left = elapsed / done * (total - done) if done < total else 0.0
    reporter.write_line(f"gwlb-conformance: {done} of {total} tests done in {elapsed:.0f} s; about {left:.0f} s "
                        "to go")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    res = _results(config)
    if res is None:
        return
    terminalreporter.write_sep("=", "GWLB appliance conformance")
    for line in res.summary_lines():
        terminalreporter.write_line(line)
    if res.could_not_run_detail:
        terminalreporter.write_line("the appliance's last output:")
        for line in res.could_not_run_detail.splitlines()[-15:]:
            terminalreporter.write_line("  " + line)
    if config.getoption("--gwlb-json"):
        path = config.getoption("--gwlb-json")
        path.write_text(json.dumps(res.as_dict(), indent=1) + "\n")
        terminalreporter.write_line(f"JSON results: {path}")
    if config.getoption("--gwlb-html"):
        path = config.getoption("--gwlb-html")
        path.write_text(res.html(title=f"GWLB conformance: {spec_from(config).command}"))
        terminalreporter.write_line(f"HTML report: {path}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The exit status is the verdict's (see gwlbsim.conformance.results), unless pytest was stopped or misused."""
    res = _results(session.config)
    if res is None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        session.exitstatus = results.EXIT_INTERRUPTED
    elif exitstatus == pytest.ExitCode.USAGE_ERROR:
        session.exitstatus = results.EXIT_USAGE
    elif exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        session.exitstatus = results.EXIT_COULD_NOT_RUN
        res.could_not_run = res.could_not_run or "the suite itself failed (internal error, see above)"
    else:
        session.exitstatus = res.status()[0]
