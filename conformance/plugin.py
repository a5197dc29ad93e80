"""The conformance suite as a pytest plugin (entry point ``pytest11: gwlb_conformance``).

Inert unless asked: ``pytest --gwlb-conformance`` (the reference appliance) or ``pytest --gwlb-appliance
'CMD'`` adds the suite to the run. It composes with ``-k``, ``-x``, markers and pytest-xdist (each worker
builds its own namespaces). Results are reported requirement by requirement; only MUST failures make the
exit status non-zero.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import results
from conformance.requirements import MUST, REQUIREMENTS
from gwlbsim.appliance import REFERENCE_COMMAND, ApplianceSpec

SUITE_DIR = Path(__file__).parent / "suite"
MARKER = "gwlb_requirement"
_start_key = pytest.StashKey[float]()


def requirement(req_id: str) -> pytest.MarkDecorator:
    """Mark a test as checking requirement ``req_id`` (see conformance.requirements)."""
    if req_id not in REQUIREMENTS:
        raise KeyError(f"unknown requirement {req_id!r}")
    return getattr(pytest.mark, MARKER)(req_id)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gwlb", "GWLB appliance conformance")
    g.addoption("--gwlb-conformance", action="store_true", help="run the GWLB conformance suite")
    g.addoption("--gwlb-appliance", metavar="CMD", help="appliance command template (implies --gwlb-conformance; "
                "default: the reference appliance). Placeholders: {python} {hook} {health_port} {flow_timeout} "
                "{tunnel_timeout} {netns} {address} {gwlb_address} {index} {workdir}")
    g.addoption("--gwlb-health-protocol", choices=("http", "tcp", "none"), default="http")
    g.addoption("--gwlb-health-port", type=int, default=8080)
    g.addoption("--gwlb-health-path", default="/")
    g.addoption("--gwlb-instances", type=int, default=2, help="appliance instances (symmetry and failover need 2)")
    g.addoption("--gwlb-ready-timeout", type=float, default=20.0, help="seconds for an instance to become healthy")
    g.addoption("--gwlb-flow-timeout", type=float, default=None,
                help="the flow timeout the appliance is configured with (reference default here: 5)")
    g.addoption("--gwlb-tunnel-timeout", type=float, default=None,
                help="the tunnel idle timeout it is configured with; 0 = none (reference default here: 3)")
    g.addoption("--gwlb-rate", type=float, default=2000.0, help="packets/s of the sustained-traffic check")
    g.addoption("--gwlb-duration", type=float, default=5.0, help="seconds of the sustained-traffic check")
    g.addoption("--gwlb-examples", type=int, default=30, help="Hypothesis examples per property")
    g.addoption("--gwlb-artifacts", type=Path, default=None, help="directory for pcaps and hex dumps of failures")
    g.addoption("--gwlb-json", type=Path, default=None, help="write results as JSON")
    g.addoption("--gwlb-html", type=Path, default=None, help="write a self-contained HTML report")
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
    config.stash[results.RESULTS] = results.Results()


def spec_from(config: pytest.Config) -> ApplianceSpec:
    cmd = config.getoption("--gwlb-appliance")
    flow_t = config.getoption("--gwlb-flow-timeout")
    tun_t = config.getoption("--gwlb-tunnel-timeout")
    if cmd is None:  # the reference, configured with short timeouts so the timeout checks run quickly
        cmd = REFERENCE_COMMAND
        flow_t = 5.0 if flow_t is None else flow_t
        tun_t = 3.0 if tun_t is None else tun_t
    return ApplianceSpec(command=cmd, health_protocol=config.getoption("--gwlb-health-protocol"),
                         health_port=config.getoption("--gwlb-health-port"),
                         health_path=config.getoption("--gwlb-health-path"),
                         ready_timeout=config.getoption("--gwlb-ready-timeout"),
                         flow_timeout=350.0 if flow_t is None else flow_t,
                         tunnel_timeout=0.0 if tun_t is None else tun_t,
                         name="reference" if config.getoption("--gwlb-appliance") is None else "appliance")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not active(config):
        return
    wanted = config.getoption("--gwlb-requirements")
    ids = {x.strip() for x in wanted.split(",")} if wanted else None
    if ids:
        unknown = ids - set(REQUIREMENTS)
        if unknown:
            raise pytest.UsageError(f"unknown requirement(s) {sorted(unknown)}; see gwlb-conformance --list")
    keep, drop = [], []
    for item in items:
        m = item.get_closest_marker(MARKER)
        if m is None:
            keep.append(item)
            continue
        req = REQUIREMENTS[m.args[0]]
        item.user_properties += [("requirement", req.id), ("level", req.level), ("area", req.area)]
        (keep if ids is None or req.id in ids else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def gwlb(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The live fake GWLB with the appliance instances under test (one per pytest-xdist worker)."""
    if os.geteuid() != 0:
        pytest.skip("the GWLB conformance suite needs root: it builds network namespaces")
    from conformance.environment import ConformanceEnv, Options

    config = request.config
    opts = Options(spec=spec_from(config), instances=config.getoption("--gwlb-instances"),
                   artifacts=config.getoption("--gwlb-artifacts"), rate=config.getoption("--gwlb-rate"),
                   duration=config.getoption("--gwlb-duration"),
                   hypothesis_examples=config.getoption("--gwlb-examples"))
    with tempfile.TemporaryDirectory(prefix="gwlb-conformance-") as tmp:
        env = ConformanceEnv(opts, Path(tmp))
        try:
            env.start()
        except BaseException:
            env.close()
            raise
        try:
            yield env
        finally:
            env.close()
            if opts.artifacts is not None:  # keep the appliances' output with the artifacts
                opts.artifacts.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    (opts.artifacts / log.name).write_bytes(log.read_bytes())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_start_key] = time.time()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if rep.when != "call" or not rep.failed or item.get_closest_marker(MARKER) is None:
        return
    env = getattr(item, "funcargs", {}).get("gwlb")
    artifacts: Path | None = item.config.getoption("--gwlb-artifacts")
    exc = call.excinfo.value if call.excinfo else None
    packet = getattr(exc, "packet", None)
    if packet:
        from conformance.environment import hexdump

        rep.sections.append(("offending packet", hexdump(packet)))
    if artifacts is None or env is None or env.capture is None:
        return
    base = artifacts / item.nodeid.replace("/", "_").replace("::", "__").replace("[", "_").replace("]", "")
    n = env.capture.write(base.with_suffix(".pcap"), item.stash.get(_start_key, 0.0))
    rep.user_properties.append(("pcap", str(base.with_suffix(".pcap"))))
    rep.sections.append(("capture", f"{n} frames written to {base.with_suffix('.pcap')}"))
    if packet:
        base.with_suffix(".hex").write_text(hexdump(packet) + "\n")
        rep.user_properties.append(("hexdump", str(base.with_suffix(".hex"))))


