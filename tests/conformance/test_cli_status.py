"""``gwlb-conformance``'s honest status: bad options refused before anything starts (exit 2), an appliance that
cannot run is COULD NOT RUN (exit 3) with every requirement NOT RUN, a run where MUST requirements did not run is
INCOMPLETE (exit 4), and a run killed by SIGTERM, SIGINT or SIGKILL (then ``gwlbsim cleanup``) leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gwlbsim.linuxio.netns import list_namespaces

pytestmark = pytest.mark.alone  # it compares every gs* namespace and every reflector process before and after

HERE = Path(__file__).parent / "faulty"
REFLECTOR = "{python} " + str(HERE / "reflector.py") + " --health-port {health_port}"
CLI = [sys.executable, "-m", "gwlbsim.conformance.cli"]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def _ours() -> set[str]:
    return {n for n in list_namespaces() if n.startswith("gs")}


def _reflector_pids() -> set[int]:
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"faulty/reflector.py" in (p / "cmdline").read_bytes():
                    pids.add(int(p.name))
            except OSError:
                pass
    return pids


BAD = {
    "empty appliance": (["--appliance", ""], "--appliance: empty command"),
    "blank appliance": (["--appliance", "   "], "--appliance: empty command"),
    "zero ready timeout": (["--ready-timeout", "0"], "--ready-timeout: 0 is not within 0.5-600"),
    "zero instances": (["--instances", "0"], "--instances: 0 is not within 1-8"),
    "zero examples": (["--examples", "0"], "--examples: 0 is not within 1-100000"),
    "health port 0": (["--health-port", "0"], "--health-port"),
    "zero rate": (["--rate", "0"], "--rate: 0 is not within 1-1000000"),
    "zero duration": (["--duration", "0"], "--duration: 0 is not within 0.5-3600"),
    "unknown requirement": (["--requirements", "ECHO-1,NOPE-9"], "unknown requirement(s) NOPE-9"),
    "junit into a missing directory": (["--junit", "/nonexistent/dir/j.xml"], "directory /nonexistent/dir does not"),
    "artifacts under a missing directory": (["--artifacts", "/nonexistent/dir/a"], "does not exist"),
    "unknown placeholder": (["--appliance", "x {nope}"], "unknown placeholder {nope}"),
    "health path": (["--health-path", "health"], "must start with /"),
    "datapath of another appliance": (["--appliance", "x", "--datapath", "python"],
                                      "--datapath chooses the built-in reference's datapath"),
    "unknown datapath": (["--datapath", "ebpf"], "--datapath: invalid choice: 'ebpf'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_options_are_refused_before_anything_starts(tmp_path: Path, case: str) -> None:
    args, message = BAD[case]
    before = _ours() if os.geteuid() == 0 else set()
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("usage:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == [], "nothing written"
    if os.geteuid() == 0:
        assert _ours() - before == set(), "no namespace made"


def _run(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "r.json"
    r = subprocess.run([*CLI, "--json", str(out), "--artifacts", str(tmp_path / "a"), "-q", *args],
                       capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    return r, (json.loads(out.read_text()) if out.exists() else {})


@needs_root
def test_a_missing_program_could_not_run(tmp_path: Path) -> None:
    r, _ = _run(tmp_path, "--appliance", "/nonexistent/appliance --flag")
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == "gwlb-conformance: COULD NOT RUN: command not found or not executable: " \
                               "/nonexistent/appliance"


@needs_root
@pytest.mark.parametrize("case", ["exits at once", "never ready"])
def test_an_appliance_that_cannot_start_could_not_run(tmp_path: Path, case: str) -> None:
    before = _ours()
    if case == "exits at once":
        r, res = _run(tmp_path, "--appliance", "sh -c 'echo cannot open config.yaml >&2; exit 7'")
        want = "exited with status 7"
        detail = "cannot open config.yaml"
    else:
        r, res = _run(tmp_path, "--appliance", "sleep 60", "--ready-timeout", "1")
        want = "not healthy within 1 s"
        detail = "Connection refused"
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr
    verdict = next(ln for ln in r.stdout.splitlines() if ln.startswith("verdict: "))
    assert verdict.startswith("verdict: COULD NOT RUN:") and want in verdict and detail in verdict, verdict
    assert res["status"] == 3 and {q["verdict"] for q in res["requirements"]} == {"NOT RUN"}
    assert "Traceback" not in r.stdout and r.stdout.count("\n") < 200, "a short report, not tracebacks"
    assert _ours() - before == set()


@needs_root
def test_a_run_where_no_must_requirement_ran_is_incomplete(tmp_path: Path) -> None:
    # only requirements that cannot apply to a reflector: nothing ran, so it is not CONFORMANT
    r, res = _run(tmp_path, "--appliance", REFLECTOR, "--instances", "1", "--requirements", "TIMEOUT-3,TIMEOUT-4")
    assert r.returncode == 4, r.stdout[-3000:]
    assert res["verdict"].startswith("INCOMPLETE: no MUST requirement ran"), res["verdict"]
    assert {q["verdict"] for q in res["requirements"]} == {"NOT APPLICABLE"}
    # deselecting everything with -k
    r, _ = _run(tmp_path, "--appliance", REFLECTOR, "--instances", "1", "--", "-k", "no_such_test")
    assert r.returncode == 4 and "INCOMPLETE" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr
    # a MUST requirement that applies but cannot run here (no tunnel timeout given for a gwlbtun-style appliance)
    ref = ("{python} -m gwlbsim.reference.cli -c 'sh {hook}' -r 'sh {hook}' -p {health_port} -j -i 5")
    r, res = _run(tmp_path, "--appliance", ref, "--instances", "1", "--requirements", "TIMEOUT-3,ECHO-1")
    assert r.returncode == 4, r.stdout[-3000:]
    t3 = next(q for q in res["requirements"] if q["id"] == "TIMEOUT-3")
    assert t3["verdict"] == "NOT RUN" and "--tunnel-timeout" in t3["reason"], t3


def _start_and_wait_for_namespaces(tmp_path: Path, before: set[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*CLI, "--appliance", REFLECTOR, "--artifacts", str(tmp_path / "a"), "-q"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(_ours() - before) >= 5 and len(_reflector_pids()) >= 2:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run never built its namespaces")


def _workdirs() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("gwlb-conformance-*"))


def _nothing_left(before: set[str], pids_before: set[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (_ours() - before or _reflector_pids() - pids_before):
        time.sleep(0.1)
    assert _ours() - before == set(), "namespaces left behind"
    assert _reflector_pids() - pids_before == set(), "appliance processes left behind"


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_removes_everything(tmp_path: Path, sig: signal.Signals) -> None:
    before, pids, dirs = _ours(), _reflector_pids(), _workdirs()
    proc = _start_and_wait_for_namespaces(tmp_path, before)
    time.sleep(1.0)  # into the tests
    proc.send_signal(sig)
    code = proc.wait(60)
    assert code == (143 if sig == signal.SIGTERM else 130)
    _nothing_left(before, pids)
    assert _workdirs() - dirs == set(), "no working directory left"


@needs_root
def test_after_sigkill_cleanup_removes_everything(tmp_path: Path) -> None:
    before, pids, dirs = _ours(), _reflector_pids(), _workdirs()
    proc = _start_and_wait_for_namespaces(tmp_path, before)
    proc.kill()
    proc.wait(10)
    assert _ours() - before, "SIGKILL leaves the namespaces (that is what cleanup is for)"
    r = subprocess.run([sys.executable, "-m", "gwlbsim.cli", "cleanup"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _nothing_left(before, pids)
    assert _workdirs() - dirs == set(), "the killed run's working directory is removed too"


@needs_root
def test_no_health_check_and_declared_policy_drops(tmp_path: Path) -> None:
    r, res = _run(tmp_path, "--appliance", REFLECTOR, "--health-protocol", "none", "--requirements",
                  "ECHO-1,HEALTH-1,HEALTH-5,TRAFFIC-8", "--policy-drops", "TRAFFIC-8", timeout=200)
    verdicts = {q["id"]: (q["verdict"], q["reason"]) for q in res["requirements"]}
    assert r.returncode == 0, r.stdout[-3000:]
    assert verdicts["ECHO-1"][0] == "PASS"
    assert verdicts["HEALTH-1"] == ("NOT APPLICABLE", "the appliance has no health check (--health-protocol none)")
    assert verdicts["HEALTH-5"][0] == "NOT APPLICABLE"
    assert verdicts["TRAFFIC-8"][0] == "NOT APPLICABLE" and "--policy-drops" in verdicts["TRAFFIC-8"][1]
