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
from gwlbsim.conformance.requirements import REQUIREMENTS

from gwlbsim.appliance import LOCAL_PORT, REFERENCE_COMMAND, reference_command

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.proof]

#: the scale check (ROBUST-8) of the whole-suite runs: smaller than the default 100,000 flows, so that four
#: runs side by side (``tox -e proof``) stay within what two cores carry
SCALE = ("--flows", "5000", "--flow-rate", "1000")

HERE = Path(__file__).parent / "faulty"
REFLECTOR = "{python} " + str(HERE / "reflector.py") + " --health-port {health_port}"
HAIRPIN = "sh " + str(HERE / "hairpin.sh") + " {address} {gwlb_address} {health_port}"


def variant(fault: str, hook: str = "sh {hook}") -> str:
    """The reference with one fault of its Python datapath, configured as the suite expects (hooks, health,
    short timeouts; --datapath python, so that the kernel path does not carry the flows past the fault)."""
    return ("{python} " + str(HERE / "reference_variant.py") + f" {fault}"
            f" -c '{hook}' -r '{hook}' -p {{health_port}} -j -i {{flow_timeout}} -t {{tunnel_timeout}}"
            " --datapath python")


def hook_fault(fault: str, mode: str) -> str:
    """The hook of ``mode`` with one fault (``faulty/hook_fault.sh``), as the reference's shipped one is run."""
    return f"sh {HERE / 'hook_fault.sh'} {fault} {{hook:{mode}}}"


def deployed(mode: str, hook: str) -> str:
    """The reference deployed in ``mode`` (``reference_command(mode)``), running ``hook`` instead of its own."""
    return reference_command(mode).replace(f"sh {{hook:{mode}}}", hook)


def run_suite(tmp_path: Path, *args: str) -> tuple[int, dict[str, dict[str, object]], str]:
    out = tmp_path / "results.json"
    res = subprocess.run([sys.executable, "-m", "gwlbsim.conformance.cli", "--json", str(out), "--artifacts",
                          str(tmp_path / "artifacts"), "-q", *args], capture_output=True, text=True, timeout=900)
    results = {r["id"]: r for r in json.loads(out.read_text())["requirements"]} if out.exists() else {}
    return res.returncode, results, res.stdout[-8000:] + res.stderr[-3000:]


def fault(name: str, *switches: str) -> str:
    return " ".join([REFLECTOR, *switches, "--fault", name])


I1 = ("--instances", "1")
I2 = ("--instances", "2")

