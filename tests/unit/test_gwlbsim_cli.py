"""The gwlbsim command line: configuration files, options, and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from gwlbsim.cli import _session_options, build_parser, main
from gwlbsim.config import ConfigError


def opts(tmp_path: Path, toml: str, *extra: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "gwlb.toml"
    f.write_text(toml)
    return _session_options(build_parser().parse_args(["up", "--config", str(f), *extra]))


def test_topology_table_and_attributes(tmp_path: Path) -> None:
    o = opts(tmp_path, """
[target_group]
"target_failover.on_unhealthy" = "rebalance"
"target_failover.on_deregistration" = "rebalance"
[topology]
appliances = 3
zones = 2
health_port = 9090
""")
    assert (o.appliances, o.zones, o.endpoints) == (3, 2, 1)
    assert o.config.failover_on_unhealthy == "rebalance"
    hc = o.config.health_check
    assert (hc.protocol, hc.port) == ("HTTP", 9090), "health checks aim at the appliance's health port"


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    o = opts(tmp_path, "[topology]\nappliances = 3\n", "--appliances", "5", "--health-protocol", "tcp")
    assert o.appliances == 5 and o.spec.health_protocol == "tcp"


def test_an_explicit_health_check_is_kept(tmp_path: Path) -> None:
    o = opts(tmp_path, "[health_check]\nHealthCheckProtocol = \"TCP\"\nHealthCheckPort = 22\n")
    assert (o.config.health_check.protocol, o.config.health_check.port) == ("TCP", 22)


def test_bad_files_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown \\[topology\\] key"):
        opts(tmp_path, "[topology]\nappliance_count = 3\n")
    with pytest.raises(ConfigError, match="out of range"):
        opts(tmp_path, "[listener]\n\"tcp.idle_timeout.seconds\" = 10\n")


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text("[listener]\n\"tcp.idle_timeout.seconds\" = 10\n")
    assert main(["simulate", "--config", str(tmp_path / "bad.toml"), "--flows", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwlbsim: ") and "tcp.idle_timeout.seconds" in err
    assert main(["simulate", "--flows", "10", "--flap", "x"]) == 2
    assert "AT:TARGET:DOWN_FOR" in capsys.readouterr().err


def test_simulate_prints_a_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--flows", "2000", "--targets", "4", "--workers", "1", "--flap", "1:0:60"]) == 0
    out = capsys.readouterr().out
    assert "simulated 2000 flows" in out and "flows per target over 4 targets" in out
