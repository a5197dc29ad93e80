"""Proving the conformance suite: the reference passes everything; each deliberately faulty appliance fails
the requirement its fault breaks. Every run is a real ``gwlb-conformance`` in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

HERE = Path(__file__).parent / "faulty"
REFLECTOR = "{python} " + str(HERE / "reflector.py") + " --health-port {health_port}"


def variant(fault: str) -> str:
    """The reference with one fault, configured as the suite expects (hooks, health, short timeouts)."""
    return ("{python} " + str(HERE / "reference_variant.py") + f" {fault}"
            " -c 'sh {hook}' -r 'sh {hook}' -p {health_port} -j -i {flow_timeout} -t {tunnel_timeout}")


def run_suite(tmp_path: Path, *args: str) -> tuple[int, dict[str, dict[str, object]], str]:
    out = tmp_path / "results.json"
    res = subprocess.run([sys.executable, "-m", "conformance.cli", "--json", str(out), "--artifacts",
                          str(tmp_path / "artifacts"), "-q", *args], capture_output=True, text=True, timeout=900)
    results = {r["id"]: r for r in json.loads(out.read_text())["requirements"]} if out.exists() else {}
    return res.returncode, results, res.stdout[-6000:] + res.stderr[-3000:]


# (appliance command, its flow/tunnel timeouts, requirements to run, the ones that must fail)
FAULTY = {
    "drops the cookie option": (REFLECTOR + " --fault drop-cookie", "ECHO-2,COOKIE-1", {"ECHO-2", "COOKIE-1"}),
    "rewrites the header": (REFLECTOR + " --fault rewrite-header", "ECHO-2,ECHO-3", {"ECHO-2"}),
    "swaps the UDP ports": (REFLECTOR + " --fault swap-ports", "ECHO-1", {"ECHO-1"}),
    "answers for unseen flows": (REFLECTOR + " --fault originate", "SYM-3", {"SYM-3"}),
    "forwards malformed packets": (REFLECTOR + " --fault no-validation", "ROBUST-1", {"ROBUST-1"}),
    "crashes on oversize input": (REFLECTOR + " --fault crash-on-oversize", "ROBUST-3", {"ROBUST-3"}),
    "never reports 503": (variant("never-503"), "HEALTH-3", {"HEALTH-3"}),
    "leaves devices behind on teardown": (variant("leaves-devices"), "TIMEOUT-3", {"TIMEOUT-3"}),
    "mixes up endpoints with overlapping addresses": (variant("mixes-endpoints"), "COOKIE-3", {"COOKIE-3"}),
    "keeps a stale cookie after 5-tuple reuse": (variant("stale-cookie"), "COOKIE-2", {"COOKIE-2"}),
}


@pytest.mark.parametrize("fault", list(FAULTY))
def test_each_faulty_appliance_fails_its_requirement(tmp_path: Path, fault: str) -> None:
    cmd, reqs, must_fail = FAULTY[fault]
    code, results, out = run_suite(tmp_path, "--appliance", cmd, "--requirements", reqs, "--instances", "1",
                                   "--flow-timeout", "5", "--tunnel-timeout", "3", "--examples", "10")
    failed = {r for r, v in results.items() if v["verdict"] == "FAIL"}
    assert must_fail <= failed, f"{fault}: expected {must_fail} to fail, got {failed}\n{out}"
    must = any(results[r]["level"] == "MUST" for r in must_fail)
    assert code == (1 if must else 0), f"exit status {code}\n{out}"
    assert list((tmp_path / "artifacts").glob("*.pcap")), "a failure leaves a pcap"


def test_the_faultless_reflector_passes_what_it_implements(tmp_path: Path) -> None:
    code, results, out = run_suite(tmp_path, "--appliance", REFLECTOR, "--requirements",
                                   "ECHO-1,ECHO-2,ECHO-3,COOKIE-1,COOKIE-2,COOKIE-3,ROBUST-1,ROBUST-3",
                                   "--instances", "1", "--examples", "10")
    assert code == 0 and results and all(v["verdict"] == "PASS" for v in results.values()), out


def test_the_reference_passes_the_whole_suite(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    junit = tmp_path / "junit.xml"
    code, results, out = run_suite(tmp_path, "--html", str(html), "--junit", str(junit))
    from conformance.requirements import REQUIREMENTS

    assert set(results) == set(REQUIREMENTS), f"not every requirement ran: {set(REQUIREMENTS) - set(results)}"
    bad = {r: v["reason"] for r, v in results.items() if v["verdict"] != "PASS"}
    assert not bad and code == 0, f"{bad}\n{out}"
    assert "CONFORMANT" in html.read_text() and "<testcase" in junit.read_text()
