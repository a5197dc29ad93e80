"""The suite's pure parts: how outcomes become verdicts and exit statuses, how returns are compared, where
artifacts go, how a hook's ENI argument is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from gwlbsim.conformance import results
from gwlbsim.conformance.environment import same_inner
from gwlbsim.conformance.plugin import artifact_dir
from gwlbsim.conformance.results import Results, TestOutcome
from gwlbsim.conformance.suite.test_6_timeouts import _hook_eni

from gwlbsim.traffic.inner import ipv4, ipv6, udp_datagram


def _res(requested: set[str] | None = None, **verdicts: str) -> Results:
    r = Results(requested=frozenset(requested) if requested else None)
    for req, outcome in verdicts.items():
        r.by_requirement[req.replace("_", "-")] = [TestOutcome("t", outcome, "why", 0.1)]
    return r


def test_a_full_pass_is_conformant() -> None:
    r = _res(**{req.replace("-", "_"): "passed" for req in results.REQUIREMENTS})
    assert r.status() == (0, "CONFORMANT")


def test_a_must_failure_is_not_conformant_and_should_failures_are_named() -> None:
    passed = {req.replace("-", "_"): "passed" for req in results.REQUIREMENTS}
    r = _res(**{**passed, "ECHO_1": "failed", "ROBUST_6": "failed"})
    code, line = r.status()
    assert code == 1 and "MUST failures ECHO-1" in line and "SHOULD failures: ROBUST-6" in line
    r = _res(**{**passed, "ROBUST_6": "failed"})
    assert r.status() == (0, "CONFORMANT; SHOULD failures: ROBUST-6")


def test_not_applicable_is_no_failure_but_not_run_is_incomplete() -> None:
    passed = {req.replace("-", "_"): "passed" for req in results.REQUIREMENTS}
    r = _res(**{**passed, "TIMEOUT_3": "na", "TIMEOUT_4": "na"})
    assert r.status() == (0, "CONFORMANT (2 not applicable)")
    assert r.verdict("TIMEOUT-3") == "NOT APPLICABLE"
    r = _res(**{**passed, "TIMEOUT_3": "notrun"})
    code, line = r.status()
    assert code == results.EXIT_INCOMPLETE and "TIMEOUT-3" in line and r.verdict("TIMEOUT-3") == "NOT RUN"


def test_nothing_ran_is_never_conformant() -> None:
    assert _res().status()[0] == results.EXIT_INCOMPLETE
    assert _res({"TIMEOUT-3"}, TIMEOUT_3="na").status() == (4, "INCOMPLETE: no MUST requirement ran")
    skipped = _res(**{req.replace("-", "_"): "skipped" for req in results.REQUIREMENTS})
    assert skipped.status()[0] == results.EXIT_INCOMPLETE


def test_a_requested_subset_is_judged_on_its_own() -> None:
    r = _res({"ECHO-1", "ROBUST-5"}, ECHO_1="passed", ROBUST_5="failed")
    assert r.status() == (0, "CONFORMANT to the 2 requested requirements; SHOULD failures: ROBUST-5")


def test_could_not_run_wins() -> None:
    r = _res()
    r.could_not_run = "command not found: x"
    assert r.status() == (3, "COULD NOT RUN: command not found: x")
    assert {r.verdict(q) for q in r.in_scope()} == {"NOT RUN"}


def test_a_failed_test_outweighs_passed_ones_of_the_same_requirement() -> None:
    r = Results()
    r.by_requirement["ROBUST-1"] = [TestOutcome("a", "passed", "", 0), TestOutcome("b", "failed", "x", 0),
                                    TestOutcome("c", "na", "y", 0)]
    assert r.verdict("ROBUST-1") == "FAIL" and r.reason("ROBUST-1") == "x"


def test_same_inner_allows_only_a_routers_decrement() -> None:
    pkt = ipv4("10.0.0.1", "10.0.0.2", 17, udp_datagram("10.0.0.1", "10.0.0.2", 1, 2, b"x"), ttl=64)
    routed = ipv4("10.0.0.1", "10.0.0.2", 17, udp_datagram("10.0.0.1", "10.0.0.2", 1, 2, b"x"), ttl=63)
    raised = ipv4("10.0.0.1", "10.0.0.2", 17, udp_datagram("10.0.0.1", "10.0.0.2", 1, 2, b"x"), ttl=65)
    changed = ipv4("10.0.0.1", "10.0.0.2", 17, udp_datagram("10.0.0.1", "10.0.0.2", 1, 2, b"y"), ttl=63)
    assert same_inner(pkt, pkt) and same_inner(pkt, routed)
    assert not same_inner(pkt, raised) and not same_inner(pkt, changed) and not same_inner(pkt, pkt[:-1])
    v6 = ipv6("fd00::1", "fd00::2", 17, udp_datagram("fd00::1", "fd00::2", 1, 2, b"x"), hop_limit=64)
    v6r = ipv6("fd00::1", "fd00::2", 17, udp_datagram("fd00::1", "fd00::2", 1, 2, b"x"), hop_limit=63)
    assert same_inner(v6, v6r) and not same_inner(v6r, v6)


def test_each_test_and_parameter_gets_its_own_artifact_directory() -> None:
    base = Path("/a")
    one = artifact_dir(base, "suite/test_4_robustness.py::test_malformed_input_is_dropped[version 1]")
    two = artifact_dir(base, "suite/test_4_robustness.py::test_malformed_input_is_dropped[version 3]")
    three = artifact_dir(base, "suite/test_1_echo.py::test_x")
    assert len({one, two, three}) == 3 and one.parent == base
    assert one.name == "test_4_robustness__test_malformed_input_is_dropped_version_1"


@pytest.mark.parametrize("arg", ["7e573577", "000000007e573577", "0000000007e573577", "eni-000000007e573577"])
def test_a_hooks_eni_argument_is_compared_by_value(arg: str) -> None:
    assert _hook_eni(arg) == 0x7E573577


def test_a_hooks_eni_argument_that_is_not_hex_is_no_eni() -> None:
    assert _hook_eni("gwi-xyz") is None
