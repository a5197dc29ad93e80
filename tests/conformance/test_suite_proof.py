"""Proving the conformance suite both ways.

* Each deliberately faulty appliance fails exactly the requirements its fault breaks (no more: a fault must
  not cascade into unrelated failures).
* The calibration set: appliances that are correct but different from the reference (a stateful firewall, a
  health server with bare-LF line endings, TCP-only health, a raw-socket reflector, a kernel-only NAT
  hairpin, a gwlbtun-style appliance routing through the kernel, one that crashes on one requirement's
  input) get exactly the verdict expected for every requirement: no false failure.

Every run is a real ``gwlb-conformance`` in a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.requirements import REQUIREMENTS

pytestmark = [pytest.mark.root, pytest.mark.slow]

HERE = Path(__file__).parent / "faulty"
REFLECTOR = "{python} " + str(HERE / "reflector.py") + " --health-port {health_port}"
HAIRPIN = "sh " + str(HERE / "hairpin.sh") + " {address} {gwlb_address} {health_port}"
FORWARD_HOOK = f"sh {HERE / 'hooks' / 'forward.sh'}"


def variant(fault: str) -> str:
    """The reference with one fault, configured as the suite expects (hooks, health, short timeouts)."""
    return ("{python} " + str(HERE / "reference_variant.py") + f" {fault}"
            " -c 'sh {hook}' -r 'sh {hook}' -p {health_port} -j -i {flow_timeout} -t {tunnel_timeout}")


def run_suite(tmp_path: Path, *args: str) -> tuple[int, dict[str, dict[str, object]], str]:
    out = tmp_path / "results.json"
    res = subprocess.run([sys.executable, "-m", "conformance.cli", "--json", str(out), "--artifacts",
                          str(tmp_path / "artifacts"), "-q", *args], capture_output=True, text=True, timeout=900)
    results = {r["id"]: r for r in json.loads(out.read_text())["requirements"]} if out.exists() else {}
    return res.returncode, results, res.stdout[-8000:] + res.stderr[-3000:]


# (appliance command, requirements to run, exactly the ones that must fail)
FAULTY = {
    "drops the cookie option": (REFLECTOR + " --fault drop-cookie", "ECHO-2,COOKIE-1,ECHO-3", {"ECHO-2", "COOKIE-1"}),
    "rewrites the header": (REFLECTOR + " --fault rewrite-header", "ECHO-2,ECHO-3", {"ECHO-2"}),
    "swaps the UDP ports": (REFLECTOR + " --fault swap-ports", "ECHO-1,ECHO-3", {"ECHO-1", "ECHO-3"}),
    "answers for unseen flows": (REFLECTOR + " --fault originate", "SYM-3,ECHO-3", {"SYM-3"}),
    "forwards malformed packets": (REFLECTOR + " --fault no-validation", "ROBUST-1,ECHO-3", {"ROBUST-1"}),
    "never reports 503": (variant("never-503"), "HEALTH-3,ECHO-3", {"HEALTH-3"}),
    "leaves devices behind on teardown": (variant("leaves-devices"), "TIMEOUT-3,ECHO-3", {"TIMEOUT-3"}),
    "mixes up endpoints with overlapping addresses": (variant("mixes-endpoints"), "COOKIE-3,ECHO-3", {"COOKIE-3"}),
    "keeps a stale cookie after 5-tuple reuse": (variant("stale-cookie"), "COOKIE-2,ECHO-3", {"COOKIE-2"}),
}


@pytest.mark.parametrize("fault", list(FAULTY))
def test_each_faulty_appliance_fails_exactly_its_requirement(tmp_path: Path, fault: str) -> None:
    cmd, reqs, must_fail = FAULTY[fault]
    code, results, out = run_suite(tmp_path, "--appliance", cmd, "--requirements", reqs, "--instances", "1",
                                   "--flow-timeout", "5", "--tunnel-timeout", "3", "--examples", "10")
    failed = {r for r, v in results.items() if v["verdict"] == "FAIL"}
    assert failed == must_fail, f"{fault}: expected exactly {must_fail} to fail, got {failed}\n{out}"
    must = any(results[r]["level"] == "MUST" for r in must_fail)
    assert code == (1 if must else 0), f"exit status {code}\n{out}"
    assert list((tmp_path / "artifacts").rglob("capture.pcap")), "a failure leaves a pcap of its own"


def test_a_crash_is_reported_as_such_restarted_and_reproducible(tmp_path: Path) -> None:
    """The faulty appliance that crashes on oversize input: ROBUST-3 fails as a crash, the others still pass."""
    code, results, out = run_suite(tmp_path, "--appliance", REFLECTOR + " --fault crash-on-oversize",
                                   "--requirements", "ROBUST-3,HEALTH-1,ECHO-1", "--instances", "1")
    assert code == 1, out
    r3 = results["ROBUST-3"]
    assert r3["verdict"] == "FAIL" and "instance 0 exited with status 3 during this test" in r3["reason"], out
    assert results["HEALTH-1"]["verdict"] == "PASS" and results["ECHO-1"]["verdict"] == "PASS", out
    repro = [t["artifacts"].get("reproducer") for t in r3["tests"] if t["artifacts"].get("reproducer")]
    assert repro and all(Path(p).stat().st_size > 24 for p in repro), "each crash leaves a pcap reproducer"
    assert Path(repro[0]).with_suffix(".replay.sh").read_text().count("gwlb-fuzz --replay") == 1
    assert "restarted before" in out, "the report says the instance was restarted, and why"
    pcaps = list((tmp_path / "artifacts").rglob("capture.pcap"))
    assert len(pcaps) == len({p.parent for p in pcaps}) == 3, "one capture per failing test (16, 32, 64 KB)"


def _expect(**overrides: str) -> dict[str, str]:
    want = {r: "PASS" for r in REQUIREMENTS}
    want.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return want


NA = "NOT APPLICABLE"
CALIBRATION = {
    # a stateful firewall (drops TCP of flows never opened with a SYN) answering health with bare LF, passing
    # inner packets through unchecked, reading GENEVE from a raw socket
    "stateful raw-socket reflector, bare-LF health": (
        ["--appliance", REFLECTOR + " --stateful --health-lf --inner-lenient --raw-receive", "--flow-timeout", "1"],
        _expect(TRAFFIC_8="FAIL", ROBUST_6="FAIL", TIMEOUT_3=NA, TIMEOUT_4=NA, HEALTH_3=NA), 0),
    # TCP-only health, and a crash on every datagram over 9000 bytes: only ROBUST-3 may fail
    "TCP health, crashes on oversize input": (
        ["--appliance", REFLECTOR + " --health-tcp --fault crash-on-oversize", "--health-protocol", "tcp",
         "--flow-timeout", "1"],
        _expect(ROBUST_3="FAIL", TIMEOUT_3=NA, TIMEOUT_4=NA, HEALTH_3=NA), 1),
    # kernel configuration only (nftables DNAT + masquerade hairpin, as AWS's samples): no GENEVE parser at all,
    # so malformed GENEVE really is forwarded (true failures); nothing else may fail
    "kernel NAT hairpin": (
        ["--appliance", HAIRPIN, "--flow-timeout", "1"],
        _expect(ROBUST_1="FAIL", ROBUST_2="FAIL", ROBUST_4="FAIL", ROBUST_6="FAIL", TIMEOUT_3=NA, TIMEOUT_4=NA,
                HEALTH_3=NA), 1),
    # gwlbtun-style, its hook routing through the kernel (ip_forward, policy routing) instead of tc mirred
    "reference with a routing hook": (
        ["--appliance", f"{{python}} -m reference.cli -c '{FORWARD_HOOK}' -r '{FORWARD_HOOK}' -p {{health_port}} -j "
         "-i {flow_timeout} -t {tunnel_timeout}", "--flow-timeout", "5", "--tunnel-timeout", "3"],
        _expect(), 0),
}


@pytest.mark.parametrize("name", list(CALIBRATION))
def test_correct_but_different_appliances_get_exactly_their_verdicts(tmp_path: Path, name: str) -> None:
    args, want, status = CALIBRATION[name]
    code, results, out = run_suite(tmp_path, *args, "--examples", "5", "--duration", "2")
    got = {r: v["verdict"] for r, v in results.items()}
    wrong = {r: (got.get(r), want[r], results.get(r, {}).get("reason")) for r in want if got.get(r) != want[r]}
    assert not wrong, f"{name}: (got, expected, reason) {wrong}\n{out}"
    assert code == status, f"{name}: exit status {code}, expected {status}\n{out}"


def test_the_reference_passes_the_whole_suite(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    junit = tmp_path / "junit.xml"
    code, results, out = run_suite(tmp_path, "--html", str(html), "--junit", str(junit))
    assert set(results) == set(REQUIREMENTS), f"not every requirement ran: {set(REQUIREMENTS) - set(results)}"
    bad = {r: v["reason"] for r, v in results.items() if v["verdict"] != "PASS"}
    assert not bad and code == 0, f"{bad}\n{out}"
    assert "CONFORMANT" in html.read_text() and "<testcase" in junit.read_text()
