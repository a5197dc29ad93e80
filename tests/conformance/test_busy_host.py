"""ROBUST-5 (zero loss under sustained traffic) on a quiet host and on a busy one.

A loss is laid at the appliance only when the host was not busy with other work meanwhile: on a shared CI
runner a correct appliance may lose packets only because it was not given the CPU. Both ways are shown with an
appliance that really loses (the reflector dropping one datagram in 200 above 500/s, nothing duplicated):
it FAILs on a quiet host, and with two busy loops started outside the suite's process tree it is NOT RUN after
its attempts, never FAIL. ``alone``: the first claim needs a host with nothing else running.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gwlbsim.conformance.suite.test_4_robustness import SUSTAINED_ATTEMPTS

from tests.conformance.test_suite_proof import fault, run_suite

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.alone]

LOSSY = fault("loses-some-under-load")
SHORT = ("--instances", "1", "--duration", "1")
ROBUST_5 = ("--requirements", "ROBUST-5", *SHORT)


@pytest.fixture
def busy_host() -> Iterator[None]:
    """Two busy loops (one per vCPU here) in a session of their own, not descended from the suite's process."""
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True) for _ in range(2)]
    try:
        yield
    finally:
        for h in hogs:
            os.killpg(h.pid, signal.SIGKILL)
            h.wait()


def test_a_loss_on_a_quiet_host_fails(tmp_path: Path) -> None:
    _, results, out = run_suite(tmp_path, "--appliance", LOSSY, "--requirements", "ROBUST-5,ECHO-3", *SHORT)
    r5 = results["ROBUST-5"]
    assert r5["verdict"] == "FAIL", out
    assert "packets lost at 2000 packets/s for 1 s" in r5["reason"] and "too little to lay the loss there" \
        in r5["reason"], r5["reason"]
    assert results["ECHO-3"]["verdict"] == "PASS", out


def test_a_loss_on_a_busy_host_is_not_laid_at_the_appliance(tmp_path: Path, busy_host: None) -> None:
    _, results, out = run_suite(tmp_path, "--appliance", LOSSY, *ROBUST_5)
    r5 = results["ROBUST-5"]
    assert r5["verdict"] == "NOT RUN", out
    assert "every attempt lost packets while the host was busy" in r5["reason"], r5["reason"]
    assert r5["reason"].count("while other processes used") == SUSTAINED_ATTEMPTS, r5["reason"]


def test_a_duplicate_fails_even_on_a_busy_host(tmp_path: Path, busy_host: None) -> None:
    """A busy host can delay or lose a packet, never send it twice."""
    _, results, out = run_suite(tmp_path, "--appliance", fault("loses-under-load"), *ROBUST_5)
    r5 = results["ROBUST-5"]
    assert r5["verdict"] == "FAIL" and "delivered twice" in r5["reason"], out

