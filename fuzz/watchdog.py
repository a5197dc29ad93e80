"""What the network fuzzer watches on a live appliance, and the failures it reports.

=============  ============================================================================================
kind           meaning
=============  ============================================================================================
crashed        the appliance process exited
hang           alive, but its health port does not answer within the timeout
unhealthy      its health check fails (refused, reset, or not HTTP 200)
lost_flow      a valid flow (probe) sent with a fresh cookie was not returned within the timeout
wrong_return   a probe flow came back with a header other than the latest one sent for it
bad_return     it sent GWLB a datagram GWLB would drop, or a header never sent in a valid packet
fd_growth      its open file descriptors grew past the limit (a leak)
device_growth  its namespace's network devices grew past the limit (e.g. tunnels for garbage)
=============  ============================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from gwlbsim import geneve
from gwlbsim.appliance import RunningAppliance

KINDS = ("crashed", "hang", "unhealthy", "lost_flow", "wrong_return", "bad_return", "fd_growth", "device_growth")


class Failure(NamedTuple):
    kind: str
    detail: str


@dataclass(frozen=True)
class Limits:
    """How far descriptors and devices may grow from the appliance's count at start."""

    fd_growth: int = 64
    device_growth: int | None = None  #: None: two per endpoint the traffic uses, plus 16
    health_timeout: float = 3.0


class Watchdog:
    """Checks one running appliance against the counts it had when the watchdog was made."""

    def __init__(self, app: RunningAppliance, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.base_fds = app.fd_count()
        self.base_devices = len(app.devices())
        self.fds = self.base_fds
        self.devices = self.base_devices

    def crashed(self) -> Failure | None:
        if self.app.alive():
            return None
        rc = self.app.proc.returncode if self.app.proc is not None else None
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
        return Failure("crashed", f"the appliance {how}")

    def check(self) -> Failure | None:
        """Alive, healthy, and descriptors and devices within bounds; the first problem found, or None."""
        if f := self.crashed():
            return f
        spec = self.app.spec
        if spec.health_protocol != "none":
            r = self.app.health(timeout=self.limits.health_timeout)
            if f := self.crashed():
                return f
            if not r.ok:
                if "timed out" in r.error.lower():
                    return Failure("hang", f"the health port did not answer within {self.limits.health_timeout:g} s "
                                           f"({r.error})")
                return Failure("unhealthy", f"health check failed: {r.error}")
            if spec.health_protocol == "http" and r.status != 200:
                return Failure("unhealthy", f"health check answered HTTP {r.status}")
        self.fds = self.app.fd_count()
        if self.fds - self.base_fds > self.limits.fd_growth:
            return Failure("fd_growth", f"open file descriptors grew from {self.base_fds} to {self.fds}")
        self.devices = len(self.app.devices())
        if self.limits.device_growth is not None and self.devices - self.base_devices > self.limits.device_growth:
            return Failure("device_growth", f"network devices grew from {self.base_devices} to {self.devices}")
        return None


class ReturnChecker:
    """Checks what the appliance sends back to GWLB: GENEVE that GWLB accepts, with a header it sent validly."""

    def __init__(self, option_class: int = geneve.AWS_OPTION_CLASS) -> None:
        self.option_class = option_class
        self.valid_headers: set[bytes] = set()
        self.returns = 0

    def sent(self, payload: bytes) -> None:
        try:
            s = geneve.scan(payload, option_class=self.option_class)
        except geneve.GeneveError:
            return
        self.valid_headers.add(payload[:s.header_len])

    def received(self, payload: bytes) -> Failure | None:
        self.returns += 1
        try:
            s = geneve.scan(payload, option_class=self.option_class)
        except geneve.GeneveError as e:
            return Failure("bad_return", f"the appliance sent GWLB a datagram GWLB would drop ({e.reason}: {e}); "
                                         f"first bytes {payload[:48].hex()}")
        if payload[:s.header_len] not in self.valid_headers:
            return Failure("bad_return", "the appliance sent GWLB a GENEVE header that was never sent to it in a "
                                         f"valid packet: {payload[:s.header_len].hex()}")
        return None
