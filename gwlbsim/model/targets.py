"""Targets (appliances) of the fake GWLB: registration, health state by consensus of checkers, draining."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gwlbsim.config import HealthCheck


class TargetState(StrEnum):
    """A target's state as GWLB reports it (a member is its string: status documents and JSON read it as one)."""

    INITIAL = "initial"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    UNUSED = "unused"


INITIAL, HEALTHY, UNHEALTHY, DRAINING, UNUSED = (TargetState.INITIAL, TargetState.HEALTHY, TargetState.UNHEALTHY,
                                                 TargetState.DRAINING, TargetState.UNUSED)


@dataclass
class Checker:
    """One health checker's view of one target (GWLB runs several and combines them)."""

    ok_streak: int = 0
    fail_streak: int = 0
    verdict: bool | None = None  #: None until a threshold is reached
    next_probe: float = 0.0
    in_flight: bool = False
    probes: int = 0
    failures: int = 0
    last_detail: str = ""


@dataclass(eq=False)
class Target:
    id: str
    address: str
    zone: str
    index: int  #: registration order; stable identity for hashing
    registered_at: float
    state: str = INITIAL
    checkers: list[Checker] = field(default_factory=list)
    deregistered_at: float | None = None
    unhealthy_since: float | None = None
    rebalanced_unhealthy: bool = False
    flows: int = 0  #: live flows assigned to it
    assigned: int = 0  #: flows ever given to it when created (moves by rebalance not counted)
    drops: dict[str, int] = field(default_factory=dict)

    @property
    def routable(self) -> bool:
        """May receive new flows."""
        return self.state == HEALTHY

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1


def checker_verdict(c: Checker, hc: HealthCheck, ok: bool) -> None:
    if ok:
        c.ok_streak += 1
        c.fail_streak = 0
        if c.ok_streak >= hc.healthy_threshold:
            c.verdict = True
    else:
        c.fail_streak += 1
        c.ok_streak = 0
        c.failures += 1
        if c.fail_streak >= hc.unhealthy_threshold:
            c.verdict = False


def consensus(checkers: list[Checker], mode: str) -> bool | None:
    """Combine checker verdicts: True healthy, False unhealthy, None no decision (state unchanged)."""
    n = len(checkers)
    up = sum(1 for c in checkers if c.verdict is True)
    down = sum(1 for c in checkers if c.verdict is False)
    if mode == "any":
        if up:
            return True
        return False if down == n else None
    if mode == "all":
        if down:
            return False
        return True if up == n else None
    if up * 2 > n:
        return True
    if down * 2 > n:
        return False
    return None
