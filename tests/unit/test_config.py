from __future__ import annotations

from pathlib import Path

import pytest

from gwlbsim.config import ConfigError, GwlbConfig, HealthCheck, Simulator, parse_matcher


def test_defaults_are_aws_defaults() -> None:
    c = GwlbConfig()
    a = c.attributes()
    assert a["listener"]["tcp.idle_timeout.seconds"] == 350
    assert a["target_group"]["deregistration_delay.timeout_seconds"] == 300
    assert a["target_group"]["target_failover.on_unhealthy"] == "no_rebalance"
    assert a["load_balancer"]["load_balancing.cross_zone.enabled"] is False
    assert a["health_check"] == {"HealthCheckProtocol": "TCP", "HealthCheckPort": 80, "HealthCheckPath": "/",
                                 "HealthCheckIntervalSeconds": 10, "HealthCheckTimeoutSeconds": 5,
                                 "HealthyThresholdCount": 5, "UnhealthyThresholdCount": 2, "Matcher": "200-399"}
    assert c.stickiness == "5_tuple" and c.idle_timeout(False) == 120


def test_toml_and_dict_take_the_same_keys(tmp_path: Path) -> None:
    f = tmp_path / "gwlb.toml"
    f.write_text("""
[load_balancer]
"load_balancing.cross_zone.enabled" = true
[listener]
"tcp.idle_timeout.seconds" = 600
[target_group]
"target_failover.on_deregistration" = "rebalance"
"target_failover.on_unhealthy" = "rebalance"
"deregistration_delay.timeout_seconds" = 0
[health_check]
HealthCheckProtocol = "HTTP"
HealthCheckPort = 8080
HealthCheckIntervalSeconds = 5
HealthCheckTimeoutSeconds = 2
HealthyThresholdCount = 2
Matcher = "200,202-204"
[simulator]
return_validation = "lenient"
seed = 7
[topology]
appliances = 2
""")
    c = GwlbConfig.from_toml(f)
    assert c.cross_zone and c.tcp_idle_timeout == 600 and c.failover_on_unhealthy == "rebalance"
    assert c.health_check.codes == {200, 202, 203, 204}
    assert c.simulator.return_validation == "lenient"
    again = GwlbConfig.from_dict({k: v for k, v in c.attributes().items()})
    assert again == c


@pytest.mark.parametrize(("data", "message"), [
    ({"listener": {"tcp.idle_timeout.seconds": 59}}, "AWS allows 60 to 6000"),
    ({"listener": {"tcp.idle_timeout.seconds": 6001}}, "out of range"),
    ({"target_group": {"stickiness.enabled": True, "stickiness.type": "source_ip_dest_ip"},
      "listener": {"tcp.idle_timeout.seconds": 400}}, "only be changed with 5-tuple"),
    ({"target_group": {"stickiness.type": "6_tuple"}}, "stickiness.type must be one of"),
    ({"target_group": {"target_failover.on_unhealthy": "rebalance"}}, "must have the same value"),
    ({"target_group": {"deregistration_delay.timeout_seconds": 3601}}, "0 to 3600"),
    ({"target_group": {"send_tcp_reset.on_unhealthy.enabled": True, "target_failover.on_unhealthy": "rebalance",
                       "target_failover.on_deregistration": "rebalance"}}, "cannot be enabled with"),
    ({"target_group": {"send_tcp_reset.on_deregistration.enabled": True, "stickiness.enabled": True}},
     "needs 5-tuple"),
    ({"health_check": {"HealthCheckIntervalSeconds": 4}}, "5 to 300"),
    ({"health_check": {"HealthCheckTimeoutSeconds": 121}}, "2 to 120"),
    ({"health_check": {"HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 6}}, "at least"),
    ({"health_check": {"HealthyThresholdCount": 11}}, "2 to 10"),
    ({"health_check": {"UnhealthyThresholdCount": 1}}, "2 to 10"),
    ({"health_check": {"HealthCheckProtocol": "GENEVE"}}, "TCP, HTTP, HTTPS"),
    ({"health_check": {"Matcher": "200-404"}}, "within 200-399"),
    ({"health_check": {"Interval": 10}}, "unknown health check field"),
    ({"target_group": {"stickiness.enabld": True}}, "unknown attribute"),
    ({"targets": {}}, "unknown table"),
    ({"load_balancer": {"load_balancing.cross_zone.enabled": "yes"}}, "true or false"),
    ({"simulator": {"return_validation": "sloppy"}}, "strict, lenient"),
])
def test_out_of_range_and_refused_combinations(data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        GwlbConfig.from_dict(data)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        GwlbConfig.from_toml(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[listener\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        GwlbConfig.from_toml(tmp_path / "bad.toml")


def test_matcher_syntax() -> None:
    assert parse_matcher("200") == {200}
    assert parse_matcher("200-202, 399") == {200, 201, 202, 399}
    with pytest.raises(ConfigError):
        parse_matcher("abc")
    assert HealthCheck(protocol="HTTPS", matcher="301").codes == {301}
    assert Simulator().health_consensus == "majority"
