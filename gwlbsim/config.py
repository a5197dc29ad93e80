"""Fake GWLB configuration, with AWS's own attribute names, defaults, ranges and refusals.

A TOML file and the Python API take the same keys::

    [load_balancer]
    "load_balancing.cross_zone.enabled" = false

    [listener]
    "tcp.idle_timeout.seconds" = 350
    "send_tcp_reset.on_idle_timeout.enabled" = false

    [target_group]
    "stickiness.enabled" = false
    "stickiness.type" = "source_ip_dest_ip_proto"
    "target_failover.on_deregistration" = "no_rebalance"
    "target_failover.on_unhealthy" = "no_rebalance"
    "deregistration_delay.timeout_seconds" = 300
    "send_tcp_reset.on_unhealthy.enabled" = false
    "send_tcp_reset.on_deregistration.enabled" = false

    [health_check]              # ELBv2 API field names
    HealthCheckProtocol = "TCP"
    HealthCheckPort = 80
    HealthCheckPath = "/"
    HealthCheckIntervalSeconds = 10
    HealthCheckTimeoutSeconds = 5
    HealthyThresholdCount = 5
    UnhealthyThresholdCount = 2
    Matcher = "200-399"

    [simulator]                 # what AWS does not document: every guess, visible and switchable
    return_validation = "strict"

``GwlbConfig.from_dict`` takes the same tables as a dict; ``GwlbConfig.attributes()`` lists them back.
Everything outside AWS's documented ranges, or a combination AWS refuses, raises :class:`ConfigError`
saying which key and why.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FIVE_TUPLE = "5_tuple"
THREE_TUPLE = "source_ip_dest_ip_proto"
TWO_TUPLE = "source_ip_dest_ip"
NO_REBALANCE = "no_rebalance"
REBALANCE = "rebalance"
NON_TCP_IDLE_TIMEOUT = 120.0  # fixed by AWS
DEFAULT_TCP_IDLE_TIMEOUT = 350.0


class ConfigError(ValueError):
    pass


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables; every way it can be unreadable is a :class:`ConfigError` naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ConfigError(f"{key} must be true or false, not {v!r}")


def _int(key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}, not {v!r}")
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}, not {v!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{key} = {n} is out of range: AWS allows {lo} to {hi}")
    return n


def _choice(key: str, v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {v!r}")
    return str(v)


def parse_matcher(text: str) -> frozenset[int]:
    """ELBv2 matcher syntax: ``200``, ``200,202``, ``200-299``; GENEVE target groups allow 200-399 only."""
    codes: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        lo_s, dash, hi_s = part.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s) if dash else int(lo_s)
        except ValueError:
            raise ConfigError(f"Matcher {text!r}: {part!r} is not a code or a range like 200-299") from None
        if lo > hi or lo < 200 or hi > 399:
            raise ConfigError(f"Matcher {text!r}: codes must be within 200-399 for GWLB target groups")
        codes.update(range(lo, hi + 1))
    return frozenset(codes)


@dataclass(frozen=True)
class HealthCheck:
    protocol: str = "TCP"
    port: int = 80
    path: str = "/"
    interval: int = 10
    timeout: int = 5
    healthy_threshold: int = 5
    unhealthy_threshold: int = 2
    matcher: str = "200-399"

    KEYS = {"HealthCheckProtocol": "protocol", "HealthCheckPort": "port", "HealthCheckPath": "path",
            "HealthCheckIntervalSeconds": "interval", "HealthCheckTimeoutSeconds": "timeout",
            "HealthyThresholdCount": "healthy_threshold", "UnhealthyThresholdCount": "unhealthy_threshold",
            "Matcher": "matcher"}

    def __post_init__(self) -> None:
        _choice("HealthCheckProtocol", self.protocol, ("TCP", "HTTP", "HTTPS"))
        _int("HealthCheckPort", self.port, 1, 65535)
        _int("HealthCheckIntervalSeconds", self.interval, 5, 300)
        _int("HealthCheckTimeoutSeconds", self.timeout, 2, 120)
        _int("HealthyThresholdCount", self.healthy_threshold, 2, 10)
        _int("UnhealthyThresholdCount", self.unhealthy_threshold, 2, 10)
        if self.interval < self.timeout:
            raise ConfigError(f"HealthCheckIntervalSeconds ({self.interval}) must be at least "
                              f"HealthCheckTimeoutSeconds ({self.timeout})")
        if not str(self.path).startswith("/") or len(self.path) > 1024:
            raise ConfigError(f"HealthCheckPath must start with / and have at most 1024 characters: {self.path!r}")
        parse_matcher(self.matcher)

    @property
    def codes(self) -> frozenset[int]:
        return parse_matcher(self.matcher)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HealthCheck:
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in cls.KEYS:
                raise ConfigError(f"unknown health check field {k!r}; known: {', '.join(cls.KEYS)}")
            name = cls.KEYS[k]
            if name in ("port", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"):
                v = _int(k, v, -(2**31), 2**31)
            kw[name] = v
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, n) for k, n in self.KEYS.items()}


@dataclass(frozen=True)
class Simulator:
    """Choices AWS does not document. Each is a guess from the evidence, made visible and switchable."""

    #: strict: a return's inner tuple must belong to its cookie's flow; lenient: any inner (NAT appliances)
    return_validation: str = "strict"
    #: option class of the GWLB options (AWS 0x0108; Tencent 0x0167)
    option_class: int = 0x0108
    #: outer UDP source ports are a hash of the flow into this range (real captures: 60000-61009)
    source_port_min: int = 60000
    source_port_max: int = 61009
    #: health checkers per target (GWLB's checks are "distributed" with "consensus"), and how they combine
    health_checkers: int = 2
    health_consensus: str = "majority"  # majority | any | all
    #: route new flows to targets still in their initial health checks (AWS today: no)
    route_to_initial: bool = False
    #: when every target is unhealthy, new flows go to a random one ("fail open"): forward to it or drop
    fail_open: str = "forward"  # forward | drop
    #: extra seconds after a target turns unhealthy before "rebalance" moves its flows ("propagation time")
    rebalance_propagation_seconds: float = 0.0
    #: keep a TCP flow this long after both FINs (or an RST) so the final ACKs pass, then forget it
    tcp_close_linger_seconds: float = 10.0
    #: drop inner packets above GWLB's MTU (8500), both directions; "pass" reproduces observed leniency
    oversize: str = "drop"  # drop | pass
    mtu: int = 8500
    #: returns whose UDP source port differs from the flow's: ignore (count only) or drop
    return_port_check: str = "ignore"  # ignore | drop
    #: UDP checksum on encapsulated packets (AWS: always valid)
    udp_checksum: bool = True
    #: randomness (cookies, fail-open picks): a seed makes runs repeatable
    seed: int | None = None

    def __post_init__(self) -> None:
        _choice("simulator.return_validation", self.return_validation, ("strict", "lenient"))
        _int("simulator.option_class", self.option_class, 0, 0xFFFF)
        _int("simulator.source_port_min", self.source_port_min, 1, 65535)
        _int("simulator.source_port_max", self.source_port_max, self.source_port_min, 65535)
        _int("simulator.health_checkers", self.health_checkers, 1, 16)
        _choice("simulator.health_consensus", self.health_consensus, ("majority", "any", "all"))
        _choice("simulator.fail_open", self.fail_open, ("forward", "drop"))
        _choice("simulator.oversize", self.oversize, ("drop", "pass"))
        _choice("simulator.return_port_check", self.return_port_check, ("ignore", "drop"))
        _int("simulator.mtu", self.mtu, 576, 65000)
        if self.rebalance_propagation_seconds < 0 or self.tcp_close_linger_seconds < 0:
            raise ConfigError("simulator times must not be negative")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Simulator:
        names = {f.name for f in fields(cls)}
        for k in d:
            if k not in names:
                raise ConfigError(f"unknown simulator setting {k!r}; known: {', '.join(sorted(names))}")
        return cls(**d)


@dataclass(frozen=True)
class GwlbConfig:
    cross_zone: bool = False
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT
    rst_on_idle_timeout: bool = False
    stickiness_enabled: bool = False
    stickiness_type: str = THREE_TUPLE
    failover_on_deregistration: str = NO_REBALANCE
    failover_on_unhealthy: str = NO_REBALANCE
    deregistration_delay: float = 300.0
    rst_on_unhealthy: bool = False
    rst_on_deregistration: bool = False
    health_check: HealthCheck = field(default_factory=HealthCheck)
    simulator: Simulator = field(default_factory=Simulator)

    #: TOML table -> attribute key -> field name
    ATTRIBUTES = {
        "load_balancer": {"load_balancing.cross_zone.enabled": "cross_zone"},
        "listener": {"tcp.idle_timeout.seconds": "tcp_idle_timeout",
                     "send_tcp_reset.on_idle_timeout.enabled": "rst_on_idle_timeout"},
        "target_group": {"stickiness.enabled": "stickiness_enabled", "stickiness.type": "stickiness_type",
                         "target_failover.on_deregistration": "failover_on_deregistration",
                         "target_failover.on_unhealthy": "failover_on_unhealthy",
                         "deregistration_delay.timeout_seconds": "deregistration_delay",
                         "send_tcp_reset.on_unhealthy.enabled": "rst_on_unhealthy",
                         "send_tcp_reset.on_deregistration.enabled": "rst_on_deregistration"},
    }

    def __post_init__(self) -> None:
        a = "tcp.idle_timeout.seconds"
        _int(a, int(self.tcp_idle_timeout), 60, 6000)
        _choice("stickiness.type", self.stickiness_type, (THREE_TUPLE, TWO_TUPLE))
        for key, v in (("target_failover.on_deregistration", self.failover_on_deregistration),
                       ("target_failover.on_unhealthy", self.failover_on_unhealthy)):
            _choice(key, v, (NO_REBALANCE, REBALANCE))
        if self.failover_on_deregistration != self.failover_on_unhealthy:
            raise ConfigError("target_failover.on_deregistration and target_failover.on_unhealthy must have the "
                              f"same value (AWS refuses {self.failover_on_deregistration} with "
                              f"{self.failover_on_unhealthy})")
        _int("deregistration_delay.timeout_seconds", int(self.deregistration_delay), 0, 3600)
        if self.stickiness_enabled and self.tcp_idle_timeout != DEFAULT_TCP_IDLE_TIMEOUT:
            raise ConfigError("tcp.idle_timeout.seconds can only be changed with 5-tuple stickiness "
                              "(stickiness.enabled = false); with 2- or 3-tuple stickiness GWLB uses 350")
        for key, on in (("send_tcp_reset.on_unhealthy.enabled", self.rst_on_unhealthy),
                        ("send_tcp_reset.on_deregistration.enabled", self.rst_on_deregistration)):
            if on and self.stickiness_enabled:
                raise ConfigError(f"{key} needs 5-tuple stickiness (stickiness.enabled = false)")
            if on and self.failover_on_unhealthy == REBALANCE:
                raise ConfigError(f"{key} cannot be enabled with target_failover.* = rebalance")

    @property
    def stickiness(self) -> str:
        return self.stickiness_type if self.stickiness_enabled else FIVE_TUPLE

    def idle_timeout(self, tcp: bool) -> float:
        if not tcp:
            return NON_TCP_IDLE_TIMEOUT
        return self.tcp_idle_timeout if not self.stickiness_enabled else DEFAULT_TCP_IDLE_TIMEOUT

    # ------------------------------------------------------------------------------------------ in and out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GwlbConfig:
        """The TOML layout as a dict (tables ``load_balancer``, ``listener``, ``target_group``,
        ``health_check``, ``simulator``). Unknown tables or keys are errors, not silently ignored."""
        kw: dict[str, Any] = {}
        known_tables = set(cls.ATTRIBUTES) | {"health_check", "simulator"}
        for table, values in d.items():
            if table not in known_tables:
                raise ConfigError(f"unknown table [{table}]; known: {', '.join(sorted(known_tables))}")
            if not isinstance(values, dict):
                raise ConfigError(f"[{table}] must be a table")
            if table == "health_check":
                kw["health_check"] = HealthCheck.from_dict(values)
                continue
            if table == "simulator":
                kw["simulator"] = Simulator.from_dict(values)
                continue
            attrs = cls.ATTRIBUTES[table]
            for key, v in values.items():
                if key not in attrs:
                    raise ConfigError(f"unknown attribute {key!r} in [{table}]; known: {', '.join(attrs)}")
                name = attrs[key]
                if name in ("cross_zone", "rst_on_idle_timeout", "stickiness_enabled", "rst_on_unhealthy",
                            "rst_on_deregistration"):
                    v = _bool(key, v)
                elif name == "tcp_idle_timeout":
                    v = float(_int(key, v, 60, 6000))
                elif name == "deregistration_delay":
                    v = float(_int(key, v, 0, 3600))
                kw[name] = v
        return cls(**kw)

    @classmethod
    def from_toml(cls, path: str | Path) -> GwlbConfig:
        data = read_toml(path)
        data.pop("topology", None)  # read by the live topology builder
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def attributes(self) -> dict[str, dict[str, Any]]:
        """The configuration in its TOML/AWS form."""
        out: dict[str, dict[str, Any]] = {}
        for table, attrs in self.ATTRIBUTES.items():
            out[table] = {}
            for key, name in attrs.items():
                v = getattr(self, name)
                out[table][key] = int(v) if isinstance(v, float) and v.is_integer() else v
        out["health_check"] = self.health_check.to_dict()
        out["simulator"] = {k: v for k, v in asdict(self.simulator).items() if v is not None}
        return out