_config: pytest.Config | None = None


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _config
    _config = session.config


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect outcomes by requirement (on the controller too, when pytest-xdist runs the tests)."""
    if _config is None:
        return
    res = _config.stash.get(results.RESULTS, None)
    if res is not None:
        res.add(report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    res = config.stash.get(results.RESULTS, None)
    if res is None or not res.by_requirement:
        return
    terminalreporter.write_sep("=", "GWLB appliance conformance")
    for line in res.summary_lines():
        terminalreporter.write_line(line)
    if config.getoption("--gwlb-json"):
        path = config.getoption("--gwlb-json")
        path.write_text(json.dumps(res.as_dict(), indent=1) + "\n")
        terminalreporter.write_line(f"JSON results: {path}")
    if config.getoption("--gwlb-html"):
        path = config.getoption("--gwlb-html")
        path.write_text(res.html(title=f"GWLB conformance: {spec_from(config).command}"))
        terminalreporter.write_line(f"HTML report: {path}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    res = session.config.stash.get(results.RESULTS, None)
    if res is None or exitstatus != pytest.ExitCode.TESTS_FAILED:
        return
    if not res.failed(MUST) and not res.failed_unmarked:
        session.exitstatus = pytest.ExitCode.OK  # only SHOULD/MAY failures: reported, not fatal