# name: (appliance command, requirements to run, exactly the ones that must fail, further suite arguments).
# Every requirement of the catalogue is in some entry's failing set (test_every_requirement_is_proven); ECHO-3
# (or another requirement the fault leaves alone) is run beside the target as the control that must pass.
FAULTY: dict[str, tuple[str, str, set[str], tuple[str, ...]]] = {
    "swaps the UDP ports": (fault("swap-ports"), "ECHO-1,ECHO-3", {"ECHO-1", "ECHO-3"}, I1),
    "answers only the first GWLB node": (fault("first-node-only"), "ECHO-1,ECHO-3", {"ECHO-1"}, I1),
    "rewrites the header": (fault("rewrite-header"), "ECHO-2,ECHO-3", {"ECHO-2"}, I1),
    "changes the inner packet": (fault("mangles-inner"), "ECHO-3,ECHO-1", {"ECHO-3"}, I1),
    "rejects options of other classes": (fault("rejects-foreign-options"), "ECHO-4,ECHO-2,ECHO-3",
                                         {"ECHO-4", "ECHO-2"}, I1),
    "drops the cookie option": (fault("drop-cookie"), "ECHO-2,COOKIE-1,ECHO-3", {"ECHO-2", "COOKIE-1"}, I1),
    "keeps a stale cookie after 5-tuple reuse": (variant("stale-cookie"), "COOKIE-2,TIMEOUT-2,ECHO-3",
                                                 {"COOKIE-2", "TIMEOUT-2"}, I1),
    "mixes up endpoints with overlapping addresses": (variant("mixes-endpoints"), "COOKIE-3,ECHO-3", {"COOKIE-3"},
                                                      I1),
    "one header per endpoint": (variant("header-per-endpoint"), "COOKIE-4,COOKIE-1", {"COOKIE-4", "COOKIE-1"}, I1),
    "drops the servers' answers": (fault("drops-server-answers"), "SYM-1,TRAFFIC-2,ECHO-3", {"SYM-1", "TRAFFIC-2"},
                                   I2),
    "returns from another instance's address": (fault("spoofs-neighbour"), "SYM-2,HEALTH-1", {"SYM-2"},
                                                (*I2, "--nodes", "1")),
    "answers for unseen flows": (fault("originate"), "SYM-3,ECHO-3", {"SYM-3"}, I1),
    "returns never-seen flows written into its tunnels": (variant("returns-unseen"), "SYM-3,ECHO-3", {"SYM-3"}, I1),
    "drops TCP data": (fault("drops-tcp-payload"), "TRAFFIC-1,ECHO-3", {"TRAFFIC-1"}, I1),
    "drops some ping replies": (fault("drops-some-pings"), "TRAFFIC-3,ECHO-3", {"TRAFFIC-3"}, I1),
    "keys 3-tuple flows one way": (fault("one-way-3tuple"), "TRAFFIC-4,ECHO-3", {"TRAFFIC-4"}, I1),
    "drops non-first fragments": (fault("drop-non-first-fragments"), "TRAFFIC-5,ECHO-3", {"TRAFFIC-5"}, I1),
    "drops inner packets over 1500 bytes": (fault("small-mtu"), "TRAFFIC-6,ECHO-3", {"TRAFFIC-6"}, I1),
    "drops IPv4 packets with options": (fault("drops-ipv4-options"), "TRAFFIC-7,TRAFFIC-6", {"TRAFFIC-7"},
                                        (*I1, "--examples", "40")),
    "a stateful firewall (no mid-stream pickup)": (REFLECTOR + " --stateful", "TRAFFIC-8,ECHO-3", {"TRAFFIC-8"}, I1),
    "a stateful firewall forgetting idle flows": (fault("forgets-idle-flows", "--stateful"), "TIMEOUT-1,ECHO-3",
                                                  {"TIMEOUT-1"}, (*I1, "--flow-timeout", "1")),
    "leaves devices behind on teardown": (variant("leaves-devices"), "TIMEOUT-3,ECHO-3", {"TIMEOUT-3"}, I1),
    "loses returns after its tunnel is re-created": (variant("loses-after-recreate"), "TIMEOUT-4,ECHO-3",
                                                     {"TIMEOUT-4"}, I1),
    "health keeps its connections open": (fault("health-no-close"), "HEALTH-1,HEALTH-2", {"HEALTH-1"}, I1),
    "health answers one probe at a time": (fault("slow-serial-health"), "HEALTH-2,HEALTH-1", {"HEALTH-2"}, I1),
    "never reports 503": (variant("never-503"), "HEALTH-3,ECHO-3", {"HEALTH-3"}, I1),
    "health port without SO_REUSEADDR": (fault("no-reuseaddr"), "HEALTH-4,ECHO-3", {"HEALTH-4"}, I1),
    "restarts slowly": (fault("slow-restart"), "HEALTH-4,ECHO-3", {"HEALTH-4"}, I1),
    "health from a sidecar that outlives the datapath": (fault("health-sidecar"), "HEALTH-5,ECHO-3", {"HEALTH-5"},
                                                         I2),
    "black-holes a deleted tunnel device": (variant("black-holes"), "HEALTH-6,ECHO-3", {"HEALTH-6"}, I1),
    "forwards malformed packets": (fault("no-validation"), "ROBUST-1,ROBUST-2,ROBUST-4,ROBUST-6,ECHO-3",
                                   {"ROBUST-1", "ROBUST-2", "ROBUST-4", "ROBUST-6"}, I1),
    "forwards control packets": (fault("forwards-control"), "ROBUST-2,ROBUST-1", {"ROBUST-2"}, I1),
    "crashes on oversize input": (fault("crash-on-oversize"), "ROBUST-3,ECHO-3", {"ROBUST-3"}, I1),
    "loses and duplicates under load": (fault("loses-under-load"), "ROBUST-5,ECHO-3", {"ROBUST-5"}, I1),
    "reads GENEVE from a raw socket only": (REFLECTOR + " --raw-receive", "ROBUST-7,ECHO-3", {"ROBUST-7"}, I1),
    "passes malformed inner packets": (REFLECTOR + " --inner-lenient", "ROBUST-6,ECHO-3", {"ROBUST-6"}, I1),
    "a flow table of 1024 entries": (fault("dies-at-1025-flows"), "ROBUST-8,ECHO-3", {"ROBUST-8"},
                                     (*I1, "--flows", "3000")),
    "deployed routed, but its packets bypass the kernel (tc mirred)": (
        REFERENCE_COMMAND, "ROUTE-1,ECHO-3", {"ROUTE-1"}, (*I1, "--mode", "routed")),
    "two-arm NAT whose replies are not steered back into the tunnel": (
        deployed("nat", hook_fault("no-reply-route", "nat")), "NAT-1,ECHO-3", {"NAT-1"}, (*I1, "--mode", "nat")),
    "two-arm NAT returning replies with the endpoint's latest header": (
        variant("header-per-endpoint", "sh {hook:nat}"), "NAT-1,HEALTH-1", {"NAT-1"}, (*I1, "--mode", "nat")),
    "two-arm NAT letting the internet's packets into the tunnel, and a handler that returns unseen flows": (
        variant("returns-unseen", hook_fault("routes-inbound", "nat")),
        "NAT-2,ECHO-3", {"NAT-2"}, (*I1, "--mode", "nat")),
    "two-arm NAT without a conntrack zone per endpoint": (
        deployed("nat", hook_fault("no-zones", "nat")), "NAT-3,ECHO-3", {"NAT-3"}, (*I1, "--mode", "nat")),
    "local termination whose replies do not keep the flow's mark": (
        deployed("local", hook_fault("no-fwmark-accept", "local")), "LOCAL-1,ECHO-3", {"LOCAL-1"},
        (*I1, "--mode", "local")),
    "local termination with flows keyed by direction (the service's replies find no flow)": (
        variant("one-way-flows", "sh {hook:local}") + f" --local-responder {LOCAL_PORT}", "LOCAL-1,ECHO-3",
        {"LOCAL-1"}, (*I1, "--mode", "local")),
}


