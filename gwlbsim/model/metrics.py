"""Counters of the fake GWLB, reported under CloudWatch's metric names (namespace AWS/GatewayELB)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Metrics:
    new_flows: int = 0  #: NewFlowCount
    packets: int = 0  #: ProcessedPackets (both directions, to and from targets)
    bytes: int = 0  #: ProcessedBytes (inner bytes, both directions)
    returned: int = 0  #: packets accepted back from targets
    resets: int = 0  #: TCP_ELB_Reset_Count
    fail_open_flows: int = 0  #: flows sent to a random target because none was healthy
    rebalanced_flows: int = 0  #: flows moved by target_failover = rebalance
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def processed(self, n: int) -> None:
        self.packets += 1
        self.bytes += n
