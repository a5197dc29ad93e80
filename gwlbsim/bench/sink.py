"""The benchmark's in-kernel return counter (``--split-cpus``): ``gwlbsim/bench/bpf/sink.bpf.c`` on the devices
returns arrive on. It notes each return's latency in the slot of its sequence number and drops it there, so no
user-space receiver takes CPU from what is measured (a receiver sharing a CPU with the softirq work of an
overloaded kernel datapath starves: receive livelock, and then the receiver is what gets measured).

Returns are counted and timed here, not checked byte for byte: the user-space receiver (every other run) checks
them.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import Any

from gwlbsim.linuxio.bpfobj import BpfObject
from gwlbsim.linuxio.netns import entered

SOURCE = Path(__file__).parent / "bpf" / "sink.bpf.c"
SLOTS = 1 << 24  #: as in the program: sequence numbers kept (a run's must span fewer)
_SLOT = 8  #: bytes per slot (u64: latency in microseconds + 1, 0 while not back)
_RETURNS, _DUPLICATES = 0, 1


class KernelSink:
    """The loaded counter, attached to devices in namespaces; read between runs."""

    def __init__(self) -> None:
        self.obj = BpfObject(SOURCE, ("count_returns",), ("slots", "counters"))
        self.view = self.obj.mapped("slots", SLOTS * _SLOT)
        self.slots = memoryview(self.view).cast("Q")

    def attach(self, ns: str, ifname: str) -> None:
        with entered(ns):
            self.obj.attach("count_returns", socket.if_nametoindex(ifname), True, f"{ns}/{ifname}")

    def _counter(self, which: int) -> int:
        return self.obj.percpu_sum("counters", struct.pack("=I", which))

    def reset(self) -> None:
        """Empty every slot and counter (before a run)."""
        self.view[:] = bytes(SLOTS * _SLOT)
        for which in (_RETURNS, _DUPLICATES):
            self.obj.update("counters", struct.pack("=I", which), bytes(8 * self.obj.cpus))

    def wait_quiet(self, quiet: float, max_wait: float) -> None:
        """Until no return has arrived for ``quiet`` seconds (at most ``max_wait``)."""
        deadline = time.monotonic() + max_wait
        last, since = self._counter(_RETURNS), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.02)
            now = self._counter(_RETURNS)
            if now != last:
                last, since = now, time.monotonic()

    def window(self, s0: int, s1: int, late: float | None) -> dict[str, Any]:
        """What the receiver's ``stop`` answers: the returns of sequence numbers [s0, s1), their latency, and
        with ``late`` (seconds) how many of them took longer."""
        span = s1 - s0
        if not 0 <= span < SLOTS:
            raise ValueError(f"a window of {span} packets does not fit the sink's {SLOTS} slots")
        lo = s0 % SLOTS
        vals = list(self.slots[lo:lo + span]) if lo + span <= SLOTS else \
            list(self.slots[lo:]) + list(self.slots[:lo + span - SLOTS])
        lats = sorted(v - 1 for v in vals if v)
        too_late = sum(1 for v in lats if v > late * 1e6) if late is not None else 0

        def pct(q: float) -> float | None:
            return float(lats[min(len(lats) - 1, int(q * len(lats)))]) if lats else None

        return {"returned": len(lats), "duplicates": self._counter(_DUPLICATES), "late": too_late,
                "echo_errors": 0, "echo_error_examples": [],
                "latency_us": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)}}

    def close(self) -> None:
        self.slots.release()
        self.view.close()
        self.obj.close()