def test_every_requirement_is_proven() -> None:
    proven = set().union(*(must for _, _, must, _ in FAULTY.values()))
    assert proven == set(REQUIREMENTS), f"requirements no faulty appliance fails: {set(REQUIREMENTS) - proven}"


@pytest.mark.parametrize("name", list(FAULTY))
def test_each_faulty_appliance_fails_exactly_its_requirement(tmp_path: Path, name: str) -> None:
    cmd, reqs, must_fail, extra = FAULTY[name]
    code, results, out = run_suite(tmp_path, "--appliance", cmd, "--requirements", reqs, "--flow-timeout", "5",
                                   "--tunnel-timeout", "3", "--examples", "10", *extra)
    failed = {r for r, v in results.items() if v["verdict"] == "FAIL"}
    reasons = {r: v["reason"][:300] for r, v in results.items() if v["verdict"] != "PASS"}
    assert failed == must_fail, f"{name}: expected exactly {must_fail} to fail, got {failed}: {reasons}\n{out}"
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


#: the requirements of deployment modes other than passthrough
MODE_REQUIREMENTS = ("ROUTE-1", "NAT-1", "NAT-2", "NAT-3", "LOCAL-1")


def _expect(**overrides: str) -> dict[str, str]:
    """Every requirement PASS, those of another deployment mode NOT APPLICABLE, unless overridden."""
    want = {r: "PASS" for r in REQUIREMENTS} | {r: "NOT APPLICABLE" for r in MODE_REQUIREMENTS}
    want.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return want


