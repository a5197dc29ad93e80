"""The shipped systemd unit: installed with the real gwlb-reference path, valid for systemd-analyze verify,
hardened but with what the appliance needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gwlbsim.cli import main


def test_installed_unit_verifies_and_keeps_what_the_appliance_needs(tmp_path: Path) -> None:
    assert main(["install-service", "--dest", str(tmp_path)]) == 0
    unit = tmp_path / "gwlb-reference.service"
    text = unit.read_text()
    assert "@GWLB_REFERENCE@" not in text
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert Path(exec_line.split("=", 1)[1].split()[0]).name == "gwlb-reference"
    caps = next(line for line in text.splitlines() if line.startswith("AmbientCapabilities=")).split("=", 1)[1]
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"} <= set(caps.split())
    for hardening in ("NoNewPrivileges=yes", "ProtectHome=yes", "PrivateTmp=yes", "RestrictNamespaces=yes"):
        assert hardening in text.splitlines()
    assert "ProtectKernelTunables=yes" not in text, "the hooks write sysctls"
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (scripts/setup installs systemd)")
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def test_a_unit_that_does_not_verify_is_caught(tmp_path: Path) -> None:
    """The verification can fail: a bad value in a copy of the unit is reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (scripts/setup installs systemd)")
    assert main(["install-service", "--dest", str(tmp_path)]) == 0
    unit = tmp_path / "gwlb-reference.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=sometimes"))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "protect home value" in (res.stdout + res.stderr).lower()