NA = "NOT APPLICABLE"
CALIBRATION = {
    # a stateful firewall (drops TCP of flows never opened with a SYN) answering health with bare LF, passing
    # inner packets through unchecked, reading GENEVE from a raw socket
    "stateful raw-socket reflector, bare-LF health": (
        ["--appliance", REFLECTOR + " --stateful --health-lf --inner-lenient --raw-receive", "--flow-timeout", "1"],
        _expect(TRAFFIC_8="FAIL", ROBUST_6="FAIL", ROBUST_7="FAIL", TIMEOUT_3=NA, TIMEOUT_4=NA, HEALTH_3=NA,
                HEALTH_6=NA), 0),
    # TCP-only health, and a crash on every datagram over 9000 bytes: only ROBUST-3 may fail
    "TCP health, crashes on oversize input": (
        ["--appliance", REFLECTOR + " --health-tcp --fault crash-on-oversize", "--health-protocol", "tcp",
         "--flow-timeout", "1"],
        _expect(ROBUST_3="FAIL", TIMEOUT_3=NA, TIMEOUT_4=NA, HEALTH_3=NA, HEALTH_6=NA), 1),
    # kernel configuration only (nftables DNAT + masquerade hairpin, as AWS's samples): no GENEVE parser at all,
    # so malformed GENEVE really is forwarded (true failures); nothing else may fail
    "kernel NAT hairpin": (
        ["--appliance", HAIRPIN, "--flow-timeout", "1"],
        _expect(ROBUST_1="FAIL", ROBUST_2="FAIL", ROBUST_4="FAIL", ROBUST_6="FAIL", TIMEOUT_3=NA, TIMEOUT_4=NA,
                HEALTH_3=NA, HEALTH_6=NA), 1),
    # deployed routed: the shipped routed hook (ip_forward, policy routing per tunnel) instead of tc mirred; its
    # FORWARD policy is honoured (ROUTE-1). With the Python datapath only (the other runs of the reference use
    # the kernel path, its default here): the suite passes with either
    "reference deployed routed, Python datapath": (
        ["--mode", "routed", "--datapath", "python"],
        _expect(ROUTE_1="PASS"), 0),
    # deployed two-arm NAT: VPC traffic routed back through the tunnel (so the whole suite applies), internet
    # traffic masqueraded out of a second arm with conntrack zones and marks per endpoint
    "reference deployed two-arm NAT": (["--mode", "nat"], _expect(ROUTE_1="PASS", NAT_1="PASS", NAT_2="PASS",
                                                                  NAT_3="PASS"), 0),
    # local termination: TCP to port 7780 answered by the reference's responder (TPROXY), the rest routed
    "reference deployed for local termination": (["--mode", "local"], _expect(ROUTE_1="PASS", LOCAL_1="PASS"), 0),
}


@pytest.mark.parametrize("name", list(CALIBRATION))
def test_correct_but_different_appliances_get_exactly_their_verdicts(tmp_path: Path, name: str) -> None:
    args, want, status = CALIBRATION[name]
    code, results, out = run_suite(tmp_path, *args, "--examples", "5", "--duration", "2", *SCALE)
    got = {r: v["verdict"] for r, v in results.items()}
    wrong = {r: (got.get(r), want[r], results.get(r, {}).get("reason")) for r in want if got.get(r) != want[r]}
    assert not wrong, f"{name}: (got, expected, reason) {wrong}\n{out}"
    assert code == status, f"{name}: exit status {code}, expected {status}\n{out}"


@pytest.mark.parametrize("datapath", ["kernel", "python"])
def test_the_reference_passes_the_whole_suite(tmp_path: Path, datapath: str) -> None:
    """Deployed passthrough, with either datapath (the kernel path where it can run, else the run is refused:
    the suite must not pass a Python-path run off as the kernel path's)."""
    html = tmp_path / "report.html"
    junit = tmp_path / "junit.xml"
    code, results, out = run_suite(tmp_path, "--datapath", datapath, "--html", str(html), "--junit", str(junit),
                                   *SCALE)
    assert set(results) == set(REQUIREMENTS), f"not every requirement ran: {set(REQUIREMENTS) - set(results)}"
    want = _expect()  # passthrough: the requirements of other deployment modes do not apply
    bad = {r: v["reason"] for r, v in results.items() if v["verdict"] != want[r]}
    assert not bad and code == 0, f"{bad}\n{out}"
    assert "CONFORMANT" in html.read_text() and "<testcase" in junit.read_text()
